//! Calibration, decisions and the HTML report end to end on a small generated dataset: a model is
//! trained, its test split scored, the model calibrated on that run, the split scored again with
//! the decisions, and both runs reported. The references are scikit-learn (F1-max threshold from
//! `precision_recall_curve`, `roc_auc_score`), the stored maps (anomalous pixels), SQL counts, and
//! headless Chromium (the page renders to a non-blank picture).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use common::{dataset, loc, python};
use promptad::artifact::{random_backbone, Artifact, ArtifactError, CALIBRATION};
use promptad::data::synth::{generate, SynthConfig};
use promptad::metrics::curve_points::trapezoid_area;
use promptad::pipeline::calibrate::{calibrate, CalibrateError, CalibrateRequest};
use promptad::pipeline::score::{score_category, ScoreOptions};
use promptad::pipeline::train::{train_category_quietly, TrainJob};
use promptad::report::{write_report, ReportOptions};
use promptad::sql::results::{image_results, maps_of};
use promptad::sql::{session, RunSelection};
use promptad::stop::StopToken;
use promptad::store::block_on;
use tch::Device;

const CATEGORY: &str = "marble";
const UNDECIDED: &str = "undecided";
const DECIDED: &str = "decided";

/// The scored runs every test reads: `<root>/scores` holds [`UNDECIDED`] (before calibration)
/// and [`DECIDED`] (with it); `<root>/model` is the calibrated model.
struct Fixture {
    _tmp: tempfile::TempDir,
    root: PathBuf,
}

impl Fixture {
    fn scores(&self) -> PathBuf {
        self.root.join("scores")
    }
    fn model(&self) -> PathBuf {
        self.root.join("model")
    }
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().to_path_buf();
        let data = root.join("data");
        let config = SynthConfig {
            seed: 9,
            categories: vec![CATEGORY.into()],
            image_size: 160,
            train_good: 2,
            test_good: 8,
            test_defective_per_type: 4,
            overwrite: false,
            ..SynthConfig::default()
        };
        generate(&config, &data, || {}).unwrap();
        let (clip, backbone) = random_backbone(3, Device::Cpu).unwrap();
        let job = TrainJob {
            category_name: Some(CATEGORY.into()),
            anomaly_suffixes: Some(vec!["{} with scratch".into()]),
            ..TrainJob::official(data.display().to_string(), CATEGORY, 2, 1, 3)
        };
        let model = loc(&root.join("model"));
        train_category_quietly(&job, &clip, backbone, &model).unwrap();
        let ds = dataset(&data);
        let out = loc(&root.join("scores"));
        let score = |run: &str| {
            let artifact = Artifact::read(&model).unwrap();
            let options = ScoreOptions {
                batch_size: 8,
                run_id: Some(run.into()),
                calibration: artifact.calibration.as_ref().map(|c| c.calibration.clone()),
                ..ScoreOptions::default()
            };
            let detect = artifact.manifest.detect.clone();
            score_category(&artifact, &clip, detect, &ds, CATEGORY, &out, &options, &StopToken::new(), |_| {}).unwrap()
        };
        score(UNDECIDED);
        block_on(calibrate(&model, &request(&out, UNDECIDED, false))).unwrap();
        score(DECIDED);
        Fixture { _tmp: tmp, root }
    })
}

fn request(out: &promptad::store::Location, run: &str, overwrite: bool) -> CalibrateRequest {
    CalibrateRequest {
        out: out.clone(),
        run: RunSelection::One(run.into()),
        category: None,
        options: Default::default(),
        overwrite,
    }
}

