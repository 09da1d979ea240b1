//! Grouped thresholds: the distinct scores of a ranking, highest first, with what each one holds.
//!
//! Every metric here is a function of these groups alone (one curve point per distinct score, as
//! in scikit-learn's `_binary_clf_curve`, torchmetrics and anomalib ≥ 2.3), which is why ties get
//! half credit and why the per-image histograms of `stats` give the same numbers as the sort.

use super::error::MetricError;

/// One distinct score of a binary ranking: how many negatives and positives have exactly it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BinaryLevel {
    pub negatives: u64,
    pub positives: u64,
}

/// One distinct pixel score of a PRO curve: how many background pixels have exactly it, and the
/// summed region weight of the defect pixels that have it (fixed point, see
/// [`super::stats::pixel_weight`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ProLevel {
    pub background: u64,
    pub weight: u128,
}

/// Checks lengths and NaN, then returns the indices of `scores` sorted by descending score.
/// Equal scores (including `-0.0 == 0.0`) end up adjacent.
pub(crate) fn descending_order(metric: &'static str, scores: &[f64], labels: usize) -> Result<Vec<usize>, MetricError> {
    if scores.len() != labels {
        return Err(MetricError::LengthMismatch { metric, scores: scores.len(), labels });
    }
    if let Some(index) = scores.iter().position(|s| s.is_nan()) {
        return Err(MetricError::NanScore { metric, index });
    }
    let mut order: Vec<usize> = (0..scores.len()).collect();
    // no NaN left, so partial_cmp is total
    order.sort_unstable_by(|&a, &b| scores[b].partial_cmp(&scores[a]).expect("no NaN"));
    Ok(order)
}

/// Groups a binary ranking by distinct score, highest score first.
pub fn binary_levels(metric: &'static str, scores: &[f64], labels: &[bool]) -> Result<Vec<BinaryLevel>, MetricError> {
    let order = descending_order(metric, scores, labels.len())?;
    let mut levels: Vec<BinaryLevel> = Vec::new();
    let mut current: Option<f64> = None;
    for i in order {
        if current != Some(scores[i]) {
            levels.push(BinaryLevel::default());
            current = Some(scores[i]);
        }
        let level = levels.last_mut().expect("pushed above");
        if labels[i] {
            level.positives += 1;
        } else {
            level.negatives += 1;
        }
    }
    Ok(levels)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_ties_highest_first() {
        let levels =
            binary_levels("t", &[0.5, 0.9, 0.5, 0.1, -0.0, 0.0], &[true, false, false, true, true, false]).unwrap();
        let want = [(1, 0), (1, 1), (0, 1), (1, 1)];
        let got: Vec<(u64, u64)> = levels.iter().map(|l| (l.negatives, l.positives)).collect();
        assert_eq!(got, want);
    }

    #[test]
    fn rejects_nan_and_length_mismatch() {
        assert_eq!(
            binary_levels("t", &[0.1, f64::NAN], &[true, false]),
            Err(MetricError::NanScore { metric: "t", index: 1 })
        );
        assert_eq!(
            binary_levels("t", &[0.1], &[true, false]),
            Err(MetricError::LengthMismatch { metric: "t", scores: 1, labels: 2 })
        );
    }
}
