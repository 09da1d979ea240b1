//! `promptad calibrate`: a model's decision thresholds, fitted on a labelled scored run.

use std::process::ExitCode;

use anyhow::Result;
use clap::Args;

use crate::metrics::calibration::{CalibrationOptions, DEFAULT_IMAGE_NORMAL_QUANTILE, DEFAULT_PIXEL_NORMAL_QUANTILE};
use crate::metrics::ThresholdMethod;
use crate::pipeline::calibrate::{calibrate, CalibrateRequest};
use crate::sql::RunSelection;
use crate::store::Location;

/// Calibrate a model: the image and pixel thresholds its scoring runs decide with.
///
/// Reads a scored run of the model (its committed scores and metric_stats, on any store) and
/// fits, on the category's labelled images: the image threshold, the F1-max over the image
/// scores, and the pixel threshold, the F1-max over every pixel, exact over the stored u16 map
/// values (anomalib's F1AdaptiveThreshold). With normal images only (no defect labelled) the
/// thresholds are instead the --image-quantile / --pixel-quantile nearest-rank quantiles of the
/// normal scores: a weaker default that only fixes the share of false alarms (it is reported as
/// such).
///
/// The result goes beside the model as MODEL/calibration.json (versioned by its content; the
/// model itself is unchanged). From then on `promptad score` with this model writes pred_label
/// (1 when pred_score >= the image threshold), anomalous_pixels and calibration_version in every
/// row; score into a new --run (a run never mixes decided and undecided rows). Calibrating on the
/// split you then evaluate (anomalib's default for MVTec AD) flatters the decisions: prefer a
/// held-out labelled split.
#[derive(Debug, Args)]
#[command(after_long_help = crate::exit::help_text())]
pub struct CalibrateArgs {
    /// Output location of the scored run (`promptad score --out`).
    #[arg(value_name = "OUT_URL")]
    pub out: String,
    /// The model artifact to calibrate (`promptad train --out`); it must be the model that
    /// scored the run.
    #[arg(long, env = "PROMPTAD_MODEL", value_name = "URL")]
    pub model: String,
    /// The run to calibrate on [default: the most recently completed run].
    #[arg(long, value_name = "ID")]
    pub run: Option<String>,
    /// The category of the run [default: the model's].
    #[arg(long)]
    pub category: Option<String>,
    /// Without anomalous images: the nearest-rank quantile of the normal image scores.
    #[arg(long, default_value_t = DEFAULT_IMAGE_NORMAL_QUANTILE, value_name = "Q")]
    pub image_quantile: f64,
    /// Without defect pixels: the nearest-rank quantile of the normal pixel values.
    #[arg(long, default_value_t = DEFAULT_PIXEL_NORMAL_QUANTILE, value_name = "Q")]
    pub pixel_quantile: f64,
    /// Replace a different calibration the model already has.
    #[arg(long)]
    pub overwrite: bool,
}

pub fn run(args: CalibrateArgs) -> Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let request = CalibrateRequest {
        out: Location::parse(&args.out)?,
        run: args.run.clone().map_or(RunSelection::Latest, RunSelection::One),
        category: args.category.clone(),
        options: CalibrationOptions {
            image_normal_quantile: args.image_quantile,
            pixel_normal_quantile: args.pixel_quantile,
        },
        overwrite: args.overwrite,
    };
    let model = Location::parse(&args.model)?;
    let file = runtime.block_on(calibrate(&model, &request))?;
    let c = &file.calibration;
    println!(
        "calibration {} of model {} ({}), fitted on run {} of {}, category {}",
        c.version,
        file.model_version,
        model.url_of(crate::artifact::CALIBRATION),
        file.fitted_on.run,
        file.fitted_on.out,
        file.fitted_on.category
    );
    let method = |m: &ThresholdMethod| match m {
        ThresholdMethod::F1Max { f1 } => format!("F1-max (F1 {f1:.4} on the calibration set)"),
        ThresholdMethod::NormalQuantile { quantile } => {
            format!("the {quantile} quantile of the normal scores (no anomalous example: weaker than F1-max)")
        }
    };
    match &c.image {
        Some(i) => println!(
            "image threshold {} ({}; {} normal, {} anomalous images)",
            i.threshold,
            method(&i.method),
            i.normal,
            i.anomalous
        ),
        None => println!("no image threshold: no labelled normal image"),
    }
    match &c.pixel {
        Some(p) => println!(
            "pixel threshold {} = stored value {} ({}; {} background, {} defect pixels)",
            p.threshold(),
            p.threshold_q,
            method(&p.method),
            p.background,
            p.defect
        ),
        None => println!("no pixel threshold: no labelled background pixel"),
    }
    Ok(ExitCode::SUCCESS)
}
