//! `cargo bench --bench metrics`: exact pixel AUROC and AUPRO at scale, ours (per-image
//! statistics + the DataFusion aggregates) against the exact Python reference, on the same data.
//!
//! The data: N images of 400 × 400 (the size of the stored maps), generated here from a fixed
//! seed: on about half of the images 1 to 4 elliptic defect blobs (the mask), and a score map
//! that is a smooth background plus noise plus a per-blob signal on the defect pixels plus some
//! bright false-positive spots, quantised to u16 exactly as `promptad score` stores maps. The
//! 1,000-image set is written to a temporary folder (`maps.u16`: N·400·400 little-endian u16,
//! `masks.u8`: N·400·400 bytes, 0 or 1) and both sides read those files.
//!
//! Cases, each in its own process so that its peak memory (VmHWM / ru_maxrss) is its own:
//!
//! - `ours`: a DataFusion query `SELECT pixel_auroc(stats), pixel_aupro(stats, 0.3)` over a
//!   streaming table whose partitions (one per core) read the images one by one, build each
//!   image's `ImageStats::from_map` and hand them to the aggregates in batches of 8: no map is
//!   kept after its statistics are built, and no statistics after they are merged. Timed: the
//!   whole query (reading the files, statistics, merges, the metrics).
//! - `memtable`: the statistics of every image first (rayon), held in a `MemTable`, then the same
//!   query; shows what holding every image's statistics costs.
//! - `reference`: `benches/metrics_reference.py`: numpy/scikit-learn over all pixels at once
//!   (`roc_auc_score`, and the exact AUPRO of `tests/fixtures/make_metric_cases.py`, the MVTec AD
//!   definition anomalib >= 2.3 computes).
//! - `ours` on images generated inside the stream (no file), for N and 20 × N images: the
//!   peak memory must not grow with the number of images.
//!
//! Both sides must agree to 1e-9 (the statistics are exact for the stored scores; the reference
//! computes on the dequantised scores q / 65535). Environment: PROMPTAD_BENCH_IMAGES (default
//! 1000), PROMPTAD_BENCH_LARGE_IMAGES (default 20000), PROMPTAD_BENCH_SKIP_REFERENCE=1.

mod common;

use std::fs::File;
use std::io::{BufWriter, Write};
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

use arrow::array::{AsArray, RecordBatch};
use arrow::datatypes::{Float64Type, Schema, SchemaRef};
use common::{manifest_dir, peak_rss_mib, python, run_self, started_by_cargo_bench};
use datafusion::catalog::streaming::StreamingTable;
use datafusion::datasource::MemTable;
use datafusion::error::DataFusionError;
use datafusion::execution::TaskContext;
use datafusion::physical_plan::stream::RecordBatchReceiverStreamBuilder;
use datafusion::physical_plan::streaming::PartitionStream;
use datafusion::physical_plan::SendableRecordBatchStream;
use datafusion::prelude::{SessionConfig, SessionContext};
use promptad::metrics::stats_arrow::{stats_schema_field, to_arrow};
use promptad::metrics::{quantize, ImageStats};
use promptad::runtime::rss_mib;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

const SIDE: usize = 400;
const PIXELS: usize = SIDE * SIDE;
const SEED: u64 = 20_240_611;
/// Images per record batch handed to the aggregates.
const BATCH: usize = 8;
const QUERY: &str = "SELECT pixel_auroc(stats) AS pixel_auroc, pixel_aupro(stats, 0.3) AS pixel_aupro FROM pixel_stats";
const TOLERANCE: f64 = 1e-9;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

// ------------------------------------------------------------------------------------ the data

