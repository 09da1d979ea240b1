//! [`f1_max`]: the threshold that maximises F1, as anomalib's `F1AdaptiveThreshold` picks it, and
//! [`pixel_f1_max`], the same over merged per-image statistics.
//!
//! Definition (anomalib ≥ 2.3, `src/anomalib/metrics/threshold/f1_adaptive_threshold.py`, the
//! image and pixel thresholds of its default `PostProcessor`): torchmetrics'
//! `BinaryPrecisionRecallCurve` without binning gives one point per distinct score t, with the
//! predictions `score >= t` counted as anomalous (precision TP/(TP+FP), recall TP/P), thresholds
//! ascending, plus the closing point (recall 0, precision 1) that has no threshold; then
//! `f1 = 2·P·R / (P + R + 1e-10)`, NaN set to 0, and the threshold is `thresholds[argmax(f1)]`.
//! Here, over the same points:
//!
//! ```text
//! F1(t) = 2·TP(t) / (TP(t) + FP(t) + P)        (= 2·precision·recall / (precision + recall))
//! ```
//!
//! compared exactly in integers, and the threshold is the score t with the largest F1. The
//! reported F1 is that ratio, divided once in f64 (torchmetrics' `+ 1e-10` lowers it by less
//! than 10⁻¹⁰ relative).
//!
//! - **Ties.** When several thresholds reach exactly the same F1, the *lowest* wins: `torch.argmax`
//!   returns the first maximum of the ascending thresholds. (In float32, torch can see two exactly
//!   tied ratios a rounding apart and pick the other one; the exact comparison here cannot.)
//!   Scores that are equal are one threshold, so tied scores are always classified together.
//! - **0/0.** Precision is never 0/0 at a real threshold (the scores ≥ a score include it); the
//!   closing point has F1 0 and never wins while P > 0 (the lowest threshold has F1 > 0).
//! - **No positives.** Recall is 0/0 everywhere; anomalib sets F1 to 0, warns, and returns the
//!   lowest score (every image anomalous). Here that is [`MetricError::Undefined`] (NULL in SQL):
//!   no threshold is better than another. **No negatives** is defined, as in anomalib: F1 = 1 at
//!   the lowest score.
//! - Scores rank as given (±∞ included, no sigmoid); NaN is rejected.
//!
//! Decision rule: a prediction is anomalous when `score >= threshold`; that is the rule the F1
//! was computed with, so [`confusion_at`] at the returned threshold reproduces it. (anomalib's
//! `PostProcessor` then applies `normalized > 0.5`, strictly, which leaves out the predictions
//! scoring exactly the threshold, at least one of which was counted as a true positive.)
//!
//! [`pixel_f1_max`] is the same over every pixel of the images summed into an [`ImageStats`]:
//! the thresholds are the stored u16 values present, so it equals [`f1_max`] run on the
//! dequantised pixel scores, bit for bit; the threshold is reported both as the stored value and
//! as the score it stands for.

use super::curve::{descending_order, BinaryLevel};
use super::error::{MetricError, UndefinedReason};
use super::quantize::dequantize;
use super::stats::ImageStats;

/// Counts of a binary decision against ground truth.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct Confusion {
    pub true_positives: u64,
    pub false_positives: u64,
    pub false_negatives: u64,
    pub true_negatives: u64,
}

impl Confusion {
    /// Predicted anomalous: TP + FP.
    pub fn predicted_positive(&self) -> u64 {
        self.true_positives + self.false_positives
    }
    /// TP / (TP + FP); `None` when nothing is predicted anomalous.
    pub fn precision(&self) -> Option<f64> {
        ratio(self.true_positives, self.predicted_positive())
    }
    /// TP / (TP + FN); `None` without positives.
    pub fn recall(&self) -> Option<f64> {
        ratio(self.true_positives, self.true_positives + self.false_negatives)
    }
    /// 2·TP / (2·TP + FP + FN); `None` when there is neither a positive nor a predicted positive.
    pub fn f1(&self) -> Option<f64> {
        let tp2 = 2 * self.true_positives as u128;
        let den = tp2 + self.false_positives as u128 + self.false_negatives as u128;
        (den > 0).then(|| tp2 as f64 / den as f64)
    }
}

fn ratio(a: u64, b: u64) -> Option<f64> {
    (b > 0).then(|| a as f64 / b as f64)
}