/// scikit-learn on `(scores, labels)`: `roc_auc_score`, and the F1-max of
/// `precision_recall_curve` with its threshold (the first maximum, as anomalib's argmax).
fn sklearn(scores: &[f64], labels: &[bool]) -> (f64, f64, f64) {
    let script = r#"
import json, sys
import numpy as np
from sklearn.metrics import precision_recall_curve, roc_auc_score
d = json.load(sys.stdin)
y, s = np.array(d["labels"], dtype=int), np.array(d["scores"], dtype=float)
p, r, t = precision_recall_curve(y, s)
with np.errstate(invalid="ignore", divide="ignore"):
    f1 = np.nan_to_num(2 * p * r / (p + r))[:-1]
i = int(np.argmax(f1))
print(json.dumps([roc_auc_score(y, s), float(f1[i]), float(t[i])]))
"#;
    let input = serde_json::json!({"scores": scores, "labels": labels}).to_string();
    let mut child = Command::new(python())
        .args(["-c", script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), input.as_bytes()).unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "sklearn reference failed");
    let [auc, f1, threshold]: [f64; 3] = serde_json::from_slice(&output.stdout).unwrap();
    (auc, f1, threshold)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap()
}

#[test]
fn calibration_is_sklearns_f1_max_and_every_row_carries_its_decision() {
    let f = fixture();
    let artifact = Artifact::read(&loc(&f.model())).unwrap();
    let file = artifact.calibration.expect("calibrate wrote calibration.json beside the model");
    assert_eq!(file.model_version, artifact.manifest.version);
    assert_eq!(file.fitted_on.run, UNDECIDED);
    let image = file.calibration.image.expect("both classes are labelled");
    let pixel = file.calibration.pixel.expect("masks are known");

    let rt = runtime();
    rt.block_on(async {
        let undecided = session(&loc(&f.scores()), RunSelection::One(UNDECIDED.into())).await.unwrap();
        let rows = image_results(&undecided, CATEGORY).await.unwrap();
        let (scores, labels): (Vec<f64>, Vec<bool>) =
            rows.iter().map(|r| (r.pred_score, r.gt_label == Some(1))).unzip();
        assert!(labels.iter().any(|&l| l) && labels.iter().any(|&l| !l));
        let (_, f1, threshold) = sklearn(&scores, &labels);
        assert_eq!(image.threshold, threshold, "image threshold = sklearn's F1-max threshold");
        let promptad::metrics::ThresholdMethod::F1Max { f1: ours } = image.method else { panic!("F1-max") };
        assert!((ours - f1).abs() < 1e-12, "F1 {ours} vs sklearn {f1}");
        assert!(rows.iter().all(|r| r.pred_label.is_none() && r.calibration_version.is_none()));

        let decided = session(&loc(&f.scores()), RunSelection::One(DECIDED.into())).await.unwrap();
        let rows = image_results(&decided, CATEGORY).await.unwrap();
        let ids: Vec<String> = rows.iter().map(|r| r.image_id.clone()).collect();
        let maps = maps_of(&decided, CATEGORY, &ids).await.unwrap();
        assert_eq!(maps.len(), rows.len());
        for r in &rows {
            assert_eq!(r.calibration_version.as_deref(), Some(file.calibration.version.as_str()));
            assert_eq!(r.pred_label, Some(i8::from(r.pred_score >= image.threshold)), "{}", r.image_id);
            let above = maps[&r.image_id].iter().filter(|&&q| q >= pixel.threshold_q).count() as i64;
            assert_eq!(r.anomalous_pixels, Some(above), "{}", r.image_id);
        }
        // The decision a SQL query can count.
        let (_, batches) = promptad::sql::query(
            &decided,
            "SELECT COUNT(*) FILTER (WHERE pred_label = 1) AS flagged, COUNT(*) FILTER (WHERE pred_label = gt_label) AS right FROM scores",
        )
        .await
        .unwrap();
        let flagged = batches[0].column(0).as_any().downcast_ref::<arrow::array::Int64Array>().unwrap().value(0);
        let right = batches[0].column(1).as_any().downcast_ref::<arrow::array::Int64Array>().unwrap().value(0);
        assert_eq!(flagged as usize, rows.iter().filter(|r| r.pred_score >= image.threshold).count());
        let agree = rows.iter().filter(|r| r.gt_label == Some(i8::from(r.pred_score >= image.threshold))).count();
        assert_eq!(right as usize, agree);
    });
}

