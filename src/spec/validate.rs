//! Every check of a run spec that needs no store, one function per rule. [`validate`] runs them in
//! the order of the file (dataset, backbone, train, score, runtime) and collects every problem,
//! each with its key, so that a user sees them all at once.

use std::collections::BTreeSet;

use super::plan;
use super::{
    last_segment, ArchiveSpec, BackboneSpec, CatalogKind, CategorySelection, CustomCategory, DatasetSpec, ModelRef,
    Problem, RunSpec, ScoreSpec, TrainSpec,
};
use crate::prompt::categories::Catalog;
use crate::store::Location;

/// What every message about a name that must be one path segment says.
const SEGMENT_RULE: &str = "letters, digits, '-', '_' and '.'";

/// The problems found so far.
#[derive(Default)]
struct Problems(Vec<Problem>);

impl Problems {
    fn push(&mut self, key: impl Into<String>, message: impl Into<String>) {
        self.0.push(Problem { key: key.into(), message: message.into() });
    }

    /// A URL parses as a store location.
    fn check_url(&mut self, key: &str, url: &str) {
        if let Err(e) = Location::parse(url) {
            self.push(key, e.to_string());
        }
    }
}

/// Every check that needs no store; returns the resolved categories and the problems found.
pub(super) fn validate(run: &RunSpec) -> (Vec<String>, Vec<Problem>) {
    let mut problems = Problems::default();
    let dataset = &run.dataset;
    check_dataset_name(&mut problems, dataset);
    for (key, custom) in &dataset.custom {
        check_custom_category(&mut problems, key, custom);
    }
    let categories = resolve_categories(&mut problems, dataset);
    problems.check_url("dataset.url", &dataset.url);
    check_dataset_name_from_url(&mut problems, dataset);

    check_backbone(&mut problems, &run.backbone);

    let train = &run.train;
    check_shots(&mut problems, &train.shots);
    check_seeds(&mut problems, &train.seeds);
    check_steps(&mut problems, train.steps);
    problems.check_url("train.artifacts", &train.artifacts);

    let score = &run.score;
    problems.check_url("score.out", &score.out);
    check_run_id(&mut problems, &score.run_id);
    if let Some(models) = &score.models {
        check_scoring_models(&mut problems, models, train);
    }
    check_counts(&mut problems, score);
    check_archives(&mut problems, &score.archives, &categories);

    check_device(&mut problems, &run.runtime.device);
    (categories, problems.0)
}

/// A name usable as one path segment and in Kubernetes-friendly ids.
fn is_segment(name: &str) -> bool {
    !name.is_empty()
        && name != "."
        && name != ".."
        && name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
}

/// The known category keys of a catalog.
fn catalog_keys(kind: CatalogKind) -> Vec<String> {
    match kind {
        CatalogKind::Mvtec => Catalog::builtin().keys("mvtec").into_iter().map(String::from).collect(),
        CatalogKind::Visa => Catalog::builtin().keys("visa").into_iter().map(String::from).collect(),
        CatalogKind::Synth => crate::data::synth::categories().into_iter().map(|c| c.name.to_string()).collect(),
        CatalogKind::Custom => Vec::new(),
    }
}

/// The closest of `candidates` to `word` (Levenshtein distance), if it is close (a typo, not
/// another word).
fn closest<'a>(word: &str, candidates: &'a [String]) -> Option<&'a str> {
    candidates
        .iter()
        .map(|c| (strsim::levenshtein(word, c), c))
        .filter(|(d, c)| *d <= 2.max(c.len() / 4))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c.as_str())
}

/// `dataset.name`, when given, is one path segment.
fn check_dataset_name(problems: &mut Problems, dataset: &DatasetSpec) {
    if let Some(name) = &dataset.name {
        if !is_segment(name) {
            problems.push("dataset.name", format!("{name:?} must be one path segment: {SEGMENT_RULE}"));
        }
    }
}

/// A `[dataset.custom.<key>]` table: its key is a path segment, its name is not empty, and each
/// anomaly state has exactly one `{}`.
fn check_custom_category(problems: &mut Problems, key: &str, custom: &CustomCategory) {
    if !is_segment(key) {
        problems
            .push(format!("dataset.custom.{key}"), format!("a category key must be one path segment: {SEGMENT_RULE}"));
    }
    if custom.name.trim().is_empty() {
        problems.push(format!("dataset.custom.{key}.name"), "must not be empty: it is the object name in the prompts");
    }
    for (i, state) in custom.anomaly_states.iter().flatten().enumerate() {
        if state.matches("{}").count() != 1 {
            problems.push(
                format!("dataset.custom.{key}.anomaly_states[{i}]"),
                format!("{state:?} must contain exactly one {{}} where the object name goes, e.g. \"{{}} with tear\""),
            );
        }
    }
}

