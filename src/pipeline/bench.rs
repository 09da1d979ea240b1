//! `promptad bench`: scoring throughput on generated or given data, where the time of an image
//! goes, and what each way of storing maps costs, every mode measured in the same process on the
//! same data (the first mode after a warm-up pass, so none pays for one-time start-up).
//!
//! Host work is everything but the backbone's forward pass: decoding, resizing, the memory
//! search, maps, quantisation, statistics, Parquet and uploads. Reading and decoding overlap the
//! forward on other threads, so it is measured by the threads' own CPU clocks inside the pass
//! ([`crate::runtime::thread_cpu`]): host core-ms per image = the pass's process CPU less what the
//! model's threads spent in its forwards, split by the stage (host thread role) that spent it.

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::Serialize;

use super::score::{detector, prepare, score_category, BatchSize, ScoreError, ScoreOptions, Sizes, StageSeconds};
use super::train::{train_category, TrainError, TrainJob};
use crate::artifact::{Artifact, ArtifactError, Backbone};
use crate::clip::vision::forward_vv_flops;
use crate::clip::Clip;
use crate::data::dataset::Dataset;
use crate::data::prepare::Compat;
use crate::data::synth::{self, generate, ImageEncoding, SynthConfig, SynthError, MAX_IMAGES_PER_DIR};
use crate::data::DataError;
use crate::runtime::thread_cpu::host_cpu_seconds;
use crate::runtime::{peak_rss_mib, process_cpu_seconds, reset_peak_rss};
use crate::sink::MapsMode;
use crate::stop::StopToken;
use crate::store::{Location, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error(transparent)]
    Synth(#[from] SynthError),
    #[error(transparent)]
    Data(#[from] DataError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Artifact(#[from] ArtifactError),
    #[error(transparent)]
    Train(#[from] TrainError),
    #[error(transparent)]
    Score(#[from] ScoreError),
    #[error(transparent)]
    Runtime(#[from] crate::runtime::RuntimeError),
    #[error("{what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("nothing to measure: {0}")]
    Empty(&'static str),
    #[error(
        "--images {images}: generated data holds at most {most} test images (synth names images with three \
         digits, at most {per_dir} per directory); to measure a larger archive, score your own images with \
         --data DIR, or see how memory grows with archive size with `cargo bench --bench archive`"
    )]
    TooManyImages { images: usize, most: usize, per_dir: usize },
}

/// What to measure.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// Data, model and outputs go here.
    pub work_dir: PathBuf,
    /// A dataset URL to score; `None` generates one.
    pub data: Option<String>,
    /// The category to score [default: the generated one, or the dataset's first].
    pub category: Option<String>,
    /// Test images to generate (without `data`).
    pub images: usize,
    /// Side of the generated images.
    pub image_size: u32,
    /// How the generated images are encoded.
    pub encoding: ImageEncoding,
    pub batch_size: BatchSize,
    /// The ways of storing maps to measure, in order.
    pub modes: Vec<MapsMode>,
    pub seed: u64,
}

/// The generated category: a texture, so every image has the same content statistics.
pub const GENERATED_CATEGORY: &str = "weave";

/// One measured scoring pass.
#[derive(Debug, Clone, Serialize)]
pub struct BenchRow {
    pub maps: MapsMode,
    pub images: usize,
    pub images_per_s: f64,
    pub seconds: StageSeconds,
    /// CPU time of the whole process during the pass.
    pub cpu_s: f64,
    /// `cpu_s` per image, in ms.
    pub core_ms_per_image: f64,
    /// `core_ms_per_image` less the CPU time the model threads spent in this pass's forwards
    /// ([`StageSeconds::backbone_cpu`]): everything but the backbone, by the threads' own clocks.
    pub host_core_ms_per_image: f64,
    /// `host_core_ms_per_image` by the stage that spent it.
    pub host_core_ms_by_stage: HostStageMs,
    /// Wall time of the backbone's forward passes, per image, in ms.
    pub backbone_ms_per_image: f64,
    /// Peak resident set size during the pass (NaN where it cannot be reset and read).
    pub peak_rss_mib: f64,
    /// Bytes of the maps table per image.
    pub map_bytes_per_image: f64,
    /// On CUDA, the device's memory in use after the pass (total less free, `cudaMemGetInfo`):
    /// what libtorch's caching allocator reserved for the passes so far, which it keeps at their
    /// peak, plus the CUDA context and other processes' memory. `None` on a CPU.
    pub device_memory_in_use_mib: Option<f64>,
}

/// Host core-ms per image by stage, from the threads' own clocks ([`crate::runtime::thread_cpu`]).
#[derive(Debug, Clone, Copy, Serialize)]
pub struct HostStageMs {
    /// The reader thread: walking the units and asking for their files.
    pub read: f64,
    /// The reader's pool: decoding, resizing, normalising, the masks.
    pub decode: f64,
    /// The model's threads outside the forwards: building the batch, the memory search, the
    /// maps, quantisation and histograms, the transfers.
    pub model: f64,
    /// The writer thread: statistics, Parquet encoding, commits.
    pub write: f64,
    /// The I/O runtime's threads: the image files' reads, uploads and listings.
    pub io: f64,
}

/// [`BenchRow::device_memory_in_use_mib`]; `None` on a CPU or where it cannot be read.
fn gpu_memory_in_use_mib(device: tch::Device) -> Option<f64> {
    match device {
        tch::Device::Cpu => None,
        device => crate::runtime::memory::device_memory(device)
            .map_err(|e| tracing::warn!(error = %e, "GPU memory"))
            .ok()
            .map(|m| (m.total - m.free) as f64 / (1 << 20) as f64),
    }
}

/// What `promptad bench` measured.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    pub data: String,
    pub category: String,
    pub generated: bool,
    pub image_size: Option<u32>,
    pub backbone: Backbone,
    pub device: String,
    pub threads: i32,
    pub batch_size: usize,
    /// The backbone's forward alone on batches of `batch_size`: CPU time per image, in ms.
    pub backbone_core_ms_per_image: f64,
    /// The same forward's wall time per image, in ms (synchronised on CUDA).
    pub backbone_alone_ms_per_image: f64,
    /// FLOPs of the backbone's V-V forward per image, in GFLOP (`clip::vision::forward_vv_flops`).
    pub backbone_gflop_per_image: f64,
    /// The best of a few square matrix products on the device at the backbone's precision
    /// (2048² on a CPU, 8192² on CUDA), in GFLOP/s: the roofline the forward is placed against.
    pub matmul_gflops: f64,
    /// The forward alone's GFLOP/s as a share of `matmul_gflops`.
    pub backbone_roofline_share: f64,
    /// Decoding and preprocessing an image and its mask alone, on one thread, over the first
    /// images of the category: CPU time per image, in ms (the reader's share of host work).
    pub preprocess_core_ms_per_image: f64,
    pub rows: Vec<BenchRow>,
}

/// Measures scoring of `options` with `clip`; `artifact` is the model to score with (`None`
/// trains one, 1 step on 1 shot: the cost of scoring does not depend on what was learned).
pub fn run_bench(
    options: &BenchOptions,
    clip: &Clip,
    backbone: &Backbone,
    artifact: Option<Artifact>,
    stop: &StopToken,
    mut progress: impl FnMut(&str),
) -> Result<BenchReport, BenchError> {
    if options.modes.is_empty() {
        return Err(BenchError::Empty("no --maps mode given"));
    }
    let work = &options.work_dir;
    let (data, generated) = match &options.data {
        Some(url) => (url.clone(), false),
        None => {
            // Checked before anything is written: a refused request leaves no work folder behind.
            let config = generated_config(options)?;
            progress("generating the data");
            (generated_data(&config, &work.join("data"))?.display().to_string(), true)
        }
    };
    std::fs::create_dir_all(work).map_err(|source| BenchError::Io { what: "creating", path: work.clone(), source })?;
    let dataset = Dataset::open(&data)?;
    let available = dataset.categories()?;
    let category = match &options.category {
        Some(c) => c.clone(),
        None if generated => GENERATED_CATEGORY.into(),
        None => available.first().cloned().ok_or(BenchError::Empty("the dataset has no category"))?,
    };
    if !available.contains(&category) {
        return Err(dataset.unknown_category(&category).into());
    }
    let artifact = match artifact {
        Some(a) => a,
        None => {
            progress("training a 1-step model to score with");
            let model = Location::parse(&work.join("model").display().to_string())?;
            let job = TrainJob::official(data.clone(), category.clone(), 1, options.seed, 1);
            train_category(&job, clip, backbone.clone(), &model, true, stop, |_, _, _| {})?;
            Artifact::read(&model)?
        }
    };
    let detect = artifact.manifest.detect.clone();
    let batch_size = options.batch_size.resolve(&artifact, clip, detect.map_size as u32)?;
    progress("timing the backbone alone");
    let (backbone_alone_ms, backbone_core_ms) = time_backbone(&artifact, clip, &detect, batch_size)?;
    progress("timing a matrix product");
    let matmul_gflops = matmul_gflops(clip.device, clip.precision.kind());
    let backbone_gflop = forward_vv_flops(&clip.config) / 1e9;
    progress("timing preprocessing alone");
    let sizes = Sizes { input: clip.visual.image_size() as u32, map: detect.map_size as u32 };
    let preprocess_core_ms = time_preprocess(&dataset, &category, sizes)?;
    let pass = |mode: MapsMode, out: &Path, shard: (usize, usize), rows_per_unit: usize| {
        let _ = std::fs::remove_dir_all(out);
        let options = ScoreOptions {
            batch_size,
            overwrite: true,
            rows_per_unit,
            shard,
            run_id: Some("bench".into()),
            maps: mode,
            time_forward_cpu: true,
            ..ScoreOptions::default()
        };
        let out = Location::parse(&out.display().to_string())?;
        Ok::<_, BenchError>(score_category(
            &artifact,
            clip,
            detect.clone(),
            &dataset,
            &category,
            &out,
            &options,
            stop,
            |_| {},
        )?)
    };
    // Warm-up: the first batch, so that no measured pass pays for one-time start-up.
    let units = dataset.test_units(&category, batch_size)?.len().max(1);
    progress("warming up");
    pass(options.modes[0], &work.join("warm-up"), (0, units), batch_size)?;
    let mut rows = Vec::new();
    for &mode in &options.modes {
        progress(&format!("scoring with --maps {}", mode.name()));
        let out = work.join(format!("out-{}", mode.name()));
        let rss_resets = reset_peak_rss();
        let (started, cpu, host) = (Instant::now(), process_cpu_seconds(), host_cpu_seconds());
        let summary = pass(mode, &out, (0, 1), ScoreOptions::default().rows_per_unit)?;
        let host = host_cpu_seconds().since(&host);
        let (wall, cpu_s) = (started.elapsed().as_secs_f64(), process_cpu_seconds() - cpu);
        let images = summary.images.max(1) as f64;
        let per_image = |seconds: f64| 1000.0 * seconds / images;
        let map_bytes = folder_bytes(&out.join("maps"));
        rows.push(BenchRow {
            maps: mode,
            images: summary.images,
            images_per_s: summary.images as f64 / wall,
            seconds: summary.seconds,
            cpu_s,
            core_ms_per_image: per_image(cpu_s),
            host_core_ms_per_image: per_image(cpu_s - summary.seconds.backbone_cpu),
            host_core_ms_by_stage: HostStageMs {
                read: per_image(host.read),
                decode: per_image(host.decode),
                model: per_image(cpu_s - host.total() - summary.seconds.backbone_cpu),
                write: per_image(host.write),
                io: per_image(host.io),
            },
            backbone_ms_per_image: per_image(summary.seconds.backbone),
            peak_rss_mib: if rss_resets { peak_rss_mib() } else { f64::NAN },
            map_bytes_per_image: map_bytes as f64 / images,
            device_memory_in_use_mib: gpu_memory_in_use_mib(clip.device),
        });
    }
    Ok(BenchReport {
        data,
        category,
        generated,
        image_size: generated.then_some(options.image_size),
        backbone: backbone.clone(),
        device: format!("{:?}", clip.device),
        threads: tch::get_num_threads(),
        batch_size,
        backbone_core_ms_per_image: backbone_core_ms,
        backbone_alone_ms_per_image: backbone_alone_ms,
        preprocess_core_ms_per_image: preprocess_core_ms,
        backbone_gflop_per_image: backbone_gflop,
        matmul_gflops,
        backbone_roofline_share: backbone_gflop * 1000.0 / backbone_alone_ms / matmul_gflops,
        rows,
    })
}

/// The backbone's forward alone over a few batches of `batch` preprocessed (random) images,
/// after one warm-up batch: `(wall ms, process CPU ms)` per image.
fn time_backbone(
    artifact: &Artifact,
    clip: &Clip,
    detect: &crate::detect::DetectConfig,
    batch: usize,
) -> Result<(f64, f64), BenchError> {
    let detector = detector(artifact, clip, detect.clone());
    let size = clip.visual.image_size();
    let images = tch::Tensor::randn([batch as i64, 3, size, size], (tch::Kind::Float, clip.device));
    let forward = || -> Result<(), BenchError> {
        let features = detector.features(&images).map_err(ScoreError::Model)?;
        if let tch::Device::Cuda(index) = clip.device {
            tch::Cuda::synchronize(index as i64);
        }
        drop(features);
        Ok(())
    };
    forward()?;
    const BATCHES: usize = 4;
    let (started, cpu) = (Instant::now(), process_cpu_seconds());
    for _ in 0..BATCHES {
        forward()?;
    }
    let n = (BATCHES * batch) as f64;
    Ok((1000.0 * started.elapsed().as_secs_f64() / n, 1000.0 * (process_cpu_seconds() - cpu) / n))
}

/// The best of three timed `n × n` products at `kind` on `device` (after one untimed), GFLOP/s.
fn matmul_gflops(device: tch::Device, kind: tch::Kind) -> f64 {
    let n: i64 = if device.is_cuda() { 8192 } else { 2048 };
    let a = tch::Tensor::randn([n, n], (tch::Kind::Float, device)).to_kind(kind);
    let b = tch::Tensor::randn([n, n], (tch::Kind::Float, device)).to_kind(kind);
    let sync = || {
        if let tch::Device::Cuda(index) = device {
            tch::Cuda::synchronize(index as i64);
        }
    };
    let mut best = f64::INFINITY;
    for round in 0..4 {
        sync();
        let started = Instant::now();
        let product = a.matmul(&b);
        sync();
        drop(product);
        if round > 0 {
            best = best.min(started.elapsed().as_secs_f64());
        }
    }
    2.0 * (n as f64).powi(3) / best / 1e9
}

/// Decodes and preprocesses the first (up to) 32 test images of `category` one after another on
/// this thread, after one untimed image: process CPU ms per image (nothing else runs meanwhile).
fn time_preprocess(dataset: &Dataset, category: &str, sizes: Sizes) -> Result<f64, BenchError> {
    const IMAGES: usize = 32;
    let unit = dataset.test_units(category, IMAGES)?.into_iter().next().ok_or(BenchError::Empty("no test images"))?;
    let records: Vec<_> = dataset.read_unit(&unit, IMAGES)?.next().transpose()?.unwrap_or_default();
    let Some(first) = records.first() else { return Err(BenchError::Empty("no test images")) };
    prepare(first.clone(), sizes, Compat::Rgb).input.map_err(ScoreError::from)?;
    let cpu = process_cpu_seconds();
    for record in &records {
        prepare(record.clone(), sizes, Compat::Rgb).input.map_err(ScoreError::from)?;
    }
    Ok(1000.0 * (process_cpu_seconds() - cpu) / records.len() as f64)
}

/// Generates `config`'s dataset into `dir`, or reuses what an earlier bench generated there
/// with the same settings.
fn generated_data(config: &SynthConfig, dir: &Path) -> Result<PathBuf, BenchError> {
    let stamp = dir.join("bench-config.json");
    let wanted = format!("{config:?}");
    if std::fs::read_to_string(&stamp).is_ok_and(|s| s == wanted) {
        return Ok(dir.to_path_buf());
    }
    generate(config, dir, || {})?;
    std::fs::write(&stamp, wanted).map_err(|source| BenchError::Io { what: "writing", path: stamp, source })?;
    Ok(dir.to_path_buf())
}

/// The synth settings for `options.images` test images of [`GENERATED_CATEGORY`], a quarter of
/// them defective, or why synth cannot name that many.
fn generated_config(options: &BenchOptions) -> Result<SynthConfig, BenchError> {
    let types =
        synth::categories().into_iter().find(|c| c.name == GENERATED_CATEGORY).map_or(1, |c| c.defect_types.len());
    let split = |images: usize| {
        let per_type = images / 4 / types;
        (images.saturating_sub(per_type * types), per_type)
    };
    let fits = |images: usize| {
        let (good, per_type) = split(images);
        good <= MAX_IMAGES_PER_DIR && per_type <= MAX_IMAGES_PER_DIR
    };
    if !fits(options.images) {
        // Good images are three quarters of the total, so the largest total is below 4/3 of a
        // directory's worth.
        let most = (0..=MAX_IMAGES_PER_DIR * 4 / 3 + types).rev().find(|&n| fits(n)).unwrap_or(0);
        return Err(BenchError::TooManyImages { images: options.images, most, per_dir: MAX_IMAGES_PER_DIR });
    }
    let (test_good, per_type) = split(options.images);
    Ok(SynthConfig {
        seed: options.seed,
        categories: vec![GENERATED_CATEGORY.into()],
        image_size: options.image_size,
        train_good: 1,
        test_good,
        test_defective_per_type: per_type,
        encoding: options.encoding,
        overwrite: true,
    })
}

/// Bytes of the files under `dir`.
fn folder_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    entries
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => folder_bytes(&e.path()),
            _ => e.metadata().map_or(0, |m| m.len()),
        })
        .sum()
}

