//! [`aupr`]: area under the precision–recall curve, as anomalib ≥ 2.3 reports it.
//!
//! Definition (anomalib ≥ 2.3, `src/anomalib/metrics/aupr.py`, identical in lib/v2.6.0):
//! `_AUPR(BinaryPrecisionRecallCurve)` computes the exact curve (torchmetrics
//! `_binary_precision_recall_curve_compute`: one point per distinct score t, precision
//! TP/(TP+FP) and recall TP/P of the predictions with score ≥ t, plus the point (recall 0,
//! precision 1)) and returns `auc(recall, precision, reorder=True)`: the **trapezoid** over the
//! points after a *stable* ascending sort by recall. It is not scikit-learn's
//! `average_precision_score` (a step sum; see [`average_precision`]) and not scikit-learn's
//! `auc(recall, precision)` either (which keeps the curve's own order).
//!
//! The stable sort decides the area at each recall level: points of equal recall stay in their
//! input order, lowest threshold first, so a recall level is *entered* at its lowest precision
//! (all the negatives that follow its last positive counted) and *left* at its highest (the
//! threshold that reached it), and the (0, 1) point closes recall 0. With recall levels
//! r_0 = 0 < r_1 < … < r_K = 1 and, at level k, p_max(k) / p_min(k) the precision at its
//! highest / lowest threshold (p_max(0) = 1):
//!
//! ```text
//! AUPR = Σ_{k=1..K} (r_k − r_{k−1}) · (p_max(k−1) + p_min(k)) / 2
//! ```
//!
//! Consequence users should know: a perfect ranking scores below 1 whenever negatives exist
//! (positives {0.9, 0.8} over negatives {0.2, 0.1} gives 0.875, one positive over one negative
//! 0.75), because the last segment ends at the final precision P/(P+N). Checked against
//! torchmetrics 1.9.0 (`auc(rec, prec, reorder=True)`), including the anomalib docstring example
//! (0.4899). The SQL function `image_aupr` reports this number so it matches anomalib's
//! `image_AUPR`; [`average_precision`] gives scikit-learn's AP for those who want that instead.
//!
//! A set without positives or without negatives is [`MetricError::Undefined`] (with no
//! negatives the curve is flat at precision 1; it is still reported as undefined, like AUROC).

use super::curve::{binary_levels, BinaryLevel};
use super::error::{MetricError, UndefinedReason};

/// anomalib's AUPR of `scores` against `labels` (true = positive); see the module documentation.
pub fn aupr(scores: &[f64], labels: &[bool]) -> Result<f64, MetricError> {
    aupr_from_levels("aupr", binary_levels("aupr", scores, labels)?)
}

/// scikit-learn's `average_precision_score`: Σ_k (r_k − r_{k−1}) · p_max(k), the precision at
/// the threshold where each recall level is reached. Not what anomalib's AUPR reports.
pub fn average_precision(scores: &[f64], labels: &[bool]) -> Result<f64, MetricError> {
    let groups = recall_groups("average_precision", binary_levels("average_precision", scores, labels)?)?;
    let p = groups.total_positives as f64;
    let mut prev_tp = 0u64;
    let mut ap = 0.0;
    for g in &groups.levels {
        ap += (g.tp - prev_tp) as f64 / p * g.p_max;
        prev_tp = g.tp;
    }
    Ok(ap)
}

/// anomalib's AUPR from grouped thresholds, highest score first.
pub fn aupr_from_levels(
    metric: &'static str,
    levels: impl IntoIterator<Item = BinaryLevel>,
) -> Result<f64, MetricError> {
    let groups = recall_groups(metric, levels)?;
    let p = groups.total_positives as f64;
    let (mut prev_recall, mut prev_exit) = (0.0f64, 1.0f64);
    let mut area = 0.0;
    for g in &groups.levels {
        let recall = g.tp as f64 / p;
        area += (recall - prev_recall) * (prev_exit + g.p_min) / 2.0;
        prev_recall = recall;
        prev_exit = g.p_max;
    }
    Ok(area)
}

