//! `cargo bench --bench promptad`: PromptAD on the full-size ViT-B-16-plus-240 (random weights),
//! fp32 CPU: training time per category for k = 1, 2, 4 and scoring throughput with peak memory.
//!
//! Each case runs in its own process (its VmHWM is its own). Training runs
//! PROMPTAD_BENCH_TRAIN_STEPS steps per head (default 5) and reports the per-step time and the
//! projection to the official 100 steps; a step's cost does not depend on the step, so the
//! projection is linear. Scoring runs the whole test split of one generated category
//! (PROMPTAD_BENCH_TEST_IMAGES per defect type, default 6) at batch 8.

mod common;

use std::path::{Path, PathBuf};
use std::time::Instant;

use common::{full_size_weights, peak_rss_mib, run_self, started_by_cargo_bench};
use promptad::artifact::{Artifact, Backbone, Weights};
use promptad::clip::{Clip, ModelConfig, Precision};
use promptad::data::dataset::Dataset;
use promptad::data::prepare::Compat;
use promptad::data::synth::{generate, SynthConfig};
use promptad::detect::DetectConfig;
use promptad::pipeline::score::{score_category, ScoreOptions};
use promptad::pipeline::train::{train_category, train_category_quietly, TrainJob};
use promptad::prompt::train::Head;
use promptad::stop::StopToken;
use promptad::store::Location;
use tch::Device;

const CATEGORY: &str = "washer";

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn load(weights: &Path) -> (Clip, Backbone) {
    let config = ModelConfig::vit_b_16_plus_240();
    let clip = Clip::load(config.clone(), weights, Device::Cpu, Precision::Fp32).unwrap();
    let backbone = Backbone {
        config_name: "ViT-B-16-plus-240".into(),
        config,
        weights: Weights::Checkpoint { path: weights.to_path_buf(), sha256: "benchmark".into() },
        logit_scale: clip.logit_scale_raw(),
    };
    (clip, backbone)
}

fn location(path: &Path) -> Location {
    Location::parse(path.to_str().unwrap()).unwrap()
}

fn job(data: &Path, k: usize, steps: usize) -> TrainJob {
    TrainJob {
        category_name: Some(CATEGORY.into()),
        anomaly_suffixes: Some(vec![
            "{} with scratch".into(),
            "{} with crack".into(),
            "{} with missing part".into(),
            "{} with stain".into(),
        ]),
        ..TrainJob::official(data.display().to_string(), CATEGORY, k, 111, steps)
    }
}

fn train_case(weights: &Path, data: &Path, k: usize) {
    let (clip, backbone) = load(weights);
    let steps = env_usize("PROMPTAD_BENCH_TRAIN_STEPS", 5);
    let tmp = tempfile::tempdir().unwrap();
    let mut step_times: Vec<(Head, Instant)> = Vec::new();
    let started = Instant::now();
    let manifest = train_category(
        &job(data, k, steps),
        &clip,
        backbone,
        &location(&tmp.path().join("m")),
        false,
        &StopToken::new(),
        |head, _, _| step_times.push((head, Instant::now())),
    )
    .unwrap();
    let total = started.elapsed().as_secs_f64();
    let per_step = |head: Head| {
        let report = if head == Head::Image { &manifest.image_head.report } else { &manifest.pixel_head.report };
        report.seconds / steps as f64
    };
    let (image_step, pixel_step) = (per_step(Head::Image), per_step(Head::Pixel));
    let fixed = total - manifest.image_head.report.seconds - manifest.pixel_head.report.seconds;
    println!(
        "{}",
        serde_json::json!({"case": "train", "k": k, "steps": steps, "image_step_s": image_step, "pixel_step_s": pixel_step,
            "fixed_s": fixed, "projected_100_steps_s": fixed + 100.0 * (image_step + pixel_step), "peak_rss_mib": peak_rss_mib()})
    );
}

fn score_case(weights: &Path, data: &Path) {
    let (clip, backbone) = load(weights);
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("m");
    train_category_quietly(&job(data, 1, 1), &clip, backbone, &location(&model)).unwrap();
    let artifact = Artifact::read(&location(&model)).unwrap();
    let options = ScoreOptions { batch_size: 8, compat: Compat::Rgb, ..ScoreOptions::default() };
    let started = Instant::now();
    let dataset = Dataset::open(&data.display().to_string()).unwrap();
    let summary = score_category(
        &artifact,
        &clip,
        DetectConfig::default(),
        &dataset,
        CATEGORY,
        &location(&tmp.path().join("s")),
        &options,
        &StopToken::new(),
        |_| {},
    )
    .unwrap();
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "{}",
        serde_json::json!({"case": "score", "images": summary.images, "seconds": seconds, "images_per_s": summary.images as f64 / seconds,
            "peak_rss_mib": peak_rss_mib()})
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(pos) = args.iter().position(|a| a == "--case") {
        let (weights, data) = (PathBuf::from(&args[pos + 2]), PathBuf::from(&args[pos + 3]));
        match args[pos + 1].split_once(':') {
            Some(("train", k)) => train_case(&weights, &data, k.parse().unwrap()),
            _ => score_case(&weights, &data),
        }
        return;
    }
    if !started_by_cargo_bench() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let weights = full_size_weights(tmp.path());
    let data = tmp.path().join("data");
    let per_type = env_usize("PROMPTAD_BENCH_TEST_IMAGES", 6);
    let synth = SynthConfig {
        seed: 1,
        categories: vec![CATEGORY.into()],
        image_size: 256,
        train_good: 4,
        test_good: per_type,
        test_defective_per_type: per_type,
        overwrite: false,
        ..SynthConfig::default()
    };
    generate(&synth, &data, || {}).unwrap();
    let (w, d) = (weights.to_str().unwrap(), data.to_str().unwrap());
    println!("| case | result | peak RSS (MiB) |\n|---|---|---|");
    for k in [1, 2, 4] {
        let r = run_self(&["--case", &format!("train:{k}"), w, d]);
        println!(
            "| train k={k} | {:.2} s/step image head, {:.2} s/step pixel head, {:.1} s fixed; projected {:.0} s for 100 steps ({} steps measured) | {:.0} |",
            r["image_step_s"].as_f64().unwrap(), r["pixel_step_s"].as_f64().unwrap(), r["fixed_s"].as_f64().unwrap(),
            r["projected_100_steps_s"].as_f64().unwrap(), r["steps"], r["peak_rss_mib"].as_f64().unwrap()
        );
    }
    let r = run_self(&["--case", "score", w, d]);
    println!(
        "| score, batch 8 | {:.3} images/s ({} images in {:.1} s, incl. decode and Parquet writes) | {:.0} |",
        r["images_per_s"].as_f64().unwrap(),
        r["images"],
        r["seconds"].as_f64().unwrap(),
        r["peak_rss_mib"].as_f64().unwrap()
    );
}
