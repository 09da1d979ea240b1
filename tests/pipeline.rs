//! End to end on a small generated dataset: training lowers the loss, detection beats chance by a
//! stated margin, outputs are Parquet, and bad input gets clear errors.

mod common;

use std::path::Path;

use common::{dataset, files_under, loc, promptad};
use promptad::artifact::random_backbone;
use promptad::artifact::Artifact;
use promptad::data::prepare::Compat;
use promptad::data::synth::{generate, SynthConfig};
use promptad::detect::DetectConfig;
use promptad::metrics::{auroc, pixel_aupro, pixel_auroc, DEFAULT_FPR_LIMIT};
use promptad::pipeline::score::{score_category, ScoreOptions};
use promptad::pipeline::train::{train_category, train_category_quietly, TrainJob};
use promptad::prompt::learner::PromptConfig;
use promptad::prompt::train::{Head, TrainConfig};
use promptad::run::paths::table_file;
use promptad::run::Table;
use promptad::stop::StopToken;
use tch::Device;

fn synth(root: &Path, categories: &[&str]) {
    let config = SynthConfig {
        seed: 5,
        categories: categories.iter().map(|c| c.to_string()).collect(),
        image_size: 160,
        train_good: 4,
        test_good: 6,
        test_defective_per_type: 3,
        overwrite: false,
        ..SynthConfig::default()
    };
    generate(&config, root, || {}).unwrap();
}

fn job(root: &Path, category: &str, steps: usize) -> TrainJob {
    TrainJob {
        category_name: Some(category.into()),
        anomaly_suffixes: Some(vec!["{} with scratch".into(), "{} with hole".into()]),
        ..TrainJob::official(root.display().to_string(), category, 2, 1, steps)
    }
}

/// Training seeds libtorch's one global generator (`tch::manual_seed`) and then draws from it, so
/// two trainings in one process must not interleave: the tests that train take this lock.
fn one_training_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn options() -> ScoreOptions {
    ScoreOptions { batch_size: 8, compat: Compat::Rgb, ..ScoreOptions::default() }
}

/// Detection on generated defects with a random backbone must beat chance by these margins
/// (AUROC 0.5, AUPRO 0.15) in the mean over categories.
const IMAGE_AUROC_MIN: f64 = 0.65;
const PIXEL_AUROC_MIN: f64 = 0.80;
const AUPRO_MIN: f64 = 0.40;

