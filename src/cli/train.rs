//! `promptad train`: one PromptAD model for one category.

use std::process::ExitCode;

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use clap::Args;

use super::backbone::BackboneArgs;
use crate::artifact::default_rel;
use crate::detect::{DetectConfig, Guidance};
use crate::pipeline::train::{train_category_from, InitPrompts, TrainJob};
use crate::prompt::learner::PromptConfig;
use crate::prompt::train::{Head, TrainConfig};
use crate::spec::{Spec, SpecError};
use crate::stop::StopToken;
use crate::store::Location;
use crate::worker::{self, TrainOutcome};

/// Train one PromptAD model for one category from k normal images.
///
/// Trains PromptAD for one category from k normal images: builds the visual memory from the
/// shots, learns the image-level (N=3) and pixel-level (N=1) prompts with the official losses and
/// schedule (100 SGD steps), and writes the model artifact (tensors.safetensors + manifest.json).
///
/// The dataset is a folder in the MVTec AD or VisA 1cls layout (`promptad synth` writes one) or
/// Parquet image shards (`promptad shard`), at a local path, a file:// URL or s3://bucket/prefix
/// (S3 settings from the AWS_* environment: AWS_ENDPOINT, AWS_REGION, credentials or web
/// identity). The artifact can be written to any of these too.
///
/// Worker mode (a pod of the training Job): --spec SPEC --index N trains work item N of a run
/// spec (see `promptad plan SPEC`); the index defaults to JOB_COMPLETION_INDEX. The spec then
/// decides everything else, the flags above are not used. A model that is already there is not
/// trained again (unless --overwrite). SIGTERM stops training between steps, before anything is
/// written. The exit code tells a retryable failure from a permanent one, in both modes alike
/// (see `promptad --help`).
#[derive(Debug, Args)]
#[command(after_long_help = crate::exit::help_text())]
pub struct TrainArgs {
    /// Dataset URL: folders (<DATA>/<category>/train/good/*.png ...) or image shards.
    #[arg(long, env = "PROMPTAD_DATA", value_name = "URL", required_unless_present = "spec")]
    pub data: Option<String>,
    /// Category folder name: an MVTec AD or VisA category (bottle, metal_nut, pcb1, ...) or
    /// your own with --category-name.
    #[arg(long, env = "PROMPTAD_CATEGORY", required_unless_present = "spec")]
    pub category: Option<String>,
    /// Object name used in the prompts, for a category that is not built in (e.g. "rubber gasket").
    #[arg(long, value_name = "TEXT")]
    pub category_name: Option<String>,
    /// Manual anomaly states for your own category, comma-separated, each with {} for the
    /// object: "{} with tear,cracked {}". Without them only the 8 generic states are used.
    #[arg(long, value_delimiter = ',', value_name = "STATES")]
    pub anomaly_suffixes: Option<Vec<String>>,
    /// Number of normal shots.
    #[arg(short, long, default_value_t = 1)]
    pub k: usize,
    /// Seed of the shot draw and of the prompt initialisation (official default: 111).
    #[arg(long, default_value_t = 111)]
    pub seed: u64,
    /// Use these train/good images as the shots (file names or stems, comma-separated) instead
    /// of a seeded draw.
    #[arg(long, value_delimiter = ',', value_name = "NAMES")]
    pub shots: Option<Vec<String>>,
    /// Artifact URL [default: models/<data folder name>/<category>/k<k>/seed<seed>].
    #[arg(long, short, value_name = "URL")]
    pub out: Option<String>,
    /// Replace an existing artifact.
    #[arg(long)]
    pub overwrite: bool,
    #[command(flatten)]
    pub backbone: BackboneArgs,
    /// SGD steps (one per epoch in the official code).
    #[arg(long, default_value_t = 100)]
    pub steps: usize,
    /// Ablation: drop the manual anomaly prompts.
    #[arg(long)]
    pub no_manual_prompts: bool,
    /// Ablation: drop the learnable anomaly prompts.
    #[arg(long)]
    pub no_learnable_prompts: bool,
    /// Ablation: train without the EAM loss.
    #[arg(long)]
    pub no_eam: bool,
    /// Evidence used when scoring (stored in the artifact; `score` can override it).
    #[arg(long, value_enum, default_value_t = Guidance::Fused)]
    pub guidance: Guidance,
    /// Vision blocks (0-based) of the visual memory.
    #[arg(long, value_delimiter = ',', default_value = "3,8")]
    pub taps: Vec<usize>,
    /// Start the prompts from these context vectors instead of the seeded N(0, 0.02²) draw: a
    /// safetensors file with image.normal_ctx [3, 4, W], image.anomaly_ctx [4, 1, W],
    /// pixel.normal_ctx [1, 4, W] and pixel.anomaly_ctx [4, 1, W] (W = text width, 640 for
    /// ViT-B-16-plus-240; the shapes follow the prompt configuration), or a model artifact URL
    /// (its learned contexts). The new manifest records the source's SHA-256.
    #[arg(long, value_name = "FILE|MODEL_URL")]
    pub init_prompts: Option<String>,
    /// Worker mode: the run spec (TOML) whose training work item --index to run.
    #[arg(long, env = "PROMPTAD_SPEC", value_name = "SPEC",
          conflicts_with_all = ["category_name", "anomaly_suffixes", "k", "seed", "shots", "out", "random_init", "steps", "no_manual_prompts", "no_learnable_prompts", "no_eam", "guidance", "taps", "init_prompts"])]
    pub spec: Option<PathBuf>,
    /// Worker mode: the work item [default: JOB_COMPLETION_INDEX, set in every pod of an Indexed Job].
    #[arg(long, env = "JOB_COMPLETION_INDEX", value_name = "N")]
    pub index: Option<usize>,
}