/// Image `index` of the benchmark set: its quantised map and its mask (0/1), row-major.
fn generate_image(index: u64, map: &mut [u16], mask: &mut [u8]) {
    let mut rng = ChaCha8Rng::seed_from_u64(SEED);
    rng.set_stream(index);
    mask.fill(0);
    let mut signal = vec![0f32; PIXELS];
    let blob = |rng: &mut ChaCha8Rng, signal: &mut [f32], mask: Option<&mut [u8]>| {
        let (cx, cy) = (rng.random_range(0.0..SIDE as f32), rng.random_range(0.0..SIDE as f32));
        let (rx, ry) = (rng.random_range(3.0f32..40.0), rng.random_range(3.0f32..40.0));
        let strength = rng.random_range(0.02f32..0.45);
        let (y0, y1) = ((cy - ry).floor().max(0.0) as usize, ((cy + ry).ceil() as usize).min(SIDE - 1));
        let (x0, x1) = ((cx - rx).floor().max(0.0) as usize, ((cx + rx).ceil() as usize).min(SIDE - 1));
        let mut mask = mask;
        for y in y0..=y1 {
            for x in x0..=x1 {
                let d = ((x as f32 - cx) / rx).powi(2) + ((y as f32 - cy) / ry).powi(2);
                if d <= 1.0 {
                    let p = y * SIDE + x;
                    // strongest at the centre, a little at the rim
                    signal[p] = signal[p].max(strength * (1.2 - d));
                    if let Some(m) = mask.as_deref_mut() {
                        m[p] = 1;
                    }
                }
            }
        }
    };
    if rng.random_bool(0.5) {
        for _ in 0..rng.random_range(1..=4) {
            blob(&mut rng, &mut signal, Some(mask));
        }
    }
    for _ in 0..rng.random_range(0..=2) {
        blob(&mut rng, &mut signal, None);
    }
    let (fx, fy) = (rng.random_range(0.005f32..0.05), rng.random_range(0.005f32..0.05));
    let phase = rng.random_range(0.0f32..std::f32::consts::TAU);
    let columns: Vec<f32> = (0..SIDE).map(|x| (fx * x as f32 + phase).sin()).collect();
    let offset = rng.random_range(0.15f32..0.35);
    for (y, (map_row, signal_row)) in map.chunks_exact_mut(SIDE).zip(signal.chunks_exact(SIDE)).enumerate() {
        let row = (fy * y as f32).cos();
        for ((q, &column), &signal) in map_row.iter_mut().zip(&columns).zip(signal_row) {
            // sum of three uniforms: a bell-shaped noise, sd ≈ 0.1
            let noise = (rng.random::<f32>() + rng.random::<f32>() + rng.random::<f32>() - 1.5) * 0.2;
            *q = quantize((offset + 0.08 * column * row + signal + noise) as f64);
        }
    }
}

/// Where the images come from.
#[derive(Debug, Clone)]
enum Source {
    /// `maps.u16` and `masks.u8` in this folder.
    Files(PathBuf),
    /// Generated on the fly ([`generate_image`]).
    Generated,
}

/// Reads images of a [`Source`] into reused buffers.
struct Reader {
    files: Option<(File, File)>,
    bytes: Vec<u8>,
}

impl Reader {
    fn open(source: &Source) -> std::io::Result<Reader> {
        let files = match source {
            Source::Files(dir) => Some((File::open(dir.join("maps.u16"))?, File::open(dir.join("masks.u8"))?)),
            Source::Generated => None,
        };
        Ok(Reader { files, bytes: vec![0; PIXELS * 2] })
    }

    fn read(&mut self, index: usize, map: &mut [u16], mask: &mut [u8]) -> std::io::Result<()> {
        match &self.files {
            Some((maps, masks)) => {
                maps.read_exact_at(&mut self.bytes, (index * PIXELS * 2) as u64)?;
                for (q, b) in map.iter_mut().zip(self.bytes.chunks_exact(2)) {
                    *q = u16::from_le_bytes([b[0], b[1]]);
                }
                masks.read_exact_at(mask, (index * PIXELS) as u64)
            }
            None => {
                generate_image(index as u64, map, mask);
                Ok(())
            }
        }
    }
}

