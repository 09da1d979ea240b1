//! Training one category: shots → memory → image-level and pixel-level prompts → artifact.

use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

pub use crate::artifact::InitPromptsRecord;
use crate::artifact::{tensor_names, Artifact, ArtifactError, Backbone, HeadRecord, Manifest, FORMAT_VERSION};
use crate::clip::{Clip, ClipError};
use crate::data::dataset::Dataset;
use crate::data::folder::select_shots;
use crate::data::prepare::{model_input, Compat, Role};
use crate::data::shard::ImageRecord;
use crate::data::DataError;
use crate::detect::DetectConfig;
use crate::prompt::categories::Catalog;
use crate::prompt::learner::{PromptConfig, PromptLearner};
use crate::prompt::train::{text_prototypes, train, Head, TrainConfig};
use crate::prompt::PromptError;
use crate::stop::{StopToken, Stopped};
use crate::store::Location;

#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error(transparent)]
    Data(#[from] DataError),
    #[error(transparent)]
    Prompt(#[from] PromptError),
    #[error(transparent)]
    Clip(#[from] ClipError),
    #[error(transparent)]
    Artifact(#[from] ArtifactError),
    #[error(transparent)]
    InitPrompts(#[from] InitPromptsError),
    #[error("training failed in libtorch: {0}")]
    Torch(#[from] tch::TchError),
}

impl TrainError {
    /// Whether training stopped because it was asked to (nothing was written).
    pub fn is_stopped(&self) -> bool {
        matches!(self, TrainError::Prompt(PromptError::Stopped(Stopped)))
    }
}

type Result<T, E = TrainError> = std::result::Result<T, E>;

/// Everything a training run needs besides the backbone.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainJob {
    /// The dataset's URL: folders (MVTec AD / VisA layout) or image shards, on any store.
    pub dataset: String,
    pub category: String,
    /// Display name for a category that is not built in. Without it and `anomaly_suffixes`, a
    /// category listed in the dataset's `synth.json` takes the name and states given there.
    pub category_name: Option<String>,
    /// Manual anomaly suffixes for a category that is not built in (`"{} with scratch"`).
    pub anomaly_suffixes: Option<Vec<String>>,
    pub k: usize,
    pub seed: u64,
    /// Shot file names or stems instead of a seeded draw.
    pub shots: Option<Vec<String>>,
    pub image_prompts: PromptConfig,
    pub pixel_prompts: PromptConfig,
    pub train: TrainConfig,
    pub detect: DetectConfig,
}

impl TrainJob {
    /// The official method on `category` of `dataset`: a seeded draw of `k` normal shots, both
    /// prompt ensembles with their learnable contexts, the official schedule over `steps`
    /// steps, default detection. Names and anomaly states come from the built-in table or the
    /// dataset's `synth.json` until a caller sets `category_name` / `anomaly_suffixes`.
    pub fn official(
        dataset: impl Into<String>,
        category: impl Into<String>,
        k: usize,
        seed: u64,
        steps: usize,
    ) -> Self {
        TrainJob {
            dataset: dataset.into(),
            category: category.into(),
            category_name: None,
            anomaly_suffixes: None,
            k,
            seed,
            shots: None,
            image_prompts: PromptConfig::image_level(),
            pixel_prompts: PromptConfig::pixel_level(),
            train: TrainConfig { steps, ..TrainConfig::default() },
            detect: DetectConfig::default(),
        }
    }
}

/// The tensors `--init-prompts` reads, per head (`image`, `pixel`): the same names and shapes as
/// in an artifact's `tensors.safetensors`.
pub const INIT_PROMPT_TENSORS: [&str; 4] =
    ["image.normal_ctx", "image.anomaly_ctx", "pixel.normal_ctx", "pixel.anomaly_ctx"];

/// What went wrong reading `--init-prompts`.
#[derive(Debug, thiserror::Error)]
pub enum InitPromptsError {
    #[error("--init-prompts {source_name}: no such file or model directory; give a safetensors file with {} or a model artifact URL", INIT_PROMPT_TENSORS.join(", "))]
    Missing { source_name: String },
    #[error("--init-prompts {source_name}: cannot read it ({message})")]
    Unreadable { source_name: String, message: String },
    #[error("--init-prompts {source_name} has no tensor {key:?} (it has: {available}); it needs {}", INIT_PROMPT_TENSORS.join(", "))]
    MissingTensor { source_name: String, key: String, available: String },
    #[error("--init-prompts {source_name}: tensor {key:?} has shape {got:?}, expected {expected:?} ([prompts, context tokens, text width] of this model and prompt configuration)")]
    Shape { source_name: String, key: String, expected: Vec<i64>, got: Vec<i64> },
}

/// Initial context vectors for both heads (`train --init-prompts`).
pub struct InitPrompts {
    pub tensors: std::collections::HashMap<String, Tensor>,
    pub record: InitPromptsRecord,
}

impl InitPrompts {
    /// Reads a safetensors file (a local path) or a model artifact (a directory or any store URL).
    pub fn load(source: &str) -> Result<Self, InitPromptsError> {
        let unreadable = |e: &dyn std::fmt::Display| InitPromptsError::Unreadable {
            source_name: source.to_string(),
            message: e.to_string(),
        };
        let path = std::path::Path::new(source);
        if path.is_file() {
            use sha2::Digest;
            let bytes = std::fs::read(path).map_err(|e| unreadable(&e))?;
            let tensors = Tensor::read_safetensors(path).map_err(|e| unreadable(&e))?.into_iter().collect();
            let sha256 = format!("{:x}", sha2::Sha256::digest(&bytes));
            return Ok(Self {
                tensors,
                record: InitPromptsRecord { source: source.to_string(), kind: "file".into(), sha256 },
            });
        }
        let looks_local = !source.contains("://");
        if looks_local && !path.exists() {
            return Err(InitPromptsError::Missing { source_name: source.to_string() });
        }
        let location = Location::parse(source).map_err(|e| unreadable(&e))?;
        let artifact = Artifact::read(&location).map_err(|e| unreadable(&format!("{e:#}")))?;
        let sha256 = crate::artifact::tensors_sha256(&location).map_err(|e| unreadable(&format!("{e:#}")))?;
        Ok(Self {
            tensors: artifact.tensors,
            record: InitPromptsRecord { source: source.to_string(), kind: "artifact".into(), sha256 },
        })
    }

    /// Sets the learner's contexts from `<prefix>.normal_ctx` and `<prefix>.anomaly_ctx`, checking names and shapes.
    pub fn apply(&self, prefix: &str, learner: &mut PromptLearner) -> Result<(), InitPromptsError> {
        let mut values = Vec::new();
        for (name, var) in [("normal_ctx", &learner.normal_ctx), ("anomaly_ctx", &learner.anomaly_ctx)] {
            let key = format!("{prefix}.{name}");
            let Some(value) = self.tensors.get(&key) else {
                let mut available: Vec<_> = self.tensors.keys().cloned().collect();
                available.sort();
                return Err(InitPromptsError::MissingTensor {
                    source_name: self.record.source.clone(),
                    key,
                    available: available.join(", "),
                });
            };
            if value.size() != var.size() {
                return Err(InitPromptsError::Shape {
                    source_name: self.record.source.clone(),
                    key,
                    expected: var.size(),
                    got: value.size(),
                });
            }
            values.push(value.to_kind(var.kind()).to_device(var.device()));
        }
        learner.set_context(&values[0], &values[1]).expect("shapes checked above");
        Ok(())
    }
}

/// Shot images as a `[k, 3, S, S]` batch; a shot that does not decode is an error naming it.
pub fn load_batch(records: &[ImageRecord], size: u32, compat: Compat, role: Role) -> Result<Tensor> {
    use rayon::prelude::*;
    let inputs: Vec<Vec<f32>> =
        records.par_iter().map(|r| model_input(&r.image, &r.origin, size, compat, role)).collect::<Result<_, _>>()?;
    let flat: Vec<f32> = inputs.concat();
    Ok(Tensor::from_slice(&flat).view([records.len() as i64, 3, size as i64, size as i64]))
}

/// Trains both heads and writes the artifact to `out` (any store). `on_step(head, step, loss)` reports
/// progress. `stop` is checked before every step; a stopped training writes nothing (the artifact
/// goes out after the last step, its manifest last).
pub fn train_category(
    job: &TrainJob,
    clip: &Clip,
    backbone: Backbone,
    out: &Location,
    overwrite: bool,
    stop: &StopToken,
    on_step: impl FnMut(Head, usize, f64),
) -> Result<Manifest> {
    train_category_from(job, clip, backbone, out, overwrite, stop, None, on_step)
}

/// [`train_category`] as a library caller most often runs it: into an `out` that holds no
/// artifact yet (one there is an error), never stopped, no progress reported.
pub fn train_category_quietly(job: &TrainJob, clip: &Clip, backbone: Backbone, out: &Location) -> Result<Manifest> {
    train_category(job, clip, backbone, out, false, &StopToken::new(), |_, _, _| {})
}

/// [`train_category`], the prompt contexts starting from `init` (`--init-prompts`) instead of the
/// seeded N(0, 0.02²) draw; the manifest records where they came from.
#[allow(clippy::too_many_arguments)]
pub fn train_category_from(
    job: &TrainJob,
    clip: &Clip,
    backbone: Backbone,
    out: &Location,
    overwrite: bool,
    stop: &StopToken,
    init: Option<&InitPrompts>,
    mut on_step: impl FnMut(Head, usize, f64),
) -> Result<Manifest> {
    let dataset = Dataset::open(&job.dataset)?;
    // Without prompt flags, a category `promptad synth` generated is prompted as its synth.json says.
    let synth = match (&job.category_name, &job.anomaly_suffixes) {
        (None, None) => dataset.synth_prompts(&job.category)?,
        _ => None,
    };
    let (name, suffixes) = match &synth {
        Some((name, states)) => (Some(name.as_str()), Some(states.as_slice())),
        None => (job.category_name.as_deref(), job.anomaly_suffixes.as_deref()),
    };
    let category = Catalog::builtin().resolve(&job.category, name, suffixes)?;
    let shots = select_shots(&dataset.train_good(&job.category)?, job.k, job.seed, job.shots.as_deref())?;
    tracing::info!(category = %job.category, k = shots.len(), shots = ?shots.iter().map(|s| &s.id).collect::<Vec<_>>(), "shots chosen");
    let size = clip.visual.image_size() as u32;
    let images = load_batch(&dataset.load(&shots)?, size, Compat::Rgb, Role::Shot)?.to_device(clip.device);
    let features =
        tch::no_grad(|| clip.visual.forward_vv(&images, &job.detect.taps))?.normalized().to_kind(Kind::Float);

    let mut tensors: Vec<(String, Tensor)> = Vec::new();
    for (i, tap) in features.taps.iter().enumerate() {
        tensors.push((tensor_names::memory_bank(i), tap.reshape([-1, *tap.size().last().unwrap()])));
    }
    let mut records = Vec::new();
    for (head, prompts, visual) in
        [(Head::Image, &job.image_prompts, &features.global), (Head::Pixel, &job.pixel_prompts, &features.patch_tokens)]
    {
        tch::manual_seed(job.seed as i64);
        let mut learner = PromptLearner::new(clip, &category, prompts.clone())?;
        if let Some(init) = init {
            init.apply(head.name(), &mut learner)?;
        }
        let report = train(clip, &mut learner, visual, &job.train, stop, |step, loss| on_step(head, step, loss))?;
        tracing::info!(category = %job.category, head = head.name(), first_loss = report.losses.first(), last_loss = report.losses.last(),
            seconds = report.seconds, "prompts trained");
        tensors.push((tensor_names::prototypes(head), text_prototypes(clip, &learner)?));
        tensors.push((tensor_names::normal_ctx(head), learner.normal_ctx.detach()));
        tensors.push((tensor_names::anomaly_ctx(head), learner.anomaly_ctx.detach()));
        let strings = &learner.strings;
        records.push(HeadRecord {
            prompts: prompts.clone(),
            prompt_strings: strings.normal.len() + strings.manual_anomaly.len() + strings.learnable_anomaly.len(),
            report,
        });
    }
    let pixel_head = records.pop().expect("two heads");
    let image_head = records.pop().expect("two heads");
    let manifest = Manifest {
        format_version: FORMAT_VERSION,
        promptad_version: env!("CARGO_PKG_VERSION").into(),
        libtorch: crate::runtime::REQUIRED_TORCH.into(),
        created_unix: crate::runtime::unix_now(),
        backbone,
        category,
        dataset_root: dataset.location().url().to_string(),
        k: shots.len(),
        seed: job.seed,
        shots: shots.iter().map(|s| s.id.clone()).collect(),
        image_head,
        pixel_head,
        train: job.train.clone(),
        detect: job.detect.clone(),
        version: String::new(),
        init_prompts: init.map(|i| i.record.clone()),
    };
    Ok(Artifact::write(out, manifest, &tensors, overwrite)?)
}
