//! Scoring a category of a dataset (folders or image shards, any URL) with a trained artifact:
//! per-image scores, anomaly maps and metric statistics as Parquet, one file per table and work
//! unit, in a *run* (the layout and the commit protocol are [`crate::run`]'s).
//!
//! [`score_category`] runs four stages:
//! 1. **plan** ([`plan_units`]): list the category's work units, publish the run plan, keep this
//!    worker's units that are not committed yet;
//! 2. **read** ([`Reader`]): a thread fetches and decodes the images of those units (in parallel
//!    within a batch) while the model works on the previous batch;
//! 3. **model** ([`score_batch`]): the detector on a batch, then on its device the quantised
//!    maps, their maxima, decisions and histograms ([`crate::detect::stored`]); scores, grids
//!    and only the map parts each image needs back to the host;
//! 4. **write** ([`UnitWriter`]): statistics, maps and score rows into the unit's three files,
//!    then the unit's commit record.
//!
//! Outputs go out batch by batch, so memory does not grow with the archive.

use std::sync::mpsc;
use std::time::Instant;

use rayon::prelude::*;
use serde::Serialize;
use tch::{Device, Kind, Tensor};

use crate::artifact::Artifact;
use crate::clip::Clip;
use crate::data::dataset::{Dataset, WorkUnit};
use crate::data::prepare::{mask, model_input, Compat, Role};
use crate::data::shard::ImageRecord;
use crate::data::DataError;
use crate::detect::memory::VisualMemory;
use crate::detect::stored::{count_at_least, histograms, host_values, quantize_maps, SparseHistogram};
use crate::detect::{DetectConfig, DetectError, Detector};
use crate::metrics::stats::{ImageStats, StatsSum};
use crate::metrics::{auroc, pixel_aupro, pixel_auroc, Calibration, MetricError, DEFAULT_FPR_LIMIT};
use crate::prompt::train::Head;
use crate::run::{self, PlannedUnit, RunError, RunPlan, Table, UnitRecord};
use crate::sink::{
    maps_batch, maps_schema, scores_batch, scores_schema, stats_batch, stats_schema, AtomicParquetWriter, MapRows,
    MapsMode, RowKeys, ScoreRow, SinkError,
};
use crate::stop::{StopToken, Stopped};
use crate::store::{Location, StoreError};

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
        }
    }
}