/// `dataset.categories`: `"all"` or a list of known (or custom) keys, each once. Returns the
/// categories to train, in order.
fn resolve_categories(problems: &mut Problems, dataset: &DatasetSpec) -> Vec<String> {
    let known = catalog_keys(dataset.catalog);
    match &dataset.categories {
        CategorySelection::Keyword(word) if word == "all" => {
            let mut categories = known.clone();
            categories.extend(dataset.custom.keys().filter(|k| !known.contains(k)).cloned());
            if categories.is_empty() {
                problems.push("dataset.categories", "\"all\" of the custom catalog is nothing: add [dataset.custom.<key>] tables or list the categories");
            }
            categories
        }
        CategorySelection::Keyword(word) => {
            problems.push(
                "dataset.categories",
                format!("{word:?}: write \"all\" or a list of category keys, e.g. [\"bottle\", \"cable\"]"),
            );
            Vec::new()
        }
        CategorySelection::List(list) => {
            if list.is_empty() {
                problems.push("dataset.categories", "the list is empty: name at least one category, or write \"all\"");
            }
            let mut categories = Vec::new();
            let mut seen = BTreeSet::new();
            for (i, category) in list.iter().enumerate() {
                let key = format!("dataset.categories[{i}]");
                if !seen.insert(category) {
                    problems.push(key, format!("{category:?} is listed twice"));
                } else if !known.contains(category) && !dataset.custom.contains_key(category) {
                    problems.push(key, unknown_category(dataset, category, &known));
                } else {
                    categories.push(category.clone());
                }
            }
            categories
        }
    }
}

/// The message for a category key that is neither in the catalog nor custom: a suggestion, the
/// known keys and how to add one's own.
fn unknown_category(dataset: &DatasetSpec, category: &str, known: &[String]) -> String {
    let hint = match closest(category, known) {
        Some(near) => format!(" (did you mean {near:?}?)"),
        None => String::new(),
    };
    let listing = if known.is_empty() {
        "the custom catalog has only the [dataset.custom] categories".to_string()
    } else {
        format!("known: {}", known.join(", "))
    };
    format!(
        "unknown {} category {category:?}{hint}; {listing}. For a category of your own add [dataset.custom.{category}] with its prompt name",
        dataset.catalog.label()
    )
}

/// Without `dataset.name`, the last segment of `dataset.url` names the artifact folder, so it
/// must be one path segment.
fn check_dataset_name_from_url(problems: &mut Problems, dataset: &DatasetSpec) {
    if dataset.name.is_none() && !is_segment(&last_segment(&dataset.url)) {
        problems.push(
            "dataset.name",
            format!(
                "the last segment of dataset.url ({:?}) cannot name the artifact folder; set dataset.name",
                last_segment(&dataset.url)
            ),
        );
    }
}

/// Exactly one of `backbone.weights` (a `.safetensors` URL with a built-in config) and
/// `backbone.random_init` (the demo backbone only).
fn check_backbone(problems: &mut Problems, backbone: &BackboneSpec) {
    match (&backbone.weights, backbone.random_init) {
        (Some(_), Some(_)) => problems.push("backbone", "give weights or random_init, not both"),
        (None, None) => problems.push(
            "backbone",
            "no backbone: set weights = \"s3://.../open_clip_model.safetensors\" (OpenCLIP safetensors) or random_init = SEED",
        ),
        (Some(weights), None) => check_weights(problems, weights, backbone.config.as_deref()),
        (None, Some(_)) => {
            if let Some(config) = backbone.config.as_deref().filter(|c| *c != "demo-vit-240") {
                problems.push(
                    "backbone.config",
                    format!("{config:?}: random_init builds the demo-vit-240 backbone only; drop config or give weights"),
                );
            }
        }
    }
}

/// `backbone.weights` is a `.safetensors` URL and `backbone.config` a built-in config name.
fn check_weights(problems: &mut Problems, weights: &str, config: Option<&str>) {
    problems.check_url("backbone.weights", weights);
    if !weights.ends_with(".safetensors") {
        problems.push(
            "backbone.weights",
            format!("{weights} is not a .safetensors file; convert .pt/.bin releases once with scripts/convert_checkpoint.py and upload the result"),
        );
    }
    let config = config.unwrap_or("ViT-B-16-plus-240");
    if config.ends_with(".json") || config.contains('/') {
        problems.push(
            "backbone.config",
            format!("{config:?}: a spec names a built-in config (ViT-B-16-plus-240, ViT-B-16); config files are not shipped to workers"),
        );
    } else if let Err(e) = crate::clip::ModelConfig::resolve(config) {
        problems.push("backbone.config", e.to_string());
    }
}

