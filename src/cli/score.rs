//! `promptad score`: a dataset scored with a trained model.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Result};
use clap::Args;

use super::backbone::DeviceArgs;
use crate::artifact::Artifact;
use crate::data::dataset::Dataset;
use crate::data::prepare::Compat;
use crate::detect::Guidance;
use crate::pipeline::score::{score_category, BatchSize, ScoreError, ScoreOptions, ScoreSummary};
use crate::sink::MapsMode;
use crate::spec::{Spec, SpecError};
use crate::stop::StopToken;
use crate::store::Location;
use crate::worker;

/// Score a dataset with a trained model: scores, maps and metric statistics as Parquet.
///
/// Scores the images of a category (the test split of a folder dataset; every split but train
/// of image shards) with a model artifact and writes a run of three Hive-partitioned tables
/// under OUT: scores/run=<id>/category=<c>/part-<unit>.parquet (one row per image: pred_score,
/// text_score, visual_max, max_pixel_score, gt_label, ...), maps/... (by default the 15×15 grid
/// the 400×400 anomaly map is rebuilt from, about 1 KB per image; --maps full also stores the map
/// as u16 over [0, 1], about 257 KB) and metric_stats/... (per-image sufficient statistics for pixel AUROC and
/// AUPRO). Work is cut into units (one per shard, or --rows-per-unit folder images); each unit
/// is committed by a record under OUT/_runs/run=<id>/ after its files, and the run manifest is
/// written once every unit is committed. Re-running the same command skips committed units and
/// redoes the rest; --overwrite redoes everything.
///
/// Every location is a URL: a local path, file:///path or s3://bucket/prefix (S3 settings from
/// the AWS_* environment). For Kubernetes Indexed Jobs, --index/--shard-count give each
/// worker a contiguous range of the units.
///
/// When the model has a calibration (`promptad calibrate`), every row also carries the decision:
/// pred_label (pred_score >= the image threshold), anomalous_pixels (map pixels at or above the
/// pixel threshold) and calibration_version; --no-calibration leaves them null.
///
/// Prints image AUROC, pixel AUROC and AUPRO of what it scored when the split has both labels.
///
/// Worker mode (a pod of the scoring Job or the nightly CronJob): --spec SPEC --index N scores
/// work item N of a run spec (see `promptad plan SPEC`): one worker's range of the units of one
/// (archive, category, model); the index defaults to JOB_COMPLETION_INDEX, --run replaces the
/// spec's score.run_id. In both modes SIGTERM stops scoring between batches (the unit in
/// progress is abandoned, nothing partial is visible), and the exit code tells a retryable
/// failure from a permanent one (see below).
#[derive(Debug, Args)]
#[command(after_long_help = crate::exit::help_text())]
pub struct ScoreArgs {
    /// Model artifact URL (written by `promptad train`).
    #[arg(long, env = "PROMPTAD_MODEL", value_name = "URL", required_unless_present = "spec")]
    pub model: Option<String>,
    /// Dataset URL: folders in the MVTec AD / VisA layout, or image shards (`promptad shard`).
    #[arg(long, env = "PROMPTAD_DATA", value_name = "URL", required_unless_present = "spec")]
    pub data: Option<String>,
    /// Category to score [default: the model's].
    #[arg(long)]
    pub category: Option<String>,
    /// Output URL (the root of the scores, maps and metric_stats tables).
    #[arg(long, short, value_name = "URL", required_unless_present = "spec")]
    pub out: Option<String>,
    /// Run id [default: a digest of the data URL and the scoring options, so the same command
    /// continues the same run; every category scored that way joins it]. Nightly re-scoring
    /// passes e.g. the date.
    #[arg(long, env = "PROMPTAD_RUN_ID", alias = "run-id", value_name = "ID")]
    pub run: Option<String>,
    /// The work of this process: with --spec, the work item of the run spec; without, this
    /// worker's index among --shard-count workers (0-based) [default: JOB_COMPLETION_INDEX, set in
    /// every pod of an Indexed Job; else 0 without --spec].
    #[arg(long, env = "JOB_COMPLETION_INDEX", alias = "shard-index", value_name = "N")]
    pub index: Option<usize>,
    /// Number of workers the units are split over.
    #[arg(long, env = "PROMPTAD_SHARD_COUNT", default_value_t = 1)]
    pub shard_count: usize,
    /// Images per work unit of a folder dataset (a shard is always one unit).
    #[arg(long, default_value_t = 256)]
    pub rows_per_unit: usize,
    /// The backbone checkpoint, if it moved since training (its SHA-256 must match the model's).
    #[arg(long, env = "PROMPTAD_WEIGHTS", value_name = "FILE")]
    pub weights: Option<PathBuf>,
    #[command(flatten)]
    pub runtime: DeviceArgs,
    /// Images per forward pass, or auto: the largest power of two whose estimated memory fits in
    /// half of the device's free memory (the container's limit on a CPU), at most 32 on a CPU
    /// and 256 on a GPU; the choice is logged.
    #[arg(long, default_value_t = BatchSize::default(), value_name = "N|auto")]
    pub batch_size: BatchSize,
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
    /// Score every unit again, replacing committed outputs of the run.
    #[arg(long)]
    pub overwrite: bool,
    /// Write no decisions even if the model has a calibration (`promptad calibrate`). By
    /// default each row gets pred_label and anomalous_pixels from the model's calibration.json
    /// when there is one (they are null otherwise).
    #[arg(long)]
    pub no_calibration: bool,
    /// How the maps table stores each image's anomaly map: compact (the patch grid it is made
    /// of; `rebuild_map(grid, grid_side, map_size, sigma)` in `promptad sql` and `promptad
    /// report` rebuild the map, to the same u16 values when scored on the CPU), full (the grid
    /// and the 400×400 u16 map) or none (no map rows; scores and statistics only).
    #[arg(long, value_enum, default_value_t = MapsMode::Compact)]
    pub maps: MapsMode,
    /// Worker mode: the run spec (TOML) whose scoring work item --index to run.
    #[arg(long, env = "PROMPTAD_SPEC", value_name = "SPEC",
          conflicts_with_all = ["category", "shard_count", "rows_per_unit", "batch_size", "compat", "guidance", "skip_bad", "no_calibration", "maps"])]
    pub spec: Option<PathBuf>,
}