#[test]
fn calibrating_again_is_idempotent_and_a_different_one_needs_overwrite() {
    let f = fixture();
    let model = loc(&f.model());
    let out = loc(&f.scores());
    let before = std::fs::read(f.model().join(CALIBRATION)).unwrap();
    block_on(calibrate(&model, &request(&out, UNDECIDED, false))).unwrap();
    assert_eq!(std::fs::read(f.model().join(CALIBRATION)).unwrap(), before, "the same calibration is a no-op");
    // The same thresholds fitted on another run are another calibration (its provenance
    // differs): not replaced without overwrite, and the file is untouched.
    match block_on(calibrate(&model, &request(&out, DECIDED, false))) {
        Err(CalibrateError::Artifact(ArtifactError::CalibrationExists { .. })) => {}
        other => panic!("expected CalibrationExists, got {other:?}"),
    }
    assert_eq!(std::fs::read(f.model().join(CALIBRATION)).unwrap(), before);
    // A run of another model is refused, naming both versions.
    let tmp = tempfile::tempdir().unwrap();
    let copy = tmp.path().join("model");
    common::copy_dir(&f.model(), &copy);
    let manifest_path = copy.join("manifest.json");
    let mut manifest: serde_json::Value = serde_json::from_slice(&std::fs::read(&manifest_path).unwrap()).unwrap();
    manifest["version"] = serde_json::json!("0123456789abcdef");
    std::fs::write(&manifest_path, serde_json::to_vec(&manifest).unwrap()).unwrap();
    match block_on(calibrate(&loc(&copy), &request(&out, UNDECIDED, true))) {
        Err(CalibrateError::OtherModel { expected, found, .. }) => {
            assert_eq!(expected, "0123456789abcdef");
            assert_eq!(found.len(), 1);
        }
        other => panic!("expected OtherModel, got {other:?}"),
    }
    // The calibration beside it now belongs to another version: reading it says so.
    match promptad::artifact::ModelCalibration::read(&loc(&copy), "0123456789abcdef") {
        Err(ArtifactError::StaleCalibration { found, expected, .. }) => {
            assert_eq!((found, expected.as_str()), (manifest_version(&f.model()), "0123456789abcdef"));
        }
        other => panic!("expected StaleCalibration, got {other:?}"),
    }
}

fn manifest_version(model: &Path) -> String {
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(model.join("manifest.json")).unwrap()).unwrap();
    manifest["version"].as_str().unwrap().to_string()
}

/// The report of `run`, read back: the page and its embedded data.
fn report(run: &str, dir: &Path) -> (String, serde_json::Value) {
    let summary = runtime()
        .block_on(write_report(
            &loc(&fixture().scores()),
            RunSelection::One(run.into()),
            dir,
            &ReportOptions { per_group: 2 },
        ))
        .unwrap();
    assert_eq!(summary.path, dir.join("index.html"));
    let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&summary.path).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o644, "the page is readable by all, like any report");
    let html = std::fs::read_to_string(&summary.path).unwrap();
    let start = html.find("id=\"promptad-report\">").expect("embedded data") + "id=\"promptad-report\">".len();
    let end = start + html[start..].find("</script>").unwrap();
    let data: serde_json::Value = serde_json::from_str(&html[start..end].replace("<\\/", "</")).unwrap();
    (html, data)
}

fn points(v: &serde_json::Value) -> Vec<promptad::metrics::curve_points::CurvePoint> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|p| promptad::metrics::curve_points::CurvePoint {
            x: p["x"].as_f64().unwrap(),
            y: p["y"].as_f64().unwrap(),
        })
        .collect()
}