#[test]
fn trains_scores_and_beats_chance_on_generated_defects() {
    let _serial = one_training_at_a_time();
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let categories = ["marble", "washer"];
    synth(&data, &categories);
    let (clip, backbone) = random_backbone(7, Device::Cpu).unwrap();
    let (mut image_aurocs, mut pixel_aurocs, mut aupros) = (Vec::new(), Vec::new(), Vec::new());
    for category in categories {
        let model = tmp.path().join("models").join(category);
        let mut losses: Vec<(Head, f64)> = Vec::new();
        let manifest = train_category(
            &job(&data, category, 40),
            &clip,
            backbone.clone(),
            &loc(&model),
            false,
            &StopToken::new(),
            |h, _, l| losses.push((h, l)),
        )
        .unwrap();
        for head in [Head::Image, Head::Pixel] {
            let l: Vec<f64> = losses.iter().filter(|(h, _)| *h == head).map(|(_, l)| *l).collect();
            assert_eq!(l.len(), 40);
            assert!(l[39] < l[0], "{category} {head:?}: training did not lower the loss: {} -> {}", l[0], l[39]);
        }
        assert_eq!(manifest.shots.len(), 2);
        let artifact = Artifact::read(&loc(&model)).unwrap();
        let scored = score_category(
            &artifact,
            &clip,
            DetectConfig::default(),
            &dataset(&data),
            category,
            &loc(&tmp.path().join("scores")),
            &options(),
            &StopToken::new(),
            |_| {},
        )
        .unwrap();
        let (scores, labels): (Vec<f64>, Vec<bool>) =
            scored.image_scores.iter().map(|s| (s.pred_score, s.is_defect)).unzip();
        let (i, p, a) = (
            auroc(&scores, &labels).unwrap(),
            pixel_auroc(&scored.pixel_stats).unwrap(),
            pixel_aupro(&scored.pixel_stats, DEFAULT_FPR_LIMIT).unwrap(),
        );
        eprintln!("{category}: image AUROC {i:.4}, pixel AUROC {p:.4}, AUPRO {a:.4}");
        image_aurocs.push(i);
        pixel_aurocs.push(p);
        aupros.push(a);
        assert!(scored.run_complete);
        for table in ["scores", "maps", "metric_stats"] {
            let file = tmp.path().join("scores").join(table_file(
                Table::from_name(table).unwrap(),
                &scored.run_id,
                category,
                "test-00000",
            ));
            assert!(file.is_file(), "{}", file.display());
        }
        // A second run finds every unit committed and leaves them alone.
        let again = score_category(
            &artifact,
            &clip,
            DetectConfig::default(),
            &dataset(&data),
            category,
            &loc(&tmp.path().join("scores")),
            &options(),
            &StopToken::new(),
            |_| {},
        )
        .unwrap();
        assert_eq!(
            (again.units_scored, again.units_already_done, again.run_id.as_str()),
            (0, 1, scored.run_id.as_str())
        );
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    let (i, p, a) = (mean(&image_aurocs), mean(&pixel_aurocs), mean(&aupros));
    eprintln!("mean: image AUROC {i:.4}, pixel AUROC {p:.4}, AUPRO {a:.4}");
    assert!(i >= IMAGE_AUROC_MIN, "mean image AUROC {i} < {IMAGE_AUROC_MIN}");
    assert!(p >= PIXEL_AUROC_MIN, "mean pixel AUROC {p} < {PIXEL_AUROC_MIN}");
    assert!(a >= AUPRO_MIN, "mean AUPRO {a} < {AUPRO_MIN}");
}

#[test]
fn bad_input_gets_clear_errors() {
    let _serial = one_training_at_a_time();
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    synth(&data, &["weave"]);
    let (clip, backbone) = random_backbone(7, Device::Cpu).unwrap();
    let train = |job: TrainJob| {
        train_category(
            &job,
            &clip,
            backbone.clone(),
            &loc(&tmp.path().join("m")),
            true,
            &StopToken::new(),
            |_, _, _| {},
        )
        .map(|_| ())
        .unwrap_err()
        .to_string()
    };

    // Unknown category: not built in, no display name, and no synth.json that names it.
    let summary = data.join("synth.json");
    std::fs::rename(&summary, tmp.path().join("synth.json.away")).unwrap();
    let err = train(TrainJob { category_name: None, anomaly_suffixes: None, ..job(&data, "weave", 1) });
    assert!(err.contains("unknown category \"weave\"") && err.contains("--category-name"), "{err}");
    std::fs::rename(tmp.path().join("synth.json.away"), &summary).unwrap();
    // A category that is not in the dataset folder.
    let err = train(job(&data, "bottle_cap", 1));
    assert!(err.contains("bottle_cap") && err.contains("weave"), "{err}");
    // More shots than normal training images.
    let err = train(TrainJob { k: 9, ..job(&data, "weave", 1) });
    assert!(err.contains("k = 9") && err.contains("4 images"), "{err}");

    // A corrupt shot names its file.
    let shot = data.join("weave/train/good/000.png");
    let original = std::fs::read(&shot).unwrap();
    std::fs::write(&shot, b"\x89PNG broken").unwrap();
    let err = train(TrainJob { shots: Some(vec!["000".into()]), ..job(&data, "weave", 1) });
    assert!(err.contains("weave/train/good/000.png") && err.contains("cannot decode"), "{err}");
    std::fs::write(&shot, original).unwrap();

    let model = tmp.path().join("model");
    train_category(
        &job(&data, "weave", 2),
        &clip,
        backbone.clone(),
        &loc(&model),
        false,
        &StopToken::new(),
        |_, _, _| {},
    )
    .unwrap();
    let artifact = Artifact::read(&loc(&model)).unwrap();
    let score = |out: &str, skip_bad: bool| {
        score_category(
            &artifact,
            &clip,
            DetectConfig::default(),
            &dataset(&data),
            "weave",
            &loc(&tmp.path().join(out)),
            &ScoreOptions { skip_bad, ..options() },
            &StopToken::new(),
            |_| {},
        )
    };

    // A detection config tapping other blocks than the model's memory: a typed error naming
    // both tap lists, not a panic.
    let other_taps = score_category(
        &artifact,
        &clip,
        DetectConfig { taps: vec![3], ..DetectConfig::default() },
        &dataset(&data),
        "weave",
        &loc(&tmp.path().join("s0")),
        &options(),
        &StopToken::new(),
        |_| {},
    );
    let err = format!("{:#}", other_taps.err().expect("scoring with other taps must fail"));
    assert!(err.contains("[3]") && err.contains("[3, 8]") && err.contains("detect.taps"), "{err}");

    // A corrupt test image: an error naming it, or with skip_bad a recorded row.
    let defect_dir = std::fs::read_dir(data.join("weave/test"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| !p.ends_with("good"))
        .unwrap();
    let victim = defect_dir.join("000.png");
    std::fs::write(&victim, b"not an image").unwrap();
    let err = score("s1", false).err().unwrap().to_string();
    assert!(err.contains(&victim.display().to_string()) && err.contains("--skip-bad"), "{err}");
    assert!(!tmp.path().join("s1/scores").exists(), "no partial output after a failure");
    let summary = score("s2", true).unwrap();
    assert_eq!(summary.skipped.len(), 1);
    let file = std::fs::File::open(tmp.path().join("s2").join(table_file(
        Table::Scores,
        &summary.run_id,
        "weave",
        "test-00000",
    )))
    .unwrap();
    let batches: Vec<_> = parquet::arrow::arrow_reader::ParquetRecordBatchReader::try_new(file, 1024)
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let errors: Vec<String> = batches
        .iter()
        .flat_map(|b| {
            let column = b
                .column_by_name("error")
                .unwrap()
                .as_any()
                .downcast_ref::<arrow::array::StringArray>()
                .unwrap()
                .clone();
            column.iter().flatten().map(str::to_string).collect::<Vec<_>>()
        })
        .collect();
    assert_eq!(errors.len(), 1, "the skipped image is a row with its error");
    assert!(errors[0].contains("000.png"), "{errors:?}");
    let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
    assert_eq!(rows, summary.images, "every image, skipped or not, has a row");

    // A defect image without its mask.
    let mask = data.join("weave/ground_truth").join(defect_dir.file_name().unwrap()).join("001_mask.png");
    std::fs::remove_file(&mask).unwrap();
    let err = score("s3", true).err().unwrap().to_string();
    assert!(err.contains("001.png") && err.contains("001_mask.png"), "{err}");
}

#[test]
fn training_a_generated_category_without_a_name_takes_its_prompts_from_synth_json() {
    let _serial = one_training_at_a_time();
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    synth(&data, &["washer"]);
    let (clip, backbone) = random_backbone(7, Device::Cpu).unwrap();
    let job = TrainJob { category_name: None, anomaly_suffixes: None, k: 1, ..job(&data, "washer", 1) };
    let manifest = train_category_quietly(&job, &clip, backbone, &loc(&tmp.path().join("m"))).unwrap();
    // What synth.json lists for the category, read independently of the library.
    let summary: serde_json::Value = serde_json::from_slice(&std::fs::read(data.join("synth.json")).unwrap()).unwrap();
    let washer = summary["categories"].as_array().unwrap().iter().find(|c| c["name"] == "washer").unwrap();
    let own: Vec<String> = washer["defects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| format!("{{}} with {}", d["defect_type"].as_str().unwrap().replace('_', " ")))
        .collect();
    assert_eq!(own, ["{} with scratch", "{} with crack", "{} with missing part", "{} with stain"]);
    assert_eq!(manifest.category.name, "washer");
    let states = &manifest.category.anomaly_states;
    assert_eq!(states.len(), 8 + own.len(), "the 8 generic states, then the category's own: {states:?}");
    assert_eq!(&states[8..], own.as_slice());
}

#[test]
fn demo_cli_reports_metrics_against_chance() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("demo");
    let run = promptad(&[
        "demo",
        "--out",
        out.to_str().unwrap(),
        "--categories",
        "grid",
        "--steps",
        "3",
        "--image-size",
        "96",
        "--device",
        "cpu",
        "-k",
        "1",
    ]);
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(run.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&run.stderr));
    assert!(stdout.contains("RANDOM weights"), "{stdout}");
    for row in ["grid", "mean", "chance", "mean - chance"] {
        assert!(stdout.lines().any(|l| l.starts_with(row)), "missing row {row}:\n{stdout}");
    }
    // The demo scores once to fit its calibration, then again with the decisions: two runs of maps.
    let mut runs: Vec<String> = std::fs::read_dir(out.join("scores/maps"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    runs.sort();
    assert_eq!(runs, ["run=calibration", "run=demo"]);
    let calibrations = files_under(&out.join("models"), "/calibration.json");
    assert_eq!(calibrations.len(), 1, "the demo calibrates its one model");
    let report = std::fs::read_to_string(out.join("report/index.html")).unwrap();
    assert!(report.contains("id=\"promptad-report\""), "the demo ends with its report");
}

#[test]
fn ablations_change_what_is_trained_and_scored() {
    let _serial = one_training_at_a_time();
    use promptad::detect::Guidance;
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    synth(&data, &["marble"]);
    let (clip, backbone) = random_backbone(7, Device::Cpu).unwrap();
    let run = |name: &str, job: TrainJob, guidance: Guidance| {
        let model = tmp.path().join(name);
        let manifest = train_category_quietly(&job, &clip, backbone.clone(), &loc(&model)).unwrap();
        let artifact = Artifact::read(&loc(&model)).unwrap();
        let detect = DetectConfig { guidance, ..DetectConfig::default() };
        let scored = score_category(
            &artifact,
            &clip,
            detect,
            &dataset(&data),
            "marble",
            &loc(&tmp.path().join(format!("s-{name}"))),
            &options(),
            &StopToken::new(),
            |_| {},
        )
        .unwrap();
        (manifest, scored.image_scores.iter().map(|s| s.pred_score).collect::<Vec<f64>>())
    };
    let base = || job(&data, "marble", 3);
    let (full, full_scores) = run("full", base(), Guidance::Fused);
    let no_manual =
        TrainJob { image_prompts: PromptConfig { manual_anomaly: false, ..PromptConfig::image_level() }, ..base() };
    let (m, _) = run("no-manual", no_manual, Guidance::Fused);
    // N·M manual prompts fewer: bottle-like custom category with 8 + 2 states, N = 3.
    assert_eq!(full.image_head.prompt_strings - m.image_head.prompt_strings, 3 * 10);
    let no_learnable =
        TrainJob { image_prompts: PromptConfig { learnable_anomaly: false, ..PromptConfig::image_level() }, ..base() };
    let (l, _) = run("no-learnable", no_learnable, Guidance::Fused);
    assert_eq!(full.image_head.prompt_strings - l.image_head.prompt_strings, 3 * 4);
    let (e, _) = run(
        "no-eam",
        TrainJob { train: TrainConfig { steps: 3, eam: false, ..TrainConfig::default() }, ..base() },
        Guidance::Fused,
    );
    // The artifact on the store records the ablation, and before the first step (same seed,
    // same prompts) the pixel head's losses differ by its EAM term, active at init. (The image
    // head's first losses differ by a few 1e-3 in either direction between runs: not asserted.)
    assert!(!Artifact::read(&loc(&tmp.path().join("no-eam"))).unwrap().manifest.train.eam);
    assert!(full.train.eam);
    let first = |m: &promptad::artifact::Manifest| (m.image_head.report.losses[0], m.pixel_head.report.losses[0]);
    let ((full_image, full_pixel), (e_image, e_pixel)) = (first(&full), first(&e));
    eprintln!("first losses: image {full_image} (no EAM {e_image}), pixel {full_pixel} (no EAM {e_pixel})");
    assert!(full_pixel - e_pixel > 1e-4, "pixel EAM term {} is not active at init", full_pixel - e_pixel);
    // The pixel head's EAM hinges per channel (reference §5), so some are active at any init.
    assert_ne!(e.pixel_head.report.losses, full.pixel_head.report.losses, "dropping EAM changes the loss");
    let (_, vision) = run("vision-only", base(), Guidance::VisionOnly);
    let (_, prompt) = run("prompt-only", base(), Guidance::PromptOnly);
    assert_ne!(vision, full_scores);
    assert_ne!(prompt, full_scores);
    assert_ne!(vision, prompt);
}

/// `(image_id, pred_score)` of every scores file under `out`.
fn scores_under(out: &Path) -> std::collections::BTreeMap<String, f64> {
    let mut scores = std::collections::BTreeMap::new();
    if !out.join("scores").exists() {
        return scores;
    }
    for path in files_under(&out.join("scores"), ".parquet") {
        let file = std::fs::File::open(&path).unwrap();
        for batch in parquet::arrow::arrow_reader::ParquetRecordBatchReader::try_new(file, 1024).unwrap() {
            let batch = batch.unwrap();
            let column = |name: &str| batch.column_by_name(name).unwrap().clone();
            let ids = column("image_id");
            let ids = ids.as_any().downcast_ref::<arrow::array::StringArray>().unwrap();
            let pred = column("pred_score");
            let pred = pred.as_any().downcast_ref::<arrow::array::Float64Array>().unwrap();
            for i in 0..batch.num_rows() {
                assert!(scores.insert(ids.value(i).to_string(), pred.value(i)).is_none(), "one row per image");
            }
        }
    }
    scores
}

/// The writer runs on its own thread, so the model may be batches ahead of what is committed: a
/// call stopped mid-run or failing in a write must still leave only whole, committed units, and
/// running it again must give exactly the rows of an uninterrupted run.
#[test]
fn a_stopped_or_failed_write_leaves_only_whole_units() {
    let _serial = one_training_at_a_time();
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    synth(&data, &["weave"]);
    let (clip, backbone) = random_backbone(11, Device::Cpu).unwrap();
    let model = tmp.path().join("model");
    train_category_quietly(&job(&data, "weave", 2), &clip, backbone, &loc(&model)).unwrap();
    let artifact = Artifact::read(&loc(&model)).unwrap();
    // 15 test images (6 good, 3 of each of 3 defect types): units of 4, 4, 4 and 3, batches of 2.
    let options = ScoreOptions { batch_size: 2, rows_per_unit: 4, ..options() };
    let score = |out: &Path, stop: &StopToken, on_images: &mut dyn FnMut(usize)| {
        score_category(
            &artifact,
            &clip,
            DetectConfig::default(),
            &dataset(&data),
            "weave",
            &loc(out),
            &options,
            stop,
            on_images,
        )
    };
    let units = ["test-00000", "test-00001", "test-00002", "test-00003"];
    let unit_images = [4, 4, 4, 3];
    let committed = |out: &Path, run_id: &str| -> Vec<bool> {
        units.iter().map(|u| promptad::run::is_committed(&loc(out), run_id, "weave", u).unwrap()).collect()
    };

    let whole = tmp.path().join("whole");
    let reference = score(&whole, &StopToken::new(), &mut |_| {}).unwrap();
    assert!(
        reference.run_complete && reference.units_scored == 4 && reference.images == 15,
        "{} units, {} images",
        reference.units_scored,
        reference.images
    );
    let expected = scores_under(&whole);
    assert_eq!(expected.len(), 15);

    // Stopped as soon as the first rows are written: the model is then in the second unit at
    // the latest (the writer is at most a batch behind), so at least one unit is not
    // committed, and none of its rows are visible.
    let stopped = tmp.path().join("stopped");
    let stop = StopToken::new();
    let mut written = 0;
    let err = score(&stopped, &stop, &mut |n| {
        written += n;
        if written > 0 {
            stop.stop();
        }
    })
    .err()
    .expect("a stopped call fails");
    assert!(err.to_string().contains("stopped on request"), "{err}");
    let done = committed(&stopped, &reference.run_id);
    assert!(done.iter().any(|&c| !c), "stopped before the end: {done:?}");
    let visible = scores_under(&stopped);
    let whole_units: usize = done.iter().zip(unit_images).filter(|(&c, _)| c).map(|(_, n)| n).sum();
    assert_eq!(visible.len(), whole_units, "only whole units are published");
    for (image, score) in &visible {
        assert_eq!(expected[image], *score, "{image}");
    }
    // Run again: it scores what was not committed and ends with the uninterrupted run's rows.
    let resumed = score(&stopped, &StopToken::new(), &mut |_| {}).unwrap();
    assert!(resumed.run_complete);
    assert_eq!(resumed.units_already_done, done.iter().filter(|&&c| c).count());
    assert_eq!(scores_under(&stopped), expected);

    // A write that fails (the scores table's folder is a file): the error names the unit and the
    // file, nothing is committed, and the run has no manifest.
    let failing = tmp.path().join("failing");
    std::fs::create_dir_all(&failing).unwrap();
    std::fs::write(failing.join("scores"), b"in the way").unwrap();
    let err = score(&failing, &StopToken::new(), &mut |_| {}).err().expect("the write fails");
    let mut message = err.to_string();
    let mut source = std::error::Error::source(&err);
    while let Some(cause) = source {
        message += &format!(": {cause}");
        source = cause.source();
    }
    assert!(message.contains("test-00000") && message.contains("scores/run="), "{message}");
    assert_eq!(committed(&failing, &reference.run_id), [false; 4]);
    assert!(!failing.join(promptad::run::paths::manifest_file(&reference.run_id, "weave")).exists());
}
