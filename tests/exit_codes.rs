//! The exit-code table (`src/exit.rs`), row by row, in flag mode and in worker mode (issue 11):
//! the same failure ends with the same code whichever way the command was started, and the copy
//! of the table in `jobs/README.md` is the table.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

use promptad::exit;

fn promptad() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_promptad"));
    command.env_remove("JOB_COMPLETION_INDEX").env("RUST_LOG", "info");
    command
}

fn run(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = promptad();
    command.current_dir(dir).args(args);
    for (k, v) in env {
        command.env(k, v);
    }
    command.output().unwrap()
}

fn text(output: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))
}

/// Asserts the exit code and that the failure says what the code means.
#[track_caller]
fn assert_code(output: &Output, code: u8, what: &str) {
    assert_eq!(output.status.code(), Some(i32::from(code)), "{what}:\n{}", text(output));
    if code != exit::OK && code != exit::USAGE {
        assert!(
            text(output).contains(&format!("exit code {code} (")),
            "{what} does not explain its code:\n{}",
            text(output)
        );
    }
}

const SPEC: &str = r#"
[dataset]
url = "DATA"
catalog = "synth"
categories = ["weave"]
[backbone]
random_init = 3
[train]
shots = [1]
seeds = [5]
artifacts = "models"
steps = 2
[score]
out = "results"
run_id = "t"
rows_per_unit = 4
[runtime]
device = "cpu"
"#;

/// A generated dataset, a copy of it with one undecodable test image, specs over both, and a
/// model trained on the good one in each mode; built once for the whole file.
struct Fixture {
    dir: tempfile::TempDir,
    /// The model trained in flag mode.
    model: PathBuf,
}

fn spec(dir: &Path, name: &str, data: &str, extra: &[(&str, &str)]) -> String {
    let mut body = SPEC.replace("DATA", data);
    for (from, to) in extra {
        body = body.replace(from, to);
    }
    std::fs::write(dir.join(name), body).unwrap();
    name.to_string()
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let synth = [
            "synth",
            "--out",
            "data",
            "--categories",
            "weave",
            "--image-size",
            "64",
            "--train-good",
            "2",
            "--test-good",
            "2",
            "--test-defective",
            "1",
        ];
        assert_code(&run(root, &synth, &[]), exit::OK, "synth");
        common::copy_dir(&root.join("data"), &root.join("bad-data"));
        let victim = std::fs::read_dir(root.join("bad-data/weave/test/good")).unwrap().next().unwrap().unwrap().path();
        std::fs::write(&victim, b"\x89PNG\r\n\x1a\nthis is not a png").unwrap();
        spec(root, "good.toml", "data", &[]);
        spec(root, "bad.toml", "bad-data", &[("out = \"results\"", "out = \"bad-results\"")]);
        let train = [
            "train",
            "--data",
            "data",
            "--category",
            "weave",
            "--category-name",
            "weave",
            "-k",
            "1",
            "--random-init",
            "3",
            "--steps",
            "2",
            "--device",
            "cpu",
            "--out",
            "flag-model",
        ];
        assert_code(&run(root, &train, &[]), exit::OK, "training in flag mode");
        Fixture { model: root.join("flag-model"), dir }
    })
}

fn score_flags<'a>(f: &'a Fixture, data: &'a str, out: &'a str) -> Vec<&'a str> {
    vec!["score", "--model", f.model.to_str().unwrap(), "--data", data, "--out", out, "--device", "cpu"]
}

#[test]
fn ok_in_both_modes() {
    let f = fixture();
    let root = f.dir.path();
    assert_code(&run(root, &score_flags(f, "data", "ok-flag"), &[]), exit::OK, "scoring in flag mode");
    assert_code(&run(root, &["train", "--spec", "good.toml", "--index", "0"], &[]), exit::OK, "training worker");
    assert_code(&run(root, &["score", "--spec", "good.toml", "--index", "0"], &[]), exit::OK, "scoring worker");
    // Done already: still 0.
    assert_code(&run(root, &["train", "--spec", "good.toml", "--index", "0"], &[]), exit::OK, "a finished model");
}

#[test]
fn unexpected_failures_exit_1_in_both_modes() {
    let f = fixture();
    let root = f.dir.path();
    // The staging folder for Parquet files cannot be created (its parent is a file).
    let staging = [("PROMPTAD_STAGING_DIR", "/dev/null/staging")];
    assert_code(&run(root, &score_flags(f, "data", "fail-flag"), &staging), exit::FAILED, "flag mode");
    let spec = spec(
        root,
        "fail.toml",
        "data",
        &[("out = \"results\"", "out = \"fail-results\""), ("artifacts = \"models\"", "artifacts = \"fail-models\"")],
    );
    assert_code(&run(root, &["train", "--spec", &spec, "--index", "0"], &[]), exit::OK, "training for it");
    assert_code(&run(root, &["score", "--spec", &spec, "--index", "0"], &staging), exit::FAILED, "worker mode");
}