/// The F1-maximising threshold of image scores: see the module documentation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct F1Max {
    /// The largest F1 over all thresholds.
    pub f1: f64,
    /// The score it is reached at (a prediction is anomalous when `score >= threshold`).
    pub threshold: f64,
    /// The decision `score >= threshold` against the labels.
    pub confusion: Confusion,
}

/// The F1-maximising threshold of stored pixel values.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PixelF1Max {
    pub f1: f64,
    /// The stored value (a pixel is anomalous when its stored value `>= threshold_q`).
    pub threshold_q: u16,
    /// `dequantize(threshold_q)`, the score it stands for.
    pub threshold: f64,
    pub confusion: Confusion,
}

/// anomalib's F1-adaptive threshold of `scores` against `labels` (true = anomalous).
pub fn f1_max(scores: &[f64], labels: &[bool]) -> Result<F1Max, MetricError> {
    let metric = "f1_max";
    let order = descending_order(metric, scores, labels.len())?;
    let mut levels: Vec<(f64, BinaryLevel)> = Vec::new();
    for i in order {
        if levels.last().map(|l| l.0) != Some(scores[i]) {
            levels.push((scores[i], BinaryLevel::default()));
        }
        let level = &mut levels.last_mut().expect("pushed above").1;
        if labels[i] {
            level.positives += 1;
        } else {
            level.negatives += 1;
        }
    }
    let (threshold, confusion) = best_threshold(metric, levels)?;
    Ok(F1Max { f1: confusion.f1().expect("positives present"), threshold, confusion })
}

/// The F1-maximising threshold over every pixel summed into `stats` (exact over the stored
/// values; equal to [`f1_max`] on the dequantised pixel scores).
pub fn pixel_f1_max(stats: &ImageStats) -> Result<PixelF1Max, MetricError> {
    let levels = stats.bins().iter().rev().copied().zip(stats.binary_levels());
    let (threshold_q, confusion) = best_threshold("pixel_f1_max", levels)?;
    Ok(PixelF1Max {
        f1: confusion.f1().expect("positives present"),
        threshold_q,
        threshold: dequantize(threshold_q),
        confusion,
    })
}

/// The best threshold of grouped levels given highest score first: the largest
/// `2·TP / (TP + FP + P)`, compared exactly, the lowest threshold among equals.
pub(crate) fn best_threshold<K: Copy>(
    metric: &'static str,
    levels: impl IntoIterator<Item = (K, BinaryLevel)>,
) -> Result<(K, Confusion), MetricError> {
    let levels: Vec<(K, BinaryLevel)> = levels.into_iter().collect();
    let p: u128 = levels.iter().map(|(_, l)| l.positives as u128).sum();
    let n: u128 = levels.iter().map(|(_, l)| l.negatives as u128).sum();
    match (p, n) {
        (0, 0) => return Err(MetricError::undefined(metric, UndefinedReason::Empty)),
        (0, _) => return Err(MetricError::undefined(metric, UndefinedReason::NoPositives)),
        _ => {}
    }
    let overflow = || MetricError::Overflow { what: "f1 comparison" };
    let (mut tp, mut fp) = (0u128, 0u128);
    // best so far: (threshold, tp, fp); F1 = 2·tp / (tp + fp + p)
    let mut best: Option<(K, u128, u128)> = None;
    for (key, l) in levels {
        tp += l.positives as u128;
        fp += l.negatives as u128;
        let better = match best {
            None => true,
            // tp / (tp + fp + p) >= b_tp / (b_tp + b_fp + p), cross-multiplied; `>=` so that the
            // later (lower) threshold wins ties
            Some((_, b_tp, b_fp)) => {
                let lhs = tp.checked_mul(b_tp + b_fp + p).ok_or_else(overflow)?;
                let rhs = b_tp.checked_mul(tp + fp + p).ok_or_else(overflow)?;
                lhs >= rhs
            }
        };
        if better {
            best = Some((key, tp, fp));
        }
    }
    let (key, b_tp, b_fp) = best.expect("levels are not empty");
    let confusion = Confusion {
        true_positives: b_tp as u64,
        false_positives: b_fp as u64,
        false_negatives: (p - b_tp) as u64,
        true_negatives: (n - b_fp) as u64,
    };
    Ok((key, confusion))
}

