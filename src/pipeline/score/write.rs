//! Stage 4, write: a thread of its own turns each scored batch into statistics, map rows and
//! score rows in its unit's three staged files, then publishes them and commits the unit, while
//! the model works on the next batch. Parquet encoding, uploads and commits never hold up the
//! model (on a GPU node they would idle it), and a unit's files become part of the run only
//! when the model stage has said that the unit is complete ([`ToWriter::UnitEnd`]): a call that
//! stops or fails leaves the unit in progress unpublished.

use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Instant;

use crate::data::shard::ImageRecord;
use crate::metrics::stats::{ImageStats, StatsSum};
use crate::metrics::Calibration;
use crate::run::{self, Table, UnitRecord};
use crate::runtime::thread_cpu::{HostRole, HostThread, HOST_THREAD_PREFIX};
use crate::sink::{
    maps_batch, maps_schema, scores_batch, scores_schema, stats_batch, stats_schema, AtomicParquetWriter, MapRows,
    MapsMode, RowKeys, ScoreRow,
};
use crate::store::Location;

use super::model::{ScoredBatch, StoredPart};
use super::{LabelledScore, ScoreError};

type Result<T, E = ScoreError> = std::result::Result<T, E>;

/// What the maps table of a run holds: maps of `size`², smoothed with `sigma`, stored as `mode`.
#[derive(Debug, Clone, Copy)]
pub(super) struct MapLayout {
    pub(super) size: u32,
    pub(super) sigma: f64,
    pub(super) mode: MapsMode,
}

/// What every row of a call shares: where it goes, and what it was scored with.
#[derive(Debug, Clone)]
pub(super) struct RunContext {
    pub(super) out: Location,
    pub(super) run_id: String,
    pub(super) category: String,
    pub(super) model_version: String,
    pub(super) calibration: Option<Calibration>,
    pub(super) layout: MapLayout,
}

/// An image of a batch as the writer needs it: its record (without the encoded image) and its
/// mask at the map size (`None`: unlabelled).
pub(super) type ScoredImage = (ImageRecord, Option<Vec<bool>>);

/// What the model stage hands the writer thread, unit after unit in the order it was given.
// The queue holds one message, so the size of the small variant costs nothing worth a box.
#[allow(clippy::large_enum_variant)]
pub(super) enum ToWriter {
    /// A batch of the current unit: the images that could not be used, with their error, and
    /// the scored images with the model's outputs (`None` when none could be used).
    Batch { skipped: Vec<(ImageRecord, String)>, scored: Vec<ScoredImage>, outputs: Option<ScoredBatch> },
    /// The current unit has no more images: publish and commit it; what follows is the next unit.
    UnitEnd,
}

/// What the writer thread did.
pub(super) struct Written {
    /// Rows written (scored and skipped images) in committed units.
    pub(super) images: usize,
    pub(super) units: usize,
    /// Every labelled image scored, and the sum of their pixel statistics.
    pub(super) image_scores: Vec<LabelledScore>,
    pub(super) pixel_sum: StatsSum,
    /// Seconds spent writing (statistics, Parquet, uploads, commits).
    pub(super) seconds: f64,
}

/// The writer thread, fed through a queue of one batch (so memory stays at a few batches).
/// Dropping it without [`Writer::finish`] abandons the unit in progress and waits for the thread.
pub(super) struct Writer {
    sender: Option<mpsc::SyncSender<ToWriter>>,
    /// Rows written, batch by batch, for progress.
    rows: mpsc::Receiver<usize>,
    handle: Option<JoinHandle<Result<Written>>>,
}

impl Writer {
    /// Starts the thread that writes `units` (names, in the order their batches will come).
    pub(super) fn spawn(context: RunContext, units: Vec<String>) -> Self {
        let (sender, messages) = mpsc::sync_channel::<ToWriter>(1);
        let (rows_sender, rows) = mpsc::channel();
        let handle = std::thread::Builder::new()
            .name(format!("{HOST_THREAD_PREFIX}writer"))
            .spawn(move || {
                let _host = HostThread::start(HostRole::Write);
                write_units(&context, &units, &messages, &rows_sender)
            })
            .expect("the operating system starts a thread");
        Self { sender: Some(sender), rows, handle: Some(handle) }
    }

    /// Queues a message (waiting while the thread is a batch behind); when the thread has
    /// stopped, its error.
    pub(super) fn send(&mut self, message: ToWriter) -> Result<()> {
        let sender = self.sender.as_ref().expect("the writer takes messages until it is finished");
        if sender.send(message).is_ok() {
            return Ok(());
        }
        // The thread only stops taking messages early when it failed.
        match self.join() {
            Err(e) => Err(e),
            Ok(_) => Err(ScoreError::WriterPanicked),
        }
    }

    /// Rows written since the last call.
    pub(super) fn rows_written(&self) -> usize {
        self.rows.try_iter().sum()
    }

    /// Closes the queue and waits for the thread to write and commit what it was given.
    pub(super) fn finish(mut self) -> Result<Written> {
        self.join()
    }

    fn join(&mut self) -> Result<Written> {
        self.sender = None;
        match self.handle.take() {
            Some(handle) => handle.join().map_err(|_| ScoreError::WriterPanicked)?,
            None => Err(ScoreError::WriterPanicked),
        }
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.sender = None;
        if let Some(handle) = self.handle.take() {
            let _ = handle.join();
        }
    }
}

