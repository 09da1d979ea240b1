//! The archive data plane end to end, on `file://` and on a real S3-compatible server (moto on
//! loopback, started and stopped by these tests): shard → train → score → re-run → eval, the
//! same results on both stores, and the faults of issue #4 (a corrupt image inside a shard, a
//! truncated shard, an object deleted during a run, a killed writer, two workers on one shard,
//! an unreachable endpoint, a missing bucket).

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{copy_dir, s3, Watched};
use promptad::data::synth::{generate, SynthConfig};
use promptad::store::Location;

const CATEGORY: &str = "marble";

/// A small generated dataset, shared by the tests of this binary.
fn data() -> &'static Path {
    static DATA: OnceLock<tempfile::TempDir> = OnceLock::new();
    DATA.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let config = SynthConfig {
            seed: 21,
            categories: vec![CATEGORY.into()],
            image_size: 96,
            train_good: 3,
            test_good: 4,
            test_defective_per_type: 2,
            overwrite: false,
            ..SynthConfig::default()
        };
        generate(&config, dir.path(), || {}).unwrap();
        dir
    })
    .path()
}

fn promptad(args: &[&str]) -> Output {
    s3::server();
    Command::new(env!("CARGO_BIN_EXE_promptad")).args(args).env("RUST_LOG", "warn").output().expect("start promptad")
}

fn ok(args: &[&str]) -> String {
    let out = promptad(args);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "promptad {args:?} failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    stdout
}

fn fails(args: &[&str]) -> String {
    let out = promptad(args);
    assert!(!out.status.success(), "promptad {args:?} succeeded:\n{}", String::from_utf8_lossy(&out.stdout));
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn train_args<'a>(data: &'a str, out: &'a str) -> Vec<&'a str> {
    vec![
        "train",
        "--data",
        data,
        "--category",
        CATEGORY,
        "--category-name",
        "marble slab",
        "--anomaly-suffixes",
        "{} with crack,{} with stain",
        "-k",
        "2",
        "--steps",
        "2",
        "--model-config",
        "demo-vit-240",
        "--random-init",
        "5",
        "--device",
        "cpu",
        "--out",
        out,
    ]
}

fn score_args<'a>(model: &'a str, data: &'a str, out: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args =
        vec!["score", "--model", model, "--data", data, "--out", out, "--device", "cpu", "--batch-size", "2"];
    args.extend_from_slice(extra);
    args
}

/// `promptad eval OUT --format json` as `category → [image_auroc, image_aupr, pixel_auroc,
/// pixel_aupro, n_images, n_anomalous, n_skipped]`.
fn eval(out: &str) -> BTreeMap<String, Vec<Option<f64>>> {
    let json: serde_json::Value = serde_json::from_str(&ok(&["eval", out, "--format", "json"])).unwrap();
    json.as_array()
        .unwrap()
        .iter()
        .map(|row| {
            let values =
                ["image_auroc", "image_aupr", "pixel_auroc", "pixel_aupro", "n_images", "n_anomalous", "n_skipped"]
                    .iter()
                    .map(|k| row[*k].as_f64())
                    .collect();
            (row["category"].as_str().unwrap().to_string(), values)
        })
        .collect()
}

fn sql_count(out: &str, query: &str) -> i64 {
    let json: serde_json::Value = serde_json::from_str(&ok(&["sql", out, query, "--format", "json"])).unwrap();
    json[0].as_object().unwrap().values().next().unwrap().as_i64().unwrap()
}

fn test_images() -> usize {
    let mut n = 0;
    for entry in std::fs::read_dir(data().join(CATEGORY).join("test")).unwrap() {
        n += std::fs::read_dir(entry.unwrap().path()).unwrap().count();
    }
    n
}