#[test]
fn the_report_is_self_contained_and_its_curves_recompute_its_metrics() {
    let tmp = tempfile::tempdir().unwrap();
    let (html, data) = report(DECIDED, tmp.path());
    for external in ["src=\"http", "href=\"http", "<link", "<script src", "url(http", "@import"] {
        assert!(!html.contains(external), "the page references an external asset ({external})");
    }
    assert!(data["calibrated"].as_bool().unwrap());
    assert!(!html.contains("id=\"no-calibration\""));
    let category = &data["categories"][0];
    assert_eq!(category["category"], CATEGORY);
    // Image ROC: the trapezoids through the drawn points are the reported AUROC, and sklearn's.
    let roc = points(&category["curves"]["image_roc"]);
    let reported = category["image_auroc"].as_f64().unwrap();
    assert!((trapezoid_area(&roc) - reported).abs() < 1e-12);
    let rows = runtime().block_on(async {
        let ctx = session(&loc(&fixture().scores()), RunSelection::One(DECIDED.into())).await.unwrap();
        image_results(&ctx, CATEGORY).await.unwrap()
    });
    let (scores, labels): (Vec<f64>, Vec<bool>) = rows.iter().map(|r| (r.pred_score, r.gt_label == Some(1))).unzip();
    let (auc, f1, _) = sklearn(&scores, &labels);
    assert!((reported - auc).abs() < 1e-12, "AUROC {reported} vs sklearn {auc}");
    assert!((category["f1_max"].as_f64().unwrap() - f1).abs() < 1e-12);
    // PRO: drawn through at most ~1000 points, the area stays within their spacing.
    let pro = points(&category["curves"]["pro"]);
    let aupro = category["aupro"].as_f64().unwrap();
    assert!((trapezoid_area(&pro) / 0.3 - aupro).abs() < 5e-3, "{} vs {aupro}", trapezoid_area(&pro) / 0.3);
    // The decisions in the table are the rows' pred_label against gt_label.
    let d = &category["decisions"];
    let tp = rows.iter().filter(|r| r.pred_label == Some(1) && r.gt_label == Some(1)).count() as u64;
    let fp = rows.iter().filter(|r| r.pred_label == Some(1) && r.gt_label == Some(0)).count() as u64;
    assert_eq!(d["confusion"]["true_positives"].as_u64().unwrap(), tp);
    assert_eq!(d["confusion"]["false_positives"].as_u64().unwrap(), fp);
    // A gallery with pictures: 4 panels per entry (image, truth, overlay, contours).
    assert!(html.contains("most anomalous defects"));
    assert!(html.matches("data:image/jpeg;base64,").count() >= 3 * 2);
    assert!(html.matches("data:image/png;base64,").count() >= 2);
}

#[test]
fn a_run_without_calibration_is_reported_without_decisions_and_says_so() {
    let tmp = tempfile::tempdir().unwrap();
    let (html, data) = report(UNDECIDED, tmp.path());
    assert!(!data["calibrated"].as_bool().unwrap());
    assert!(data["categories"][0]["decisions"].is_null());
    assert!(html.contains("id=\"no-calibration\""), "the page says there is no calibration");
    assert!(!html.contains("decided anomalous"));
    assert!(html.contains("lowest-scored defects"));
}

#[test]
fn the_page_renders_in_headless_chromium() {
    let tmp = tempfile::tempdir().unwrap();
    report(DECIDED, tmp.path());
    let shot = tmp.path().join("shot.png");
    let chromium = ["chromium", "chromium-browser", "google-chrome"]
        .into_iter()
        .find(|c| Command::new(c).arg("--version").output().is_ok_and(|o| o.status.success()))
        .expect("no chromium on PATH: run scripts/bootstrap.sh (it installs the Debian package chromium)");
    let status = Command::new(chromium)
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--window-size=1400,1600"])
        .arg(format!("--screenshot={}", shot.display()))
        .arg(format!("file://{}", tmp.path().join("index.html").display()))
        .env("HOME", tmp.path())
        .output()
        .unwrap();
    assert!(shot.exists(), "chromium wrote no screenshot: {}", String::from_utf8_lossy(&status.stderr));
    let picture = image::open(&shot).unwrap().to_rgb8();
    assert_eq!((picture.width(), picture.height()), (1400, 1600));
    // Not blank: many colours (text, charts, pictures), and the page is not one colour.
    let mut colours: Vec<[u8; 3]> = picture.pixels().map(|p| p.0).collect();
    let white = colours.iter().filter(|c| **c == [255, 255, 255]).count() as f64 / colours.len() as f64;
    colours.sort();
    colours.dedup();
    assert!(colours.len() > 500, "only {} distinct colours: the page rendered blank", colours.len());
    assert!(white < 0.97, "{:.1}% of the screenshot is white", white * 100.0);
}