fn stats_of(
    reader: &mut Reader,
    index: usize,
    map: &mut [u16],
    mask: &mut [u8],
) -> datafusion::error::Result<ImageStats> {
    reader.read(index, map, mask)?;
    ImageStats::from_map(map, mask, SIDE, SIDE).map_err(|e| DataFusionError::External(Box::new(e)))
}

// ------------------------------------------------------------------------------- ours, streaming

fn stats_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![stats_schema_field()]))
}

/// One partition of the streaming `pixel_stats` table: images `range` of `source`, their
/// statistics built one at a time on a blocking thread and sent in batches of [`BATCH`].
#[derive(Debug)]
struct StatsPartition {
    schema: SchemaRef,
    source: Source,
    range: Range<usize>,
}

impl PartitionStream for StatsPartition {
    fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    fn execute(&self, _ctx: Arc<TaskContext>) -> SendableRecordBatchStream {
        let mut builder = RecordBatchReceiverStreamBuilder::new(self.schema.clone(), 1);
        let tx = builder.tx();
        let (schema, source, range) = (self.schema.clone(), self.source.clone(), self.range.clone());
        builder.spawn_blocking(move || {
            let mut reader = Reader::open(&source)?;
            let (mut map, mut mask) = (vec![0u16; PIXELS], vec![0u8; PIXELS]);
            let mut stats = Vec::with_capacity(BATCH);
            for i in range.clone() {
                stats.push(stats_of(&mut reader, i, &mut map, &mut mask)?);
                if stats.len() == BATCH || i + 1 == range.end {
                    let batch = RecordBatch::try_new(schema.clone(), vec![to_arrow(&stats)])?;
                    stats.clear();
                    if tx.blocking_send(Ok(batch)).is_err() {
                        break; // the query was dropped
                    }
                }
            }
            Ok(())
        });
        builder.build()
    }
}

fn session() -> SessionContext {
    let ctx = SessionContext::new_with_config(SessionConfig::new().with_target_partitions(cores()));
    promptad::metrics::register_all(&ctx);
    ctx
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

fn run_query(ctx: &SessionContext) -> (f64, f64) {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let batches = runtime.block_on(async { ctx.sql(QUERY).await?.collect().await }).unwrap();
    let column = |i: usize| batches[0].column(i).as_primitive::<Float64Type>().value(0);
    (column(0), column(1))
}

fn ours_case(source: Source, images: usize) {
    let baseline = rss_mib();
    let started = Instant::now();
    let ctx = session();
    let parts = cores().min(images.max(1));
    let partitions: Vec<Arc<dyn PartitionStream>> = (0..parts)
        .map(|p| {
            Arc::new(StatsPartition {
                schema: stats_schema(),
                source: source.clone(),
                range: p * images / parts..(p + 1) * images / parts,
            }) as _
        })
        .collect();
    ctx.register_table("pixel_stats", Arc::new(StreamingTable::try_new(stats_schema(), partitions).unwrap())).unwrap();
    let (auroc, aupro) = run_query(&ctx);
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "{}",
        serde_json::json!({"case": "ours", "source": matches!(source, Source::Files(_)).then_some("files").unwrap_or("generated"),
            "images": images, "pixel_auroc": auroc, "pixel_aupro": aupro, "seconds": seconds,
            "baseline_rss_mib": baseline, "peak_rss_mib": peak_rss_mib()})
    );
}