#[test]
fn a_bad_command_line_exits_2_in_both_modes() {
    let f = fixture();
    let root = f.dir.path();
    assert_code(&run(root, &["score", "--model", "m", "--bogus"], &[]), exit::USAGE, "flag mode");
    // Flags that the spec decides are refused in worker mode.
    assert_code(&run(root, &["train", "--spec", "good.toml", "--index", "0", "-k", "4"], &[]), exit::USAGE, "worker");
}

#[test]
fn an_impossible_request_exits_64_in_both_modes() {
    let f = fixture();
    let root = f.dir.path();
    let mut args = score_flags(f, "data", "bad-worker");
    args.extend(["--index", "2", "--shard-count", "2"]);
    let out = run(root, &args, &[]);
    assert_code(&out, exit::BAD_CONFIG, "flag mode: an index not below the worker count");
    assert!(text(&out).contains("--index 2 must be below --shard-count 2"), "{}", text(&out));
    let mut args = score_flags(f, "data", "bad-run");
    args.extend(["--run", "no/slashes"]);
    assert_code(&run(root, &args, &[]), exit::BAD_CONFIG, "flag mode: a bad run id");
    assert_code(&run(root, &["train", "--spec", "good.toml", "--index", "9"], &[]), exit::BAD_CONFIG, "worker mode");
    let out = run(root, &["score", "--spec", "good.toml"], &[]);
    assert_code(&out, exit::BAD_CONFIG, "worker mode without an index");
    // More generated images than synth's three-digit names hold: refused before anything is
    // written, with the largest count that fits (weave has 3 defect types: 1,333 images are
    // 1,000 good and 3 × 111 defective; 1,334 would be 1,001 good) and what to do instead.
    let out = run(root, &["bench", "--images", "10000", "--work", "bench-10000", "--device", "cpu"], &[]);
    assert_code(&out, exit::BAD_CONFIG, "bench: too many images to generate");
    assert!(text(&out).contains("--images 10000: generated data holds at most 1333 test images"), "{}", text(&out));
    assert!(text(&out).contains("--data DIR"), "{}", text(&out));
    assert!(!root.join("bench-10000").exists(), "a refused bench writes nothing");
}

#[test]
fn bad_input_data_exits_65_in_both_modes() {
    let f = fixture();
    let root = f.dir.path();
    // An undecodable image, without --skip-bad: the error names it and says how to go on.
    let out = run(root, &score_flags(f, "bad-data", "bad-flag"), &[]);
    assert_code(&out, exit::BAD_INPUT, "flag mode: an undecodable image");
    assert!(text(&out).contains("bad-data/weave/test/good") && text(&out).contains("--skip-bad"), "{}", text(&out));
    // With --skip-bad the image is recorded and the run is still not clean: 65 as well.
    let mut args = score_flags(f, "bad-data", "bad-flag-skip");
    args.push("--skip-bad");
    assert_code(&run(root, &args, &[]), exit::BAD_INPUT, "flag mode: a skipped image");
    assert_code(&run(root, &["train", "--spec", "bad.toml", "--index", "0"], &[]), exit::OK, "training on bad-data");
    assert_code(&run(root, &["score", "--spec", "bad.toml", "--index", "0"], &[]), exit::BAD_INPUT, "worker mode");
}

#[test]
fn a_damaged_artifact_and_a_truncated_shard_exit_65() {
    let f = fixture();
    let root = f.dir.path();
    // A model whose tensors do not match its manifest's checksum.
    let damaged = root.join("damaged-model");
    common::copy_dir(&f.model, &damaged);
    let tensors = damaged.join("tensors.safetensors");
    let mut bytes = std::fs::read(&tensors).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&tensors, bytes).unwrap();
    let args = ["score", "--model", damaged.to_str().unwrap(), "--data", "data", "--out", "dmg", "--device", "cpu"];
    let out = run(root, &args, &[]);
    assert_code(&out, exit::BAD_INPUT, "a checksum mismatch");
    assert!(text(&out).contains("does not match its manifest"), "{}", text(&out));
    // A shard cut short.
    assert_code(&run(root, &["shard", "data", "--out", "shards"], &[]), exit::OK, "packing");
    let shard = root.join("shards/category=weave/split=test/part-00000.parquet");
    let bytes = std::fs::read(&shard).unwrap();
    std::fs::write(&shard, &bytes[..bytes.len() / 2]).unwrap();
    let out = run(root, &score_flags(f, "shards", "truncated"), &[]);
    assert_code(&out, exit::BAD_INPUT, "a truncated shard");
    assert!(text(&out).contains("part-00000.parquet"), "{}", text(&out));
}

