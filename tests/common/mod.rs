//! Shared by the integration tests: fixture paths, the reference Python, the binary, comparisons.
#![allow(dead_code)]

#[allow(dead_code)]
pub mod s3;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use tch::{Kind, Tensor};

pub fn fixture(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(relative)
}

/// The venv interpreter with torch, open_clip and scikit-learn (scripts/bootstrap.sh makes it).
pub fn python() -> PathBuf {
    let path = std::env::var_os("PROMPTAD_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var("HOME").expect("HOME")).join(".cache/promptad/venv/bin/python"));
    assert!(
        path.exists(),
        "reference Python {} not found: run scripts/bootstrap.sh (or set PROMPTAD_PYTHON)",
        path.display()
    );
    path
}

/// Runs a fixture script with the reference Python; panics with its output if it fails.
pub fn run_python(script: &str, args: &[&str]) {
    let output = Command::new(python()).arg(fixture(script)).args(args).output().expect("start python");
    assert!(output.status.success(), "{script} {args:?} failed:\n{}", String::from_utf8_lossy(&output.stderr));
}

pub fn promptad(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_promptad")).args(args).output().expect("start promptad")
}

pub fn read_tensors(path: &Path) -> HashMap<String, Tensor> {
    Tensor::read_safetensors(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display())).into_iter().collect()
}

pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.size(), b.size(), "shapes differ");
    (a.to_kind(Kind::Double) - b.to_kind(Kind::Double)).abs().max().double_value(&[])
}

/// Asserts `max |a - b| <= tol`, naming the tensor, and returns the difference for reporting.
pub fn assert_close(what: &str, got: &Tensor, want: &Tensor, tol: f64) -> f64 {
    let diff = max_abs_diff(got, want);
    eprintln!("{what}: max |Δ| = {diff:.3e} (tolerance {tol:.0e})");
    assert!(diff <= tol, "{what}: max |Δ| = {diff:e} > {tol:e}");
    diff
}

/// The store location of a local folder.
#[allow(dead_code)]
pub fn loc(path: &Path) -> promptad::store::Location {
    promptad::store::Location::parse(path.to_str().expect("utf-8 path")).unwrap()
}

/// The dataset (folders or shards) at a local folder.
#[allow(dead_code)]
pub fn dataset(path: &Path) -> promptad::data::dataset::Dataset {
    promptad::data::dataset::Dataset::open(path.to_str().expect("utf-8 path")).unwrap()
}

/// Copies the folder `from` to `to`, recursively.
#[allow(dead_code)]
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// A child process waited on by its own thread: [`Watched::ended_within`] blocks on a channel
/// until the child exits or the time is up (no polling of the child), [`Watched::wait`] until it
/// exits. The child is signalled by pid.
pub struct Watched {
    pub pid: u32,
    exit: std::sync::mpsc::Receiver<std::io::Result<std::process::ExitStatus>>,
}

impl Watched {
    pub fn spawn(command: &mut Command) -> Self {
        let mut child = command.spawn().expect("spawn the child process");
        let pid = child.id();
        let (sender, exit) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = sender.send(child.wait());
        });
        Self { pid, exit }
    }

    /// The exit status if the child ends within `limit`, else `None` after `limit`.
    pub fn ended_within(&self, limit: std::time::Duration) -> Option<std::process::ExitStatus> {
        match self.exit.recv_timeout(limit) {
            Ok(status) => Some(status.expect("wait for the child process")),
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => None,
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => panic!("the waiting thread ended without a status"),
        }
    }

    pub fn wait(self) -> std::process::ExitStatus {
        self.exit.recv().expect("the waiting thread sends the status").expect("wait for the child process")
    }

    /// Sends signal `name` (`KILL`, `TERM`, ...) to the child; false if it had already ended.
    pub fn signal(&self, name: &str) -> bool {
        let status = Command::new("kill").args([&format!("-{name}"), &self.pid.to_string()]).status().unwrap();
        status.success()
    }
}

/// The files under `dir` (recursively) whose paths end with `suffix`, sorted.
pub fn files_under(dir: &Path, suffix: &str) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(files_under(&path, suffix));
        } else if path.to_string_lossy().ends_with(suffix) {
            out.push(path);
        }
    }
    out.sort();
    out
}