pub fn run(args: ScoreArgs, stop: &StopToken) -> Result<ExitCode> {
    if let Some(spec) = &args.spec {
        worker_mode(spec, args.index, args.run.as_deref(), args.overwrite, stop)?;
        return Ok(ExitCode::SUCCESS);
    }
    let (Some(model), Some(data), Some(out)) = (args.model.clone(), args.data.clone(), args.out.clone()) else {
        bail!("--model, --data and --out are required (or --spec SPEC --index N for a work item of a run spec)");
    };
    let device = crate::runtime::checked_device(&args.runtime.device)?;
    let artifact = Artifact::read(&Location::parse(&model)?)?;
    let dataset = Dataset::open(&data)?;
    let out = Location::parse(&out)?;
    let clip = artifact.manifest.backbone.load(args.weights.as_deref(), device, args.runtime.precision)?;
    let category = args.category.clone().unwrap_or_else(|| artifact.manifest.category.key.clone());
    let mut detect = artifact.manifest.detect.clone();
    if let Some(guidance) = args.guidance {
        detect.guidance = guidance;
    }
    let bar = super::progress_bar(0, &format!("scoring {category}"));
    let options = ScoreOptions {
        batch_size: args.batch_size.resolve(&artifact, &clip, detect.map_size as u32)?,
        compat: args.compat,
        skip_bad: args.skip_bad,
        overwrite: args.overwrite,
        rows_per_unit: args.rows_per_unit,
        shard: (args.index.unwrap_or(0), args.shard_count),
        run_id: args.run.clone(),
        calibration: if args.no_calibration {
            None
        } else {
            artifact.calibration.as_ref().map(|c| c.calibration.clone())
        },
        maps: args.maps,
        time_forward_cpu: false,
    };
    let summary =
        score_category(&artifact, &clip, detect, &dataset, &category, &out, &options, stop, |n| bar.inc(n as u64))?;
    bar.finish_and_clear();
    report(&category, &summary)?;
    Ok(ExitCode::SUCCESS)
}

/// `--spec SPEC --index N`: one work item.
fn worker_mode(
    spec: &Path,
    index: Option<usize>,
    run_id: Option<&str>,
    overwrite: bool,
    stop: &StopToken,
) -> Result<()> {
    let index = index.ok_or_else(|| SpecError::NoIndex { path: spec.to_path_buf() })?;
    let spec = Spec::load(spec)?;
    let (item, summary) = worker::run_score(&spec, index, run_id, overwrite, stop, |_| {})?;
    print!("index {index}: archive {} worker {}/{}: ", item.archive, item.worker, item.workers);
    Ok(report(&item.category, &summary)?)
}

/// Prints what a scoring call did; skipped images make it an error (the run is not clean).
fn report(category: &str, summary: &ScoreSummary) -> Result<(), ScoreError> {
    println!(
        "{category}: run {}: {} images in {} units scored, {} units already committed; run {} ({})",
        summary.run_id,
        summary.images,
        summary.units_scored,
        summary.units_already_done,
        if summary.run_complete { "complete" } else { "incomplete: other workers or a re-run will finish it" },
        summary.out
    );
    let t = summary.seconds;
    let peak = crate::runtime::peak_rss_mib();
    tracing::info!(run = %summary.run_id, category, images = summary.images, wall_s = t.wall, read_s = t.read, decode_s = t.decode,
        model_s = t.model, backbone_s = t.backbone, write_s = t.write, wait_s = t.wait, images_per_s = summary.images as f64 / t.wall, peak_rss_mib = peak, "scoring finished");
    if summary.units_scored > 0 {
        println!(
            "{:.2} images/s; seconds: wall {:.1}, read {:.1} + decode {:.1} (reader thread), model {:.1} (backbone forward {:.1}), write {:.1}, waiting for images {:.1}; peak RSS {peak:.0} MiB",
            summary.images as f64 / t.wall, t.wall, t.read, t.decode, t.model, t.backbone, t.write, t.wait
        );
        match summary.metrics() {
            Ok(m) => println!(
                "this worker's images: image AUROC {:.4}  pixel AUROC {:.4}  AUPRO {:.4}",
                m.image_auroc, m.pixel_auroc, m.aupro
            ),
            Err(e) => println!("metrics not computed: {e}"),
        }
    }
    if !summary.skipped.is_empty() {
        eprintln!("{} image(s) skipped (recorded in the scores table with their error):", summary.skipped.len());
        for skipped in &summary.skipped {
            eprintln!("  {}: {}", skipped.image_id, skipped.error);
        }
        return Err(ScoreError::ImagesSkipped { count: summary.skipped.len() });
    }
    Ok(())
}
