//! What the report says about one category: its metrics, the curves behind them, the score
//! distributions, and the decisions of the run's calibration counted against the labels. All of
//! it is computed here from the scored rows and the summed pixel statistics, with the same exact
//! functions `promptad eval` and the SQL aggregates use.

use serde::Serialize;

use crate::metrics::curve::binary_levels;
use crate::metrics::curve_points::{pr_points, pro_points, roc_points, thin, CurvePoint};
use crate::metrics::{
    aupr, auroc, f1_max, pixel_aupro, pixel_auroc, Calibration, Confusion, ImageStats, MetricError, DEFAULT_FPR_LIMIT,
};
use crate::sql::results::ImageResult;

/// Points a pixel curve is drawn through at most (about): pixel curves have up to 65,536
/// thresholds, image curves keep every point.
pub const PIXEL_CURVE_POINTS: usize = 1000;

/// The report on one category of a run.
#[derive(Debug, Clone, Serialize)]
pub struct CategorySummary {
    pub category: String,
    /// Scored images (rows recorded with an error are not counted).
    pub images: usize,
    pub normal: usize,
    pub anomalous: usize,
    pub unlabelled: usize,
    /// `None` where undefined (one class missing).
    pub image_auroc: Option<f64>,
    pub image_aupr: Option<f64>,
    pub pixel_auroc: Option<f64>,
    pub aupro: Option<f64>,
    /// F1-max over the images and the threshold it is reached at (what a calibration on this
    /// very split would choose).
    pub f1_max: Option<f64>,
    pub f1_max_threshold: Option<f64>,
    /// The run's decisions, if it has a calibration.
    pub decisions: Option<Decisions>,
    pub curves: Curves,
    /// Scores of the normal and of the anomalous images, for the histograms.
    pub normal_scores: Vec<f64>,
    pub anomalous_scores: Vec<f64>,
}

/// The decisions a calibrated run wrote (`pred_label`), counted against `gt_label`.
#[derive(Debug, Clone, Serialize)]
pub struct Decisions {
    pub calibration_version: String,
    /// The image threshold (`pred_score >= threshold` is anomalous), if the calibration has one.
    pub image_threshold: Option<f64>,
    /// How it was chosen, in words.
    pub image_method: Option<String>,
    /// The pixel threshold as a stored u16 value, if the calibration has one.
    pub pixel_threshold_q: Option<u16>,
    /// Labelled images with a decision.
    pub confusion: Confusion,
    pub precision: Option<f64>,
    pub recall: Option<f64>,
    pub f1: Option<f64>,
    /// Images decided anomalous, labelled or not.
    pub predicted_anomalous: usize,
}

/// The curves, as the points drawn: image ROC and PR with every point (so the trapezoids
/// through `image_roc` are the image AUROC exactly), pixel ROC and PRO thinned to about
/// [`PIXEL_CURVE_POINTS`].
#[derive(Debug, Clone, Default, Serialize)]
pub struct Curves {
    pub image_roc: Vec<CurvePoint>,
    pub image_pr: Vec<CurvePoint>,
    pub pixel_roc: Vec<CurvePoint>,
    /// To FPR [`DEFAULT_FPR_LIMIT`].
    pub pro: Vec<CurvePoint>,
}

impl CategorySummary {
    pub fn new(
        category: &str,
        images: &[ImageResult],
        pixels: &ImageStats,
        calibration: Option<&Calibration>,
    ) -> Result<CategorySummary, MetricError> {
        let labelled: Vec<(f64, bool)> =
            images.iter().filter_map(|i| i.gt_label.map(|l| (i.pred_score, l == 1))).collect();
        let (scores, labels): (Vec<f64>, Vec<bool>) = labelled.iter().copied().unzip();
        let best = defined(f1_max(&scores, &labels))?;
        let image_levels = binary_levels("report", &scores, &labels)?;
        let curves = Curves {
            image_roc: defined(roc_points("image_roc", image_levels.iter().copied()))?.unwrap_or_default(),
            image_pr: defined(pr_points("image_pr", image_levels.iter().copied()))?.unwrap_or_default(),
            pixel_roc: defined(roc_points("pixel_roc", pixels.binary_levels()))?
                .map(|p| thin(&p, PIXEL_CURVE_POINTS))
                .unwrap_or_default(),
            pro: defined(pro_points(pixels, DEFAULT_FPR_LIMIT))?
                .map(|p| thin(&p, PIXEL_CURVE_POINTS))
                .unwrap_or_default(),
        };
        let anomalous = labels.iter().filter(|&&l| l).count();
        Ok(CategorySummary {
            category: category.to_string(),
            images: images.len(),
            normal: labels.len() - anomalous,
            anomalous,
            unlabelled: images.len() - labels.len(),
            image_auroc: defined(auroc(&scores, &labels))?,
            image_aupr: defined(aupr(&scores, &labels))?,
            pixel_auroc: defined(pixel_auroc(pixels))?,
            aupro: defined(pixel_aupro(pixels, DEFAULT_FPR_LIMIT))?,
            f1_max: best.map(|b| b.f1),
            f1_max_threshold: best.map(|b| b.threshold),
            decisions: calibration.map(|c| Decisions::count(images, c)),
            curves,
            normal_scores: labelled.iter().filter(|(_, l)| !l).map(|(s, _)| *s).collect(),
            anomalous_scores: labelled.iter().filter(|(_, l)| *l).map(|(s, _)| *s).collect(),
        })
    }
}

impl Decisions {
    fn count(images: &[ImageResult], calibration: &Calibration) -> Decisions {
        let mut confusion = Confusion::default();
        for image in images {
            match (image.pred_label, image.gt_label) {
                (Some(1), Some(1)) => confusion.true_positives += 1,
                (Some(1), Some(_)) => confusion.false_positives += 1,
                (Some(_), Some(1)) => confusion.false_negatives += 1,
                (Some(_), Some(_)) => confusion.true_negatives += 1,
                _ => {}
            }
        }
        let image_method = calibration.image.as_ref().map(|i| match i.method {
            crate::metrics::ThresholdMethod::F1Max { f1 } => {
                format!("F1-max on {} normal + {} anomalous images (F1 {f1:.4} there)", i.normal, i.anomalous)
            }
            crate::metrics::ThresholdMethod::NormalQuantile { quantile } => format!(
                "the {quantile} quantile of {} normal images (no anomalous image was labelled: a weaker threshold)",
                i.normal
            ),
        });
        Decisions {
            calibration_version: calibration.version.clone(),
            image_threshold: calibration.image.as_ref().map(|i| i.threshold),
            image_method,
            pixel_threshold_q: calibration.pixel.as_ref().map(|p| p.threshold_q),
            precision: confusion.precision(),
            recall: confusion.recall(),
            f1: confusion.f1(),
            confusion,
            predicted_anomalous: images.iter().filter(|i| i.pred_label == Some(1)).count(),
        }
    }
}

/// An undefined metric (a class missing) is `None`; any other error stays one.
fn defined<T>(result: Result<T, MetricError>) -> Result<Option<T>, MetricError> {
    match result {
        Ok(v) => Ok(Some(v)),
        Err(MetricError::Undefined { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}