/// The full flow on one store root (`file:///...` or `s3://...`); returns the evaluation.
fn flow(root: &str) -> BTreeMap<String, Vec<Option<f64>>> {
    let (shards, model, out) = (format!("{root}/shards"), format!("{root}/models/marble"), format!("{root}/scores"));
    let packed = ok(&["shard", data().to_str().unwrap(), &shards, "--rows-per-shard", "4"]);
    assert!(packed.contains(&format!("{} images", 3 + test_images())), "{packed}");
    // Packing again is refused, then allowed with --overwrite.
    assert!(fails(&["shard", data().to_str().unwrap(), &shards]).contains("--overwrite"));
    ok(&["shard", data().to_str().unwrap(), &shards, "--rows-per-shard", "4", "--overwrite"]);

    ok(&train_args(&shards, &model));
    let first = ok(&score_args(&model, &shards, &out, &[]));
    let units = test_images().div_ceil(4);
    assert!(
        first.contains(&format!(
            "{} images in {units} units scored, 0 units already committed; run complete",
            test_images()
        )),
        "{first}"
    );
    // The same command again: everything is committed, nothing is redone.
    let again = ok(&score_args(&model, &shards, &out, &[]));
    assert!(again.contains(&format!("0 images in 0 units scored, {units} units already committed")), "{again}");
    // --overwrite redoes everything.
    let redo = ok(&score_args(&model, &shards, &out, &["--overwrite"]));
    assert!(redo.contains(&format!("in {units} units scored")), "{redo}");

    // Listing with prefixes: every image once in each table.
    assert_eq!(sql_count(&out, "SELECT COUNT(DISTINCT image_id) FROM scores") as usize, test_images());
    assert_eq!(sql_count(&out, "SELECT COUNT(*) FROM maps") as usize, test_images());
    assert_eq!(sql_count(&out, "SELECT COUNT(*) FROM metric_stats") as usize, test_images());
    eval(&out)
}

#[test]
fn the_same_commands_give_the_same_results_on_file_and_s3() {
    let local = tempfile::tempdir().unwrap();
    let file_root = format!("file://{}", local.path().display());
    let on_file = flow(&file_root);
    let on_s3 = flow(&s3::url("flow"));
    assert_eq!(on_file, on_s3, "file:// and s3:// runs differ");
    let row = &on_file[CATEGORY];
    assert_eq!(row[4], Some(test_images() as f64));
    assert!(row.iter().all(Option::is_some), "{row:?}");

    // A model trained into S3 scores a local folder dataset, and the shards and the folder
    // give the same numbers.
    let s3_root = s3::url("cross");
    let model = format!("{s3_root}/model");
    ok(&train_args(data().to_str().unwrap(), &model));
    let out = local.path().join("from-folder");
    ok(&score_args(&model, data().to_str().unwrap(), out.to_str().unwrap(), &["--rows-per-unit", "4"]));
    assert_eq!(eval(out.to_str().unwrap()), on_file, "folder dataset vs shards, model on S3");
}

#[test]
fn workers_split_the_units_and_the_manifest_comes_last() {
    let root = s3::url("workers");
    let (model, out) = (format!("{root}/model"), format!("{root}/scores"));
    ok(&train_args(data().to_str().unwrap(), &model));
    let data = data().to_str().unwrap();
    let worker = |i: &str| {
        ok(&score_args(
            &model,
            data,
            &out,
            &["--rows-per-unit", "3", "--index", i, "--shard-count", "2", "--run", "nightly-1"],
        ))
    };
    let first = worker("1");
    assert!(first.contains("; run incomplete"), "{first}");
    let location = Location::parse(&out).unwrap();
    assert!(!location.exists(&format!("_runs/run=nightly-1/category={CATEGORY}/manifest.json")).unwrap());
    let second = worker("0");
    assert!(second.contains("run nightly-1") && second.contains("; run complete"), "{second}");
    assert!(location.exists(&format!("_runs/run=nightly-1/category={CATEGORY}/manifest.json")).unwrap());
    let split = eval(&out);

    let single = format!("{root}/single");
    ok(&score_args(&model, data, &single, &["--rows-per-unit", "3"]));
    assert_eq!(split, eval(&single), "two workers vs one");
    // An out-of-range index is refused.
    let e = fails(&score_args(&model, data, &single, &["--index", "2", "--shard-count", "2"]));
    assert!(e.contains("--index 2") && e.contains("--shard-count 2"), "{e}");
    // The same run id for different work is refused.
    let e = fails(&score_args(&model, data, &out, &["--rows-per-unit", "5", "--run", "nightly-1"]));
    assert!(e.contains("nightly-1") && e.contains("--run"), "{e}");
}

