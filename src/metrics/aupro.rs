//! [`aupro`]: area under the per-region-overlap curve up to a false-positive rate, normalised.
//!
//! Definition (anomalib ≥ 2.3, `src/anomalib/metrics/aupro.py` after "Speedup AUPRO" #3115,
//! identical in lib/v2.6.0; the same as the MVTec AD reference `compute_pro` + `trapezoid`,
//! ecosystem.md §1.2):
//!
//! 1. Ground-truth regions are the 8-connected components of each image's mask (anomalib:
//!    `cv2.connectedComponents`, 8-connectivity; MVTec: `scipy.ndimage.label` with a 3×3
//!    structure). Regions never cross images; R = number of regions over all images.
//! 2. Every background pixel, in normal *and* anomalous images, adds 1/N_bg to the FPR; every
//!    pixel of region r adds 1/(|r| · R) to the PRO (the mean over regions of the per-region TPR).
//! 3. One curve point per distinct pixel score, highest first (cumulative sums, the last element
//!    of each run of tied scores), with (0, 0) prepended.
//! 4. The curve is cut at `fpr_limit` (default 0.3) with a point linearly interpolated at
//!    exactly FPR = `fpr_limit` between the last point at or below it and the next one.
//! 5. Trapezoid area, divided by `fpr_limit`.
//!
//! Not anomalib ≤ 2.2 (per-region curves resampled and averaged, divided by the averaged
//! curve's end point: values above 1, anomalib#1651, #3718), and not PromptAD's own
//! `cal_pro_metric` (200 linear thresholds, FPRs min-max rescaled).
//!
//! Region weights are the fixed-point `round(2^80 / |r|)` of [`super::stats::pixel_weight`], the
//! same per pixel here as in the per-image statistics, so [`pixel_aupro`] over merged
//! [`ImageStats`] equals [`aupro`] over the dequantised maps bit for bit.
//!
//! Undefined ([`MetricError::Undefined`]) without any region or without any background pixel.

use super::curve::{descending_order, ProLevel};
pub use super::curve_points::check_fpr_limit;
use super::curve_points::{pro_points_from_levels, trapezoid_area};
use super::error::MetricError;
use super::stats::{label_regions, pixel_weight, ImageStats};

/// The FPR integration limit of anomalib and the MVTec AD protocol.
pub const DEFAULT_FPR_LIMIT: f64 = 0.3;

/// One image for the in-memory reference: row-major scores and mask of `width × height`.
#[derive(Debug, Clone, Copy)]
pub struct SegmentationMap<'a> {
    pub scores: &'a [f64],
    pub mask: &'a [bool],
    pub width: usize,
    pub height: usize,
}

