//! The points of the ROC, PR and PRO curves, for plotting: the same grouped thresholds
//! ([`super::curve`]) the metrics integrate, so the trapezoids through [`roc_points`] are
//! [`super::auroc`] exactly and those through [`pro_points`] (divided by the limit) are
//! [`super::pixel_aupro`].

use super::curve::{BinaryLevel, ProLevel};
use super::error::{MetricError, UndefinedReason};
use super::stats::{ImageStats, REGION_WEIGHT_SHIFT};

/// One point of a curve: `x` is the FPR (ROC, PRO) or the recall (PR).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct CurvePoint {
    pub x: f64,
    pub y: f64,
}

/// ROC points `(FPR, TPR)` from `(0, 0)` to `(1, 1)`, one per distinct score, highest first
/// (scikit-learn's `roc_curve(drop_intermediate=False)`).
pub fn roc_points(
    metric: &'static str,
    levels: impl IntoIterator<Item = BinaryLevel>,
) -> Result<Vec<CurvePoint>, MetricError> {
    let levels: Vec<BinaryLevel> = levels.into_iter().collect();
    let (p, n) = totals(metric, &levels)?;
    let (mut tp, mut fp) = (0u64, 0u64);
    let mut points = vec![CurvePoint { x: 0.0, y: 0.0 }];
    for l in &levels {
        tp += l.positives;
        fp += l.negatives;
        points.push(CurvePoint { x: fp as f64 / n as f64, y: tp as f64 / p as f64 });
    }
    Ok(points)
}

/// Precision–recall points `(recall, precision)`, recall ascending: `(0, 1)`, then one point per
/// distinct score with a true positive so far (scikit-learn's `precision_recall_curve`, reversed).
pub fn pr_points(
    metric: &'static str,
    levels: impl IntoIterator<Item = BinaryLevel>,
) -> Result<Vec<CurvePoint>, MetricError> {
    let levels: Vec<BinaryLevel> = levels.into_iter().collect();
    let (p, _) = totals(metric, &levels)?;
    let (mut tp, mut fp) = (0u64, 0u64);
    let mut points = vec![CurvePoint { x: 0.0, y: 1.0 }];
    for l in &levels {
        tp += l.positives;
        fp += l.negatives;
        if tp > 0 {
            points.push(CurvePoint { x: tp as f64 / p as f64, y: tp as f64 / (tp + fp) as f64 });
        }
    }
    Ok(points)
}

/// PRO points `(FPR, mean per-region overlap)` of merged statistics from `(0, 0)` up to FPR
/// `fpr_limit`; see [`pro_points_from_levels`].
pub fn pro_points(stats: &ImageStats, fpr_limit: f64) -> Result<Vec<CurvePoint>, MetricError> {
    pro_points_from_levels("pro_curve", stats.pro_levels(), stats.n_background(), stats.n_regions(), fpr_limit)
}

/// PRO points from grouped thresholds, highest score first: `(0, 0)`, one point per distinct
/// score up to FPR `fpr_limit`, and the first point past it interpolated back onto the limit.
/// `n_background` must be the sum of the levels' background counts and the weights must sum to
/// about `n_regions · 2^80`.
pub fn pro_points_from_levels(
    metric: &'static str,
    levels: impl IntoIterator<Item = ProLevel>,
    n_background: u64,
    n_regions: u64,
    fpr_limit: f64,
) -> Result<Vec<CurvePoint>, MetricError> {
    check_fpr_limit(fpr_limit)?;
    match (n_background, n_regions) {
        (0, 0) => return Err(MetricError::undefined(metric, UndefinedReason::Empty)),
        (_, 0) => return Err(MetricError::undefined(metric, UndefinedReason::NoRegions)),
        (0, _) => return Err(MetricError::undefined(metric, UndefinedReason::NoBackground)),
        _ => {}
    }
    let n = n_background as f64;
    // R · 2^80: scaling by a power of two is exact
    let pro_scale = n_regions as f64 * 2f64.powi(REGION_WEIGHT_SHIFT as i32);
    let (mut fp, mut weight) = (0u64, 0u128);
    let mut points = vec![CurvePoint { x: 0.0, y: 0.0 }];
    for l in levels {
        fp += l.background;
        weight = weight.saturating_add(l.weight);
        let (x, y) = (fp as f64 / n, weight as f64 / pro_scale);
        let last = *points.last().expect("starts with (0, 0)");
        if x <= fpr_limit {
            points.push(CurvePoint { x, y });
        } else {
            let y_limit = last.y + (y - last.y) * (fpr_limit - last.x) / (x - last.x);
            points.push(CurvePoint { x: fpr_limit, y: y_limit });
            break;
        }
    }
    Ok(points)
}

