//! [`quantize`] / [`dequantize`]: the one place that defines how scores are stored.
//!
//! Anomaly maps are stored as `u16` over [0, 1] (DESIGN §4): `q = round(clamp(s, 0, 1) · 65535)`,
//! rounding halves away from zero, and read back as `q / 65535`. PromptAD scores lie in [0, 1]
//! (harmonic means of softmax and cosine-distance maps), so clamping only trims rounding noise.
//! The metrics over stored maps are exact for the stored values; [`super::stats::auroc_tie_bound`]
//! bounds the difference to the unquantised scores.
//!
//! Scoring applies the same rule to whole maps on the model's device
//! (`detect::stored::quantize_maps`), tested there to give these integers for every value.

/// The largest stored value; `q = SCORE_MAX` means score 1.0.
pub const SCORE_MAX: u16 = u16::MAX;

/// Number of distinct stored values (histogram bins): 65 536.
pub const SCORE_LEVELS: usize = SCORE_MAX as usize + 1;

/// `round(clamp(score, 0, 1) · 65535)`. NaN maps to 0 (a NaN score is a bug upstream; the
/// in-memory reference metrics reject NaN instead).
pub fn quantize(score: f64) -> u16 {
    if score.is_nan() {
        return 0;
    }
    (score.clamp(0.0, 1.0) * SCORE_MAX as f64).round() as u16
}

/// `q / 65535`, the score a stored value stands for.
pub fn dequantize(q: u16) -> f64 {
    q as f64 / SCORE_MAX as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn end_points_and_rounding() {
        assert_eq!(quantize(0.0), 0);
        assert_eq!(quantize(1.0), 65535);
        assert_eq!(quantize(-3.0), 0);
        assert_eq!(quantize(7.0), 65535);
        assert_eq!(quantize(f64::NAN), 0);
        // 0.5 · 65535 = 32767.5: halves round away from zero
        assert_eq!(quantize(0.5), 32768);
        assert_eq!(quantize(1.4 / 65535.0), 1);
        assert_eq!(quantize(1.6 / 65535.0), 2);
    }

    #[test]
    fn round_trip_is_identity_on_stored_values() {
        for q in (0..=u16::MAX).step_by(97).chain([u16::MAX]) {
            assert_eq!(quantize(dequantize(q)), q);
        }
    }

    #[test]
    fn dequantize_is_strictly_increasing() {
        // distinct stored values stay distinct scores, so ties are the same before and after
        let mut prev = dequantize(0);
        for q in 1..=u16::MAX {
            let s = dequantize(q);
            assert!(s > prev);
            prev = s;
        }
        assert_eq!(prev, 1.0);
    }
}