#[test]
fn large_objects_go_up_in_parts_and_listing_respects_prefixes() {
    let root = Location::parse(&s3::url("multipart")).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let big = tmp.path().join("big.bin");
    let size = promptad::store::MULTIPART_PART_SIZE * 2 + 12345;
    let content: Vec<u8> = (0..size).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
    std::fs::write(&big, &content).unwrap();
    root.upload_file("maps/run=a/part-0.parquet", &big).unwrap();
    root.put("maps/run=ab/part-0.parquet", Bytes::from_static(b"x")).unwrap();
    root.put("maps/run=b/part-0.parquet", Bytes::from_static(b"y")).unwrap();
    assert_eq!(
        root.get("maps/run=a/part-0.parquet").unwrap().as_ref(),
        content.as_slice(),
        "multipart upload round trip"
    );
    assert_eq!(root.head("maps/run=a/part-0.parquet").unwrap().unwrap().size as usize, size);
    // A prefix is a folder, not a string prefix: run=a does not list run=ab.
    let listed: Vec<String> = root.list("maps/run=a").unwrap().iter().map(|o| root.relative(&o.location)).collect();
    assert_eq!(listed, ["maps/run=a/part-0.parquet"]);
    assert_eq!(root.list_dirs("maps").unwrap(), ["run=a", "run=ab", "run=b"]);
    assert!(!root.put_if_absent("maps/run=b/part-0.parquet", Bytes::from_static(b"z")).unwrap(), "conditional put");
    assert_eq!(root.get("maps/run=b/part-0.parquet").unwrap().as_ref(), b"y");
}

#[test]
fn store_errors_name_the_url_and_what_to_check() {
    s3::server();
    let refused = Command::new(env!("CARGO_BIN_EXE_promptad"))
        .args(["shard", data().to_str().unwrap(), "s3://some-bucket/shards"])
        .env("AWS_ENDPOINT", "http://127.0.0.1:9")
        .output()
        .unwrap();
    let e = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success() && e.contains("s3://some-bucket/shards") && e.contains("AWS_ENDPOINT"), "{e}");

    let denying = s3::denying_server();
    let denied = Command::new(env!("CARGO_BIN_EXE_promptad"))
        .args(["eval", "s3://locked/scores"])
        .env("AWS_ENDPOINT", &denying.endpoint)
        .output()
        .unwrap();
    let e = String::from_utf8_lossy(&denied.stderr);
    assert!(
        !denied.status.success()
            && e.contains("s3://locked/scores")
            && e.contains("denied")
            && e.contains("credentials"),
        "{e}"
    );

    let e = fails(&["eval", "s3://no-such-bucket/scores"]);
    assert!(e.contains("s3://no-such-bucket/scores") && e.contains("bucket") && e.contains("does not exist"), "{e}");
    let e = fails(&score_args(&s3::url("nothing"), data().to_str().unwrap(), "s3://promptad-it/x", &[]));
    assert!(e.contains("not a complete model artifact"), "{e}");
    let e = fails(&[
        "train",
        "--data",
        &s3::url("empty"),
        "--category",
        CATEGORY,
        "--category-name",
        "slab",
        "--random-init",
        "1",
        "--model-config",
        "demo-vit-240",
        "--out",
        "/tmp/x",
    ]);
    assert!(e.contains("no dataset there") && e.contains("s3://promptad-it/empty"), "{e}");
    let e = fails(&["shard", data().to_str().unwrap(), &s3::url("cats"), "--categories", "bottle"]);
    assert!(e.contains("\"bottle\" not found") && e.contains(CATEGORY), "{e}");
}

