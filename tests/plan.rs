//! `promptad plan` and the worker commands' contract, black-box (issue #6): the example specs
//! plan with the completions their keys imply, bad specs are refused with exit code 64 naming the
//! key, `--check` finds what is missing through the store and gives each scoring worker its
//! units, workers refuse what they cannot do with the documented exit codes, and a training
//! worker stopped by SIGTERM exits 143 without writing anything.

mod common;

use std::path::{Path, PathBuf};

use common::promptad;
use serde_json::Value;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn code(output: &std::process::Output) -> i32 {
    output.status.code().expect("exited normally")
}

fn text(output: &std::process::Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))
}

fn plan_json(spec: &Path, extra: &[&str]) -> (i32, Value, String) {
    let mut args = vec!["plan", spec.to_str().unwrap(), "--format", "json"];
    args.extend_from_slice(extra);
    let out = promptad(&args);
    let json = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    (code(&out), json, String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn every_example_spec_plans_with_the_completions_its_keys_imply() {
    let mut specs: Vec<PathBuf> = std::fs::read_dir(root().join("jobs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    specs.sort();
    let names: Vec<String> = specs.iter().map(|p| p.file_name().unwrap().to_string_lossy().into_owned()).collect();
    for wanted in ["mvtec.toml", "visa.toml", "synth.toml"] {
        assert!(names.iter().any(|n| n == wanted), "jobs/{wanted} is missing: {names:?}");
    }
    for spec in &specs {
        let (status, plan, stderr) = plan_json(spec, &[]);
        assert_eq!(status, 0, "{}: {stderr}", spec.display());
        // The counts from the keys, computed here without the planner.
        let raw: toml::Value = toml::from_str(&std::fs::read_to_string(spec).unwrap()).unwrap();
        let categories = match &raw["dataset"]["categories"] {
            toml::Value::String(all) if all == "all" => match raw["dataset"]["catalog"].as_str().unwrap() {
                "mvtec" => 15,
                "visa" => 12,
                "synth" => promptad::data::synth::categories().len(),
                other => panic!("{other}"),
            },
            toml::Value::Array(list) => list.len(),
            other => panic!("{other:?}"),
        };
        let shots = raw["train"]["shots"].as_array().unwrap().len();
        let seeds = raw["train"]["seeds"].as_array().unwrap().len();
        assert_eq!(plan["train"]["completions"], categories * shots * seeds, "{}", spec.display());
        let models = raw["score"].get("models").map_or(shots * seeds, |m| m.as_array().unwrap().len());
        let workers = raw["score"].get("workers_per_category").map_or(1, |w| w.as_integer().unwrap() as usize);
        let archive_categories: usize = match raw["score"].get("archives") {
            None => categories,
            Some(archives) => archives
                .as_array()
                .unwrap()
                .iter()
                .map(|a| a.get("categories").map_or(categories, |c| c.as_array().unwrap().len()))
                .sum(),
        };
        assert_eq!(plan["score"]["completions"], archive_categories * models * workers, "{}", spec.display());
        // Indexes are 0..completions, in order, each once.
        for job in ["train", "score"] {
            let items = plan[job]["items"].as_array().unwrap();
            assert_eq!(items.len() as u64, plan[job]["completions"].as_u64().unwrap());
            for (i, item) in items.iter().enumerate() {
                assert_eq!(item["index"], i, "{} {job}", spec.display());
            }
        }
        // Every scoring item's model is written by the training item it names.
        for item in plan["score"]["items"].as_array().unwrap() {
            let train = &plan["train"]["items"][item["train_index"].as_u64().unwrap() as usize];
            assert_eq!(train["artifact"], item["model"], "{}", spec.display());
        }
    }
}

#[test]
fn the_text_plan_lists_every_index_and_the_completions() {
    let out = promptad(&["plan", root().join("jobs/mvtec.toml").to_str().unwrap()]);
    let text = text(&out);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("training Job: completions 45"), "{text}");
    assert!(text.contains("completions 45 (one (archive, category, model, worker) per index)"), "{text}");
    assert!(text.contains("s3://promptad-models/promptad/mvtec/zipper/k4/seed111"), "{text}");
    assert!(text.contains("paper-k4-seed111"), "{text}");
}

fn write_spec(dir: &Path, name: &str, body: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, body).unwrap();
    path
}

const SPEC: &str = r#"
[dataset]
url = "data"
catalog = "synth"
categories = ["weave", "washer"]
[backbone]
random_init = 3
[train]
shots = [1, 2]
seeds = [5]
artifacts = "models"
steps = 2
[score]
out = "results"
run_id = "t"
workers_per_category = 2
rows_per_unit = 3
[runtime]
device = "cpu"
"#;

#[test]
fn bad_specs_exit_64_and_name_the_key() {
    let dir = tempfile::tempdir().unwrap();
    for (name, body, expected) in [
        (
            "typo.toml",
            SPEC.replace("\"washer\"", "\"wahser\""),
            vec!["dataset.categories[1]", "did you mean \"washer\""],
        ),
        ("unknown-key.toml", SPEC.replace("steps = 2", "step = 2"), vec!["unknown field", "step", "jobs/README.md"]),
        (
            "bad-url.toml",
            SPEC.replace("out = \"results\"", "out = \"gs://bucket/results\""),
            vec!["score.out", "unsupported scheme"],
        ),
        (
            "untrained.toml",
            SPEC.replace("run_id = \"t\"", "run_id = \"t\"\nmodels = [{ k = 4, seed = 5 }]"),
            vec!["score.models[0]", "not trained"],
        ),
        ("device.toml", SPEC.replace("device = \"cpu\"", "device = \"gpu\""), vec!["runtime.device"]),
    ] {
        let spec = write_spec(dir.path(), name, &body);
        let out = promptad(&["plan", spec.to_str().unwrap()]);
        let text = text(&out);
        assert_eq!(code(&out), 64, "{name}: {text}");
        assert!(text.contains(name), "{name}: the error does not name the file: {text}");
        for part in expected {
            assert!(text.contains(part), "{name}: expected {part:?} in: {text}");
        }
    }
    let missing = promptad(&["plan", dir.path().join("nope.toml").to_str().unwrap()]);
    assert_eq!(code(&missing), 64, "{}", text(&missing));
    assert!(text(&missing).contains("nope.toml"));
}

fn synth(dir: &Path, categories: &str) {
    let out = promptad(&[
        "synth",
        dir.to_str().unwrap(),
        "--categories",
        categories,
        "--image-size",
        "64",
        "--train-good",
        "2",
        "--test-good",
        "3",
        "--test-defective",
        "1",
    ]);
    assert!(out.status.success(), "{}", text(&out));
}

#[test]
fn check_reaches_the_data_and_gives_each_scoring_worker_its_units() {
    let dir = tempfile::tempdir().unwrap();
    synth(&dir.path().join("data"), "weave,washer");
    let spec = write_spec(dir.path(), "ok.toml", SPEC);
    let (status, plan, stderr) = plan_json(&spec, &["--check"]);
    assert_eq!(status, 0, "{stderr}\n{plan:#}");
    assert_eq!(plan["check"]["ok"], true);
    // weave: 3 good + 3 defect types; washer: 3 good + 4 defect types; 3 images per unit.
    let data = promptad::data::dataset::Dataset::open(dir.path().join("data").to_str().unwrap()).unwrap();
    for category in ["weave", "washer"] {
        let units = data.test_units(category, 3).unwrap();
        for k in [1, 2] {
            let mine: Vec<&Value> = plan["score"]["items"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|s| s["category"] == category && s["k"] == k)
                .collect();
            assert_eq!(mine.len(), 2, "two workers per category and model");
            // The workers' ranges partition the units, in order.
            let mut next = 0;
            let mut images = 0;
            for item in mine {
                let range = &item["units"];
                assert_eq!(range["start"], next, "{item:#}");
                assert_eq!(range["of"], units.len());
                next = range["end"].as_u64().unwrap() as usize;
                images += range["images"].as_u64().unwrap() as usize;
            }
            assert_eq!(next, units.len());
            assert_eq!(images, units.iter().map(|u| u.images).sum::<usize>(), "{category}");
        }
    }
    assert!(
        plan["check"]["notes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n.as_str().unwrap().contains("0 of 4 models trained")),
        "{plan:#}"
    );

    // A category the data lacks, and weights that are not there: exit 66, each named.
    let body = SPEC
        .replace("[\"weave\", \"washer\"]", "[\"weave\", \"marble\"]")
        .replace("random_init = 3", "weights = \"weights/missing.safetensors\"");
    let spec = write_spec(dir.path(), "missing.toml", &body);
    let (status, plan, stderr) = plan_json(&spec, &["--check"]);
    assert_eq!(status, 66, "{stderr}");
    let problems: Vec<String> = plan["check"]["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| format!("{}: {}", p["key"].as_str().unwrap(), p["message"].as_str().unwrap()))
        .collect();
    assert!(
        problems
            .iter()
            .any(|p| p.contains("dataset.categories") && p.contains("\"marble\"") && p.contains("washer, weave")),
        "{problems:#?}"
    );
    assert!(
        problems.iter().any(|p| p.contains("backbone.weights")
            && p.contains("missing.safetensors")
            && p.contains("does not exist")),
        "{problems:#?}"
    );

    // More shots than the data has normal images.
    let spec = write_spec(dir.path(), "shots.toml", &SPEC.replace("shots = [1, 2]", "shots = [1, 8]"));
    let (status, plan, _) = plan_json(&spec, &["--check"]);
    assert_eq!(status, 65, "{plan:#}");
    assert!(plan["check"]["problems"][0]["message"].as_str().unwrap().contains("k = 8"), "{plan:#}");

    // No dataset at all.
    let spec = write_spec(dir.path(), "nodata.toml", &SPEC.replace("url = \"data\"", "url = \"nothing-here\""));
    let (status, plan, _) = plan_json(&spec, &["--check"]);
    assert_ne!(status, 0, "{plan:#}");
    assert_eq!(plan["check"]["problems"][0]["key"], "dataset.url", "{plan:#}");
}

#[test]
fn workers_refuse_with_the_documented_exit_codes() {
    let dir = tempfile::tempdir().unwrap();
    synth(&dir.path().join("data"), "weave,washer");
    let spec = write_spec(dir.path(), "w.toml", SPEC);
    let spec = spec.to_str().unwrap();

    // An index the plan does not have: 64, naming the completions.
    let out = promptad(&["train", "--spec", spec, "--index", "4"]);
    assert_eq!(code(&out), 64, "{}", text(&out));
    assert!(text(&out).contains("has 4 (indexes 0..4)"), "{}", text(&out));
    // No index at all (not in a Job): 64.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_promptad"))
        .args(["score", "--spec", spec])
        .env_remove("JOB_COMPLETION_INDEX")
        .output()
        .unwrap();
    assert_eq!(code(&out), 64, "{}", text(&out));
    assert!(text(&out).contains("--index"), "{}", text(&out));
    // The index from the environment, as in a pod; the model is not trained yet: 66, naming the
    // training work item that makes it.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_promptad"))
        .args(["score", "--spec", spec])
        .env("JOB_COMPLETION_INDEX", "5")
        .output()
        .unwrap();
    assert_eq!(code(&out), 66, "{}", text(&out));
    assert!(text(&out).contains("run training work item 2 first"), "{}", text(&out));
    assert!(text(&out).contains("exit code 66 (permanent"), "{}", text(&out));
    // A broken spec: 64 from the worker too.
    let bad = write_spec(dir.path(), "bad.toml", &SPEC.replace("catalog = \"synth\"", "catalog = \"imagenet\""));
    let out = promptad(&["train", "--spec", bad.to_str().unwrap(), "--index", "0"]);
    assert_eq!(code(&out), 64, "{}", text(&out));
    // Flags that the spec decides are refused in worker mode.
    let out = promptad(&["train", "--spec", spec, "--index", "0", "-k", "4"]);
    assert_eq!(code(&out), 2, "{}", text(&out));
    // The help documents worker mode and the exit codes.
    for command in ["train", "score"] {
        let help = String::from_utf8_lossy(&promptad(&[command, "--help"]).stdout).into_owned();
        for part in ["--spec", "--index", "JOB_COMPLETION_INDEX", "143", "66"] {
            assert!(help.contains(part), "`promptad {command} --help` lacks {part}");
        }
    }
    for command in ["plan", "run"] {
        assert!(promptad(&[command, "--help"]).status.success());
    }
}

#[test]
fn training_stopped_by_sigterm_exits_143_and_writes_nothing() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    synth(&dir.path().join("data"), "weave");
    // Many steps: it cannot finish before the signal.
    let body = SPEC.replace("[\"weave\", \"washer\"]", "[\"weave\"]").replace("steps = 2", "steps = 100000");
    let spec = write_spec(dir.path(), "long.toml", &body);
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_promptad"))
        .args(["train", "--spec", spec.to_str().unwrap(), "--index", "0"])
        .stderr(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut log = Vec::new();
    for line in std::io::BufReader::new(child.stderr.take().unwrap()).lines() {
        let line = line.unwrap();
        log.push(line.clone());
        if line.contains("shots chosen") {
            // Training has started: the SIGTERM handler is in place (it is installed first).
            let killed = std::process::Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
            assert!(killed.success());
        }
    }
    let status = child.wait().unwrap();
    let log = log.join("\n");
    assert_eq!(status.code(), Some(143), "{log}");
    assert!(log.contains("SIGTERM during training"), "{log}");
    let artifact = dir.path().join("models/data/weave/k1/seed5");
    assert!(
        !artifact.join("manifest.json").exists() && !artifact.join("tensors.safetensors").exists(),
        "a stopped training wrote an artifact"
    );
}
