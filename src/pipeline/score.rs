//! Scoring a category of a dataset (folders or image shards, any URL) with a trained artifact:
//! per-image scores, anomaly maps and metric statistics as Parquet, one file per table and work
//! unit, in a *run*:
//!
//! ```text
//! <out>/scores/run=<id>/category=<c>/part-<unit>.parquet
//! <out>/maps/run=<id>/category=<c>/part-<unit>.parquet
//! <out>/metric_stats/run=<id>/category=<c>/part-<unit>.parquet
//! <out>/_runs/run=<id>/category=<c>/plan.json            the category's work units (first worker)
//! <out>/_runs/run=<id>/category=<c>/units/<unit>.json     a unit's commit record, after its files
//! <out>/_runs/run=<id>/category=<c>/manifest.json         written last, once every unit is committed
//! ```
//! A run spans categories (one nightly re-scoring of an archive is one run); its default id is
//! a digest of the dataset URL and the scoring options, so the same command continues the same
//! run, and each category of the run has its own plan and manifest.
//! A unit's files count only once its commit record exists ([`committed_files`]; the SQL tables
//! read exactly those), so a worker killed mid-unit leaves nothing visible. A re-run skips
//! committed units and redoes the rest; `overwrite` redoes everything. Workers split the units
//! deterministically (`shard_index` of `shard_count`: contiguous ranges), and two workers given the
//! same unit write the same files, each atomically.
//!
//! Within a worker, images are fetched and decoded on other cores while the model works on the
//! previous batch; outputs go out batch by batch, so memory does not grow with the archive.

use std::collections::BTreeMap;
use std::sync::mpsc;
use std::time::Instant;

use anyhow::{anyhow, bail, Result};
use bytes::Bytes;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

use crate::artifact::Artifact;
use crate::clip::Clip;
use crate::data::dataset::{Dataset, WorkUnit};
use crate::data::prepare::{mask, model_input, Compat, Role};
use crate::data::shard::ImageRecord;
use crate::detect::memory::VisualMemory;
use crate::detect::{DetectConfig, Detector};
use crate::metrics::quantize::quantize;
use crate::metrics::stats::{ImageStats, StatsSum};
use crate::metrics::{auroc, pixel_aupro, pixel_auroc, MetricError, DEFAULT_FPR_LIMIT};
use crate::sink::{
    maps_batch, maps_schema, scores_batch, scores_schema, stats_batch, stats_schema, AtomicParquetWriter, RowKeys,
    ScoreRow,
};
use crate::store::Location;

/// The tables a scoring run writes, in the order they are committed.
pub const TABLES: [&str; 3] = ["maps", "metric_stats", "scores"];
pub const RUNS_DIR: &str = "_runs";

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
    /// Quantising, statistics, Parquet encoding, uploads and commits (this thread).
    pub write: f64,
    /// This thread waiting for decoded images (the reader is the bottleneck when it is large).
    pub wait: f64,
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
    pub skipped: Vec<(String, String)>,
    /// `(pred_score, is_defect)` of every labelled image scored by this call.
    pub image_scores: Vec<(f64, bool)>,
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
        let (scores, labels): (Vec<f64>, Vec<bool>) = self.image_scores.iter().copied().unzip();
        Ok(SplitMetrics {
            image_auroc: auroc(&scores, &labels)?,
            pixel_auroc: pixel_auroc(&self.pixel_stats)?,
            aupro: pixel_aupro(&self.pixel_stats, DEFAULT_FPR_LIMIT)?,
        })
    }
}

/// The work of a run, written once by the first worker; every worker checks it agrees.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunPlan {
    pub run_id: String,
    pub category: String,
    pub model_version: String,
    pub dataset: String,
    pub map_size: i64,
    /// The work units, in order.
    pub units: Vec<PlannedUnit>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlannedUnit {
    pub name: String,
    pub images: usize,
}

/// A unit's commit record: its files exist and are complete.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UnitRecord {
    pub unit: String,
    pub category: String,
    pub images: usize,
    pub skipped: usize,
    /// Relative to the output root, one per table.
    pub files: BTreeMap<String, String>,
    pub seconds: f64,
}

/// The manifest of one category of a run, written last.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunManifest {
    pub plan: RunPlan,
    pub images: usize,
    pub skipped: usize,
    pub files: Vec<String>,
    pub promptad_version: String,
    pub completed_unix: u64,
}

