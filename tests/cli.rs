//! The binary as a black box: doctor, tokenize, and a complete --help for every subcommand.

mod common;

use clap::CommandFactory;
use common::promptad;

#[test]
fn doctor_passes_on_this_machine() {
    let run = promptad(&["doctor"]);
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(run.status.success(), "{stdout}{}", String::from_utf8_lossy(&run.stderr));
    assert!(stdout.contains("version check:       ok") && stdout.contains("self-test Cpu:  ok"), "{stdout}");
    let run = promptad(&["doctor", "--format", "json"]);
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
        ("doctor", &["--format"][..]),
        ("embed", &["--weights", "--model-config", "--device", "--precision", "--image", "--text", "--taps", "--out"]),
        ("tokenize", &["--pad", "--context-length"]),
        ("synth", &["--seed", "--categories", "--image-size", "--overwrite", "--out"]),
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
                "--no-calibration",
                "--maps",
                "compact",
                "rebuild_map",
                "--batch-size",
                "--run",
                "--index",
                "--shard-count",
                "--rows-per-unit",
                "s3://",
                "--spec",
                "--index",
            ],
        ),
        (
            "shard",
            &["--rows-per-shard", "--categories", "--plain-category", "--overwrite", "s3://", "_shards.json", "--out"],
        ),
        ("demo", &["--out", "--weights", "--steps", "--format"]),
        ("eval", &["--format", "--run", "s3://"]),
        ("calibrate", &["--model", "--run", "--category", "--image-quantile", "--pixel-quantile", "--overwrite", "F1"]),
        ("report", &["--out", "--run", "--per-group", "index.html", "calibrat"]),
        ("sql", &["--format", "--run", "s3://", "rebuild_map", "grid"]),
        (
            "bench",
            &[
                "--data",
                "--model",
                "--images",
                "--image-size",
                "--encoding",
                "--maps",
                "--work",
                "--format",
                "host core-ms",
            ],
        ),
        ("plan", &["--check", "--format"]),
        ("run", &["--local", "--parallel", "--backoff-limit-per-index", "--run"]),
    ] {
        let run = promptad(&[command, "--help"]);
        let help = String::from_utf8_lossy(&run.stdout);
        assert!(run.status.success(), "{command} --help failed");
        for flag in flags {
            assert!(help.contains(flag), "`promptad {command} --help` does not document {flag}:\n{help}");
        }
    }
    let top = String::from_utf8_lossy(&promptad(&["--help"]).stdout).into_owned();
    for command in [
        "doctor",
        "embed",
        "tokenize",
        "synth",
        "shard",
        "train",
        "score",
        "demo",
        "eval",
        "sql",
        "plan",
        "run",
        "calibrate",
        "report",
        "bench",
    ] {
        assert!(top.contains(command), "{top}");
    }
}

#[test]
fn bench_measures_every_maps_mode_on_the_same_data() {
    let work = tempfile::tempdir().unwrap();
    let args = ["bench", "--images", "8", "--image-size", "64", "--batch-size", "4", "--maps", "full,compact,none"];
    let mut args: Vec<&str> = args.to_vec();
    let dir = work.path().to_str().unwrap();
    args.extend(["--work", dir, "--device", "cpu", "--format", "json"]);
    let run = promptad(&args);
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let report: serde_json::Value = serde_json::from_slice(&run.stdout).unwrap();
    let rows = report["rows"].as_array().unwrap();
    let modes: Vec<&str> = rows.iter().map(|r| r["maps"].as_str().unwrap()).collect();
    assert_eq!(modes, ["full", "compact", "none"]);
    // demo-vit-240's V-V forward is 4.29 GFLOP per image (clip::vision's unit test counts its
    // matrix products); the roofline and the preprocessing are measured.
    assert!((report["backbone_gflop_per_image"].as_f64().unwrap() - 4.289404928).abs() < 1e-9, "{report}");
    for key in ["matmul_gflops", "backbone_roofline_share", "preprocess_core_ms_per_image"] {
        let value = report[key].as_f64().unwrap();
        assert!(value.is_finite() && value > 0.0, "{key}: {value}");
    }
    // What each mode wrote, from the files themselves.
    let map_bytes = |mode: &str| -> u64 {
        common::files_under(&work.path().join(format!("out-{mode}/maps")), ".parquet")
            .iter()
            .map(|f| std::fs::metadata(f).unwrap().len())
            .sum()
    };
    for row in rows {
        let mode = row["maps"].as_str().unwrap();
        assert_eq!(row["images"], 8, "{mode}");
        let reported = row["map_bytes_per_image"].as_f64().unwrap() * 8.0;
        assert!((reported - map_bytes(mode) as f64).abs() < 1e-6, "{mode}: {reported} vs {}", map_bytes(mode));
        let seconds = &row["seconds"];
        assert!(seconds["backbone"].as_f64().unwrap() <= seconds["model"].as_f64().unwrap(), "{mode}");
        let core_ms = row["core_ms_per_image"].as_f64().unwrap();
        assert!(core_ms > 0.0, "{mode}");
        // The forwards' CPU is the model threads' share of the process's, so host work is what
        // is left of it: never negative (the old subtraction of a separate timing could be).
        let forward_cpu = seconds["backbone_cpu"].as_f64().unwrap();
        assert!(forward_cpu > 0.0 && forward_cpu <= row["cpu_s"].as_f64().unwrap(), "{mode}: {row}");
        let host = row["host_core_ms_per_image"].as_f64().unwrap();
        assert!((0.0..core_ms).contains(&host), "{mode}: {row}");
        // The stages add up to the host's total; decoding is the reader pool's and always
        // costs something, and no host stage spends negative time (each is a clock's growth).
        let stages = &row["host_core_ms_by_stage"];
        let stage = |name: &str| stages[name].as_f64().unwrap();
        let sum: f64 = ["read", "decode", "model", "write", "io"].iter().map(|&n| stage(n)).sum();
        assert!((sum - host).abs() < 1e-6 * host.max(1.0), "{mode}: {stages} vs {host}");
        assert!(stage("decode") > 0.0, "{mode}: {stages}");
        for name in ["read", "decode", "write", "io"] {
            assert!(stage(name) >= 0.0, "{mode}: {name} {stages}");
        }
    }
    // A full map holds 400 × 400 u16; the compact row only its grid.
    assert!(map_bytes("full") > 8 * 20_000, "{}", map_bytes("full"));
    assert!(map_bytes("compact") < map_bytes("full") / 8);
    // Generated data is reused by a second bench with the same settings.
    let stamp = std::fs::metadata(work.path().join("data/bench-config.json")).unwrap().modified().unwrap();
    assert!(promptad(&args).status.success());
    assert_eq!(std::fs::metadata(work.path().join("data/bench-config.json")).unwrap().modified().unwrap(), stamp);
}

