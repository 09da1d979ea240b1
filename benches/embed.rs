//! `cargo bench --bench embed`: image embedding throughput and peak memory of the full-size
//! ViT-B-16-plus-240 (random weights), fp32, side by side with open_clip's `encode_image` on the
//! same machine in the same run.
//!
//! Each (implementation, batch size) runs in its own process so that its peak RSS (VmHWM) is its
//! own: the parent re-executes this binary with `--case rust:<mode>:<batch>` and runs
//! `benches/open_clip_bench.py` for the reference. Rust modes: `embed` (what `promptad embed`
//! computes: the dual V-V path with taps 3 and 8) and `encode_image` (the plain tower, the
//! like-for-like comparison with open_clip).
//!
//! Options (environment): PROMPTAD_BENCH_BATCHES (default "1,8,32"), PROMPTAD_BENCH_SECONDS
//! (minimum timed seconds per case, default 10), PROMPTAD_BENCH_WEIGHTS (reuse a weights file).

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use common::{full_size_weights, manifest_dir, peak_rss_mib, python, run_self, started_by_cargo_bench};
use promptad::clip::{Clip, ModelConfig, Precision};
use tch::{Device, Kind, Tensor};

/// One case in this process; prints one JSON line.
fn run_case(weights: &std::path::Path, mode: &str, batch: i64, min_seconds: f64) {
    let clip = Clip::load(ModelConfig::vit_b_16_plus_240(), weights, Device::Cpu, Precision::Fp32).unwrap();
    let images = Tensor::randn([batch, 3, 240, 240], (Kind::Float, Device::Cpu));
    let forward = || {
        tch::no_grad(|| match mode {
            "embed" => drop(clip.visual.forward_vv(&images, &[3, 8]).unwrap()),
            "encode_image" => drop(clip.visual.encode_image(&images).unwrap()),
            other => panic!("unknown mode {other}"),
        })
    };
    forward(); // warm-up
    let started = Instant::now();
    let mut iterations = 0;
    while iterations < 2 || started.elapsed().as_secs_f64() < min_seconds {
        forward();
        iterations += 1;
    }
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "{}",
        serde_json::json!({"impl": format!("promptad {mode}"), "batch": batch, "iterations": iterations,
            "images_per_s": (batch * iterations) as f64 / seconds, "peak_rss_mib": peak_rss_mib(),
            "threads": tch::get_num_threads()})
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let min_seconds: f64 = std::env::var("PROMPTAD_BENCH_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(10.0);
    if let Some(pos) = args.iter().position(|a| a == "--case") {
        let weights = PathBuf::from(&args[pos + 2]);
        let spec: Vec<&str> = args[pos + 1].split(':').collect();
        run_case(&weights, spec[1], spec[2].parse().unwrap(), min_seconds);
        return;
    }
    if !started_by_cargo_bench() {
        return;
    }
    let batches: Vec<i64> = std::env::var("PROMPTAD_BENCH_BATCHES")
        .unwrap_or_else(|_| "1,8,32".into())
        .split(',')
        .map(|b| b.trim().parse().expect("PROMPTAD_BENCH_BATCHES is a comma-separated list of integers"))
        .collect();
    let manifest = manifest_dir();
    let tmp = tempfile::tempdir().unwrap();
    let weights = full_size_weights(tmp.path());
    eprintln!(
        "machine: {} cpus; each case runs >= {min_seconds}s after a warm-up, in its own process",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!("| implementation | batch | images/s | peak RSS (MiB) |");
    println!("|---|---|---|---|");
    let row = |r: &serde_json::Value| {
        println!(
            "| {} | {} | {:.3} | {:.0} |",
            r["impl"].as_str().unwrap_or("?"),
            r["batch"],
            r["images_per_s"].as_f64().unwrap_or(f64::NAN),
            r["peak_rss_mib"].as_f64().unwrap_or(f64::NAN)
        );
    };
    for &batch in &batches {
        for mode in ["encode_image", "embed"] {
            row(&run_self(&["--case", &format!("rust:{mode}:{batch}"), weights.to_str().unwrap()]));
        }
        let out = Command::new(python())
            .arg(manifest.join("benches/open_clip_bench.py"))
            .args([weights.to_str().unwrap(), &batch.to_string(), &min_seconds.to_string()])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        row(&serde_json::from_str(String::from_utf8_lossy(&out.stdout).lines().last().unwrap_or("{}")).unwrap());
    }
}
