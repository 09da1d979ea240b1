//! Scoring an archive from Parquet image shards, on local storage and on the S3 test server
//! (moto on loopback), with the `promptad score` binary as a user runs it: images/s, peak RSS,
//! and where the time goes (read, decode, model, write). Peak memory must not grow with the
//! archive, so each store is measured at two sizes.
//!
//! `cargo bench --bench archive`. Settings (environment):
//! - `PROMPTAD_BENCH_ARCHIVE_SIZES` (default `1000,10000`): images per case;
//! - `PROMPTAD_BENCH_ARCHIVE_STORES` (default `file,s3`);
//! - `PROMPTAD_BENCH_ARCHIVE_DISTINCT` (default 500): distinct generated images (256 px PNG, one
//!   category); an archive of N images holds each of them N/500 times under distinct ids, which
//!   costs the same to score as N distinct images and keeps generation short.
//!
//! The backbone is `demo-vit-240` with random weights (no pretrained weights here); the model
//! share of the time is therefore smaller than with ViT-B-16+ (docs/benchmarks.md has that
//! one's throughput).
//!
//! Each case prints one JSON line; results are recorded in docs/archive-benchmark.md.

mod common;
#[allow(dead_code)]
#[path = "../tests/common/s3.rs"]
mod s3;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::started_by_cargo_bench;
use promptad::data::shard::{write_shard, ImageRecord, ShardInfo, ShardList, SHARD_LIST, SHARD_SCHEMA_VERSION};
use promptad::data::synth::{generate, SynthConfig};
use promptad::store::Location;

const CATEGORY: &str = "marble";
const ROWS_PER_SHARD: usize = 256;

fn env_list(name: &str, default: &str) -> Vec<String> {
    std::env::var(name)
        .unwrap_or_else(|_| default.into())
        .split(',')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

fn promptad(args: &[&str]) -> (String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_promptad"))
        .args(args)
        .env("RUST_LOG", "info")
        .output()
        .expect("start promptad");
    let (stdout, stderr) =
        (String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned());
    assert!(out.status.success(), "promptad {args:?}:\n{stdout}\n{stderr}");
    (stdout, stderr)
}

/// The generated images (cached across runs: generation is deterministic).
fn source(distinct: usize) -> PathBuf {
    let dir = PathBuf::from(std::env::var("HOME").unwrap()).join(format!(".cache/promptad/bench/archive-{distinct}"));
    if !dir.join("synth.json").is_file() {
        let config = SynthConfig {
            seed: 31,
            categories: vec![CATEGORY.into()],
            image_size: 256,
            train_good: 4,
            test_good: distinct / 2,
            test_defective_per_type: distinct / 8,
            overwrite: true,
            ..SynthConfig::default()
        };
        generate(&config, &dir, || {}).unwrap();
    }
    dir
}

/// An archive of `images` shard rows at `root`, cycling over the test images of `data`.
fn build_archive(data: &Path, root: &Location, images: usize) {
    let local = Location::parse(data.to_str().unwrap()).unwrap();
    let folder = promptad::data::folder::scan_category(&local, CATEGORY).unwrap();
    let records: Vec<ImageRecord> =
        folder.test.iter().map(|s| promptad::data::dataset::fetch(&local, s).unwrap()).collect();
    let train: Vec<ImageRecord> =
        folder.train_good.iter().map(|s| promptad::data::dataset::fetch(&local, s).unwrap()).collect();
    let mut shards: Vec<ShardInfo> = vec![write_shard(root, CATEGORY, "train", 0, train.into_iter().map(Ok)).unwrap()];
    for (index, start) in (0..images).step_by(ROWS_PER_SHARD).enumerate() {
        let rows = (start..(start + ROWS_PER_SHARD).min(images)).map(|i| {
            let mut r = records[i % records.len()].clone();
            r.image_id = format!("{}#{}", r.image_id, i / records.len());
            Ok(r)
        });
        shards.push(write_shard(root, CATEGORY, "test", index, rows).unwrap());
    }
    let list = ShardList { schema_version: SHARD_SCHEMA_VERSION, source: data.display().to_string(), shards };
    root.put(SHARD_LIST, serde_json::to_vec(&list).unwrap().into()).unwrap();
}

fn case(store: &str, images: usize, data: &Path, model: &str, scratch: &Path) -> serde_json::Value {
    let root = match store {
        "s3" => s3::url(&format!("archive-{images}")),
        _ => format!("file://{}/{store}-{images}", scratch.display()),
    };
    let shards = Location::parse(&format!("{root}/shards")).unwrap();
    build_archive(data, &shards, images);
    let out = format!("{root}/scores");
    let (_, stderr) = promptad(&[
        "score",
        "--model",
        model,
        "--data",
        shards.url(),
        "--out",
        &out,
        "--device",
        "cpu",
        "--batch-size",
        "16",
    ]);
    let finished: serde_json::Value = stderr
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["fields"]["message"] == "scoring finished")
        .expect("the score command logs `scoring finished`");
    let f = &finished["fields"];
    let share = |k: &str| f[k].as_f64().unwrap() / f["wall_s"].as_f64().unwrap();
    serde_json::json!({
        "store": store, "images": f["images"], "images_per_s": f["images_per_s"], "peak_rss_mib": f["peak_rss_mib"],
        "wall_s": f["wall_s"], "read_s": f["read_s"], "decode_s": f["decode_s"], "model_s": f["model_s"], "write_s": f["write_s"], "wait_s": f["wait_s"],
        "share_of_wall": {"read": share("read_s"), "decode": share("decode_s"), "model": share("model_s"), "write": share("write_s"), "wait": share("wait_s")},
    })
}

fn main() {
    if !started_by_cargo_bench() {
        return;
    }
    let distinct: usize =
        std::env::var("PROMPTAD_BENCH_ARCHIVE_DISTINCT").ok().and_then(|v| v.parse().ok()).unwrap_or(500);
    let data = source(distinct);
    let scratch = tempfile::tempdir().unwrap();
    let model = scratch.path().join("model");
    promptad(&[
        "train",
        "--data",
        data.to_str().unwrap(),
        "--category",
        CATEGORY,
        "--category-name",
        "marble",
        "-k",
        "1",
        "--steps",
        "1",
        "--model-config",
        "demo-vit-240",
        "--random-init",
        "1",
        "--device",
        "cpu",
        "--out",
        model.to_str().unwrap(),
    ]);
    for store in env_list("PROMPTAD_BENCH_ARCHIVE_STORES", "file,s3") {
        for images in env_list("PROMPTAD_BENCH_ARCHIVE_SIZES", "1000,10000") {
            let images: usize = images.parse().expect("sizes are numbers");
            println!("{}", case(&store, images, &data, model.to_str().unwrap(), scratch.path()));
        }
    }
}