/// Where the time of a scoring call went. Reading and decoding run on other threads, overlapped
/// with the model, so the stages add up to more than the wall time when the overlap works.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct StageSeconds {
    pub wall: f64,
    /// Fetching shard row groups / image files (reader thread).
    pub read: f64,
    /// Decoding and resizing images and masks (reader thread, in parallel over a batch).
    pub decode: f64,
    /// The model: V-V forward, memory, prompts, maps (this thread).
    pub model: f64,
    /// The part of `model` in the backbone's forward pass (synchronised on CUDA).
    pub backbone: f64,
    /// Statistics, Parquet encoding, uploads and commits (this thread; quantising is in `model`).
    pub write: f64,
    /// This thread waiting for decoded images (the reader is the bottleneck when it is large).
    pub wait: f64,
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
    let mut pixel_sum = StatsSum::new();
    let map_size = detect.map_size as u32;
    let sizes = Sizes { input: clip.visual.image_size() as u32, map: map_size };
    let layout = MapLayout { size: map_size, sigma: detect.sigma, mode: options.maps };
    let version = artifact.manifest.version.clone();
    let calibration = options.calibration.as_ref();
    let needs = Needs {
        maps: options.maps,
        pixel_threshold: calibration.and_then(|c| c.pixel.as_ref()).map(|p| p.threshold_q),
    };
    let mut reader = Reader::spawn(dataset.clone(), todo.clone(), options.batch_size.max(1), sizes, options.compat);

    for unit in &todo {
        let in_unit = |source: ScoreError| match source {
            ScoreError::Stopped(_) => source,
            source => {
                ScoreError::InUnit { unit: unit.name.clone(), category: category.into(), source: Box::new(source) }
            }
        };
        let started = Instant::now();
        let mut writer = UnitWriter::create(out, &run_id, category, &unit.name, layout).map_err(in_unit)?;
        loop {
            stop.check()?;
            let waiting = Instant::now();
            let message = reader.next();
            summary.seconds.wait += waiting.elapsed().as_secs_f64();
            let batch = match message {
                Some(Message::Batch(batch)) => batch,
                Some(Message::UnitEnd) => break,
                Some(Message::Failed(e)) => return Err(in_unit(e.into())),
                None => return Err(in_unit(reader.join().err().unwrap_or(ScoreError::ReaderPanicked))),
            };
            let writing = Instant::now();
            let mut good = Vec::with_capacity(batch.len());
            for item in batch {
                match item.input {
                    Ok(input) => good.push((item.record, input)),
                    Err(source) if options.skip_bad => {
                        let error = source.to_string();
                        tracing::warn!(image = %item.record.origin, error = %error, "skipped");
                        summary
                            .skipped
                            .push(SkippedImage { image_id: item.record.image_id.clone(), error: error.clone() });
                        writer.skip(&run_id, &item.record, &version, calibration, error);
                    }
                    // The error names the image (its file, or its shard and row).
                    Err(source) => return Err(ScoreError::BadImage { source }),
                }
            }
            if !good.is_empty() {
                let modelling = Instant::now();
                let scored =
                    score_batch(&detector, &good, sizes.input, needs, &mut summary.seconds).map_err(in_unit)?;
                summary.seconds.model += modelling.elapsed().as_secs_f64();
                summary.seconds.write -= modelling.elapsed().as_secs_f64();
                let labelled = Labelled { scores: &mut summary.image_scores, pixel_sum: &mut pixel_sum };
                writer.add(&run_id, &good, scored, &version, calibration, labelled).map_err(in_unit)?;
            }
            let rows = writer.flush().map_err(in_unit)?;
            summary.seconds.write += writing.elapsed().as_secs_f64();
            on_images(rows);
        }
        let writing = Instant::now();
        let record = writer.commit(out, &run_id, started).map_err(in_unit)?;
        summary.seconds.write += writing.elapsed().as_secs_f64();
        tracing::info!(run = %run_id, category, unit = %unit.name, images = record.images, skipped = record.skipped,
            seconds = record.seconds, "unit committed");
        summary.images += record.images;
        summary.units_scored += 1;
    }
    (summary.seconds.read, summary.seconds.decode) = reader.join()?;
    summary.seconds.wall = call_started.elapsed().as_secs_f64();
    summary.pixel_stats = pixel_sum.finish()?;
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

/// A decoded image with its mask at the map size (`None`: unlabelled), or why it cannot be used.
pub(super) struct Prepared {
    record: ImageRecord,
    pub(super) input: Result<(Vec<f32>, Option<Vec<bool>>), DataError>,
}

/// Decodes and preprocesses one image and its mask (the reader's work per image).
pub(super) fn prepare(record: ImageRecord, sizes: Sizes, compat: Compat) -> Prepared {
    let input = (|| {
        let input = model_input(&record.image, &record.origin, sizes.input, compat, Role::Test)?;
        let gt = match (&record.mask, record.gt_label) {
            (Some(bytes), _) => Some(mask(bytes, &format!("{} (mask)", record.origin), sizes.map)?),
            (None, Some(1)) => {
                return Err(DataError::MissingMask {
                    image: record.origin.clone(),
                    expected: "a mask in the dataset (a defect image needs one)".into(),
                })
            }
            (None, Some(_)) => Some(vec![false; (sizes.map * sizes.map) as usize]),
            (None, None) => None,
        };
        Ok((input, gt))
    })();
    Prepared { record, input }
}

