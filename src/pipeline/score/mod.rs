//! Scoring a category of a dataset (folders or image shards, any URL) with a trained artifact:
//! per-image scores, anomaly maps and metric statistics as Parquet, one file per table and work
//! unit, in a *run* (the layout and the commit protocol are [`crate::run`]'s).
//!
//! [`score_category`] runs four stages, each on its own thread, one batch apart:
//! 1. **plan** ([`plan_units`]): list the category's work units, publish the run plan, keep this
//!    worker's units that are not committed yet;
//! 2. **read** ([`read`]): fetch and decode the images of those units (in parallel within a
//!    batch);
//! 3. **model** ([`model`], the calling thread): the detector on a batch, then on its device the
//!    quantised maps, their maxima, decisions and histograms; scores, grids and only the map
//!    parts each image needs back to the host;
//! 4. **write** ([`write`]): statistics, maps and score rows into the unit's three files, then
//!    the unit's commit record.
//!
//! Outputs go out batch by batch, so memory does not grow with the archive.

pub mod batch;
mod model;
mod read;
mod write;

use std::time::Instant;

use serde::Serialize;
use tch::{Kind, Tensor};

use crate::artifact::Artifact;
use crate::clip::Clip;
use crate::data::dataset::{Dataset, WorkUnit};
use crate::data::prepare::Compat;
use crate::data::DataError;
use crate::detect::memory::VisualMemory;
use crate::detect::{DetectConfig, DetectError, Detector};
use crate::metrics::stats::ImageStats;
use crate::metrics::{auroc, pixel_aupro, pixel_auroc, Calibration, MetricError, DEFAULT_FPR_LIMIT};
use crate::prompt::train::Head;
use crate::run::{self, PlannedUnit, RunError, RunPlan};
use crate::sink::{MapsMode, SinkError};
use crate::stop::{StopToken, Stopped};
use crate::store::{Location, StoreError};

pub use batch::BatchSize;
use model::{score_batch, Needs};
pub(super) use read::prepare;
use read::{Message, Reader};
use write::{MapLayout, RunContext, ToWriter, Writer};