/// The decision `score >= threshold` against `labels`: what a threshold achieves on a set (the
/// image F1 of a report, anomalib's `image_F1Score` with our `>=`). NaN scores are rejected.
pub fn confusion_at(scores: &[f64], labels: &[bool], threshold: f64) -> Result<Confusion, MetricError> {
    let metric = "confusion_at";
    if scores.len() != labels.len() {
        return Err(MetricError::LengthMismatch { metric, scores: scores.len(), labels: labels.len() });
    }
    let mut c = Confusion::default();
    for (index, (&s, &l)) in scores.iter().zip(labels).enumerate() {
        if s.is_nan() {
            return Err(MetricError::NanScore { metric, index });
        }
        match (s >= threshold, l) {
            (true, true) => c.true_positives += 1,
            (true, false) => c.false_positives += 1,
            (false, true) => c.false_negatives += 1,
            (false, false) => c.true_negatives += 1,
        }
    }
    Ok(c)
}

/// The decision `stored value >= threshold_q` over every pixel summed into `stats`. For one
/// image's statistics, `predicted_positive()` is its number of anomalous pixels.
pub fn pixel_confusion_at(stats: &ImageStats, threshold_q: u16) -> Confusion {
    let mut c = Confusion::default();
    for ((&q, &bg), &fg) in stats.bins().iter().zip(stats.bg_count()).zip(stats.fg_count()) {
        if q >= threshold_q {
            c.true_positives += fg;
            c.false_positives += bg;
        } else {
            c.false_negatives += fg;
            c.true_negatives += bg;
        }
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::quantize::quantize;

    fn f1(scores: &[f64], labels: &[bool]) -> (f64, f64) {
        let r = f1_max(scores, labels).unwrap();
        (r.f1, r.threshold)
    }

    #[test]
    fn hand_computed() {
        // perfect separation: threshold at the lowest positive, F1 1
        assert_eq!(f1(&[0.1, 0.2, 0.8, 0.9], &[false, false, true, true]), (1.0, 0.8));
        // anomalib docstring example: labels [0,0,0,1,1], scores [2.3,1.6,2.6,7.9,3.3] -> 3.3
        assert_eq!(f1(&[2.3, 1.6, 2.6, 7.9, 3.3], &[false, false, false, true, true]), (1.0, 3.3));
        // P = 2. t=0.9: TP1 FP0 -> 2/3; t=0.8: TP1 FP1 -> 2/4; t=0.7: TP2 FP1 -> 4/5;
        // t=0.2: TP2 FP2 -> 4/6; t=0.1: 4/7. Best 0.8 at 0.7.
        assert_eq!(f1(&[0.9, 0.8, 0.7, 0.2, 0.1], &[true, false, true, false, false]), (0.8, 0.7));
        // tied scores are one threshold: {0.5: +,-}, {0.1: -}; t=0.5: TP1 FP1 P1 -> 2/3
        assert_eq!(f1(&[0.5, 0.5, 0.1], &[true, false, false]), (2.0 / 3.0, 0.5));
        // exact F1 tie: P = 2; t=0.9 (TP1 FP1) 2/4 = t=0.5 (TP2 FP4) 4/8: the lower one wins
        let scores = [0.9, 0.9, 0.5, 0.5, 0.5, 0.5];
        let labels = [true, false, true, false, false, false];
        let r = f1_max(&scores, &labels).unwrap();
        assert_eq!((r.f1, r.threshold), (0.5, 0.5));
        assert_eq!(
            r.confusion,
            Confusion { true_positives: 2, false_positives: 4, false_negatives: 0, true_negatives: 0 }
        );
        // no negatives: F1 1 at the lowest score
        assert_eq!(f1(&[0.3, 0.7], &[true, true]), (1.0, 0.3));
        // infinities rank like any score
        assert_eq!(f1(&[f64::INFINITY, f64::NEG_INFINITY], &[true, false]), (1.0, f64::INFINITY));
    }

    #[test]
    fn undefined_and_bad_input() {
        let u = |reason| Err(MetricError::Undefined { metric: "f1_max", reason });
        assert_eq!(f1_max(&[], &[]), u(UndefinedReason::Empty));
        assert_eq!(f1_max(&[0.1, 0.2], &[false, false]), u(UndefinedReason::NoPositives));
        assert!(matches!(f1_max(&[f64::NAN], &[true]), Err(MetricError::NanScore { index: 0, .. })));
        assert!(matches!(f1_max(&[0.1], &[true, false]), Err(MetricError::LengthMismatch { .. })));
    }

    #[test]
    fn confusion_at_reproduces_the_optimum() {
        let mut seed = 5u64;
        let mut next = || {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            seed >> 33
        };
        for _ in 0..50 {
            let n = 1 + next() as usize % 40;
            let scores: Vec<f64> = (0..n).map(|_| (next() % 12) as f64 / 11.0).collect();
            let labels: Vec<bool> = (0..n).map(|_| next() % 3 == 0).collect();
            let Ok(r) = f1_max(&scores, &labels) else {
                assert!(!labels.contains(&true));
                continue;
            };
            assert_eq!(confusion_at(&scores, &labels, r.threshold).unwrap(), r.confusion);
            assert_eq!(r.confusion.f1(), Some(r.f1));
            // brute force over every candidate threshold: none is better, none lower is as good
            for &t in &scores {
                let c = confusion_at(&scores, &labels, t).unwrap();
                let f = c.f1().unwrap();
                assert!(f <= r.f1, "{t}: {f} > {}", r.f1);
                if t < r.threshold {
                    assert!(f < r.f1, "lower threshold {t} ties {}", r.f1);
                }
            }
        }
    }

    #[test]
    fn pixel_equals_reference_on_dequantised_scores() {
        let mut seed = 17u64;
        let mut next = || {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            seed >> 33
        };
        let (w, h) = (9usize, 6usize);
        let (mut stats, mut scores, mut labels) = (Vec::new(), Vec::new(), Vec::new());
        for i in 0..8 {
            let map: Vec<u16> = (0..w * h).map(|_| quantize((next() % 30) as f64 / 29.0)).collect();
            let mask: Vec<bool> = (0..w * h).map(|k| i % 2 == 1 && (next() % 4 == 0 || map[k] > 50000)).collect();
            stats.push(ImageStats::from_map(&map, &mask, w, h).unwrap());
            scores.extend(map.iter().map(|&q| dequantize(q)));
            labels.extend(mask);
        }
        let merged = ImageStats::sum(&stats).unwrap();
        let pixel = pixel_f1_max(&merged).unwrap();
        let exact = f1_max(&scores, &labels).unwrap();
        assert_eq!(pixel.f1.to_bits(), exact.f1.to_bits());
        assert_eq!(pixel.threshold, exact.threshold);
        assert_eq!(quantize(exact.threshold), pixel.threshold_q);
        assert_eq!(pixel.confusion, exact.confusion);
        assert_eq!(pixel_confusion_at(&merged, pixel.threshold_q), pixel.confusion);
        // per image, the anomalous pixels add up to the predicted positives of the sum
        let per_image: u64 = stats.iter().map(|s| pixel_confusion_at(s, pixel.threshold_q).predicted_positive()).sum();
        assert_eq!(per_image, pixel.confusion.predicted_positive());
    }

    #[test]
    fn pixel_by_hand_and_undefined() {
        // bins 10: bg 3; 20: bg 1 fg 1; 30: fg 2. P = 3.
        // t=30: TP2 FP0 -> 4/5; t=20: TP3 FP1 -> 6/7; t=10: TP3 FP4 -> 6/10. Best 6/7 at 20.
        let s = ImageStats::from_parts(vec![10, 20, 30], vec![3, 1, 0], vec![0, 1, 2], vec![0, 1, 2], 1).unwrap();
        let r = pixel_f1_max(&s).unwrap();
        assert_eq!((r.f1, r.threshold_q, r.threshold), (6.0 / 7.0, 20, dequantize(20)));
        let normal = ImageStats::from_parts(vec![10], vec![3], vec![0], vec![0], 0).unwrap();
        assert_eq!(
            pixel_f1_max(&normal),
            Err(MetricError::Undefined { metric: "pixel_f1_max", reason: UndefinedReason::NoPositives })
        );
        assert_eq!(
            pixel_f1_max(&ImageStats::default()),
            Err(MetricError::Undefined { metric: "pixel_f1_max", reason: UndefinedReason::Empty })
        );
    }

    #[test]
    fn confusion_ratios() {
        let c = Confusion { true_positives: 3, false_positives: 1, false_negatives: 2, true_negatives: 4 };
        assert_eq!(c.precision(), Some(0.75));
        assert_eq!(c.recall(), Some(0.6));
        assert_eq!(c.f1(), Some(6.0 / 9.0));
        assert_eq!(Confusion::default().f1(), None);
        assert_eq!(Confusion { true_negatives: 3, ..Confusion::default() }.precision(), None);
    }
}