/// The report as an aligned table.
pub fn table(report: &BenchReport) -> String {
    let source = if report.generated {
        format!(
            "{} generated images of {}² ({})",
            report.rows[0].images,
            report.image_size.unwrap_or(0),
            report.category
        )
    } else {
        format!("{} category {}", report.data, report.category)
    };
    let mut out = format!(
        "bench: {source}; backbone {} ({}); {}, {} threads, batch {}\n",
        report.backbone.config_name,
        match report.backbone.weights {
            crate::artifact::Weights::RandomInit { .. } => "random weights",
            crate::artifact::Weights::Checkpoint { .. } => "checkpoint",
        },
        report.device,
        report.threads,
        report.batch_size
    );
    out.push_str(&format!(
        "backbone forward alone: {:.1} ms and {:.1} core-ms per image ({:.2} GFLOP per image: {:.0} GFLOP/s, {:.0} % \
         of a matrix product's {:.0} GFLOP/s); decoding and preprocessing alone: {:.1} core-ms per image\n\n",
        report.backbone_alone_ms_per_image,
        report.backbone_core_ms_per_image,
        report.backbone_gflop_per_image,
        report.backbone_gflop_per_image * 1000.0 / report.backbone_alone_ms_per_image,
        100.0 * report.backbone_roofline_share,
        report.matmul_gflops,
        report.preprocess_core_ms_per_image
    ));
    out.push_str(&format!(
        "{:<8} {:>7} {:>9} {:>7} {:>7} {:>8} {:>8} {:>10} {:>8} {:>7} {:>12} {:>12} {:>12} {:>9} {:>12}\n",
        "maps",
        "images",
        "images/s",
        "wall s",
        "read s",
        "decode s",
        "model s",
        "backbone s",
        "write s",
        "wait s",
        "write wait s",
        "core-ms/img",
        "host core-ms",
        "peak MiB",
        "maps B/img"
    ));
    for r in &report.rows {
        let s = &r.seconds;
        out.push_str(&format!(
            "{:<8} {:>7} {:>9.2} {:>7.2} {:>7.2} {:>8.2} {:>8.2} {:>10.2} {:>8.2} {:>7.2} {:>12.2} {:>12.1} {:>12.1} {:>9.0} {:>12.0}\n",
            r.maps.name(), r.images, r.images_per_s, s.wall, s.read, s.decode, s.model, s.backbone, s.write, s.wait, s.write_wait,
            r.core_ms_per_image, r.host_core_ms_per_image, r.peak_rss_mib, r.map_bytes_per_image
        ));
    }
    out.push_str(&format!(
        "\nhost core-ms per image by stage\n{:<8} {:>7} {:>7} {:>7} {:>7} {:>7} {:>7}\n",
        "maps", "read", "decode", "model", "write", "io", "total"
    ));
    for r in &report.rows {
        let h = &r.host_core_ms_by_stage;
        out.push_str(&format!(
            "{:<8} {:>7.2} {:>7.2} {:>7.2} {:>7.2} {:>7.2} {:>7.2}\n",
            r.maps.name(),
            h.read,
            h.decode,
            h.model,
            h.write,
            h.io,
            r.host_core_ms_per_image
        ));
    }
    for r in &report.rows {
        if let Some(mib) = r.device_memory_in_use_mib {
            out.push_str(&format!("{}: {mib:.0} MiB of GPU memory in use after the pass\n", r.maps.name()));
        }
    }
    out
}