#[derive(Debug, thiserror::Error)]
pub enum ScoreError {
    #[error("worker index {index} is not below the worker count {count}")]
    BadWorker { index: usize, count: usize },
    #[error(transparent)]
    Run(#[from] RunError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Data(#[from] DataError),
    #[error(transparent)]
    Sink(#[from] SinkError),
    #[error(transparent)]
    Metric(#[from] MetricError),
    #[error(transparent)]
    Model(#[from] DetectError),
    #[error("the model's outputs cannot be read back: {0}")]
    Torch(#[from] tch::TchError),
    /// An image that cannot be used, when undecodable images are not to be recorded and skipped.
    #[error("{source} (pass --skip-bad to record it and go on)")]
    BadImage {
        #[source]
        source: DataError,
    },
    #[error("scoring unit {unit} of {category}")]
    InUnit {
        unit: String,
        category: String,
        #[source]
        source: Box<ScoreError>,
    },
    /// Images were recorded with their error instead of scores; the run is not clean.
    #[error("{count} image(s) could not be read or decoded; they are recorded in the scores table with their error (column error); fix or remove them, then score them again")]
    ImagesSkipped { count: usize },
    #[error("the image reading thread stopped unexpectedly (it panicked)")]
    ReaderPanicked,
    #[error("the output writing thread stopped unexpectedly (it panicked)")]
    WriterPanicked,
    #[error(transparent)]
    Stopped(#[from] Stopped),
}

type Result<T, E = ScoreError> = std::result::Result<T, E>;

#[derive(Debug, Clone)]
pub struct ScoreOptions {
    pub batch_size: usize,
    pub compat: Compat,
    /// Record an undecodable image as a row with its error instead of failing the run.
    pub skip_bad: bool,
    /// Redo committed units (and replace the run's plan and manifest).
    pub overwrite: bool,
    /// Images per work unit of a folder dataset (a shard is always one unit).
    pub rows_per_unit: usize,
    /// This worker's part: `(index, count)`; `(0, 1)` does everything.
    pub shard: (usize, usize),
    /// The run id; by default derived from the dataset URL and the options, so that re-running
    /// the same command continues the same run.
    pub run_id: Option<String>,
    /// The thresholds behind each row's decision (`pred_label`, `anomalous_pixels`); `None`
    /// writes no decisions. It is part of the run's plan, so one run never mixes two.
    pub calibration: Option<Calibration>,
    /// How the maps are stored (`schemas/pixel_maps.json`); part of the run's plan.
    pub maps: MapsMode,
    /// Also read the model threads' CPU clocks around each forward ([`StageSeconds::backbone_cpu`];
    /// `promptad bench` does): a few hundred µs per batch, on the thread that feeds the device.
    pub time_forward_cpu: bool,
}

impl Default for ScoreOptions {
    fn default() -> Self {
        Self {
            batch_size: 16,
            compat: Compat::Rgb,
            skip_bad: false,
            overwrite: false,
            rows_per_unit: 256,
            shard: (0, 1),
            run_id: None,
            calibration: None,
            maps: MapsMode::Compact,
            time_forward_cpu: false,
        }
    }
}

/// Where the time of a scoring call went. Reading, decoding and writing run on other threads,
/// overlapped with the model, so the stages add up to more than the wall time when the overlap
/// works.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct StageSeconds {
    pub wall: f64,
    /// Fetching shard row groups / image files (reader thread).
    pub read: f64,
    /// Decoding and resizing images and masks (reader thread, in parallel over a batch).
    pub decode: f64,
    /// The model: V-V forward, memory, prompts, maps, quantisation (this thread).
    pub model: f64,
    /// The part of `model` in the backbone's forward pass (synchronised on CUDA).
    pub backbone: f64,
    /// CPU seconds of the model threads (this one and libtorch's workers, not the host's named
    /// ones: [`crate::runtime::thread_cpu`]) during the forward passes; 0 unless
    /// [`ScoreOptions::time_forward_cpu`].
    pub backbone_cpu: f64,
    /// Statistics, Parquet encoding, uploads and commits (writer thread, overlapped).
    pub write: f64,
    /// This thread waiting for decoded images (the reader is the bottleneck when it is large).
    pub wait: f64,
    /// This thread waiting for the writer to take a batch (the writer is the bottleneck when it
    /// is large).
    pub write_wait: f64,
}

/// An image recorded with its error instead of scores.
#[derive(Debug, Clone, PartialEq)]
pub struct SkippedImage {
    pub image_id: String,
    pub error: String,
}

/// A labelled image's score, for the metrics of what a call scored.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LabelledScore {
    pub pred_score: f64,
    pub is_defect: bool,
}

/// What one scoring call did, for reports.
pub struct ScoreSummary {
    pub out: Location,
    pub run_id: String,
    /// Rows written by this call (scored and skipped images).
    pub images: usize,
    pub units_scored: usize,
    /// Units of this worker that were already committed and left alone.
    pub units_already_done: usize,
    /// Whether every unit of the run is committed (the run manifest exists).
    pub run_complete: bool,
    pub skipped: Vec<SkippedImage>,
    /// Every labelled image scored by this call.
    pub image_scores: Vec<LabelledScore>,
    /// The pixel statistics of every labelled image scored by this call, summed.
    pub pixel_stats: ImageStats,
    pub seconds: StageSeconds,
}

/// Image AUROC, pixel AUROC and AUPRO (FPR 0.3) of a scored split.
#[derive(Debug, Clone, Copy)]
pub struct SplitMetrics {
    pub image_auroc: f64,
    pub pixel_auroc: f64,
    pub aupro: f64,
}

impl ScoreSummary {
    /// The metrics of what this call scored, from the exact reference functions; undefined (a
    /// split without anomalous or without normal images or pixels) is an error saying which.
    pub fn metrics(&self) -> Result<SplitMetrics, MetricError> {
        let (scores, labels): (Vec<f64>, Vec<bool>) =
            self.image_scores.iter().map(|s| (s.pred_score, s.is_defect)).unzip();
        Ok(SplitMetrics {
            image_auroc: auroc(&scores, &labels)?,
            pixel_auroc: pixel_auroc(&self.pixel_stats)?,
            aupro: pixel_aupro(&self.pixel_stats, DEFAULT_FPR_LIMIT)?,
        })
    }
}

/// The detector of `artifact` on the backbone's device.
pub fn detector<'a>(artifact: &Artifact, clip: &'a Clip, detect: DetectConfig) -> Detector<'a> {
    let on_device = |t: &Tensor| t.to_device(clip.device).to_kind(Kind::Float);
    Detector {
        clip,
        memory: VisualMemory {
            taps: artifact.manifest.detect.taps.clone(),
            banks: artifact.memory_banks().iter().map(on_device).collect(),
        },
        image_prototypes: on_device(artifact.prototypes(Head::Image)),
        pixel_prototypes: on_device(artifact.prototypes(Head::Pixel)),
        config: detect,
    }
}

/// Scores `category` of `dataset` into the run under `out`; see the module documentation.
/// `on_images(n)` reports progress; `stop` is checked between batches (a stopped call abandons
/// the unit in progress, which was never visible, and returns [`ScoreError::Stopped`]).
#[allow(clippy::too_many_arguments)]
pub fn score_category(
    artifact: &Artifact,
    clip: &Clip,
    detect: DetectConfig,
    dataset: &Dataset,
    category: &str,
    out: &Location,
    options: &ScoreOptions,
    stop: &StopToken,
    mut on_images: impl FnMut(usize),
) -> Result<ScoreSummary> {
    let call_started = Instant::now();
    // A config the model's memory cannot serve fails before anything is planned or written.
    let detector = detector(artifact, clip, detect.clone());
    detector.memory.check_taps(&detector.config.taps).map_err(ScoreError::Model)?;
    let (plan, todo, units_already_done) = plan_units(artifact, &detect, dataset, category, out, options)?;
    let run_id = plan.run_id.clone();
    let mut summary = ScoreSummary {
        out: out.clone(),
        run_id: run_id.clone(),
        images: 0,
        units_scored: 0,
        units_already_done,
        run_complete: false,
        skipped: Vec::new(),
        image_scores: Vec::new(),
        pixel_stats: ImageStats::default(),
        seconds: StageSeconds::default(),
    };
    let map_size = detect.map_size as u32;
    let sizes = Sizes { input: clip.visual.image_size() as u32, map: map_size };
    let needs = Needs {
        maps: options.maps,
        pixel_threshold: options.calibration.as_ref().and_then(|c| c.pixel.as_ref()).map(|p| p.threshold_q),
    };
    let mut reader = Reader::spawn(dataset.clone(), todo.clone(), options.batch_size.max(1), sizes, options.compat);
    let context = RunContext {
        out: out.clone(),
        run_id: run_id.clone(),
        category: category.into(),
        model_version: artifact.manifest.version.clone(),
        calibration: options.calibration.clone(),
        layout: MapLayout { size: map_size, sigma: detect.sigma, mode: options.maps },
    };
    // Dropped on an early return, it abandons the unit in progress (never published).
    let mut writer = Writer::spawn(context, todo.iter().map(|u| u.name.clone()).collect());
    let mut reported = 0;
    for unit in &todo {
        let in_unit = |source: ScoreError| match source {
            ScoreError::Stopped(_) => source,
            source => {
                ScoreError::InUnit { unit: unit.name.clone(), category: category.into(), source: Box::new(source) }
            }
        };
        loop {
            stop.check()?;
            let waiting = Instant::now();
            let message = reader.next();
            summary.seconds.wait += waiting.elapsed().as_secs_f64();
            let batch = match message {
                Some(Message::Batch(batch)) => batch,
                Some(Message::UnitEnd) => {
                    writer.send(ToWriter::UnitEnd)?;
                    break;
                }
                Some(Message::Failed(e)) => return Err(in_unit(e.into())),
                None => return Err(in_unit(reader.join().err().unwrap_or(ScoreError::ReaderPanicked))),
            };
            let (mut good, mut skipped) = (Vec::with_capacity(batch.len()), Vec::new());
            for item in batch {
                match item.input {
                    Ok(input) => good.push((item.record, input)),
                    Err(source) if options.skip_bad => {
                        let error = source.to_string();
                        tracing::warn!(image = %item.record.origin, error = %error, "skipped");
                        summary
                            .skipped
                            .push(SkippedImage { image_id: item.record.image_id.clone(), error: error.clone() });
                        skipped.push((item.record, error));
                    }
                    // The error names the image (its file, or its shard and row).
                    Err(source) => return Err(ScoreError::BadImage { source }),
                }
            }
            let modelling = Instant::now();
            let outputs = match good.is_empty() {
                true => None,
                false => Some(
                    score_batch(&detector, &good, sizes.input, needs, options.time_forward_cpu, &mut summary.seconds)
                        .map_err(in_unit)?,
                ),
            };
            summary.seconds.model += modelling.elapsed().as_secs_f64();
            // The writer needs neither the model input nor the encoded image.
            let scored = good
                .into_iter()
                .map(|(mut record, (_, gt))| {
                    (record.image, record.mask) = (Default::default(), None);
                    (record, gt)
                })
                .collect();
            let sending = Instant::now();
            writer.send(ToWriter::Batch { skipped, scored, outputs })?;
            summary.seconds.write_wait += sending.elapsed().as_secs_f64();
            let rows = writer.rows_written();
            reported += rows;
            on_images(rows);
        }
    }
    let finishing = Instant::now();
    let written = writer.finish()?;
    summary.seconds.write_wait += finishing.elapsed().as_secs_f64();
    on_images(written.images - reported);
    summary.images = written.images;
    summary.units_scored = written.units;
    summary.image_scores = written.image_scores;
    summary.seconds.write = written.seconds;
    (summary.seconds.read, summary.seconds.decode) = reader.join()?;
    summary.seconds.wall = call_started.elapsed().as_secs_f64();
    summary.pixel_stats = written.pixel_sum.finish()?;
    summary.run_complete = run::publish_manifest_if_complete(out, &plan, options.overwrite)?;
    Ok(summary)
}

/// Stage 1: the run's plan for `category` (published, or checked against the published one) and
/// the units of this worker still to score (with `overwrite`, all of them, uncommitted first);
/// also how many of this worker's units were already committed.
fn plan_units(
    artifact: &Artifact,
    detect: &DetectConfig,
    dataset: &Dataset,
    category: &str,
    out: &Location,
    options: &ScoreOptions,
) -> Result<(RunPlan, Vec<WorkUnit>, usize)> {
    let (index, count) = options.shard;
    if count == 0 || index >= count {
        return Err(ScoreError::BadWorker { index, count });
    }
    out.check_reachable()?;
    let units = dataset.test_units(category, options.rows_per_unit)?;
    let inputs = serde_json::json!({
        "dataset": dataset.location().url(), "map_size": detect.map_size, "guidance": detect.guidance,
        "compat": options.compat, "rows_per_unit": options.rows_per_unit, "maps": options.maps,
    });
    let run_id = options.run_id.clone().unwrap_or_else(|| run::derived_run_id(&inputs));
    run::check_run_id(&run_id)?;
    let plan = RunPlan {
        run_id: run_id.clone(),
        category: category.into(),
        model_version: artifact.manifest.version.clone(),
        dataset: dataset.location().url().into(),
        map_size: detect.map_size,
        maps: options.maps,
        units: units.iter().map(|u| PlannedUnit { name: u.name.clone(), images: u.images }).collect(),
        calibration: options.calibration.clone(),
    };
    run::publish_plan(out, &plan, options.overwrite)?;
    let mine = &units[run::worker_range(units.len(), options.shard)];
    let mut todo = Vec::new();
    for unit in mine {
        if options.overwrite {
            run::uncommit(out, &run_id, category, &unit.name)?;
        } else if run::is_committed(out, &run_id, category, &unit.name)? {
            continue;
        }
        todo.push(unit.clone());
    }
    tracing::info!(run = %run_id, category, units = units.len(), mine = mine.len(), todo = todo.len(), out = %out, "scoring");
    let already_done = mine.len() - todo.len();
    Ok((plan, todo, already_done))
}

/// The model input size and the map size, in pixels.
#[derive(Debug, Clone, Copy)]
pub(super) struct Sizes {
    pub(super) input: u32,
    pub(super) map: u32,
}
