//! Calibrating a model: the image and pixel thresholds of its decisions, fitted on the labelled
//! images of a scored run and stored beside the model ([`ModelCalibration`]); the model itself is
//! unchanged. Later scoring runs of the model write each image's decision with them.
//!
//! The run is read from its committed tables (any store): the image scores and labels of the
//! category, and its summed pixel statistics, so the pixel threshold is exact over the stored u16
//! values. Which thresholds come out (F1-max with both classes, a normal quantile with normal
//! images only) is [`Calibration::fit_with`]'s rule. Calibrating on the split that is then
//! evaluated is anomalib's default for MVTec AD (`val_split_mode = same_as_test`) and flatters
//! the decisions; calibrate on a held-out labelled split where there is one.

use crate::artifact::{ArtifactError, CalibrationSource, Manifest, ModelCalibration};
use crate::metrics::calibration::CalibrationOptions;
use crate::metrics::{Calibration, MetricError};
use crate::sql::results::{image_results, pixel_stats, single_run};
use crate::sql::{session, RunSelection, SqlError};
use crate::store::Location;

#[derive(Debug, thiserror::Error)]
pub enum CalibrateError {
    #[error(transparent)]
    Artifact(#[from] ArtifactError),
    #[error(transparent)]
    Sql(#[from] SqlError),
    #[error(transparent)]
    Metric(#[from] MetricError),
    #[error("run {run} in {out} has no scored image of category {category} (its categories: [{}])", available.join(", "))]
    NoImages { out: String, run: String, category: String, available: Vec<String> },
    #[error(
        "run {run} scored {category} with model version(s) [{}], not with the model being calibrated (version \
         {expected}); calibrate on a run of this model",
        found.join(", ")
    )]
    OtherModel { run: String, category: String, found: Vec<String>, expected: String },
    #[error(
        "run {run} has no labelled image of {category} (gt_label is null everywhere): a calibration needs at least \
         normal images with known labels"
    )]
    NoLabels { run: String, category: String },
}

/// What to calibrate on.
#[derive(Debug, Clone)]
pub struct CalibrateRequest {
    /// The output location of the scored run.
    pub out: Location,
    pub run: RunSelection,
    /// The category of the run [default: the model's].
    pub category: Option<String>,
    pub options: CalibrationOptions,
    /// Replace a different calibration the model already has.
    pub overwrite: bool,
}

/// Fits the calibration of the model at `model` on `request`'s run and writes it beside the model
/// (the same calibration again is a no-op); returns what was written.
pub async fn calibrate(model: &Location, request: &CalibrateRequest) -> Result<ModelCalibration, CalibrateError> {
    let manifest = Manifest::read(model)?;
    let category = request.category.clone().unwrap_or_else(|| manifest.category.key.clone());
    let out = request.out.url().to_string();
    let ctx = session(&request.out, request.run.clone()).await?;
    let run = single_run(&ctx, &out).await?;
    let images = image_results(&ctx, &category).await?;
    if images.is_empty() {
        let available = crate::sql::results::categories(&ctx).await?;
        return Err(CalibrateError::NoImages { out, run, category, available });
    }
    let mut found: Vec<String> = images.iter().map(|i| i.model_version.clone()).collect();
    found.sort();
    found.dedup();
    if found != [manifest.version.clone()] {
        return Err(CalibrateError::OtherModel { run, category, found, expected: manifest.version });
    }
    let (scores, labels): (Vec<f64>, Vec<bool>) =
        images.iter().filter_map(|i| i.gt_label.map(|label| (i.pred_score, label == 1))).unzip();
    let pixels = pixel_stats(&ctx, &category).await?;
    let calibration = Calibration::fit_with(&scores, &labels, &pixels, request.options)?;
    if calibration.image.is_none() && calibration.pixel.is_none() {
        return Err(CalibrateError::NoLabels { run, category });
    }
    let file = ModelCalibration {
        model_version: manifest.version,
        fitted_on: CalibrationSource { out, run, category },
        calibration,
    };
    file.write(model, request.overwrite)?;
    Ok(file)
}