enum Message {
    Batch(Vec<Prepared>),
    UnitEnd,
    Failed(DataError),
}

/// Stage 2: a thread that reads and decodes the units' images, one batch ahead of the model.
struct Reader {
    messages: mpsc::IntoIter<Message>,
    /// Seconds spent reading and decoding.
    handle: Option<std::thread::JoinHandle<(f64, f64)>>,
}

impl Reader {
    fn spawn(dataset: Dataset, units: Vec<WorkUnit>, batch_size: usize, sizes: Sizes, compat: Compat) -> Self {
        let (sender, receiver) = mpsc::sync_channel::<Message>(1);
        let handle = std::thread::spawn(move || -> (f64, f64) {
            let (mut read, mut decode) = (0.0, 0.0);
            for unit in &units {
                let started = Instant::now();
                let mut batches = match dataset.read_unit(unit, batch_size) {
                    Ok(b) => b,
                    Err(e) => {
                        let _ = sender.send(Message::Failed(e));
                        return (read, decode);
                    }
                };
                read += started.elapsed().as_secs_f64();
                loop {
                    let started = Instant::now();
                    let Some(batch) = batches.next() else { break };
                    read += started.elapsed().as_secs_f64();
                    let started = Instant::now();
                    let message = match batch {
                        Ok(records) => {
                            Message::Batch(records.into_par_iter().map(|r| prepare(r, sizes, compat)).collect())
                        }
                        Err(e) => Message::Failed(e),
                    };
                    decode += started.elapsed().as_secs_f64();
                    let failed = matches!(message, Message::Failed(_));
                    if sender.send(message).is_err() || failed {
                        return (read, decode);
                    }
                }
                if sender.send(Message::UnitEnd).is_err() {
                    return (read, decode);
                }
            }
            (read, decode)
        });
        Self { messages: receiver.into_iter(), handle: Some(handle) }
    }

    fn next(&mut self) -> Option<Message> {
        self.messages.next()
    }

    /// Waits for the thread; its `(read, decode)` seconds.
    fn join(&mut self) -> Result<(f64, f64)> {
        match self.handle.take() {
            Some(handle) => handle.join().map_err(|_| ScoreError::ReaderPanicked),
            None => Ok((0.0, 0.0)),
        }
    }
}

/// What of an image's stored map the host needs ([`crate::detect::stored`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MapNeed {
    /// Nothing: an unlabelled image of a compact or none run.
    Nothing,
    /// Its histogram, which is its whole statistics: a labelled image without defect pixels.
    Histogram,
    /// Every stored value: a full run, or an image with defect pixels (AUPRO's regions are
    /// connected components of the mask, per pixel).
    Values,
}

impl MapNeed {
    fn of(mode: MapsMode, record: &ImageRecord, gt: Option<&[bool]>) -> MapNeed {
        let labelled = record.gt_label.is_some() && gt.is_some();
        if mode == MapsMode::Full || (labelled && gt.is_some_and(|m| m.iter().any(|&d| d))) {
            MapNeed::Values
        } else if labelled {
            MapNeed::Histogram
        } else {
            MapNeed::Nothing
        }
    }
}

/// What of an image's stored map came back from the device, by its [`MapNeed`].
enum StoredPart {
    Nothing,
    Histogram(SparseHistogram),
    Values(Vec<u16>),
}

/// The model's outputs for a batch, on the host.
struct ScoredBatch {
    image_score: Vec<f64>,
    text_score: Vec<f64>,
    visual_max: Vec<f64>,
    /// The maximum of each fp32 map.
    max_pixel: Vec<f64>,
    /// Per image, its pixels at or above the calibration's pixel threshold.
    anomalous_pixels: Option<Vec<i64>>,
    stored: Vec<StoredPart>,
    /// `[g, g]` per image, fp32: the evidence the maps are made of (empty for `--maps none`).
    grids: Vec<Vec<f32>>,
    grid_side: i32,
}