/// The writer thread: each unit's batches into its files, committed at its [`ToWriter::UnitEnd`].
/// A closed queue before a unit's end abandons that unit: its staged files are dropped unpublished.
fn write_units(
    context: &RunContext,
    units: &[String],
    messages: &mpsc::Receiver<ToWriter>,
    rows: &mpsc::Sender<usize>,
) -> Result<Written> {
    let mut written =
        Written { images: 0, units: 0, image_scores: Vec::new(), pixel_sum: StatsSum::new(), seconds: 0.0 };
    for unit in units {
        let in_unit = |source: ScoreError| ScoreError::InUnit {
            unit: unit.clone(),
            category: context.category.clone(),
            source: Box::new(source),
        };
        let started = Instant::now();
        let mut writer = UnitWriter::create(context, unit).map_err(in_unit)?;
        written.seconds += started.elapsed().as_secs_f64();
        loop {
            let Ok(message) = messages.recv() else { return Ok(written) };
            let writing = Instant::now();
            match message {
                ToWriter::Batch { skipped, scored, outputs } => {
                    for (record, error) in &skipped {
                        writer.skip(context, record, error.clone());
                    }
                    if let Some(outputs) = outputs {
                        writer.add(context, &scored, outputs, &mut written).map_err(in_unit)?;
                    }
                    let _ = rows.send(writer.flush().map_err(in_unit)?);
                    written.seconds += writing.elapsed().as_secs_f64();
                }
                ToWriter::UnitEnd => {
                    let record = writer.commit(context, started).map_err(in_unit)?;
                    written.seconds += writing.elapsed().as_secs_f64();
                    tracing::info!(run = %context.run_id, category = %context.category, unit = %unit,
                        images = record.images, skipped = record.skipped, seconds = record.seconds, "unit committed");
                    written.images += record.images;
                    written.units += 1;
                    break;
                }
            }
        }
    }
    Ok(written)
}

/// The three files of one unit, batch by batch, then its commit record.
struct UnitWriter {
    unit: String,
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
    fn create(context: &RunContext, unit: &str) -> Result<Self> {
        let (out, layout) = (&context.out, context.layout);
        let files = run::unit_files(&context.run_id, &context.category, unit);
        Ok(Self {
            unit: unit.into(),
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
    fn skip(&mut self, context: &RunContext, record: &ImageRecord, error: String) {
        self.rows.push(score_row(context, record, None, Some(error)));
        self.skipped += 1;
    }

    /// The scored images of a batch: maps and statistics written, score rows queued, the labelled
    /// images' scores and pixel statistics added to `labelled`.
    fn add(
        &mut self,
        context: &RunContext,
        images: &[ScoredImage],
        scored: ScoredBatch,
        labelled: &mut Written,
    ) -> Result<()> {
        let (layout, calibration) = (context.layout, context.calibration.as_ref());
        let side = layout.size as usize;
        let (mut ids, mut categories, mut quantized) = (Vec::new(), Vec::new(), Vec::new());
        let (mut stat_ids, mut stat_categories, mut stats) = (Vec::new(), Vec::new(), Vec::new());
        for (i, ((record, gt), stored)) in images.iter().zip(scored.stored).enumerate() {
            // Unlabelled images have no ground truth, hence no metric statistics.
            if let (Some(gt), Some(label)) = (gt, record.gt_label) {
                let s = match &stored {
                    StoredPart::Values(q) => ImageStats::from_map(q, gt, side, side)?,
                    StoredPart::Histogram(h) => ImageStats::background_only(h.bins.clone(), h.counts.clone())?,
                    StoredPart::Nothing => unreachable!("MapNeed::of asks for a labelled image's map"),
                };
                labelled.pixel_sum.add(&s)?;
                labelled.image_scores.push(LabelledScore { pred_score: scored.image_score[i], is_defect: label == 1 });
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
            self.rows.push(score_row(context, record, Some(scores), None));
            ids.push(record.image_id.clone());
            categories.push(record.category.clone());
            if layout.mode == MapsMode::Full {
                match stored {
                    StoredPart::Values(q) => quantized.push(q),
                    _ => unreachable!("MapNeed::of asks for every value in a full run"),
                }
            }
        }
        let run = context.run_id.as_str();
        if layout.mode != MapsMode::None {
            let keys = RowKeys { run, image_ids: &ids, categories: &categories };
            let rows = MapRows {
                map_size: layout.size as i32,
                sigma: layout.sigma,
                grid_side: scored.grid_side,
                grids: &scored.grids,
                maps: (layout.mode == MapsMode::Full).then_some(quantized.as_slice()),
            };
            self.maps.write(&maps_batch(&keys, &rows)?)?;
        }
        if !stats.is_empty() {
            let keys = RowKeys { run, image_ids: &stat_ids, categories: &stat_categories };
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
    fn commit(self, context: &RunContext, started: Instant) -> Result<UnitRecord> {
        self.maps.finish()?;
        self.stats.finish()?;
        self.scores.finish()?;
        let record = UnitRecord {
            unit: self.unit,
            category: context.category.clone(),
            images: self.images,
            skipped: self.skipped,
            files: self.files.into_iter().map(|(t, f)| (t.name().to_string(), f)).collect(),
            seconds: started.elapsed().as_secs_f64(),
        };
        run::commit_unit(&context.out, &context.run_id, &record)?;
        Ok(record)
    }
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

fn score_row(
    context: &RunContext,
    record: &ImageRecord,
    scores: Option<ImageScores>,
    error: Option<String>,
) -> ScoreRow {
    ScoreRow {
        run: context.run_id.clone(),
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
        calibration_version: context.calibration.as_ref().map(|c| c.version.clone()),
        model_version: context.model_version.clone(),
        error,
    }
}
