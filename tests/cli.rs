//! The binary as a black box: doctor, tokenize, and a complete --help for every subcommand.

mod common;

use common::promptad;

#[test]
fn doctor_passes_on_this_machine() {
    let run = promptad(&["doctor"]);
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(run.status.success(), "{stdout}{}", String::from_utf8_lossy(&run.stderr));
    assert!(stdout.contains("version check:       ok") && stdout.contains("self-test Cpu:  ok"), "{stdout}");
    let run = promptad(&["doctor", "--json"]);
    let report: serde_json::Value = serde_json::from_slice(&run.stdout).unwrap();
    assert_eq!(report["ok"], true);
    assert_eq!(report["torch"]["required"], "2.11.0");
    assert!(report["torch"]["loaded_version"].as_str().unwrap().starts_with("2.11.0"));
}

#[test]
fn tokenize_prints_open_clip_ids() {
    // Reference ids from open_clip 3.3.0 (openclip-vit-b-16-plus-240.md §4.3, promptad §3.4).
    let run = promptad(&["tokenize", "a photo of a cat", "N N N N A bottle."]);
    assert!(run.status.success());
    let lines: Vec<&str> = std::str::from_utf8(&run.stdout).unwrap().lines().collect();
    assert_eq!(lines, ["[49406,320,1125,539,320,2368,49407]", "[49406,333,333,333,333,320,5392,269,49407]"]);
    let run = promptad(&["tokenize", "--pad", "x"]);
    let ids: Vec<i64> = serde_json::from_slice(&run.stdout).unwrap();
    assert_eq!(ids.len(), 77);
}

#[test]
fn every_subcommand_documents_its_flags() {
    for (command, flags) in [
        ("doctor", &["--json"][..]),
        ("embed", &["--weights", "--model-config", "--device", "--precision", "--image", "--text", "--taps"]),
        ("tokenize", &["--pad", "--context-length"]),
        ("synth", &["--seed", "--categories", "--image-size", "--overwrite"]),
        (
            "train",
            &[
                "--data",
                "--category",
                "--category-name",
                "--shots",
                "--weights",
                "--random-init",
                "--no-eam",
                "--guidance",
                "--spec",
                "--index",
            ],
        ),
        (
            "score",
            &[
                "--model",
                "--data",
                "--compat",
                "--skip-bad",
                "--overwrite",
                "--batch-size",
                "--run-id",
                "--shard-index",
                "--shard-count",
                "--rows-per-unit",
                "s3://",
                "--spec",
                "--index",
            ],
        ),
        ("shard", &["--rows-per-shard", "--categories", "--plain-category", "--overwrite", "s3://", "_shards.json"]),
        ("demo", &["--out", "--weights", "--steps", "--json"]),
        ("eval", &["--format", "--run", "s3://"]),
        ("sql", &["--format", "--run", "s3://"]),
        ("plan", &["--check", "--format"]),
        ("run", &["--local", "--parallel", "--backoff-limit-per-index", "--run-id"]),
    ] {
        let run = promptad(&[command, "--help"]);
        let help = String::from_utf8_lossy(&run.stdout);
        assert!(run.status.success(), "{command} --help failed");
        for flag in flags {
            assert!(help.contains(flag), "`promptad {command} --help` does not document {flag}:\n{help}");
        }
    }
    let top = String::from_utf8_lossy(&promptad(&["--help"]).stdout).into_owned();
    for command in
        ["doctor", "embed", "tokenize", "synth", "shard", "train", "score", "demo", "eval", "sql", "plan", "run"]
    {
        assert!(top.contains(command), "{top}");
    }
}