/// What the model stage brings back to the host for a batch.
#[derive(Debug, Clone, Copy)]
struct Needs {
    maps: MapsMode,
    pixel_threshold: Option<u16>,
}

/// Stage 3: the detector on a batch of decoded images, and the stored maps' parts each image
/// needs ([`MapNeed`]), computed on the device; the backbone's share of the time is added to
/// `seconds`.
fn score_batch(
    detector: &Detector,
    good: &[(ImageRecord, (Vec<f32>, Option<Vec<bool>>))],
    size: u32,
    needs: Needs,
    seconds: &mut StageSeconds,
) -> Result<ScoredBatch> {
    let flat: Vec<f32> = good.iter().flat_map(|(_, (input, _))| input.iter().copied()).collect();
    let batch = Tensor::from_slice(&flat).view([good.len() as i64, 3, size as i64, size as i64]);
    let started = Instant::now();
    let features = detector.features(&batch)?;
    if let Device::Cuda(index) = detector.clip.device {
        tch::Cuda::synchronize(index as i64);
    }
    seconds.backbone += started.elapsed().as_secs_f64();
    tch::no_grad(|| {
        let detection = detector.detect_features(&features.global, &features.patch_tokens, &features.taps);
        let to_host = |t: &Tensor| t.to_device(Device::Cpu);
        let to_vec = |t: &Tensor| -> Result<Vec<f64>> { Ok(Vec::try_from(to_host(t).to_kind(Kind::Double))?) };
        let wanted: Vec<MapNeed> =
            good.iter().map(|(record, (_, gt))| MapNeed::of(needs.maps, record, gt.as_deref())).collect();
        // The nightly case (unlabelled, compact, no calibration) quantises nothing.
        let quantized = (needs.pixel_threshold.is_some() || wanted.iter().any(|&n| n != MapNeed::Nothing))
            .then(|| quantize_maps(&detection.map));
        let pick = |need: MapNeed| -> Option<(Vec<usize>, Tensor)> {
            let quantized = quantized.as_ref()?;
            let images: Vec<usize> = (0..wanted.len()).filter(|&i| wanted[i] == need).collect();
            let index: Vec<i64> = images.iter().map(|&i| i as i64).collect();
            match images.len() {
                0 => None,
                n if n == wanted.len() => Some((images, quantized.shallow_clone())),
                _ => {
                    Some((images, quantized.index_select(0, &Tensor::from_slice(&index).to_device(quantized.device()))))
                }
            }
        };
        let mut stored: Vec<StoredPart> = wanted.iter().map(|_| StoredPart::Nothing).collect();
        if let Some((images, selected)) = pick(MapNeed::Values) {
            for (&i, values) in images.iter().zip(host_values(&selected)?) {
                stored[i] = StoredPart::Values(values);
            }
        }
        if let Some((images, selected)) = pick(MapNeed::Histogram) {
            for (&i, histogram) in images.iter().zip(histograms(&selected)?) {
                stored[i] = StoredPart::Histogram(histogram);
            }
        }
        let grid_side = detection.grid_map.size()[1] as i32;
        let grids = if needs.maps == MapsMode::None {
            Vec::new()
        } else {
            let grids = to_host(&detection.grid_map.to_kind(Kind::Float));
            (0..good.len() as i64).map(|i| Vec::try_from(grids.get(i).flatten(0, -1))).collect::<Result<_, _>>()?
        };
        Ok(ScoredBatch {
            image_score: to_vec(&detection.image_score)?,
            text_score: to_vec(&detection.text_score)?,
            visual_max: to_vec(&detection.visual_max)?,
            max_pixel: to_vec(&detection.map.amax([1, 2], false))?,
            anomalous_pixels: match (needs.pixel_threshold, &quantized) {
                (Some(t), Some(q)) => Some(Vec::try_from(to_host(&count_at_least(q, t)))?),
                _ => None,
            },
            stored,
            grids,
            grid_side,
        })
    })
}

