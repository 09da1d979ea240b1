//! Scoring a folder dataset with a trained artifact: per-image scores, anomaly maps and metric
//! statistics as Parquet. Images are decoded on other cores while the model works on the previous
//! batch; outputs are written batch by batch, so memory does not grow with the dataset.

use std::path::{Path, PathBuf};
use std::sync::mpsc;

use anyhow::{bail, Context, Result};
use rayon::prelude::*;
use tch::{Device, Kind, Tensor};

use crate::artifact::Artifact;
use crate::clip::Clip;
use crate::data::folder::{scan_category, Sample};
use crate::data::prepare::{mask, model_input, Compat, Role};
use crate::detect::memory::VisualMemory;
use crate::detect::{DetectConfig, Detector};
use crate::metrics::quantize::quantize;
use crate::metrics::{auroc, pixel_aupro, pixel_auroc, MetricError, DEFAULT_FPR_LIMIT};
use crate::metrics::stats::{ImageStats, StatsSum};
use crate::sink::{maps_batch, maps_schema, scores_batch, scores_schema, stats_batch, stats_schema, AtomicParquetWriter, ScoreRow};

#[derive(Debug, Clone)]
pub struct ScoreOptions {
    pub batch_size: usize,
    pub compat: Compat,
    /// Record an undecodable image as a row with its error instead of failing the run.
    pub skip_bad: bool,
    pub overwrite: bool,
}

/// What a scoring run produced, for reports.
pub struct ScoreSummary {
    pub out_dir: PathBuf,
    pub images: usize,
    pub skipped: Vec<(String, String)>,
    /// `(pred_score, is_defect)` of every scored image.
    pub image_scores: Vec<(f64, bool)>,
    /// The pixel statistics of every scored image, summed.
    pub pixel_stats: ImageStats,
}

/// Image AUROC, pixel AUROC and AUPRO (FPR 0.3) of a scored split.
#[derive(Debug, Clone, Copy)]
pub struct SplitMetrics {
    pub image_auroc: f64,
    pub pixel_auroc: f64,
    pub aupro: f64,
}

impl ScoreSummary {
    /// The metrics of what was scored, from the exact reference functions; undefined (a split
    /// without anomalous or without normal images or pixels) is an error saying which.
    pub fn metrics(&self) -> Result<SplitMetrics, MetricError> {
        let (scores, labels): (Vec<f64>, Vec<bool>) = self.image_scores.iter().copied().unzip();
        Ok(SplitMetrics {
            image_auroc: auroc(&scores, &labels)?,
            pixel_auroc: pixel_auroc(&self.pixel_stats)?,
            aupro: pixel_aupro(&self.pixel_stats, DEFAULT_FPR_LIMIT)?,
        })
    }
}

/// A decoded test image with its mask at the map size, or why it could not be.
struct Prepared {
    sample: Sample,
    input: Result<(Vec<f32>, Vec<bool>), String>,
}

fn prepare(sample: &Sample, size: u32, map_size: u32, compat: Compat) -> Prepared {
    let input = (|| -> Result<(Vec<f32>, Vec<bool>)> {
        let bytes = std::fs::read(&sample.image).with_context(|| format!("cannot read {}", sample.image.display()))?;
        let input = model_input(&bytes, &sample.image.display().to_string(), size, compat, Role::Test)?;
        let gt = match &sample.mask {
            Some(path) => {
                let bytes = std::fs::read(path).with_context(|| format!("cannot read mask {}", path.display()))?;
                mask(&bytes, &path.display().to_string(), map_size)?
            }
            None => vec![false; (map_size * map_size) as usize],
        };
        Ok((input, gt))
    })()
    .map_err(|e| format!("{e:#}"));
    Prepared { sample: sample.clone(), input }
}

pub fn detector<'a>(artifact: &Artifact, clip: &'a Clip, detect: DetectConfig) -> Detector<'a> {
    let on_device = |t: &Tensor| t.to_device(clip.device).to_kind(Kind::Float);
    let banks: Vec<Tensor> = artifact.memory_banks().iter().map(on_device).collect();
    Detector {
        clip,
        memory: VisualMemory { banks },
        image_prototypes: on_device(&artifact.tensors["image.prototypes"]),
        pixel_prototypes: on_device(&artifact.tensors["pixel.prototypes"]),
        config: detect,
    }
}