pub fn detector<'a>(artifact: &Artifact, clip: &'a Clip, detect: DetectConfig) -> Detector<'a> {
    let on_device = |t: &Tensor| t.to_device(clip.device).to_kind(Kind::Float);
    let banks: Vec<Tensor> = artifact.memory_banks().iter().map(on_device).collect();
    Detector {
        clip,
        memory: VisualMemory { taps: artifact.manifest.detect.taps.clone(), banks },
        image_prototypes: on_device(&artifact.tensors["image.prototypes"]),
        pixel_prototypes: on_device(&artifact.tensors["pixel.prototypes"]),
        config: detect,
    }
}

/// The output file of `table` for one unit: `<table>/run=<id>/category=<c>/part-<unit>.parquet`.
///
/// ```
/// assert_eq!(promptad::pipeline::score::table_file("scores", "r1", "bottle", "test-00002"),
///            "scores/run=r1/category=bottle/part-test-00002.parquet");
/// ```
pub fn table_file(table: &str, run_id: &str, category: &str, unit: &str) -> String {
    format!("{table}/run={run_id}/category={category}/part-{unit}.parquet")
}

/// The bookkeeping folder of one category of a run.
fn run_dir(run_id: &str, category: &str) -> String {
    format!("{RUNS_DIR}/run={run_id}/category={category}")
}

fn unit_record_file(run_id: &str, category: &str, unit: &str) -> String {
    format!("{}/units/{unit}.json", run_dir(run_id, category))
}

/// The default run id: a digest of everything that determines the outputs.
fn derived_run_id(plan_inputs: &serde_json::Value) -> String {
    use sha2::Digest;
    format!("{:x}", sha2::Sha256::digest(plan_inputs.to_string().as_bytes()))[..12].to_string()
}

/// The contiguous range of `n` units that worker `index` of `count` owns.
pub fn worker_range(n: usize, (index, count): (usize, usize)) -> std::ops::Range<usize> {
    index * n / count..(index + 1) * n / count
}

/// A decoded image with its mask at the map size, or why it could not be.
struct Prepared {
    record: ImageRecord,
    input: Result<(Vec<f32>, Option<Vec<bool>>), String>,
}

fn prepare(record: ImageRecord, size: u32, map_size: u32, compat: Compat) -> Prepared {
    let input = (|| -> Result<(Vec<f32>, Option<Vec<bool>>)> {
        let input = model_input(&record.image, &record.origin, size, compat, Role::Test)?;
        let gt = match (&record.mask, record.gt_label) {
            (Some(bytes), _) => Some(mask(bytes, &format!("{} (mask)", record.origin), map_size)?),
            (None, Some(1)) => bail!("{}: defect image {} has no mask", record.origin, record.image_id),
            (None, Some(_)) => Some(vec![false; (map_size * map_size) as usize]),
            (None, None) => None,
        };
        Ok((input, gt))
    })()
    .map_err(|e| format!("{e:#}"));
    Prepared { record, input }
}

enum Message {
    Batch(Vec<Prepared>),
    UnitEnd,
    Failed(anyhow::Error),
}