/// What the maps table of a run holds: maps of `size`², smoothed with `sigma`, stored as `mode`.
#[derive(Debug, Clone, Copy)]
struct MapLayout {
    size: u32,
    sigma: f64,
    mode: MapsMode,
}

/// Stage 4: the three files of one unit, batch by batch, then its commit record.
struct UnitWriter {
    unit: String,
    category: String,
    layout: MapLayout,
    maps: AtomicParquetWriter,
    stats: AtomicParquetWriter,
    scores: AtomicParquetWriter,
    files: std::collections::BTreeMap<Table, String>,
    /// Score rows of the batch being written.
    rows: Vec<ScoreRow>,
    images: usize,
    skipped: usize,
}

impl UnitWriter {
    fn create(out: &Location, run_id: &str, category: &str, unit: &str, layout: MapLayout) -> Result<Self> {
        let files = run::unit_files(run_id, category, unit);
        Ok(Self {
            unit: unit.into(),
            category: category.into(),
            layout,
            maps: AtomicParquetWriter::create(out, &files[&Table::Maps], maps_schema(layout.size as i32))?,
            stats: AtomicParquetWriter::create(out, &files[&Table::MetricStats], stats_schema())?,
            scores: AtomicParquetWriter::create(out, &files[&Table::Scores], scores_schema())?,
            files,
            rows: Vec::new(),
            images: 0,
            skipped: 0,
        })
    }

    /// An image recorded with its error and no scores.
    fn skip(
        &mut self,
        run_id: &str,
        record: &ImageRecord,
        version: &str,
        calibration: Option<&Calibration>,
        error: String,
    ) {
        let versions = Versions { model: version, calibration: calibration.map(|c| c.version.as_str()) };
        self.rows.push(score_row(run_id, record, None, versions, Some(error)));
        self.skipped += 1;
    }

    /// The scored images of a batch: maps and statistics written, score rows queued, the labelled
    /// images' scores and pixel statistics added to `labelled`.
    fn add(
        &mut self,
        run_id: &str,
        good: &[(ImageRecord, (Vec<f32>, Option<Vec<bool>>))],
        scored: ScoredBatch,
        version: &str,
        calibration: Option<&Calibration>,
        labelled: Labelled,
    ) -> Result<()> {
        let versions = Versions { model: version, calibration: calibration.map(|c| c.version.as_str()) };
        let side = self.layout.size as usize;
        let (mut ids, mut categories, mut quantized) = (Vec::new(), Vec::new(), Vec::new());
        let (mut stat_ids, mut stat_categories, mut stats) = (Vec::new(), Vec::new(), Vec::new());
        for (i, ((record, (_, gt)), stored)) in good.iter().zip(scored.stored).enumerate() {
            // Unlabelled images have no ground truth, hence no metric statistics.
            if let (Some(gt), Some(label)) = (gt, record.gt_label) {
                let s = match &stored {
                    StoredPart::Values(q) => ImageStats::from_map(q, gt, side, side)?,
                    StoredPart::Histogram(h) => ImageStats::background_only(h.bins.clone(), h.counts.clone())?,
                    StoredPart::Nothing => unreachable!("MapNeed::of asks for a labelled image's map"),
                };
                labelled.pixel_sum.add(&s)?;
                labelled.scores.push(LabelledScore { pred_score: scored.image_score[i], is_defect: label == 1 });
                stat_ids.push(record.image_id.clone());
                stat_categories.push(record.category.clone());
                stats.push(s);
            }
            let scores = ImageScores {
                pred_score: scored.image_score[i],
                text_score: scored.text_score[i],
                visual_max: scored.visual_max[i],
                max_pixel_score: scored.max_pixel[i],
                pred_label: calibration
                    .and_then(|c| c.image.as_ref())
                    .map(|c| i8::from(c.is_anomalous(scored.image_score[i]))),
                anomalous_pixels: scored.anomalous_pixels.as_ref().map(|counts| counts[i]),
            };
            self.rows.push(score_row(run_id, record, Some(scores), versions, None));
            ids.push(record.image_id.clone());
            categories.push(record.category.clone());
            if self.layout.mode == MapsMode::Full {
                match stored {
                    StoredPart::Values(q) => quantized.push(q),
                    _ => unreachable!("MapNeed::of asks for every value in a full run"),
                }
            }
        }
        if self.layout.mode != MapsMode::None {
            let keys = RowKeys { run: run_id, image_ids: &ids, categories: &categories };
            let rows = MapRows {
                map_size: self.layout.size as i32,
                sigma: self.layout.sigma,
                grid_side: scored.grid_side,
                grids: &scored.grids,
                maps: (self.layout.mode == MapsMode::Full).then_some(quantized.as_slice()),
            };
            self.maps.write(&maps_batch(&keys, &rows)?)?;
        }
        if !stats.is_empty() {
            let keys = RowKeys { run: run_id, image_ids: &stat_ids, categories: &stat_categories };
            self.stats.write(&stats_batch(&keys, &stats)?)?;
        }
        Ok(())
    }