/// Shards of the dataset with one defect image replaced by bytes that are not an image (packing
/// copies bytes without decoding them, so the damage reaches the shard).
fn damaged_shards(root: &str) -> (String, String) {
    let tmp = tempfile::tempdir().unwrap();
    let copy = tmp.path().join("data");
    copy_dir(data(), &copy);
    let defect = std::fs::read_dir(copy.join(CATEGORY).join("test"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| !p.ends_with("good"))
        .unwrap();
    std::fs::write(defect.join("000.png"), b"not an image").unwrap();
    let shards = format!("{root}/shards");
    ok(&["shard", copy.to_str().unwrap(), &shards, "--rows-per-shard", "4"]);
    let id = format!("{CATEGORY}/test/{}/000", defect.file_name().unwrap().to_str().unwrap());
    (shards, id)
}

#[test]
fn a_corrupt_image_in_a_shard_is_named_or_recorded() {
    let root = s3::url("corrupt");
    let (shards, id) = damaged_shards(&root);
    let model = format!("{root}/model");
    ok(&train_args(&shards, &model));
    let e = fails(&score_args(&model, &shards, &format!("{root}/s1"), &[]));
    assert!(
        e.contains(&format!("{shards}/category={CATEGORY}/split=test/part-"))
            && e.contains(" row ")
            && e.contains("--skip-bad"),
        "{e}"
    );
    // Units before the damaged one are committed; the damaged one is not, so its images are
    // not visible.
    let committed = Location::parse(&format!("{root}/s1"))
        .unwrap()
        .list("_runs")
        .unwrap()
        .iter()
        .filter(|o| o.location.as_ref().contains("/units/"))
        .count();
    if committed > 0 {
        assert_eq!(
            sql_count(&format!("{root}/s1"), &format!("SELECT COUNT(*) FROM scores WHERE image_id = '{id}'")),
            0
        );
        assert_eq!(sql_count(&format!("{root}/s1"), "SELECT COUNT(*) FROM scores") as usize, committed * 4);
    }

    let out = promptad(&score_args(&model, &shards, &format!("{root}/s2"), &["--skip-bad"]));
    assert!(!out.status.success(), "a skipped image makes the exit code non-zero");
    let json: serde_json::Value = serde_json::from_str(&ok(&[
        "sql",
        &format!("{root}/s2"),
        "SELECT image_id, error FROM scores WHERE error IS NOT NULL",
        "--format",
        "json",
    ]))
    .unwrap();
    let rows = json.as_array().unwrap();
    assert_eq!(rows.len(), 1, "{json}");
    assert_eq!(rows[0]["image_id"], id.as_str());
    assert!(rows[0]["error"].as_str().unwrap().contains("row"), "{json}");
    assert_eq!(
        sql_count(&format!("{root}/s2"), "SELECT COUNT(*) FROM scores") as usize,
        test_images(),
        "no silent drop"
    );
}

#[test]
fn a_truncated_or_deleted_shard_is_an_error_naming_it_and_a_rerun_recovers() {
    for root in [s3::url("truncated"), format!("file://{}", tempfile::tempdir().unwrap().keep().display())] {
        let shards = format!("{root}/shards");
        ok(&["shard", data().to_str().unwrap(), &shards, "--rows-per-shard", "4"]);
        let model = format!("{root}/model");
        ok(&train_args(&shards, &model));
        let location = Location::parse(&shards).unwrap();
        let victim = format!("category={CATEGORY}/split=test/part-00001.parquet");
        let original = location.get(&victim).unwrap();

        location.put(&victim, original.slice(..original.len() / 2)).unwrap();
        let out = format!("{root}/scores");
        let e = fails(&score_args(&model, &shards, &out, &[]));
        assert!(e.contains(&location.url_of(&victim)) && e.contains("truncated"), "{e}");

        // Deleted after the shard list was written (as by a lifecycle rule mid-run).
        location.delete(&victim).unwrap();
        let e = fails(&score_args(&model, &shards, &out, &[]));
        assert!(e.contains(&location.url_of(&victim)) && e.contains("does not exist"), "{e}");

        // Units committed before the failure stay; the re-run does the rest.
        location.put(&victim, original).unwrap();
        let rerun = ok(&score_args(&model, &shards, &out, &[]));
        assert!(rerun.contains("units already committed; run complete"), "{rerun}");
        let clean = format!("{root}/clean");
        ok(&score_args(&model, &shards, &clean, &[]));
        assert_eq!(eval(&out), eval(&clean));
    }
}

#[test]
fn a_killed_writer_leaves_nothing_visible_and_the_rerun_equals_an_undisturbed_run() {
    for root in [format!("file://{}", tempfile::tempdir().unwrap().keep().display()), s3::url("killed")] {
        let model = format!("{root}/model");
        ok(&train_args(data().to_str().unwrap(), &model));
        let data = data().to_str().unwrap();
        let out = format!("{root}/scores");
        let args = score_args(&model, data, &out, &["--rows-per-unit", "1", "--run", "r"]);
        let child = Watched::spawn(
            Command::new(env!("CARGO_BIN_EXE_promptad")).args(&args).stdout(Stdio::null()).stderr(Stdio::null()),
        );
        let location = Location::parse(&out).unwrap();
        let units = format!("_runs/run=r/category={CATEGORY}/units");
        // The store is checked every 20 ms; in between the wait blocks on the worker's exit.
        let deadline = Instant::now() + Duration::from_secs(120);
        while location.list(&units).unwrap().is_empty() {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "no unit committed in 2 minutes");
            if let Some(status) = child.ended_within(Duration::from_millis(20).min(left)) {
                panic!("the worker ended ({status}) before it committed a unit");
            }
        }
        // Not sent if the worker already finished: the assertion below then says so.
        child.signal("KILL");
        child.wait();
        let committed = location.list(&units).unwrap().len();
        assert!(committed < test_images(), "the worker finished before it could be killed; make the run longer");
        // Only committed units are visible, whatever files the killed worker left.
        assert_eq!(sql_count(&out, "SELECT COUNT(*) FROM scores") as usize, committed);
        assert_eq!(sql_count(&out, "SELECT COUNT(*) FROM maps") as usize, committed);

        ok(&args);
        let undisturbed = format!("{root}/undisturbed");
        ok(&score_args(&model, data, &undisturbed, &["--rows-per-unit", "1", "--run", "r"]));
        assert_eq!(eval(&out), eval(&undisturbed));
        assert_eq!(sql_count(&out, "SELECT COUNT(*) FROM scores") as usize, test_images());
    }
}