fn memtable_case(dir: &Path, images: usize) {
    let baseline = rss_mib();
    let started = Instant::now();
    let source = Source::Files(dir.to_path_buf());
    let stats: Vec<ImageStats> = (0..images)
        .into_par_iter()
        .map_init(
            || (Reader::open(&source).unwrap(), vec![0u16; PIXELS], vec![0u8; PIXELS]),
            |(reader, map, mask), i| stats_of(reader, i, map, mask).unwrap(),
        )
        .collect();
    let stats_seconds = started.elapsed().as_secs_f64();
    let stats_mib = stats.iter().map(|s| s.heap_size()).sum::<usize>() as f64 / (1 << 20) as f64;
    let bins = stats.iter().map(|s| s.bins().len()).sum::<usize>() as f64 / images.max(1) as f64;
    let parts = cores();
    let chunk = images.div_ceil(parts).max(1);
    let partitions: Vec<Vec<RecordBatch>> = stats
        .chunks(chunk)
        .map(|part| {
            part.chunks(BATCH).map(|b| RecordBatch::try_new(stats_schema(), vec![to_arrow(b)]).unwrap()).collect()
        })
        .collect();
    drop(stats);
    let ctx = session();
    ctx.register_table("pixel_stats", Arc::new(MemTable::try_new(stats_schema(), partitions).unwrap())).unwrap();
    let (auroc, aupro) = run_query(&ctx);
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "{}",
        serde_json::json!({"case": "memtable", "images": images, "pixel_auroc": auroc, "pixel_aupro": aupro, "seconds": seconds,
            "stats_seconds": stats_seconds, "stats_heap_mib": stats_mib, "mean_bins_per_image": bins,
            "baseline_rss_mib": baseline, "peak_rss_mib": peak_rss_mib()})
    );
}

fn generate_case(dir: &Path, images: usize) {
    let started = Instant::now();
    std::fs::create_dir_all(dir).unwrap();
    let mut maps = BufWriter::new(File::create(dir.join("maps.u16")).unwrap());
    let mut masks = BufWriter::new(File::create(dir.join("masks.u8")).unwrap());
    let (mut defective, mut defect_pixels) = (0usize, 0usize);
    // generated in parallel chunks, written in order
    for chunk in (0..images).collect::<Vec<_>>().chunks(64) {
        let generated: Vec<(Vec<u16>, Vec<u8>)> = chunk
            .par_iter()
            .map(|&i| {
                let (mut map, mut mask) = (vec![0u16; PIXELS], vec![0u8; PIXELS]);
                generate_image(i as u64, &mut map, &mut mask);
                (map, mask)
            })
            .collect();
        for (map, mask) in generated {
            let bytes: Vec<u8> = map.iter().flat_map(|q| q.to_le_bytes()).collect();
            maps.write_all(&bytes).unwrap();
            masks.write_all(&mask).unwrap();
            let n = mask.iter().filter(|&&m| m != 0).count();
            defective += (n > 0) as usize;
            defect_pixels += n;
        }
    }
    maps.flush().unwrap();
    masks.flush().unwrap();
    println!(
        "{}",
        serde_json::json!({"case": "generate", "images": images, "defective_images": defective, "defect_pixels": defect_pixels,
            "seconds": started.elapsed().as_secs_f64()})
    );
}