/// `train.shots`: not empty, each k at least 1 and listed once.
fn check_shots(problems: &mut Problems, shots: &[usize]) {
    if shots.is_empty() {
        problems.push("train.shots", "empty: list the k values to train, e.g. [1, 2, 4]");
    }
    for (i, &k) in shots.iter().enumerate() {
        if k == 0 {
            problems.push(format!("train.shots[{i}]"), "k must be at least 1");
        }
        if shots[..i].contains(&k) {
            problems.push(format!("train.shots[{i}]"), format!("k = {k} is listed twice"));
        }
    }
}

/// `train.seeds`: not empty, each listed once.
fn check_seeds(problems: &mut Problems, seeds: &[u64]) {
    if seeds.is_empty() {
        problems.push("train.seeds", "empty: list at least one seed (official: 111)");
    }
    for (i, seed) in seeds.iter().enumerate() {
        if seeds[..i].contains(seed) {
            problems.push(format!("train.seeds[{i}]"), format!("seed {seed} is listed twice"));
        }
    }
}

/// `train.steps` is at least 1.
fn check_steps(problems: &mut Problems, steps: usize) {
    if steps == 0 {
        problems.push("train.steps", "must be at least 1 (official: 100)");
    }
}

/// `score.run_id` is a valid template.
fn check_run_id(problems: &mut Problems, run_id: &str) {
    if let Err(e) = plan::check_run_id_template(run_id) {
        problems.push("score.run_id", e.to_string());
    }
}

/// `score.models`, when given: not empty, each trained by this spec and listed once.
fn check_scoring_models(problems: &mut Problems, models: &[ModelRef], train: &TrainSpec) {
    let trained: Vec<ModelRef> =
        train.shots.iter().flat_map(|&k| train.seeds.iter().map(move |&seed| ModelRef { k, seed })).collect();
    if models.is_empty() {
        problems.push("score.models", "empty: leave it out to score with every trained model");
    }
    for (i, model) in models.iter().enumerate() {
        if !trained.contains(model) {
            problems.push(
                format!("score.models[{i}]"),
                format!(
                    "k = {} seed = {} is not trained by this spec (train.shots {:?}, train.seeds {:?})",
                    model.k, model.seed, train.shots, train.seeds
                ),
            );
        } else if models[..i].contains(model) {
            problems.push(format!("score.models[{i}]"), "listed twice");
        }
    }
}

/// `score.workers_per_category` and `score.rows_per_unit` are at least 1 (`score.batch_size`
/// refuses 0 when it is read).
fn check_counts(problems: &mut Problems, score: &ScoreSpec) {
    for (key, value) in
        [("score.workers_per_category", score.workers_per_category), ("score.rows_per_unit", score.rows_per_unit)]
    {
        if value == 0 {
            problems.push(key, "must be at least 1");
        }
    }
}

/// `score.archives`: distinct path-segment names, valid URLs, and only categories that have a
/// model.
fn check_archives(problems: &mut Problems, archives: &[ArchiveSpec], categories: &[String]) {
    let mut names = BTreeSet::new();
    for (i, archive) in archives.iter().enumerate() {
        let key = format!("score.archives[{i}]");
        if !is_segment(&archive.name) {
            problems
                .push(format!("{key}.name"), format!("{:?} must be one path segment: {SEGMENT_RULE}", archive.name));
        } else if !names.insert(archive.name.clone()) {
            problems.push(
                format!("{key}.name"),
                format!(
                    "{:?} is used by another archive; names must differ (each names an output folder)",
                    archive.name
                ),
            );
        }
        problems.check_url(&format!("{key}.url"), &archive.url);
        check_archive_categories(problems, &key, archive, categories);
    }
}

/// An archive's `categories`, when given: not empty, each one of the spec's categories.
fn check_archive_categories(problems: &mut Problems, key: &str, archive: &ArchiveSpec, categories: &[String]) {
    for (j, category) in archive.categories.iter().flatten().enumerate() {
        if !categories.contains(category) {
            problems.push(
                format!("{key}.categories[{j}]"),
                format!(
                    "{category:?} is not one of the spec's categories ({}): there is no model to score it with",
                    categories.join(", ")
                ),
            );
        }
    }
    if archive.categories.as_ref().is_some_and(Vec::is_empty) {
        problems.push(format!("{key}.categories"), "empty: leave it out to score every category");
    }
}

/// `runtime.device` is `cpu`, `cuda`, `cuda:N` or `auto`.
fn check_device(problems: &mut Problems, device: &str) {
    let valid = matches!(device, "cpu" | "cuda" | "auto")
        || device.strip_prefix("cuda:").is_some_and(|n| n.parse::<usize>().is_ok());
    if !valid {
        problems.push("runtime.device", format!("{device:?}: use cpu, cuda, cuda:N or auto"));
    }
}