/// Checks `0 < fpr_limit ≤ 1`.
pub fn check_fpr_limit(fpr_limit: f64) -> Result<(), MetricError> {
    if fpr_limit > 0.0 && fpr_limit <= 1.0 {
        Ok(())
    } else {
        Err(MetricError::FprLimit { value: fpr_limit })
    }
}

/// The trapezoid area under `points` (x ascending).
pub fn trapezoid_area(points: &[CurvePoint]) -> f64 {
    points.windows(2).map(|w| (w[1].x - w[0].x) * (w[0].y + w[1].y) / 2.0).sum()
}

/// At most about `max_points` of `points` for drawing: a point is kept when it moved at least
/// `1 / max_points` (in x plus y) from the last kept one; the first and last are always kept.
/// A curve drawn through them differs from the full one by less than that step.
pub fn thin(points: &[CurvePoint], max_points: usize) -> Vec<CurvePoint> {
    let step = 1.0 / max_points.max(1) as f64;
    let mut kept: Vec<CurvePoint> = Vec::new();
    for (i, &p) in points.iter().enumerate() {
        let keep = match kept.last() {
            None => true,
            Some(last) => i + 1 == points.len() || (p.x - last.x).abs() + (p.y - last.y).abs() >= step,
        };
        if keep {
            kept.push(p);
        }
    }
    kept
}

fn totals(metric: &'static str, levels: &[BinaryLevel]) -> Result<(u64, u64), MetricError> {
    let p: u64 = levels.iter().map(|l| l.positives).sum();
    let n: u64 = levels.iter().map(|l| l.negatives).sum();
    match (p, n) {
        (0, 0) => Err(MetricError::undefined(metric, UndefinedReason::Empty)),
        (0, _) => Err(MetricError::undefined(metric, UndefinedReason::NoPositives)),
        (_, 0) => Err(MetricError::undefined(metric, UndefinedReason::NoNegatives)),
        _ => Ok((p, n)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::curve::binary_levels;
    use crate::metrics::{auroc, pixel_aupro};

    #[test]
    fn roc_trapezoids_are_the_auroc() {
        let scores = [0.9, 0.5, 0.5, 0.3, 0.3, 0.1, 0.8, 0.2];
        let labels = [true, false, true, true, false, false, false, true];
        let points = roc_points("t", binary_levels("t", &scores, &labels).unwrap()).unwrap();
        assert_eq!(points.first(), Some(&CurvePoint { x: 0.0, y: 0.0 }));
        assert_eq!(points.last(), Some(&CurvePoint { x: 1.0, y: 1.0 }));
        assert!((trapezoid_area(&points) - auroc(&scores, &labels).unwrap()).abs() < 1e-15);
    }

    #[test]
    fn pr_points_hand_computed() {
        // scores 0.9 (pos), 0.8 (neg), 0.2 (pos): recall ½ at precision 1, then 1 at ⅔
        let levels = binary_levels("t", &[0.9, 0.8, 0.2], &[true, false, true]).unwrap();
        let points = pr_points("t", levels).unwrap();
        let xy: Vec<(f64, f64)> = points.iter().map(|p| (p.x, p.y)).collect();
        assert_eq!(xy, [(0.0, 1.0), (0.5, 1.0), (0.5, 0.5), (1.0, 2.0 / 3.0)]);
    }

    #[test]
    fn pro_trapezoids_are_the_aupro() {
        let q: Vec<u16> = (0..64u16).map(|i| i.wrapping_mul(7919) % 997 * 60).collect();
        let mask: Vec<bool> = (0..64).map(|i| i % 8 < 3 && i / 8 < 4).collect();
        let stats = ImageStats::from_map(&q, &mask, 8, 8).unwrap();
        for limit in [0.05, 0.3, 1.0] {
            let points = pro_points(&stats, limit).unwrap();
            assert!(points.last().unwrap().x <= limit);
            let area = trapezoid_area(&points) / limit;
            assert!((area - pixel_aupro(&stats, limit).unwrap()).abs() < 1e-12, "limit {limit}");
        }
    }

    #[test]
    fn thin_keeps_the_ends_and_bounds_the_count() {
        let points: Vec<CurvePoint> =
            (0..=10_000).map(|i| CurvePoint { x: i as f64 / 1e4, y: (i as f64 / 1e4).sqrt() }).collect();
        let kept = thin(&points, 500);
        assert!(kept.len() <= 1001, "{}", kept.len());
        assert_eq!(kept.first(), points.first());
        assert_eq!(kept.last(), points.last());
        assert!((trapezoid_area(&kept) - trapezoid_area(&points)).abs() < 1e-3);
    }

    #[test]
    fn one_class_is_undefined() {
        assert!(roc_points("t", binary_levels("t", &[0.1, 0.2], &[false, false]).unwrap()).is_err());
        assert!(pr_points("t", binary_levels("t", &[0.1], &[true]).unwrap()).is_err());
    }
}