    /// Writes the queued score rows; returns how many.
    fn flush(&mut self) -> Result<usize> {
        let rows = std::mem::take(&mut self.rows);
        self.scores.write(&scores_batch(&rows)?)?;
        self.images += rows.len();
        Ok(rows.len())
    }

    /// Publishes the unit's files, then its commit record: from here on they are part of the run.
    fn commit(self, out: &Location, run_id: &str, started: Instant) -> Result<UnitRecord> {
        self.maps.finish()?;
        self.stats.finish()?;
        self.scores.finish()?;
        let record = UnitRecord {
            unit: self.unit,
            category: self.category,
            images: self.images,
            skipped: self.skipped,
            files: self.files.into_iter().map(|(t, f)| (t.name().to_string(), f)).collect(),
            seconds: started.elapsed().as_secs_f64(),
        };
        run::commit_unit(out, run_id, &record)?;
        Ok(record)
    }
}

/// Where the labelled images of a call are summed up.
struct Labelled<'a> {
    scores: &'a mut Vec<LabelledScore>,
    pixel_sum: &'a mut StatsSum,
}

/// The four scores of a scored image, and the calibration's decisions on them.
#[derive(Debug, Clone, Copy)]
struct ImageScores {
    pred_score: f64,
    text_score: f64,
    visual_max: f64,
    max_pixel_score: f64,
    pred_label: Option<i8>,
    anomalous_pixels: Option<i64>,
}

/// The model and calibration a row was scored with.
#[derive(Debug, Clone, Copy)]
struct Versions<'a> {
    model: &'a str,
    calibration: Option<&'a str>,
}

fn score_row(
    run: &str,
    record: &ImageRecord,
    scores: Option<ImageScores>,
    versions: Versions,
    error: Option<String>,
) -> ScoreRow {
    ScoreRow {
        run: run.to_string(),
        image_id: record.image_id.clone(),
        category: record.category.clone(),
        split: record.split.clone(),
        defect_type: record.defect_type.clone(),
        gt_label: record.gt_label,
        image_path: record.source_uri.clone(),
        pred_score: scores.map(|s| s.pred_score),
        text_score: scores.map(|s| s.text_score),
        visual_max: scores.map(|s| s.visual_max),
        max_pixel_score: scores.map(|s| s.max_pixel_score),
        pred_label: scores.and_then(|s| s.pred_label),
        anomalous_pixels: scores.and_then(|s| s.anomalous_pixels),
        calibration_version: versions.calibration.map(str::to_string),
        model_version: versions.model.to_string(),
        error,
    }
}