/// Scores the test split of `category` under `dataset_root`, writing one Hive-partitioned file per
/// table: `<out_dir>/{scores,maps,metric_stats}/category=<category>/part-00000.parquet`.
pub fn score_category(
    artifact: &Artifact,
    clip: &Clip,
    detect: DetectConfig,
    dataset_root: &Path,
    category: &str,
    out_dir: &Path,
    options: &ScoreOptions,
    mut on_batch: impl FnMut(usize),
) -> Result<ScoreSummary> {
    let folder = scan_category(dataset_root, category)?;
    let outputs = ["scores", "maps", "metric_stats"].map(|table| table_file(out_dir, table, category));
    if !options.overwrite {
        if let Some(existing) = outputs.iter().find(|p| p.exists()) {
            bail!("{} already exists; pass --overwrite to score again", existing.display());
        }
    }
    let size = clip.visual.image_size() as u32;
    let map_size = detect.map_size as u32;
    let version = artifact.manifest.version.clone();
    let detector = detector(artifact, clip, detect);
    let mut scores_out = AtomicParquetWriter::create(&outputs[0], scores_schema())?;
    let mut maps_out = AtomicParquetWriter::create(&outputs[1], maps_schema(map_size as i32))?;
    let mut stats_out = AtomicParquetWriter::create(&outputs[2], stats_schema())?;
    let mut summary = ScoreSummary { out_dir: out_dir.to_path_buf(), images: 0, skipped: Vec::new(), image_scores: Vec::new(), pixel_stats: ImageStats::default() };
    let mut pixel_sum = StatsSum::new();

    let (sender, receiver) = mpsc::sync_channel::<Vec<Prepared>>(1);
    let samples = folder.test.clone();
    let batch_size = options.batch_size.max(1);
    let compat = options.compat;
    let producer = std::thread::spawn(move || {
        for chunk in samples.chunks(batch_size) {
            let prepared: Vec<Prepared> = chunk.par_iter().map(|s| prepare(s, size, map_size, compat)).collect();
            if sender.send(prepared).is_err() {
                break;
            }
        }
    });
    for batch in receiver {
        let mut rows = Vec::with_capacity(batch.len());
        let mut good: Vec<(Sample, Vec<f32>, Vec<bool>)> = Vec::new();
        for item in batch {
            match item.input {
                Ok((input, gt)) => good.push((item.sample, input, gt)),
                Err(message) if options.skip_bad => {
                    tracing::warn!(image = %item.sample.image.display(), error = %message, "skipped");
                    summary.skipped.push((item.sample.id.clone(), message.clone()));
                    rows.push(row(&item.sample, None, &version, Some(message)));
                }
                Err(message) => bail!("{message} (pass --skip-bad to record it and go on)"),
            }
        }
        if !good.is_empty() {
            let flat: Vec<f32> = good.iter().flat_map(|(_, input, _)| input.iter().copied()).collect();
            let images = Tensor::from_slice(&flat).view([good.len() as i64, 3, size as i64, size as i64]);
            let detection = detector.detect(&images)?;
            let image_score: Vec<f64> = Vec::try_from(detection.image_score.to_device(Device::Cpu).to_kind(Kind::Double))?;
            let text_score: Vec<f64> = Vec::try_from(detection.text_score.to_device(Device::Cpu).to_kind(Kind::Double))?;
            let visual_max: Vec<f64> = Vec::try_from(detection.visual_max.to_device(Device::Cpu).to_kind(Kind::Double))?;
            let maps = detection.map.to_device(Device::Cpu).to_kind(Kind::Float);
            let (mut ids, mut quantized, mut stats, mut categories) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
            for (i, (sample, _, gt)) in good.iter().enumerate() {
                let map: Vec<f32> = Vec::try_from(maps.get(i as i64).flatten(0, -1))?;
                let q: Vec<u16> = map.iter().map(|&v| quantize(v as f64)).collect();
                let max_pixel = map.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
                let s = ImageStats::from_map(&q, gt, map_size as usize, map_size as usize)?;
                pixel_sum.add(&s)?;
                summary.image_scores.push((image_score[i], sample.label() == 1));
                rows.push(row(sample, Some([image_score[i], text_score[i], visual_max[i], max_pixel]), &version, None));
                ids.push(sample.id.clone());
                categories.push(sample.category.clone());
                quantized.push(q);
                stats.push(s);
            }
            maps_out.write(&maps_batch(map_size as i32, &ids, &quantized)?)?;
            stats_out.write(&stats_batch(&ids, &categories, &stats)?)?;
        }
        summary.images += rows.len();
        scores_out.write(&scores_batch(&rows)?)?;
        on_batch(rows.len());
    }
    producer.join().map_err(|_| anyhow::anyhow!("the image decoding thread panicked"))?;
    // Scores last: a complete scores.parquet means the category is done.
    maps_out.finish()?;
    stats_out.finish()?;
    scores_out.finish()?;
    summary.pixel_stats = pixel_sum.finish()?;
    Ok(summary)
}

/// The file of `table` for `category`: `<out_dir>/<table>/category=<category>/part-00000.parquet`.
///
/// ```
/// let p = promptad::pipeline::score::table_file(std::path::Path::new("out"), "scores", "bottle");
/// assert_eq!(p, std::path::Path::new("out/scores/category=bottle/part-00000.parquet"));
/// ```
pub fn table_file(out_dir: &Path, table: &str, category: &str) -> PathBuf {
    out_dir.join(table).join(format!("category={category}")).join("part-00000.parquet")
}

fn row(sample: &Sample, scores: Option<[f64; 4]>, version: &str, error: Option<String>) -> ScoreRow {
    ScoreRow {
        image_id: sample.id.clone(),
        category: sample.category.clone(),
        split: "test".into(),
        defect_type: sample.defect_type.clone(),
        gt_label: sample.label() as i8,
        image_path: sample.image.display().to_string(),
        pred_score: scores.map(|s| s[0]),
        text_score: scores.map(|s| s[1]),
        visual_max: scores.map(|s| s[2]),
        max_pixel_score: scores.map(|s| s[3]),
        model_version: version.to_string(),
        error,
    }
}
