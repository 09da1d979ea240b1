//! Shared by the benchmarks: the reference Python, full-size random weights, peak memory.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

pub fn python() -> PathBuf {
    std::env::var_os("PROMPTAD_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var("HOME").expect("HOME")).join(".cache/promptad/venv/bin/python"))
}

pub fn manifest_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Random full-size ViT-B-16-plus-240 weights from open_clip (PROMPTAD_BENCH_WEIGHTS reuses a file).
pub fn full_size_weights(tmp: &Path) -> PathBuf {
    if let Some(w) = std::env::var_os("PROMPTAD_BENCH_WEIGHTS") {
        return PathBuf::from(w);
    }
    eprintln!("generating random full-size ViT-B-16-plus-240 weights with open_clip ...");
    let status = Command::new(python())
        .arg(manifest_dir().join("tests/fixtures/make_clip_fixtures.py"))
        .args(["full", tmp.to_str().expect("utf-8 temp path")])
        .status()
        .expect("start python");
    assert!(status.success(), "fixture generation failed");
    tmp.join("weights.safetensors")
}

#[allow(unused_imports)]
pub use promptad::runtime::peak_rss_mib;

/// Runs this benchmark binary again with `args` and returns its last stdout line as JSON.
pub fn run_self(args: &[&str]) -> serde_json::Value {
    let out = Command::new(std::env::current_exe().expect("current exe")).args(args).output().expect("re-run bench");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(stdout.lines().last().unwrap_or("{}")).expect("case prints JSON")
}

/// Whether `cargo bench` started this binary (it passes `--bench`). `cargo test --all-targets`
/// runs bench targets too, without it: they then only prove that they build, and return at once.
pub fn started_by_cargo_bench() -> bool {
    std::env::args().any(|a| a == "--bench")
}