#[test]
fn missing_input_exits_66_in_both_modes() {
    let f = fixture();
    let root = f.dir.path();
    let args = ["score", "--model", "no-such-model", "--data", "data", "--out", "missing", "--device", "cpu"];
    assert_code(&run(root, &args, &[]), exit::MISSING_INPUT, "flag mode: no model");
    let mut args = score_flags(f, "data", "missing-category");
    args.extend(["--category", "bottle"]);
    assert_code(&run(root, &args, &[]), exit::MISSING_INPUT, "flag mode: no such category");
    let spec = spec(root, "nodata.toml", "nothing-here", &[]);
    assert_code(&run(root, &["train", "--spec", &spec, "--index", "0"], &[]), exit::MISSING_INPUT, "worker: no data");
    // promptad bench on given data: a category it does not hold is named with the ones it does.
    let bench = ["bench", "--data", "data", "--category", "bottle", "--work", "bench", "--device", "cpu"];
    let out = run(root, &bench, &[]);
    assert_code(&out, exit::MISSING_INPUT, "bench: no such category");
    assert!(text(&out).contains("\"bottle\"") && text(&out).contains("weave"), "{}", text(&out));
}

#[test]
fn an_unreachable_store_exits_75_in_both_modes() {
    let f = fixture();
    let root = f.dir.path();
    // Nothing listens on port 9 of the loopback: the connection is refused at once.
    let env = [
        ("AWS_ENDPOINT", "http://127.0.0.1:9"),
        ("AWS_ALLOW_HTTP", "true"),
        ("AWS_REGION", "us-east-1"),
        ("AWS_ACCESS_KEY_ID", "test"),
        ("AWS_SECRET_ACCESS_KEY", "test"),
        ("PROMPTAD_S3_MAX_RETRIES", "0"),
        ("PROMPTAD_S3_RETRY_TIMEOUT_S", "5"),
    ];
    let out = run(root, &score_flags(f, "s3://archive/shards", "unreachable"), &env);
    assert_code(&out, exit::TEMPORARY, "flag mode");
    assert!(text(&out).contains("AWS_ENDPOINT"), "{}", text(&out));
    let spec = spec(root, "s3.toml", "s3://archive/shards", &[]);
    assert_code(&run(root, &["train", "--spec", &spec, "--index", "0"], &env), exit::TEMPORARY, "worker mode");
}

/// Starts `args`, sends SIGTERM once training has begun, and returns the exit status and log.
fn stopped_by_sigterm(root: &Path, args: &[&str]) -> (Option<i32>, String) {
    use std::io::BufRead;
    let mut child =
        promptad().current_dir(root).args(args).stderr(Stdio::piped()).stdout(Stdio::null()).spawn().unwrap();
    let mut log = Vec::new();
    for line in std::io::BufReader::new(child.stderr.take().unwrap()).lines() {
        let line = line.unwrap();
        if line.contains("shots chosen") {
            // The handler is installed before the command starts its work.
            assert!(Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap().success());
        }
        log.push(line);
    }
    (child.wait().unwrap().code(), log.join("\n"))
}

#[test]
fn sigterm_exits_143_in_both_modes_and_leaves_no_model() {
    let f = fixture();
    let root = f.dir.path();
    let flag = [
        "train",
        "--data",
        "data",
        "--category",
        "weave",
        "--category-name",
        "weave",
        "-k",
        "1",
        "--random-init",
        "3",
        "--steps",
        "100000",
        "--device",
        "cpu",
        "--out",
        "stopped-model",
    ];
    let (code, log) = stopped_by_sigterm(root, &flag);
    assert_eq!(code, Some(143), "flag mode:\n{log}");
    assert!(!root.join("stopped-model/manifest.json").exists(), "a stopped training wrote a model");
    let spec = spec(
        root,
        "long.toml",
        "data",
        &[("steps = 2", "steps = 100000"), ("artifacts = \"models\"", "artifacts = \"long-models\"")],
    );
    let (code, log) = stopped_by_sigterm(root, &["train", "--spec", &spec, "--index", "0"]);
    assert_eq!(code, Some(143), "worker mode:\n{log}");
    assert!(log.contains("exit code 143 ("), "{log}");
    assert!(!root.join("long-models/data/weave/k1/seed5/manifest.json").exists(), "a stopped worker wrote a model");
}

#[test]
fn the_readme_table_is_the_table() {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("jobs/README.md")).unwrap();
    let start = readme.find("<!-- exit-codes:start").expect("jobs/README.md has the exit-code markers");
    let body = &readme[readme[start..].find("-->").unwrap() + start + 3..];
    let end = body.find("<!-- exit-codes:end -->").unwrap();
    assert_eq!(
        body[..end].trim(),
        exit::markdown_table().trim(),
        "jobs/README.md's exit-code table is stale; replace it with:\n{}",
        exit::markdown_table()
    );
    // Every row is also in --help.
    let help = String::from_utf8_lossy(&promptad().arg("--help").output().unwrap().stdout).into_owned();
    for row in &exit::TABLE {
        assert!(help.contains(&format!("{:>3}  {}", row.code, row.meaning)), "--help lacks {}:\n{help}", row.code);
    }
}