/// Every argument clap knows of, in every subcommand, is in that subcommand's `--help` with a
/// description, unless it is a hidden old spelling; a flag added without docs fails here.
#[test]
fn every_flag_clap_knows_is_documented_in_help() {
    let cli = promptad::cli::Cli::command();
    let mut checked = 0;
    for sub in cli.get_subcommands() {
        let name = sub.get_name();
        let run = promptad(&[name, "--help"]);
        let help = String::from_utf8_lossy(&run.stdout);
        assert!(run.status.success(), "{name} --help failed");
        for arg in sub.get_arguments().filter(|a| !a.is_hide_set()) {
            let id = arg.get_id().as_str();
            if id == "help" || id == "version" {
                continue;
            }
            let shown = match arg.get_long() {
                Some(long) => format!("--{long}"),
                None => format!("<{}>", arg.get_value_names().and_then(|v| v.first()).map_or(id, |v| v.as_str())),
            };
            assert!(help.contains(&shown), "`promptad {name} --help` does not show {shown}:\n{help}");
            let documented = arg.get_long_help().or(arg.get_help()).is_some_and(|h| !h.to_string().trim().is_empty());
            assert!(documented, "`promptad {name}`: {shown} has no description");
            checked += 1;
        }
    }
    assert!(checked > 80, "only {checked} arguments seen: the walk over the commands is broken");
}

/// One spelling per concept (issue 11): outputs are --out, run ids --run, work indices --index,
/// formats --format; the old spellings still parse, hidden, for one release.
#[test]
fn old_flag_spellings_still_parse_but_are_hidden() {
    use clap::Parser;
    for old in [
        &["promptad", "score", "--model", "m", "--data", "d", "--out", "o", "--run-id", "r", "--shard-index", "1"][..],
        &["promptad", "embed", "--random-init", "1", "--text", "x", "--output", "e.safetensors"],
        &["promptad", "doctor", "--json"],
        &["promptad", "demo", "--json"],
        &["promptad", "synth", "dir"],
        &["promptad", "shard", "src", "dst"],
        &["promptad", "run", "spec.toml", "--local", "--run-id", "r"],
    ] {
        promptad::cli::Cli::try_parse_from(old).unwrap_or_else(|e| panic!("{old:?}: {e}"));
    }
    let cli = promptad::cli::Cli::command();
    for (command, hidden) in [("score", "run-id"), ("score", "shard-index"), ("embed", "output")] {
        let sub = cli.find_subcommand(command).unwrap();
        let shown: Vec<&str> = sub.get_arguments().filter_map(|a| a.get_long()).collect();
        assert!(!shown.contains(&hidden), "--{hidden} of {command} is an alias, not a flag of its own");
    }
    let help = String::from_utf8_lossy(&promptad(&["score", "--help"]).stdout).into_owned();
    assert!(!help.contains("--run-id") && !help.contains("--shard-index"), "{help}");
}