pub fn run(args: TrainArgs, stop: &StopToken) -> Result<ExitCode> {
    if let Some(spec) = &args.spec {
        worker_mode(spec, args.index, args.overwrite, stop)?;
        return Ok(ExitCode::SUCCESS);
    }
    let (Some(data), Some(category)) = (args.data.clone(), args.category.clone()) else {
        bail!("--data and --category are required (or --spec SPEC --index N for a work item of a run spec)");
    };
    flag_mode(args, data, category, stop)
}

/// `--spec SPEC --index N`: one work item.
fn worker_mode(spec: &Path, index: Option<usize>, overwrite: bool, stop: &StopToken) -> Result<()> {
    {
        let index = index.ok_or_else(|| SpecError::NoIndex { path: spec.to_path_buf() })?;
        let spec = Spec::load(spec)?;
        let (item, outcome) = worker::run_train(&spec, index, overwrite, stop, |head, step, loss| {
            if step % 20 == 0 {
                tracing::debug!(head = ?head, step, loss, "training");
            }
        })?;
        match outcome {
            TrainOutcome::Trained(m) => println!(
                "index {index}: {} k={} seed={}: model {} written to {}",
                item.category, item.k, item.seed, m.version, item.artifact
            ),
            TrainOutcome::AlreadyTrained(m) => println!(
                "index {index}: {} k={} seed={}: model {} already at {}; nothing to do",
                item.category, item.k, item.seed, m.version, item.artifact
            ),
        }
        Ok(())
    }
}

fn flag_mode(args: TrainArgs, data: String, category: String, stop: &StopToken) -> Result<ExitCode> {
    let init = args.init_prompts.as_deref().map(InitPrompts::load).transpose()?;
    let (clip, backbone) = args.backbone.load(true)?;
    let prompts = |base: PromptConfig| PromptConfig {
        manual_anomaly: !args.no_manual_prompts,
        learnable_anomaly: !args.no_learnable_prompts,
        ..base
    };
    let job = TrainJob {
        dataset: data.clone(),
        category: category.clone(),
        category_name: args.category_name.clone(),
        anomaly_suffixes: args.anomaly_suffixes.clone(),
        k: args.shots.as_ref().map_or(args.k, Vec::len),
        seed: args.seed,
        shots: args.shots.clone(),
        image_prompts: prompts(PromptConfig::image_level()),
        pixel_prompts: prompts(PromptConfig::pixel_level()),
        train: TrainConfig { steps: args.steps, eam: !args.no_eam, ..TrainConfig::default() },
        detect: DetectConfig { guidance: args.guidance, taps: args.taps.clone(), ..DetectConfig::default() },
    };
    let dataset = data.trim_end_matches('/').rsplit('/').next().filter(|n| !n.is_empty()).unwrap_or("data").to_string();
    let out = Location::parse(
        &args.out.clone().unwrap_or_else(|| format!("models/{}", default_rel(&dataset, &category, job.k, args.seed))),
    )?;
    let bar = super::progress_bar(2 * job.train.steps as u64, &format!("training {category}"));
    let manifest =
        train_category_from(&job, &clip, backbone, &out, args.overwrite, stop, init.as_ref(), |head, step, loss| {
            bar.inc(1);
            if step % 20 == 0 || step + 1 == job.train.steps {
                tracing::debug!(head = ?head, step, loss, "training");
            }
            if head == Head::Pixel && step == 0 {
                bar.set_message(format!("training {category} (pixel head)"));
            }
        })?;
    bar.finish_and_clear();
    println!("{category}: model {} written to {} (shots: {})", manifest.version, out, manifest.shots.join(", "));
    Ok(ExitCode::SUCCESS)
}
