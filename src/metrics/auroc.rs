//! [`auroc`]: area under the ROC curve, exact, ties with half credit.
//!
//! Definition (anomalib ≥ 2.3, `src/anomalib/metrics/auroc.py`): `_AUROC(BinaryROC)` keeps every
//! prediction (unbinned) and computes `auc(fpr, tpr, reorder=True)`, the trapezoid over the exact
//! ROC curve, which has one point per distinct score (torchmetrics `_binary_clf_curve`, like
//! scikit-learn's `roc_auc_score`) and starts at (0, 0). The trapezoid over grouped thresholds is
//! the Mann–Whitney statistic with ties counted as half a win (ecosystem.md §2.1):
//!
//! ```text
//! AUROC = Σ_s n_s · (TP_{>s} + ½ · p_s) / (P · N)
//! ```
//!
//! over the distinct scores s, with p_s / n_s the positives / negatives scoring exactly s, TP_{>s}
//! the positives scoring above s, P and N the totals. It is computed here in integers
//! (numerator Σ n_s · (2·TP_{>s} + p_s) in u128) and divided once.
//!
//! - image AUROC: over images, score = image score, positive = anomalous image
//!   (anomalib `AUROC(fields=["pred_score", "gt_label"], prefix="image_")`);
//! - pixel AUROC: over every pixel of every test image, positive = defect pixel
//!   (`AUROC(fields=["anomaly_map", "gt_mask"], prefix="pixel_")`); [`pixel_auroc`] computes it
//!   from merged [`ImageStats`].
//!
//! Unlike torchmetrics, scores are never passed through a sigmoid (anomalib#2003): any finite or
//! infinite score ranks as given; NaN is rejected. A set without positives or without negatives
//! is [`MetricError::Undefined`].

use super::curve::{binary_levels, BinaryLevel};
use super::error::{MetricError, UndefinedReason};
use super::stats::ImageStats;

/// Exact AUROC of `scores` against `labels` (true = positive).
pub fn auroc(scores: &[f64], labels: &[bool]) -> Result<f64, MetricError> {
    auroc_from_levels("auroc", binary_levels("auroc", scores, labels)?)
}

/// Pixel AUROC from (merged) per-image statistics: exact for the stored scores.
pub fn pixel_auroc(stats: &ImageStats) -> Result<f64, MetricError> {
    auroc_from_levels("pixel_auroc", stats.binary_levels())
}

/// AUROC from grouped thresholds, highest score first.
pub fn auroc_from_levels(
    metric: &'static str,
    levels: impl IntoIterator<Item = BinaryLevel>,
) -> Result<f64, MetricError> {
    let overflow = MetricError::Overflow { what: "auroc numerator" };
    let (mut tp, mut fp) = (0u128, 0u128);
    let mut numerator = 0u128;
    for l in levels {
        let (n, p) = (l.negatives as u128, l.positives as u128);
        let term = (2 * tp + p).checked_mul(n).ok_or(overflow.clone())?;
        numerator = numerator.checked_add(term).ok_or(overflow.clone())?;
        tp += p;
        fp += n;
    }
    match (tp, fp) {
        (0, 0) => Err(MetricError::undefined(metric, UndefinedReason::Empty)),
        (0, _) => Err(MetricError::undefined(metric, UndefinedReason::NoPositives)),
        (_, 0) => Err(MetricError::undefined(metric, UndefinedReason::NoNegatives)),
        (p, n) => Ok(numerator as f64 / (2.0 * p as f64 * n as f64)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::quantize::{dequantize, quantize};

    #[test]
    fn hand_computed() {
        assert_eq!(auroc(&[0.9, 0.8, 0.2, 0.1], &[true, true, false, false]), Ok(1.0));
        assert_eq!(auroc(&[0.9, 0.8, 0.2, 0.1], &[false, false, true, true]), Ok(0.0));
        assert_eq!(auroc(&[0.3; 5], &[true, false, false, true, false]), Ok(0.5));
        // pos 0.5 vs neg 0.5 tied (½), every other pair won: 3.5 / 4
        assert_eq!(auroc(&[0.5, 0.5, 0.9, 0.1], &[true, false, true, false]), Ok(0.875));
        // 1 positive between 2 negatives, one tie: (1 + ½) / 2
        assert_eq!(auroc(&[0.2, 0.5, 0.5], &[false, true, false]), Ok(0.75));
        // infinities rank like any score
        assert_eq!(auroc(&[f64::INFINITY, f64::NEG_INFINITY], &[true, false]), Ok(1.0));
    }

    #[test]
    fn undefined_cases() {
        let u = |reason| Err(MetricError::Undefined { metric: "auroc", reason });
        assert_eq!(auroc(&[], &[]), u(UndefinedReason::Empty));
        assert_eq!(auroc(&[0.1, 0.2], &[false, false]), u(UndefinedReason::NoPositives));
        assert_eq!(auroc(&[0.1, 0.2], &[true, true]), u(UndefinedReason::NoNegatives));
        assert!(matches!(auroc(&[f64::NAN], &[true]), Err(MetricError::NanScore { .. })));
    }

    #[test]
    fn stats_equal_reference_on_dequantised_scores() {
        let mut seed = 3u64;
        let mut next = || {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            seed >> 33
        };
        let (w, h) = (13usize, 7usize);
        let mut stats = Vec::new();
        let (mut all_scores, mut all_labels) = (Vec::new(), Vec::new());
        for _ in 0..9 {
            let map: Vec<u16> = (0..w * h).map(|_| quantize((next() % 1000) as f64 / 999.0)).collect();
            let mask: Vec<bool> = (0..w * h).map(|_| next() % 5 == 0).collect();
            stats.push(ImageStats::from_map(&map, &mask, w, h).unwrap());
            all_scores.extend(map.iter().map(|&q| dequantize(q)));
            all_labels.extend(mask);
        }
        let merged = ImageStats::sum(&stats).unwrap();
        let reversed = ImageStats::sum(stats.iter().rev()).unwrap();
        let exact = auroc(&all_scores, &all_labels).unwrap();
        assert_eq!(pixel_auroc(&merged).unwrap().to_bits(), exact.to_bits());
        assert_eq!(pixel_auroc(&reversed).unwrap().to_bits(), exact.to_bits());
    }
}