#[test]
fn two_workers_given_the_same_shard_agree() {
    let root = s3::url("twins");
    let shards = format!("{root}/shards");
    ok(&["shard", data().to_str().unwrap(), &shards, "--rows-per-shard", "3"]);
    let model = format!("{root}/model");
    ok(&train_args(&shards, &model));
    let out = format!("{root}/scores");
    let args = score_args(&model, &shards, &out, &[]);
    let spawn = || {
        Command::new(env!("CARGO_BIN_EXE_promptad"))
            .args(&args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a, b) = (spawn(), spawn());
    for child in [a, b] {
        let output = child.wait_with_output().unwrap();
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    }
    assert_eq!(sql_count(&out, "SELECT COUNT(*) FROM scores") as usize, test_images(), "each image once");
    assert_eq!(sql_count(&out, "SELECT COUNT(DISTINCT image_id) FROM scores") as usize, test_images());
    let alone = format!("{root}/alone");
    ok(&score_args(&model, &shards, &alone, &[]));
    assert_eq!(eval(&out), eval(&alone));
}

#[test]
fn an_unlabelled_archive_is_scored_without_labels() {
    let tmp = tempfile::tempdir().unwrap();
    // Production images in any layout: nested folders, no labels, no masks.
    let archive = tmp.path().join("archive");
    let good = data().join(CATEGORY).join("test").join("good");
    let mut n = 0;
    for (i, entry) in std::fs::read_dir(&good).unwrap().enumerate() {
        let day = archive.join(format!("2026-11-{:02}", 1 + i % 2));
        std::fs::create_dir_all(&day).unwrap();
        std::fs::copy(entry.unwrap().path(), day.join(format!("cam{i}.png"))).unwrap();
        n += 1;
    }
    let root = format!("file://{}", tmp.path().display());
    let shards = format!("{root}/shards");
    let e = fails(&["shard", archive.to_str().unwrap(), &shards]);
    assert!(e.contains("--plain-category"), "{e}");
    ok(&["shard", archive.to_str().unwrap(), &shards, "--plain-category", CATEGORY]);
    let model = format!("{root}/model");
    ok(&train_args(data().to_str().unwrap(), &model));
    let out = format!("{root}/scores");
    ok(&score_args(&model, &shards, &out, &[]));
    assert_eq!(
        sql_count(
            &out,
            "SELECT COUNT(*) FROM scores WHERE gt_label IS NULL AND defect_type IS NULL AND pred_score IS NOT NULL"
        ) as usize,
        n
    );
    assert_eq!(sql_count(&out, "SELECT COUNT(*) FROM maps") as usize, n);
    assert_eq!(sql_count(&out, "SELECT COUNT(*) FROM metric_stats"), 0, "no ground truth, no metric statistics");
    let json: serde_json::Value = serde_json::from_str(&ok(&[
        "sql",
        &out,
        "SELECT image_id FROM scores ORDER BY image_id LIMIT 1",
        "--format",
        "json",
    ]))
    .unwrap();
    assert_eq!(json[0]["image_id"], format!("{CATEGORY}/test/2026-11-01/cam0"));
    // Without labels the metrics are undefined (null), not numbers.
    let row = &eval(&out)[CATEGORY];
    assert_eq!((row[0], row[2]), (None, None), "{row:?}");
}