/// Exact AUPRO of a set of images, integrated to `fpr_limit` (see the module documentation).
pub fn aupro(maps: &[SegmentationMap<'_>], fpr_limit: f64) -> Result<f64, MetricError> {
    const METRIC: &str = "aupro";
    check_fpr_limit(fpr_limit)?;
    let (mut scores, mut weights) = (Vec::new(), Vec::new());
    let (mut n_background, mut n_regions) = (0u64, 0u64);
    for m in maps {
        if m.width.checked_mul(m.height) != Some(m.scores.len()) {
            return Err(MetricError::Shape { what: "map", len: m.scores.len(), width: m.width, height: m.height });
        }
        let (labels, sizes) = label_regions(m.mask, m.width, m.height)?;
        n_background += sizes[0];
        n_regions += sizes[1..].iter().filter(|&&s| s > 0).count() as u64;
        scores.extend_from_slice(m.scores);
        // weight 0 marks a background pixel
        weights.extend(labels.iter().map(|&l| if l == 0 { 0 } else { pixel_weight(sizes[l as usize]) }));
    }
    let order = descending_order(METRIC, &scores, weights.len())?;
    let mut levels: Vec<ProLevel> = Vec::new();
    let mut current: Option<f64> = None;
    for i in order {
        if current != Some(scores[i]) {
            levels.push(ProLevel::default());
            current = Some(scores[i]);
        }
        let level = levels.last_mut().expect("pushed above");
        if weights[i] == 0 {
            level.background += 1;
        } else {
            level.weight += weights[i];
        }
    }
    aupro_from_levels(METRIC, levels, n_background, n_regions, fpr_limit)
}

/// AUPRO from (merged) per-image statistics: exact for the stored scores.
pub fn pixel_aupro(stats: &ImageStats, fpr_limit: f64) -> Result<f64, MetricError> {
    aupro_from_levels("pixel_aupro", stats.pro_levels(), stats.n_background(), stats.n_regions(), fpr_limit)
}

/// AUPRO from grouped thresholds, highest score first; `n_background` must be the sum of the
/// levels' background counts and the weights must sum to about `n_regions · 2^80`. The area is
/// the trapezoids through [`pro_points_from_levels`], divided by the limit.
pub fn aupro_from_levels(
    metric: &'static str,
    levels: impl IntoIterator<Item = ProLevel>,
    n_background: u64,
    n_regions: u64,
    fpr_limit: f64,
) -> Result<f64, MetricError> {
    let points = pro_points_from_levels(metric, levels, n_background, n_regions, fpr_limit)?;
    Ok(trapezoid_area(&points) / fpr_limit)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::UndefinedReason;

    fn one(scores: &[f64], mask: &[bool], w: usize, h: usize, limit: f64) -> Result<f64, MetricError> {
        aupro(&[SegmentationMap { scores, mask, width: w, height: h }], limit)
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-14
    }

    #[test]
    fn hand_computed() {
        // 1×5: background scores 0.9, 0.4, 0.3, 0.2; a 1-pixel region at 0.5.
        // points (0,0) (¼,0) (¼,1) (½,1) …: area to 0.3 = 0.05·1, / 0.3
        let s = [0.9, 0.5, 0.4, 0.3, 0.2];
        let m = [false, true, false, false, false];
        assert!(close(one(&s, &m, 5, 1, 0.3).unwrap(), 0.05 / 0.3));
        // to FPR 1: ¾ of the width at PRO 1
        assert!(close(one(&s, &m, 5, 1, 1.0).unwrap(), 0.75));
        // a limit that lands on a curve point: no interpolation needed
        assert!(close(one(&s, &m, 5, 1, 0.5).unwrap(), 0.25 / 0.5));
    }

    #[test]
    fn two_regions_average_their_overlap() {
        // 5×1 mask ##.#. : regions of 2 and 1 (not touching); each region's TPR weighs ½.
        // scores: region A = {0.8, 0.2}, region B = {0.6}, background {0.7, 0.1}
        let s = [0.8, 0.2, 0.7, 0.6, 0.1];
        let m = [true, true, false, true, false];
        // thresholds 0.8: (0, ¼); 0.7: (½, ¼); 0.6: (½, ¾); 0.2: (½, 1); 0.1: (1, 1)
        // to 0.3: interpolate between (0, ¼) and (½, ¼): area 0.3·¼
        assert!(close(one(&s, &m, 5, 1, 0.3).unwrap(), 0.25));
        // to 1: ½·¼ + ½·1
        assert!(close(one(&s, &m, 5, 1, 1.0).unwrap(), 0.125 + 0.5));
    }

    #[test]
    fn perfect_inverted_all_equal() {
        let m = [true, true, false, false, false, false];
        assert!(close(one(&[0.9, 0.8, 0.3, 0.2, 0.1, 0.0], &m, 3, 2, 0.3).unwrap(), 1.0));
        assert_eq!(one(&[0.0, 0.1, 0.3, 0.2, 0.5, 0.9], &m, 3, 2, 0.3), Ok(0.0));
        // one threshold: (0,0) → (1,1), so the area to L is L²/2, normalised L/2
        assert!(close(one(&[0.5; 6], &m, 3, 2, 0.3).unwrap(), 0.15));
    }

    #[test]
    fn diagonal_pixels_are_one_region() {
        // 2×2 mask #. / .# is one region under 8-connectivity: both pixels weigh ½
        let s = [0.9, 0.5, 0.5, 0.1];
        let m = [true, false, false, true];
        // thresholds 0.9: (0, ½); 0.5: (1, ½); 0.1: (1, 1). With 4-connectivity the first point
        // would also be (0, ½) but the last pixel would count as its own region; to FPR 1 both give
        // the same, so check the regions themselves.
        let (_, sizes) = label_regions(&m, 2, 2).unwrap();
        assert_eq!(sizes, vec![2, 2]);
        assert!(close(one(&s, &m, 2, 2, 1.0).unwrap(), 0.5));
    }

    #[test]
    fn undefined_and_invalid() {
        let u = |reason| Err(MetricError::Undefined { metric: "aupro", reason });
        assert_eq!(aupro(&[], 0.3), u(UndefinedReason::Empty));
        assert_eq!(one(&[0.1, 0.2], &[false, false], 2, 1, 0.3), u(UndefinedReason::NoRegions));
        assert_eq!(one(&[0.1, 0.2], &[true, true], 2, 1, 0.3), u(UndefinedReason::NoBackground));
        for bad in [0.0, -0.1, 1.5, f64::NAN] {
            assert!(matches!(one(&[0.1, 0.2], &[true, false], 2, 1, bad), Err(MetricError::FprLimit { .. })));
        }
        assert!(matches!(one(&[0.1], &[true, false], 2, 1, 0.3), Err(MetricError::Shape { .. })));
    }
}
