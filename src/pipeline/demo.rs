//! `promptad demo`: generate a defect dataset, train one model per category, score its test split,
//! calibrate each model on it, score it again with the decisions, and report image AUROC, pixel
//! AUROC and AUPRO against chance, and the HTML report of the calibrated run.
//!
//! The generated data has no validation split, so the models are calibrated on the test split
//! they are then evaluated on: anomalib's default for MVTec AD (`same_as_test`), which flatters
//! the decisions (not the AUROC/AUPRO, which need no threshold). The first pass is the run
//! [`CALIBRATION_RUN`], the decided one [`DEMO_RUN`].

use std::path::PathBuf;

use crate::data::dataset::Dataset;
use crate::store::Location;

use serde::Serialize;

use super::calibrate::{calibrate, CalibrateError, CalibrateRequest};
use super::score::{score_category, ScoreError, ScoreOptions};
use super::train::{train_category, TrainError, TrainJob};
use crate::artifact::{default_rel, Artifact, ArtifactError, Backbone, Weights};
use crate::clip::Clip;
use crate::data::prepare::Compat;
use crate::data::synth::{generate, SynthConfig, SynthError};
use crate::data::DataError;
use crate::detect::DetectConfig;
use crate::metrics::{MetricError, DEFAULT_FPR_LIMIT};
use crate::report::{write_report, ReportError, ReportOptions};
use crate::sql::RunSelection;
use crate::stop::StopToken;
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error(transparent)]
    Synth(#[from] SynthError),
    #[error(transparent)]
    Data(#[from] DataError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Train(#[from] TrainError),
    #[error(transparent)]
    Artifact(#[from] ArtifactError),
    #[error(transparent)]
    Score(#[from] ScoreError),
    #[error(transparent)]
    Calibrate(#[from] CalibrateError),
    #[error(transparent)]
    Report(#[from] ReportError),
    #[error("category {category}: {source}")]
    Metric {
        category: String,
        #[source]
        source: MetricError,
    },
}
use crate::prompt::train::TrainConfig;

/// What a random scorer gets on average: AUROC 0.5, and AUPRO 0.15 (PRO = FPR, integrated to
/// 0.3 and divided by 0.3).
pub const CHANCE: CategoryResult = CategoryResult {
    category: String::new(),
    test_images: 0,
    image_auroc: 0.5,
    pixel_auroc: 0.5,
    aupro: DEFAULT_FPR_LIMIT / 2.0,
    train_seconds: 0.0,
    score_seconds: 0.0,
};

#[derive(Debug, Clone, Serialize)]
pub struct CategoryResult {
    pub category: String,
    pub test_images: usize,
    pub image_auroc: f64,
    pub pixel_auroc: f64,
    pub aupro: f64,
    pub train_seconds: f64,
    pub score_seconds: f64,
}

#[derive(Debug, Clone)]
pub struct DemoOptions {
    pub out_dir: PathBuf,
    pub synth: SynthConfig,
    pub k: usize,
    pub seed: u64,
    pub train: TrainConfig,
    pub detect: DetectConfig,
    pub batch_size: usize,
    pub overwrite: bool,
}

/// The run that scores each test split before calibration.
pub const CALIBRATION_RUN: &str = "calibration";
/// The run with the calibrated decisions, which the report shows.
pub const DEMO_RUN: &str = "demo";

/// What the demo did: the metrics per category and where its report is.
#[derive(Debug, Clone)]
pub struct DemoOutcome {
    pub results: Vec<CategoryResult>,
    /// `<out>/report/index.html`.
    pub report: PathBuf,
}

/// The anomaly suffixes of a generated category: one `"{} with <defect>"` per defect type.
fn suffixes(defects: &[String]) -> Vec<String> {
    defects.iter().map(|d| format!("{{}} with {}", d.replace('_', " "))).collect()
}

pub fn run_demo(
    options: &DemoOptions,
    clip: &Clip,
    backbone: &Backbone,
    stop: &StopToken,
    mut progress: impl FnMut(&str),
) -> Result<DemoOutcome, DemoError> {
    let data = options.out_dir.join("data");
    let summary = if data.join("synth.json").is_file() && !options.overwrite {
        progress("reusing the generated dataset");
        crate::data::synth::read_summary(&data)?
    } else {
        progress("generating the dataset");
        generate(&SynthConfig { overwrite: true, ..options.synth.clone() }, &data, || {})?
    };
    let dataset = Dataset::open(&data.display().to_string())?;
    let out = Location::parse(&options.out_dir.display().to_string())?;
    let mut results = Vec::new();
    for category in &summary.categories {
        let defects: Vec<String> = category.defects.iter().map(|d| d.defect_type.clone()).collect();
        let job = TrainJob {
            category_name: Some(category.name.replace('_', " ")),
            anomaly_suffixes: Some(suffixes(&defects)),
            train: options.train.clone(),
            detect: options.detect.clone(),
            ..TrainJob::official(
                data.display().to_string(),
                category.name.clone(),
                options.k,
                options.seed,
                options.train.steps,
            )
        };
        progress(&format!("{}: training on {} shot(s)", category.name, options.k));
        let model_dir = out.join(&format!("models/{}", default_rel("synth", &category.name, options.k, options.seed)));
        let started = std::time::Instant::now();
        train_category(&job, clip, backbone.clone(), &model_dir, true, stop, |_, _, _| {})?;
        let train_seconds = started.elapsed().as_secs_f64();
        let scores = out.join("scores");
        let score = |artifact: &Artifact, run: &str| {
            let score_options = ScoreOptions {
                batch_size: options.batch_size,
                compat: Compat::Rgb,
                overwrite: true,
                run_id: Some(run.to_string()),
                calibration: artifact.calibration.as_ref().map(|c| c.calibration.clone()),
                ..ScoreOptions::default()
            };
            score_category(
                artifact,
                clip,
                options.detect.clone(),
                &dataset,
                &category.name,
                &scores,
                &score_options,
                stop,
                |_| {},
            )
        };
        progress(&format!("{}: scoring the test split to calibrate on", category.name));
        let started = std::time::Instant::now();
        score(&Artifact::read(&model_dir)?, CALIBRATION_RUN)?;
        progress(&format!("{}: calibrating", category.name));
        let request = CalibrateRequest {
            out: scores.clone(),
            run: RunSelection::One(CALIBRATION_RUN.into()),
            category: Some(category.name.clone()),
            options: Default::default(),
            overwrite: true,
        };
        crate::store::block_on(calibrate(&model_dir, &request))?;
        progress(&format!("{}: scoring with decisions", category.name));
        let scored = score(&Artifact::read(&model_dir)?, DEMO_RUN)?;
        let metrics =
            scored.metrics().map_err(|source| DemoError::Metric { category: category.name.clone(), source })?;
        results.push(CategoryResult {
            category: category.name.clone(),
            test_images: scored.images,
            image_auroc: metrics.image_auroc,
            pixel_auroc: metrics.pixel_auroc,
            aupro: metrics.aupro,
            train_seconds,
            score_seconds: started.elapsed().as_secs_f64(),
        });
    }
    progress("writing the report");
    let report_dir = options.out_dir.join("report");
    let scores = out.join("scores");
    let report = crate::store::block_on(write_report(
        &scores,
        RunSelection::One(DEMO_RUN.into()),
        &report_dir,
        &ReportOptions::default(),
    ))?;
    Ok(DemoOutcome { results, report: report.path })
}

/// The mean of each metric over categories.
pub fn mean(results: &[CategoryResult]) -> CategoryResult {
    let n = results.len().max(1) as f64;
    let avg = |f: fn(&CategoryResult) -> f64| results.iter().map(f).sum::<f64>() / n;
    CategoryResult {
        category: "mean".into(),
        test_images: results.iter().map(|r| r.test_images).sum(),
        image_auroc: avg(|r| r.image_auroc),
        pixel_auroc: avg(|r| r.pixel_auroc),
        aupro: avg(|r| r.aupro),
        train_seconds: results.iter().map(|r| r.train_seconds).sum(),
        score_seconds: results.iter().map(|r| r.score_seconds).sum(),
    }
}

/// The report table: one row per category, the mean, chance, and the mean's margin over chance.
pub fn table(results: &[CategoryResult], backbone: &Backbone) -> String {
    let describe = match &backbone.weights {
        Weights::RandomInit { seed } => format!(
            "{} with RANDOM weights (seed {seed}): no pretrained CLIP weights are available here; pass --weights for an OpenCLIP checkpoint",
            backbone.config_name
        ),
        Weights::Checkpoint { path, sha256 } => format!("{} from {} (sha256 {})", backbone.config_name, path.display(), &sha256[..sha256.len().min(12)]),
    };
    let mut out = format!("backbone: {describe}\n\n");
    out.push_str(&format!(
        "{:<14} {:>7} {:>12} {:>12} {:>8} {:>9} {:>9}\n",
        "category", "images", "image AUROC", "pixel AUROC", "AUPRO", "train s", "score s"
    ));
    let line = |r: &CategoryResult| {
        format!(
            "{:<14} {:>7} {:>12.4} {:>12.4} {:>8.4} {:>9.1} {:>9.1}\n",
            r.category, r.test_images, r.image_auroc, r.pixel_auroc, r.aupro, r.train_seconds, r.score_seconds
        )
    };
    for r in results {
        out.push_str(&line(r));
    }
    let m = mean(results);
    out.push_str(&line(&m));
    out.push_str(&format!(
        "{:<14} {:>7} {:>12.4} {:>12.4} {:>8.4}\n",
        "chance", "", CHANCE.image_auroc, CHANCE.pixel_auroc, CHANCE.aupro
    ));
    out.push_str(&format!(
        "{:<14} {:>7} {:>+12.4} {:>+12.4} {:>+8.4}\n",
        "mean - chance",
        "",
        m.image_auroc - CHANCE.image_auroc,
        m.pixel_auroc - CHANCE.pixel_auroc,
        m.aupro - CHANCE.aupro
    ));
    out
}