/// Scores `category` of `dataset` into the run under `out`; see the module documentation.
/// `on_images(n)` reports progress.
#[allow(clippy::too_many_arguments)]
pub fn score_category(
    artifact: &Artifact,
    clip: &Clip,
    detect: DetectConfig,
    dataset: &Dataset,
    category: &str,
    out: &Location,
    options: &ScoreOptions,
    mut on_images: impl FnMut(usize),
) -> Result<ScoreSummary> {
    let (index, count) = options.shard;
    if count == 0 || index >= count {
        bail!("--shard-index {index} is not below --shard-count {count}");
    }
    out.check_reachable()?;
    let units = dataset.test_units(category, options.rows_per_unit)?;
    let version = artifact.manifest.version.clone();
    let inputs = serde_json::json!({
        "dataset": dataset.location().url(), "map_size": detect.map_size, "guidance": detect.guidance,
        "compat": options.compat, "rows_per_unit": options.rows_per_unit,
    });
    let run_id = options.run_id.clone().unwrap_or_else(|| derived_run_id(&inputs));
    check_run_id(&run_id)?;
    let plan = RunPlan {
        run_id: run_id.clone(),
        category: category.into(),
        model_version: version.clone(),
        dataset: dataset.location().url().into(),
        map_size: detect.map_size,
        units: units.iter().map(|u| PlannedUnit { name: u.name.clone(), images: u.images }).collect(),
    };
    publish_plan(out, &plan, options.overwrite)?;

    let mine: Vec<WorkUnit> = units[worker_range(units.len(), options.shard)].to_vec();
    let mut todo = Vec::new();
    for unit in &mine {
        let record = unit_record_file(&run_id, category, &unit.name);
        if options.overwrite {
            out.delete(&record)?;
        } else if out.exists(&record)? {
            continue;
        }
        todo.push(unit.clone());
    }
    tracing::info!(run = %run_id, category, units = units.len(), mine = mine.len(), todo = todo.len(), out = %out, "scoring");
    let mut summary = ScoreSummary {
        out: out.clone(),
        run_id: run_id.clone(),
        images: 0,
        units_scored: 0,
        units_already_done: mine.len() - todo.len(),
        run_complete: false,
        skipped: Vec::new(),
        image_scores: Vec::new(),
        pixel_stats: ImageStats::default(),
        seconds: StageSeconds::default(),
    };
    let call_started = Instant::now();
    let mut pixel_sum = StatsSum::new();
    let size = clip.visual.image_size() as u32;
    let map_size = detect.map_size as u32;
    let detector = detector(artifact, clip, detect);

    let (sender, receiver) = mpsc::sync_channel::<Message>(1);
    let batch_size = options.batch_size.max(1);
    let compat = options.compat;
    let reader_dataset = dataset.clone();
    let reader_units = todo.clone();
    let producer = std::thread::spawn(move || -> (f64, f64) {
        let (mut read, mut decode) = (0.0, 0.0);
        for unit in &reader_units {
            let started = Instant::now();
            let mut batches = match reader_dataset.read_unit(unit, batch_size) {
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
                        Message::Batch(records.into_par_iter().map(|r| prepare(r, size, map_size, compat)).collect())
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

    let mut messages = receiver.into_iter();
    for unit in &todo {
        let started = Instant::now();
        let files: BTreeMap<String, String> =
            TABLES.iter().map(|t| (t.to_string(), table_file(t, &run_id, category, &unit.name))).collect();
        let mut maps_out = AtomicParquetWriter::create(out, &files["maps"], maps_schema(map_size as i32))?;
        let mut stats_out = AtomicParquetWriter::create(out, &files["metric_stats"], stats_schema())?;
        let mut scores_out = AtomicParquetWriter::create(out, &files["scores"], scores_schema())?;
        let (mut images, mut skipped) = (0, 0);
        loop {
            crate::worker::check_stop()?; // SIGTERM in worker mode: abandon this uncommitted unit
            let waiting = Instant::now();
            let next = messages.next();
            summary.seconds.wait += waiting.elapsed().as_secs_f64();
            let writing = Instant::now();
            let batch = match next {
                Some(Message::Batch(batch)) => batch,
                Some(Message::UnitEnd) => break,
                Some(Message::Failed(e)) => return Err(e.context(format!("scoring unit {} of {category}", unit.name))),
                None => {
                    join(producer)?;
                    bail!("the image reader stopped before unit {} of {category} was read", unit.name);
                }
            };
            let mut rows = Vec::with_capacity(batch.len());
            let mut good: Vec<(ImageRecord, Vec<f32>, Option<Vec<bool>>)> = Vec::new();
            for item in batch {
                match item.input {
                    Ok((input, gt)) => good.push((item.record, input, gt)),
                    Err(message) if options.skip_bad => {
                        tracing::warn!(image = %item.record.origin, error = %message, "skipped");
                        summary.skipped.push((item.record.image_id.clone(), message.clone()));
                        rows.push(row(&run_id, &item.record, None, &version, Some(message)));
                        skipped += 1;
                    }
                    Err(message) => bail!("{message} (pass --skip-bad to record it and go on)"),
                }
            }
            if !good.is_empty() {
                let flat: Vec<f32> = good.iter().flat_map(|(_, input, _)| input.iter().copied()).collect();
                let modelling = Instant::now();
                let batch = Tensor::from_slice(&flat).view([good.len() as i64, 3, size as i64, size as i64]);
                let detection = detector.detect(&batch)?;
                let to_vec = |t: &Tensor| -> Result<Vec<f64>> {
                    Ok(Vec::try_from(t.to_device(Device::Cpu).to_kind(Kind::Double))?)
                };
                let (image_score, text_score, visual_max) =
                    (to_vec(&detection.image_score)?, to_vec(&detection.text_score)?, to_vec(&detection.visual_max)?);
                let maps = detection.map.to_device(Device::Cpu).to_kind(Kind::Float);
                let model_seconds = modelling.elapsed().as_secs_f64();
                summary.seconds.model += model_seconds;
                summary.seconds.write -= model_seconds;
                let (mut ids, mut categories, mut quantized) = (Vec::new(), Vec::new(), Vec::new());
                let (mut stat_ids, mut stat_categories, mut stats) = (Vec::new(), Vec::new(), Vec::new());
                for (i, (record, _, gt)) in good.iter().enumerate() {
                    let map: Vec<f32> = Vec::try_from(maps.get(i as i64).flatten(0, -1))?;
                    let q: Vec<u16> = map.iter().map(|&v| quantize(v as f64)).collect();
                    let max_pixel = map.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
                    // Unlabelled images have no ground truth, hence no metric statistics.
                    if let (Some(gt), Some(label)) = (gt, record.gt_label) {
                        let s = ImageStats::from_map(&q, gt, map_size as usize, map_size as usize)?;
                        pixel_sum.add(&s)?;
                        summary.image_scores.push((image_score[i], label == 1));
                        stat_ids.push(record.image_id.clone());
                        stat_categories.push(record.category.clone());
                        stats.push(s);
                    }
                    rows.push(row(
                        &run_id,
                        record,
                        Some([image_score[i], text_score[i], visual_max[i], max_pixel]),
                        &version,
                        None,
                    ));
                    ids.push(record.image_id.clone());
                    categories.push(record.category.clone());
                    quantized.push(q);
                }
                maps_out.write(&maps_batch(
                    map_size as i32,
                    &RowKeys { run: &run_id, image_ids: &ids, categories: &categories },
                    &quantized,
                )?)?;
                if !stats.is_empty() {
                    stats_out.write(&stats_batch(
                        &RowKeys { run: &run_id, image_ids: &stat_ids, categories: &stat_categories },
                        &stats,
                    )?)?;
                }
            }
            images += rows.len();
            scores_out.write(&scores_batch(&rows)?)?;
            summary.seconds.write += writing.elapsed().as_secs_f64();
            on_images(rows.len());
        }
        let writing = Instant::now();
        maps_out.finish()?;
        stats_out.finish()?;
        scores_out.finish()?;
        let record = UnitRecord {
            unit: unit.name.clone(),
            category: category.into(),
            images,
            skipped,
            files,
            seconds: started.elapsed().as_secs_f64(),
        };
        // The commit: from here on the unit's files are part of the run.
        out.put(&unit_record_file(&run_id, category, &unit.name), Bytes::from(serde_json::to_vec_pretty(&record)?))?;
        summary.seconds.write += writing.elapsed().as_secs_f64();
        tracing::info!(run = %run_id, category, unit = %unit.name, images, skipped, seconds = record.seconds, "unit committed");
        summary.images += images;
        summary.units_scored += 1;
    }
    (summary.seconds.read, summary.seconds.decode) = join(producer)?;
    summary.seconds.wall = call_started.elapsed().as_secs_f64();
    summary.pixel_stats = pixel_sum.finish()?;
    summary.run_complete = publish_manifest_if_complete(out, &plan, options.overwrite)?;
    Ok(summary)
}

fn join<T>(producer: std::thread::JoinHandle<T>) -> Result<T> {
    producer.join().map_err(|_| anyhow!("the image reading thread panicked"))
}

fn check_run_id(run_id: &str) -> Result<()> {
    if run_id.is_empty() || !run_id.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) {
        bail!("run id {run_id:?}: use letters, digits, '-', '_' and '.' only");
    }
    Ok(())
}

/// Writes the plan if the run has none; an existing plan must agree, else the run id is being
/// reused for different work.
fn publish_plan(out: &Location, plan: &RunPlan, overwrite: bool) -> Result<()> {
    let rel = format!("{}/plan.json", run_dir(&plan.run_id, &plan.category));
    let bytes = Bytes::from(serde_json::to_vec_pretty(plan)?);
    if overwrite {
        // A replaced run is incomplete until every unit is committed again.
        out.delete(&format!("{}/manifest.json", run_dir(&plan.run_id, &plan.category)))?;
        out.put(&rel, bytes)?;
        return Ok(());
    }
    if !out.put_if_absent(&rel, bytes)? {
        let existing: RunPlan =
            serde_json::from_slice(&out.get(&rel)?).map_err(|e| anyhow!("{}: {e}", out.url_of(&rel)))?;
        if existing != *plan {
            bail!(
                "run {} of {} in {out} was started with different work (model {}, data {}, {} units; now model {}, {} units); \
                 choose another --run-id (e.g. the date), or pass --overwrite to replace it",
                plan.run_id, plan.category, existing.model_version, existing.dataset, existing.units.len(), plan.model_version, plan.units.len()
            );
        }
    }
    Ok(())
}

/// Writes the run manifest once every unit of the plan is committed; returns whether the run is
/// complete.
fn publish_manifest_if_complete(out: &Location, plan: &RunPlan, overwrite: bool) -> Result<bool> {
    let mut images = 0;
    let mut skipped = 0;
    let mut files = Vec::new();
    for unit in &plan.units {
        let rel = unit_record_file(&plan.run_id, &plan.category, &unit.name);
        let Some(record) = out.get_if_exists(&rel)? else { return Ok(false) };
        let record: UnitRecord = serde_json::from_slice(&record).map_err(|e| anyhow!("{}: {e}", out.url_of(&rel)))?;
        images += record.images;
        skipped += record.skipped;
        files.extend(record.files.into_values());
    }
    let manifest = RunManifest {
        plan: plan.clone(),
        images,
        skipped,
        files,
        promptad_version: env!("CARGO_PKG_VERSION").into(),
        completed_unix: std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs()),
    };
    let rel = format!("{}/manifest.json", run_dir(&plan.run_id, &plan.category));
    let bytes = Bytes::from(serde_json::to_vec_pretty(&manifest)?);
    if overwrite {
        out.put(&rel, bytes)?;
    } else {
        // Two workers finishing together: the first manifest stands (same content but the time).
        out.put_if_absent(&rel, bytes)?;
    }
    Ok(true)
}

/// Every committed output file under `out`, per table (relative paths), and the run manifests
/// found: complete runs from their manifest, runs in progress from their units' commit records.
pub fn committed_files(out: &Location) -> Result<(BTreeMap<String, Vec<String>>, Vec<RunManifest>)> {
    let mut files: BTreeMap<String, Vec<String>> = TABLES.iter().map(|t| (t.to_string(), Vec::new())).collect();
    let mut manifests = Vec::new();
    let mut add = |file: String| {
        if let Some(table) = file.split('/').next() {
            if let Some(list) = files.get_mut(table) {
                list.push(file);
            }
        }
    };
    for run in out.list_dirs(RUNS_DIR)? {
        for category in out.list_dirs(&format!("{RUNS_DIR}/{run}"))? {
            let dir = format!("{RUNS_DIR}/{run}/{category}");
            let manifest_file = format!("{dir}/manifest.json");
            if let Some(manifest) = out.get_if_exists(&manifest_file)? {
                let manifest: RunManifest =
                    serde_json::from_slice(&manifest).map_err(|e| anyhow!("{}: {e}", out.url_of(&manifest_file)))?;
                manifest.files.iter().cloned().for_each(&mut add);
                manifests.push(manifest);
                continue;
            }
            for object in out.list(&format!("{dir}/units"))? {
                let rel = out.relative(&object.location);
                let record: UnitRecord =
                    serde_json::from_slice(&out.get(&rel)?).map_err(|e| anyhow!("{}: {e}", out.url_of(&rel)))?;
                record.files.into_values().for_each(&mut add);
            }
        }
    }
    for list in files.values_mut() {
        list.sort();
        list.dedup();
    }
    Ok((files, manifests))
}

fn row(run: &str, record: &ImageRecord, scores: Option<[f64; 4]>, version: &str, error: Option<String>) -> ScoreRow {
    ScoreRow {
        run: run.to_string(),
        image_id: record.image_id.clone(),
        category: record.category.clone(),
        split: record.split.clone(),
        defect_type: record.defect_type.clone(),
        gt_label: record.gt_label,
        image_path: record.source_uri.clone(),
        pred_score: scores.map(|s| s[0]),
        text_score: scores.map(|s| s[1]),
        visual_max: scores.map(|s| s[2]),
        max_pixel_score: scores.map(|s| s[3]),
        model_version: version.to_string(),
        error,
    }
}
