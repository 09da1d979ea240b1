//! Training one category: shots → memory → image-level and pixel-level prompts → artifact.

use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

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
    };
    Ok(Artifact::write(out, manifest, &tensors, overwrite)?)
}
