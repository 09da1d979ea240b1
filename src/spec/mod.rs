//! Run specs: one TOML file (`jobs/*.toml`, documented in `jobs/README.md`) says what a batch run
//! does: which dataset and categories, which shots and seeds to train, with which backbone, where
//! the artifacts go, which archives to score and where the results go. Every worker of a
//! Kubernetes Indexed Job reads the same file (a ConfigMap made from it) and finds its own work by
//! index in the [`plan::Plan`] ([`Spec::plan`]); `promptad plan` prints that plan.
//!
//! Config flows one way (STYLE): the file (serde, `deny_unknown_fields`) → [`Spec::load`], which
//! validates everything that can be checked without a store and reports every problem at once,
//! each with its key → the library structs the workers run ([`Spec::train_job`],
//! `ScoreOptions`). Checks that need the store (does the dataset exist, are the weights there)
//! are `promptad plan --check`.
//!
//! A relative plain path in a spec is relative to the spec file's folder, not to the working
//! directory, so a spec means the same wherever it is run from.

pub mod plan;
mod validate;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::clip::Precision;
use crate::pipeline::train::TrainJob;
use crate::prompt::train::TrainConfig;

/// A run spec as written. See `jobs/README.md` for every key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunSpec {
    pub dataset: DatasetSpec,
    pub backbone: BackboneSpec,
    pub train: TrainSpec,
    pub score: ScoreSpec,
    #[serde(default)]
    pub runtime: RuntimeSpec,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatasetSpec {
    /// Folders in the MVTec AD / VisA layout or image shards, at any URL.
    pub url: String,
    /// The dataset's name in artifact paths (`<artifacts>/<name>/<category>/k<k>/seed<s>`)
    /// [default: the last segment of `url`, as `promptad train` does].
    #[serde(default)]
    pub name: Option<String>,
    /// Where category names and prompts come from.
    pub catalog: CatalogKind,
    /// `"all"` (every category of the catalog) or a list of category keys.
    pub categories: CategorySelection,
    /// Categories of your own: key → prompt name and anomaly states. Allowed with any catalog.
    #[serde(default)]
    pub custom: BTreeMap<String, CustomCategory>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CatalogKind {
    /// The 15 MVTec AD categories (PromptAD's prompts).
    Mvtec,
    /// The 12 VisA categories (PromptAD's prompts).
    Visa,
    /// The categories of `promptad synth`; prompts from their defect types.
    Synth,
    /// Only the categories of `[dataset.custom]`.
    Custom,
}

impl CatalogKind {
    fn label(self) -> &'static str {
        match self {
            Self::Mvtec => "MVTec AD",
            Self::Visa => "VisA",
            Self::Synth => "generated (promptad synth)",
            Self::Custom => "custom",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum CategorySelection {
    /// Must be `"all"`.
    Keyword(String),
    List(Vec<String>),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CustomCategory {
    /// The object name in the prompts, e.g. `"rubber gasket"`.
    pub name: String,
    /// Manual anomaly states, each with one `{}` for the object: `"{} with tear"`. Without them
    /// only the 8 generic states are used.
    #[serde(default)]
    pub anomaly_states: Option<Vec<String>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackboneSpec {
    /// URL of an OpenCLIP safetensors checkpoint (fetched to a local cache by each worker).
    #[serde(default)]
    pub weights: Option<String>,
    /// Instead of weights: the random demo backbone (`demo-vit-240`) with this seed.
    #[serde(default)]
    pub random_init: Option<u64>,
    /// Built-in model config name [default: ViT-B-16-plus-240 with weights, demo-vit-240 with
    /// random_init].
    #[serde(default)]
    pub config: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainSpec {
    /// The k values to train (one model per category, k and seed).
    pub shots: Vec<usize>,
    pub seeds: Vec<u64>,
    /// Root URL of the model artifacts.
    pub artifacts: String,
    /// SGD steps per head (official: 100).
    #[serde(default = "default_steps")]
    pub steps: usize,
    /// Retrain models whose artifact already exists (by default a worker skips them).
    #[serde(default)]
    pub overwrite: bool,
}

fn default_steps() -> usize {
    TrainConfig::default().steps
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScoreSpec {
    /// Root URL of the results; each archive's run goes to `<out>/<archive name>`.
    pub out: String,
    /// The run id; each model's run is `<run_id>-k<k>-seed<seed>`. May hold `{job_name}` (the
    /// Kubernetes Job's name) and `{schedule_date}` (the UTC date a CronJob scheduled that Job for).
    pub run_id: String,
    /// The models that score, as `{ k = 4, seed = 111 }` [default: every trained one].
    #[serde(default)]
    pub models: Option<Vec<ModelRef>>,
    /// Workers per (archive, category, model); each takes a contiguous range of the units.
    #[serde(default = "one")]
    pub workers_per_category: usize,
    /// Images per work unit of a folder dataset (a shard is always one unit).
    #[serde(default = "default_rows_per_unit")]
    pub rows_per_unit: usize,
    /// Images per forward pass, or "auto": sized by the device's free memory
    /// (`promptad score --batch-size`).
    #[serde(default)]
    pub batch_size: crate::pipeline::score::BatchSize,
    /// Record undecodable images and go on (the worker still exits with code 65).
    #[serde(default)]
    pub skip_bad: bool,
    /// How the maps are stored: "compact" (the default: the grid each map is rebuilt from),
    /// "full" or "none" (`promptad score --maps`).
    #[serde(default)]
    pub maps: crate::sink::MapsMode,
    /// The archives to score [default: one named `test`, the dataset itself].
    #[serde(default)]
    pub archives: Vec<ArchiveSpec>,
}

fn one() -> usize {
    1
}
fn default_rows_per_unit() -> usize {
    256
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelRef {
    pub k: usize,
    pub seed: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArchiveSpec {
    /// Names the archive's output folder, `<score.out>/<name>`.
    pub name: String,
    pub url: String,
    /// A subset of the spec's categories [default: all of them].
    #[serde(default)]
    pub categories: Option<Vec<String>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuntimeSpec {
    /// cpu, cuda, cuda:N or auto.
    #[serde(default = "default_device")]
    pub device: String,
    #[serde(default)]
    pub precision: Precision,
}

fn default_device() -> String {
    "auto".into()
}

impl Default for RuntimeSpec {
    fn default() -> Self {
        Self { device: default_device(), precision: Precision::default() }
    }
}

/// One problem of a spec: the key (`dataset.categories[2]`) and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Problem {
    pub key: String,
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("cannot read the run spec {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("run spec {}: {message}see jobs/README.md for the format", path.display())]
    Parse { path: PathBuf, message: String },
    #[error("run spec {}: {} problem(s):\n{}", path.display(), problems.len(), problems.iter().map(|p| format!("  {p}\n")).collect::<String>())]
    Invalid { path: PathBuf, problems: Vec<Problem> },
    #[error(
        "run spec {}: there is no {job} work item {index}: its plan has {completions} (indexes 0..{completions}); \
         set the Job's completions to what `promptad plan` prints",
        path.display()
    )]
    IndexOutOfRange { path: PathBuf, job: &'static str, index: usize, completions: usize },
    #[error("run spec {}: no work item given: pass --index N, or run it as a pod of an Indexed Job (JOB_COMPLETION_INDEX)", path.display())]
    NoIndex { path: PathBuf },
    #[error("run id {template:?}: {reason}")]
    RunId { template: String, reason: String },
}

/// A loaded and validated spec.
#[derive(Debug, Clone)]
pub struct Spec {
    /// The file it was read from.
    pub file: PathBuf,
    /// As written, with relative paths made absolute (relative to the spec's folder).
    pub run: RunSpec,
    /// The categories to train, in order (the catalog's order for `"all"`).
    pub categories: Vec<String>,
}

impl Spec {
    /// Reads, parses and validates the spec at `path`.
    pub fn load(path: &Path) -> Result<Self, SpecError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| SpecError::Read { path: path.to_path_buf(), source })?;
        Self::parse(&text, path)
    }

    /// Parses and validates `text`, read from `path` (which anchors relative paths).
    pub fn parse(text: &str, path: &Path) -> Result<Self, SpecError> {
        let mut run: RunSpec =
            toml::from_str(text).map_err(|e| SpecError::Parse { path: path.to_path_buf(), message: e.to_string() })?;
        let base = std::path::absolute(path).ok().and_then(|p| p.parent().map(Path::to_path_buf)).unwrap_or_default();
        anchor_paths(&mut run, &base);
        let (categories, problems) = validate::validate(&run);
        if !problems.is_empty() {
            return Err(SpecError::Invalid { path: path.to_path_buf(), problems });
        }
        Ok(Self { file: path.to_path_buf(), run, categories })
    }

    /// The dataset's name in artifact paths.
    pub fn dataset_name(&self) -> String {
        self.run.dataset.name.clone().unwrap_or_else(|| last_segment(&self.run.dataset.url))
    }

    /// Where the model of (category, k, seed) lives: `<train.artifacts>/<dataset>/<category>/k<k>/seed<seed>`.
    pub fn artifact_url(&self, category: &str, k: usize, seed: u64) -> String {
        format!(
            "{}/{}",
            self.run.train.artifacts.trim_end_matches('/'),
            crate::artifact::default_rel(&self.dataset_name(), category, k, seed)
        )
    }

    /// Every trained (k, seed), in plan order.
    pub fn trained_models(&self) -> Vec<ModelRef> {
        self.run
            .train
            .shots
            .iter()
            .flat_map(|&k| self.run.train.seeds.iter().map(move |&seed| ModelRef { k, seed }))
            .collect()
    }

    /// The models that score.
    pub fn scoring_models(&self) -> Vec<ModelRef> {
        self.run.score.models.clone().unwrap_or_else(|| self.trained_models())
    }

    /// The archives to score (the dataset itself, named `test`, when the spec lists none).
    pub fn archives(&self) -> Vec<ArchiveSpec> {
        if self.run.score.archives.is_empty() {
            vec![ArchiveSpec { name: "test".into(), url: self.run.dataset.url.clone(), categories: None }]
        } else {
            self.run.score.archives.clone()
        }
    }

    /// The prompt name and anomaly states of a category that is not built in (`None` for MVTec /
    /// VisA categories, whose prompts are PromptAD's).
    pub fn category_prompts(&self, category: &str) -> Option<(String, Option<Vec<String>>)> {
        if let Some(custom) = self.run.dataset.custom.get(category) {
            return Some((custom.name.clone(), custom.anomaly_states.clone()));
        }
        if self.run.dataset.catalog == CatalogKind::Synth {
            use crate::data::synth;
            let info = synth::categories().into_iter().find(|c| c.name == category)?;
            return Some((synth::prompt_name(category), Some(synth::anomaly_states(&info.defect_types))));
        }
        None
    }

    /// The training job of one work item: the official prompts and schedule, the spec's steps.
    pub fn train_job(&self, category: &str, k: usize, seed: u64) -> TrainJob {
        let prompts = self.category_prompts(category);
        TrainJob {
            category_name: prompts.as_ref().map(|(name, _)| name.clone()),
            anomaly_suffixes: prompts.and_then(|(_, states)| states),
            ..TrainJob::official(self.run.dataset.url.clone(), category, k, seed, self.run.train.steps)
        }
    }
}

/// The last non-empty path segment of a URL (`s3://b/data/mvtec/` → `mvtec`).
fn last_segment(url: &str) -> String {
    url.trim_end_matches('/')
        .rsplit('/')
        .next()
        .filter(|n| !n.is_empty() && !n.ends_with(':'))
        .unwrap_or("data")
        .to_string()
}

/// Makes relative plain paths absolute against `base` (URLs and absolute paths are left alone).
fn anchor_paths(run: &mut RunSpec, base: &Path) {
    let anchor = |url: &mut String| {
        if !url.contains("://") && !url.trim().is_empty() && Path::new(url.as_str()).is_relative() {
            *url = base.join(url.as_str()).display().to_string();
        }
    };
    anchor(&mut run.dataset.url);
    if let Some(weights) = run.backbone.weights.as_mut() {
        anchor(weights);
    }
    anchor(&mut run.train.artifacts);
    anchor(&mut run.score.out);
    for archive in &mut run.score.archives {
        anchor(&mut archive.url);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
[dataset]
url = "s3://bucket/mvtec"
catalog = "mvtec"
categories = ["bottle", "metal_nut"]
[backbone]
weights = "s3://bucket/weights/vit.safetensors"
[train]
shots = [1, 2]
seeds = [111]
artifacts = "s3://bucket/models"
[score]
out = "s3://bucket/results"
run_id = "eval"
"#;

    fn parse(text: &str) -> Result<Spec, SpecError> {
        Spec::parse(text, Path::new("/specs/test.toml"))
    }

    fn problems(text: &str) -> Vec<Problem> {
        match parse(text) {
            Err(SpecError::Invalid { problems, .. }) => problems,
            other => panic!("expected problems, got {other:?}"),
        }
    }

    #[test]
    fn a_minimal_spec_takes_the_defaults() {
        let spec = parse(MINIMAL).unwrap();
        assert_eq!(spec.categories, ["bottle", "metal_nut"]);
        assert_eq!(spec.dataset_name(), "mvtec");
        assert_eq!(spec.artifact_url("bottle", 2, 111), "s3://bucket/models/mvtec/bottle/k2/seed111");
        assert_eq!(spec.run.train.steps, 100);
        assert_eq!(spec.run.score.workers_per_category, 1);
        assert_eq!(spec.run.runtime.device, "auto");
        assert_eq!(spec.scoring_models(), [ModelRef { k: 1, seed: 111 }, ModelRef { k: 2, seed: 111 }]);
        assert_eq!(spec.archives()[0].url, "s3://bucket/mvtec");
        assert!(spec.category_prompts("bottle").is_none(), "MVTec categories use PromptAD's own prompts");
        assert_eq!(spec.run.score.maps, crate::sink::MapsMode::Compact);
    }

    #[test]
    fn maps_are_named_as_on_the_command_line() {
        let spec = parse(&MINIMAL.replace(r#"run_id = "eval""#, "run_id = \"eval\"\nmaps = \"full\"")).unwrap();
        assert_eq!(spec.run.score.maps, crate::sink::MapsMode::Full);
        let err = parse(&MINIMAL.replace(r#"run_id = "eval""#, "run_id = \"eval\"\nmaps = \"small\"")).unwrap_err();
        let err = err.to_string();
        assert!(err.contains("small") && err.contains("compact"), "{err}");
    }

    #[test]
    fn all_is_the_catalog_in_its_official_order() {
        let spec = parse(&MINIMAL.replace(r#"["bottle", "metal_nut"]"#, r#""all""#)).unwrap();
        assert_eq!(spec.categories.len(), 15);
        assert_eq!(spec.categories[0], "carpet");
        let visa = parse(
            &MINIMAL
                .replace(r#"["bottle", "metal_nut"]"#, r#""all""#)
                .replace(r#"catalog = "mvtec""#, r#"catalog = "visa""#),
        )
        .unwrap();
        assert_eq!(visa.categories.len(), 12);
    }

    #[test]
    fn an_unknown_category_is_named_with_its_key_and_a_suggestion() {
        let found = problems(&MINIMAL.replace("metal_nut", "metal_nutt"));
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].key, "dataset.categories[1]");
        assert!(
            found[0].message.contains("did you mean \"metal_nut\"") && found[0].message.contains("MVTec AD"),
            "{}",
            found[0].message
        );
        // a VisA category in an MVTec spec
        let found = problems(&MINIMAL.replace("metal_nut", "pcb1"));
        assert!(found[0].message.contains("unknown MVTec AD category \"pcb1\""), "{}", found[0].message);
    }

    #[test]
    fn unknown_keys_are_refused_with_their_place() {
        let err = parse(&MINIMAL.replace("[train]", "[train]\nshot = [4]")).unwrap_err().to_string();
        assert!(err.contains("shot") && err.contains("line"), "{err}");
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let text = MINIMAL
            .replace("s3://bucket/results", "gs://bucket/results")
            .replace("shots = [1, 2]", "shots = [1, 0, 1]")
            .replace(
                r#"run_id = "eval""#,
                r#"run_id = "eval/{oops}"
models = [{ k = 8, seed = 111 }]"#,
            );
        let keys: Vec<String> = problems(&text).into_iter().map(|p| p.key).collect();
        assert_eq!(keys, ["train.shots[1]", "train.shots[2]", "score.out", "score.run_id", "score.models[0]"]);
    }

    #[test]
    fn backbone_needs_exactly_one_source() {
        let both = MINIMAL.replace("[train]", "random_init = 3\n[train]");
        assert_eq!(problems(&both)[0].key, "backbone");
        let bin = MINIMAL.replace("vit.safetensors", "vit.bin");
        assert!(problems(&bin)[0].message.contains("convert_checkpoint.py"));
        let random = MINIMAL
            .replace(r#"weights = "s3://bucket/weights/vit.safetensors""#, "random_init = 3\nconfig = \"ViT-B-16\"");
        assert_eq!(problems(&random)[0].key, "backbone.config");
    }

    #[test]
    fn relative_paths_are_relative_to_the_spec() {
        let spec = parse(
            &MINIMAL.replace("s3://bucket/mvtec", "data/mvtec").replace("s3://bucket/models", "file:///abs/models"),
        )
        .unwrap();
        assert_eq!(spec.run.dataset.url, "/specs/data/mvtec");
        assert_eq!(spec.run.train.artifacts, "file:///abs/models");
    }

    #[test]
    fn synth_and_custom_categories_get_their_prompts() {
        let text = r#"
[dataset]
url = "/data/synth"
catalog = "synth"
categories = ["washer", "gasket"]
[dataset.custom.gasket]
name = "rubber gasket"
anomaly_states = ["{} with tear"]
[backbone]
random_init = 3
[train]
shots = [1]
seeds = [5]
artifacts = "/models"
[score]
out = "/results"
run_id = "r"
"#;
        let spec = parse(text).unwrap();
        let (name, states) = spec.category_prompts("washer").unwrap();
        assert_eq!(name, "washer");
        assert!(states.unwrap().contains(&"{} with missing part".to_string()));
        let job = spec.train_job("gasket", 1, 5);
        assert_eq!(job.category_name.as_deref(), Some("rubber gasket"));
        assert_eq!(job.anomaly_suffixes, Some(vec!["{} with tear".to_string()]));
    }
}
