//! `promptad score`: a dataset scored with a trained model.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::Args;

use super::backbone::checked_device;
use crate::artifact::Artifact;
use crate::clip::Precision;
use crate::data::prepare::Compat;
use crate::detect::Guidance;
use crate::pipeline::score::{score_category, ScoreOptions};

/// Score a dataset with a trained model: scores, maps and metric statistics as Parquet.
///
/// Scores the test split of a category with a model artifact and writes three Hive-partitioned
/// tables under OUT: scores/category=<c>/part-00000.parquet (one row per image: pred_score,
/// text_score, visual_max, max_pixel_score, gt_label, ...), maps/... (the anomaly map at 400×400
/// as u16 over [0, 1]) and metric_stats/... (per-image sufficient statistics for pixel AUROC and
/// AUPRO).
/// Prints image AUROC, pixel AUROC and AUPRO when the split has both labels.
#[derive(Debug, Args)]
pub struct ScoreArgs {
    /// Model artifact directory (written by `promptad train`).
    #[arg(long, env = "PROMPTAD_MODEL", value_name = "DIR")]
    pub model: PathBuf,
    /// Dataset root in the MVTec AD / VisA layout.
    #[arg(long, env = "PROMPTAD_DATA", value_name = "DIR")]
    pub data: PathBuf,
    /// Category to score [default: the model's].
    #[arg(long)]
    pub category: Option<String>,
    /// Output directory.
    #[arg(long, short, value_name = "DIR")]
    pub out: PathBuf,
    /// The backbone checkpoint, if it moved since training (its SHA-256 must match the model's).
    #[arg(long, env = "PROMPTAD_WEIGHTS", value_name = "FILE")]
    pub weights: Option<PathBuf>,
    /// cpu, cuda, cuda:N, or auto.
    #[arg(long, default_value = "auto", env = "PROMPTAD_DEVICE")]
    pub device: String,
    /// Weight and activation precision; fp32 is the reference.
    #[arg(long, default_value = "fp32", env = "PROMPTAD_PRECISION")]
    pub precision: Precision,
    /// Images per forward pass.
    #[arg(long, default_value_t = 16)]
    pub batch_size: usize,
    /// rgb, or official: feed test images in BGR as the official test loop does (to reproduce
    /// its numbers).
    #[arg(long, value_enum, default_value_t = Compat::Rgb)]
    pub compat: Compat,
    /// Override the evidence the model was trained to use.
    #[arg(long, value_enum)]
    pub guidance: Option<Guidance>,
    /// Record images that cannot be read or decoded as rows with an error (and null scores)
    /// instead of stopping; the run still exits non-zero.
    #[arg(long)]
    pub skip_bad: bool,
    /// Replace existing outputs.
    #[arg(long)]
    pub overwrite: bool,
}

pub fn run(args: ScoreArgs) -> Result<ExitCode> {
    let device = checked_device(&args.device)?;
    let artifact = Artifact::read(&args.model)?;
    let clip = artifact.manifest.backbone.load(args.weights.as_deref(), device, args.precision)?;
    let category = args.category.clone().unwrap_or_else(|| artifact.manifest.category.key.clone());
    let mut detect = artifact.manifest.detect.clone();
    if let Some(guidance) = args.guidance {
        detect.guidance = guidance;
    }
    let bar = super::progress_bar(0, &format!("scoring {category}"));
    let options = ScoreOptions { batch_size: args.batch_size, compat: args.compat, skip_bad: args.skip_bad, overwrite: args.overwrite };
    let summary = score_category(&artifact, &clip, detect, &args.data, &category, &args.out, &options, |n| bar.inc(n as u64))?;
    bar.finish_and_clear();
    println!("{category}: {} images scored into {}", summary.images, summary.out_dir.display());
    match summary.metrics() {
        Ok(m) => println!("image AUROC {:.4}  pixel AUROC {:.4}  AUPRO {:.4}", m.image_auroc, m.pixel_auroc, m.aupro),
        Err(e) => println!("metrics not computed: {e}"),
    }
    if !summary.skipped.is_empty() {
        eprintln!("{} image(s) skipped (recorded in scores.parquet with their error):", summary.skipped.len());
        for (id, error) in &summary.skipped {
            eprintln!("  {id}: {error}");
        }
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}