/// One recall level (TP > 0) of a PR curve.
struct RecallLevel {
    tp: u64,
    /// precision at the highest threshold with this TP (where the level is reached)
    p_max: f64,
    /// precision at the lowest threshold with this TP (negatives after the last positive)
    p_min: f64,
}

struct RecallGroups {
    levels: Vec<RecallLevel>,
    total_positives: u64,
}

fn recall_groups(
    metric: &'static str,
    levels: impl IntoIterator<Item = BinaryLevel>,
) -> Result<RecallGroups, MetricError> {
    let (mut tp, mut fp) = (0u64, 0u64);
    let mut out: Vec<RecallLevel> = Vec::new();
    for l in levels {
        tp += l.positives;
        fp += l.negatives;
        if tp == 0 {
            continue; // recall 0: closed by the (0, 1) point
        }
        let precision = tp as f64 / (tp + fp) as f64;
        if l.positives > 0 {
            out.push(RecallLevel { tp, p_max: precision, p_min: precision });
        } else if let Some(last) = out.last_mut() {
            last.p_min = precision;
        }
    }
    match (tp, fp) {
        (0, 0) => Err(MetricError::undefined(metric, UndefinedReason::Empty)),
        (0, _) => Err(MetricError::undefined(metric, UndefinedReason::NoPositives)),
        (_, 0) => Err(MetricError::undefined(metric, UndefinedReason::NoNegatives)),
        _ => Ok(RecallGroups { levels: out, total_positives: tp }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-15
    }

    #[test]
    fn anomalib_values_by_hand() {
        // checked with torchmetrics 1.9.0 auc(rec, prec, reorder=True)
        assert_eq!(aupr(&[0.9, 0.5], &[true, false]), Ok(0.75));
        assert_eq!(aupr(&[0.1, 0.2, 0.8, 0.9], &[false, false, true, true]), Ok(0.875));
        let labels = [false, true, true, true, false, false, false, false, true, true];
        let scores = [0.59, 0.35, 0.72, 0.33, 0.73, 0.81, 0.30, 0.05, 0.04, 0.48];
        assert!(close(aupr(&scores, &labels).unwrap(), 0.4899206349206349)); // anomalib docstring: 0.4899
                                                                             // all scores equal: one point (recall 1, precision ½), area (1 + ½) / 2
        assert_eq!(aupr(&[0.4; 4], &[true, false, true, false]), Ok(0.75));
        // inverted: recall 0 until the last threshold, then (1, ½)
        assert_eq!(aupr(&[0.9, 0.1], &[false, true]), Ok(0.75));
        // no negative after the last positive: a perfect ranking then scores 1
        assert_eq!(aupr(&[0.9, 0.8, 0.1], &[true, true, false]), Ok(0.5 * 1.0 + 0.5 * (1.0 + 2.0 / 3.0) / 2.0));
        // ties of a positive and a negative at the top: entered at ½, left at ½
        assert_eq!(
            aupr(&[0.7, 0.7, 0.1], &[true, false, true]),
            Ok(0.5 * (1.0 + 0.5) / 2.0 + 0.5 * (0.5 + 2.0 / 3.0) / 2.0)
        );
    }

    #[test]
    fn average_precision_is_sklearn() {
        let labels = [false, true, true, true, false, false, false, false, true, true];
        let scores = [0.59, 0.35, 0.72, 0.33, 0.73, 0.81, 0.30, 0.05, 0.04, 0.48];
        // sklearn.metrics.average_precision_score
        assert!(close(average_precision(&scores, &labels).unwrap(), 0.46095238095238095));
        assert_eq!(average_precision(&[0.9, 0.5], &[true, false]), Ok(1.0));
        assert_eq!(average_precision(&[0.4; 4], &[true, false, true, false]), Ok(0.5));
    }

    #[test]
    fn undefined_cases() {
        let u = |reason| Err(MetricError::Undefined { metric: "aupr", reason });
        assert_eq!(aupr(&[], &[]), u(UndefinedReason::Empty));
        assert_eq!(aupr(&[0.5, 0.6], &[false, false]), u(UndefinedReason::NoPositives));
        assert_eq!(aupr(&[0.5, 0.6], &[true, true]), u(UndefinedReason::NoNegatives));
    }
}