/// Runs the Python reference on the files in `dir`; its last stdout line is JSON.
fn reference_case(dir: &Path, images: usize) -> serde_json::Value {
    let script = manifest_dir().join("benches/metrics_reference.py");
    let out = Command::new(python()).arg(&script).arg(dir).arg(images.to_string()).output().expect("start python");
    assert!(out.status.success(), "{} failed:\n{}", script.display(), String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(stdout.lines().last().unwrap_or("{}")).expect("the reference prints JSON")
}

fn f(v: &serde_json::Value, key: &str) -> f64 {
    v[key].as_f64().unwrap_or_else(|| panic!("no number `{key}` in {v}"))
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(pos) = args.iter().position(|a| a == "--case") {
        let images: usize = args[pos + 2].parse().unwrap();
        match args[pos + 1].as_str() {
            "generate" => generate_case(Path::new(&args[pos + 3]), images),
            "ours-files" => ours_case(Source::Files(PathBuf::from(&args[pos + 3])), images),
            "ours-generated" => ours_case(Source::Generated, images),
            "memtable" => memtable_case(Path::new(&args[pos + 3]), images),
            other => panic!("unknown case {other}"),
        }
        return;
    }
    if !started_by_cargo_bench() {
        return;
    }
    let n = env_usize("PROMPTAD_BENCH_IMAGES", 1000);
    let large = env_usize("PROMPTAD_BENCH_LARGE_IMAGES", 20_000);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let d = dir.to_str().unwrap();
    let ns = n.to_string();
    eprintln!("generating {n} images of {SIDE}×{SIDE} into {d} ...");
    let data = run_self(&["--case", "generate", &ns, d]);
    eprintln!("{data}");
    let ours = run_self(&["--case", "ours-files", &ns, d]);
    eprintln!("{ours}");
    let memtable = run_self(&["--case", "memtable", &ns, d]);
    eprintln!("{memtable}");
    let reference = (std::env::var("PROMPTAD_BENCH_SKIP_REFERENCE").as_deref() != Ok("1")).then(|| {
        eprintln!("running the Python reference ...");
        let r = reference_case(&dir, n);
        eprintln!("{r}");
        r
    });
    drop(tmp);
    let generated = run_self(&["--case", "ours-generated", &ns, "-"]);
    eprintln!("{generated}");
    let big = run_self(&["--case", "ours-generated", &large.to_string(), "-"]);
    eprintln!("{big}");

    for other in [&memtable, &generated] {
        for m in ["pixel_auroc", "pixel_aupro"] {
            assert_eq!(f(other, m).to_bits(), f(&ours, m).to_bits(), "{m}: {other} vs {ours}");
        }
    }
    println!(
        "{} images of {SIDE}×{SIDE} ({:.2e} pixels), {} with defects; {} cores\n",
        n,
        (n * PIXELS) as f64,
        data["defective_images"],
        cores()
    );
    println!("| case | images | pixel AUROC | AUPRO (0.3) | time (s) | peak RSS (MiB) | RSS before (MiB) |\n|---|---|---|---|---|---|---|");
    let row = |name: &str, v: &serde_json::Value| {
        println!(
            "| {name} | {} | {:.12} | {:.12} | {:.2} | {:.0} | {:.0} |",
            v["images"],
            f(v, "pixel_auroc"),
            f(v, "pixel_aupro"),
            f(v, "seconds"),
            f(v, "peak_rss_mib"),
            f(v, "baseline_rss_mib")
        )
    };
    row("ours: streaming table, stats per image + SQL", &ours);
    row("ours: MemTable of all stats + SQL", &memtable);
    if let Some(r) = &reference {
        row("reference: numpy / scikit-learn, all pixels", r);
    }
    row("ours: streaming, images generated in the stream", &generated);
    row("ours: streaming, images generated in the stream", &big);
    println!(
        "\nMemTable: statistics {:.2} s, {:.0} MiB of statistics held ({:.0} bins per image on average)",
        f(&memtable, "stats_seconds"),
        f(&memtable, "stats_heap_mib"),
        f(&memtable, "mean_bins_per_image")
    );
    if let Some(r) = &reference {
        let (da, dp) = (
            (f(r, "pixel_auroc") - f(&ours, "pixel_auroc")).abs(),
            (f(r, "pixel_aupro") - f(&ours, "pixel_aupro")).abs(),
        );
        println!("|Δ| to the reference: pixel AUROC {da:.2e}, AUPRO {dp:.2e} (tolerance {TOLERANCE:.0e})");
        println!(
            "reference: load {:.2} s, pixel AUROC {:.2} s, AUPRO {:.2} s",
            f(r, "load_seconds"),
            f(r, "auroc_seconds"),
            f(r, "aupro_seconds")
        );
        println!(
            "ours vs reference at {n} images: {:.1}× faster, peak memory {:.1}× smaller (1/{:.0})",
            f(r, "seconds") / f(&ours, "seconds"),
            f(r, "peak_rss_mib") / f(&ours, "peak_rss_mib"),
            f(r, "peak_rss_mib") / f(&ours, "peak_rss_mib")
        );
        assert!(da <= TOLERANCE && dp <= TOLERANCE, "ours and the reference disagree");
    }
    println!(
        "ours, streaming: peak RSS {:.0} MiB at {} images, {:.0} MiB at {} images",
        f(&generated, "peak_rss_mib"),
        generated["images"],
        f(&big, "peak_rss_mib"),
        big["images"]
    );
}
