//! [`Calibration`]: the image and pixel thresholds a model's decisions use, learnt once from a
//! labelled set, stored beside the model as JSON, and applied to every scoring run.
//!
//! **With both classes labelled** (the anomalib default, `PostProcessor`'s two
//! `F1AdaptiveThreshold`s on the validation set): the image threshold is [`f1_max`] over the
//! image scores and the pixel threshold is [`pixel_f1_max`] over the summed pixel statistics,
//! exact over the stored u16 values. An image is anomalous when `score >= threshold`, a pixel
//! when its stored value `>= threshold_q`: the rule the F1 was maximised under.
//!
//! **With only normal examples labelled** (few-shot PromptAD usually has no anomalous
//! validation image), F1 is undefined; anomalib then warns and returns the lowest score, which
//! calls every image anomalous. Here the default is instead a high quantile of the normal scores
//! ([`ThresholdMethod::NormalQuantile`], nearest rank: the ⌈q·n⌉-th smallest of n, numpy's
//! `quantile(method="inverted_cdf")`), q = [`DEFAULT_IMAGE_NORMAL_QUANTILE`] for images and
//! [`DEFAULT_PIXEL_NORMAL_QUANTILE`] for pixels (a 224 × 224 normal image then has ~50 pixels at
//! or above it). It is weaker: it fixes only the share of normal examples called anomalous
//! (about 1 − q, plus the one at the threshold), says nothing about how many defects it catches,
//! rests on the few highest normal scores (with under 100 normal images q = 0.99 is simply the
//! highest one), and is not comparable with an F1-max threshold. **Otherwise** (no normal
//! example: nothing labelled, or only anomalous) there is no threshold (`None`): flagging
//! everything, which is what F1 would choose, is not a decision.
//!
//! **Normalisation** (anomalib `PostProcessor._normalize`): with the threshold t and the
//! calibration set's min and max (anomalib's `MinMax` over all validation scores, both classes),
//!
//! ```text
//! normalized(x) = clamp((x − t) / (max − min) + 0.5, 0, 1)
//! ```
//!
//! so the threshold maps to 0.5. anomalib then predicts `normalized > 0.5` (strict); decide with
//! [`ImageCalibration::is_anomalous`] on the raw score instead, which is exact (rounding can put
//! a score just below t at 0.5). When max = min, the value is 0, ½ or 1 as x is below, at or
//! above t (anomalib divides by zero).
//!
//! **File.** `version` is the first 16 hex digits of the SHA-256 of the content (every field but
//! `version`, serialised in field order), so two calibrations with the same thresholds have the
//! same version and [`Calibration::from_json`] rejects a file edited by hand. Floats are stored as
//! strings of their shortest round-trip decimal (`"0.7315"`) because the JSON reader in use may
//! read a 17-digit number one ulp off, which would move a threshold.

use serde::{Deserialize, Serialize};

use super::error::MetricError;
use super::f1::{f1_max, pixel_f1_max};
use super::quantize::dequantize;
use super::stats::ImageStats;

/// Default nearest-rank quantile of normal image scores when no anomalous image is labelled.
pub const DEFAULT_IMAGE_NORMAL_QUANTILE: f64 = 0.99;
/// Default nearest-rank quantile of normal (background) pixel values when no defect pixel is
/// labelled.
pub const DEFAULT_PIXEL_NORMAL_QUANTILE: f64 = 0.999;
/// The `format` of the files this code writes.
pub const CALIBRATION_FORMAT: u32 = 1;

/// How a threshold was chosen.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum ThresholdMethod {
    /// F1-max over a set with both classes; `f1` is the F1 it reaches on that set.
    F1Max {
        #[serde(with = "exact_f64")]
        f1: f64,
    },
    /// Only normal examples: the nearest-rank `quantile` of their scores.
    NormalQuantile {
        #[serde(with = "exact_f64")]
        quantile: f64,
    },
}

/// The image-level decision.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageCalibration {
    pub method: ThresholdMethod,
    /// An image is anomalous when `score >= threshold`.
    #[serde(with = "exact_f64")]
    pub threshold: f64,
    /// Smallest and largest score of the calibration set (both classes): the normalisation range.
    #[serde(with = "exact_f64")]
    pub min: f64,
    #[serde(with = "exact_f64")]
    pub max: f64,
    /// Labelled normal / anomalous images it was learnt from.
    pub normal: u64,
    pub anomalous: u64,
}

impl ImageCalibration {
    /// `score >= threshold`.
    pub fn is_anomalous(&self, score: f64) -> bool {
        score >= self.threshold
    }

    /// anomalib's min-max normalisation: the threshold maps to 0.5 (module documentation).
    pub fn normalize(&self, score: f64) -> f64 {
        normalize(score, self.threshold, self.min, self.max)
    }
}

/// The pixel-level decision, over stored (u16) values.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PixelCalibration {
    pub method: ThresholdMethod,
    /// A pixel is anomalous when its stored value `>= threshold_q`.
    pub threshold_q: u16,
    /// Smallest and largest stored value of the calibration pixels: the normalisation range.
    pub min_q: u16,
    pub max_q: u16,
    /// Labelled background / defect pixels it was learnt from.
    pub background: u64,
    pub defect: u64,
}

impl PixelCalibration {
    /// The threshold as a score, `threshold_q / 65535`.
    pub fn threshold(&self) -> f64 {
        dequantize(self.threshold_q)
    }

    /// `q >= threshold_q`.
    pub fn is_anomalous(&self, q: u16) -> bool {
        q >= self.threshold_q
    }

    /// Pixels of an image (or of summed images) at or above the threshold.
    pub fn anomalous_pixels(&self, stats: &ImageStats) -> u64 {
        stats.bins().iter().zip(stats.bg_count().iter().zip(stats.fg_count())).fold(0, |n, (&q, (&bg, &fg))| {
            if self.is_anomalous(q) {
                n + bg + fg
            } else {
                n
            }
        })
    }

    /// anomalib's min-max normalisation of a stored value (its score `q / 65535`).
    pub fn normalize(&self, q: u16) -> f64 {
        normalize(dequantize(q), self.threshold(), dequantize(self.min_q), dequantize(self.max_q))
    }
}

/// Quantiles for the normal-only fallback; see the module documentation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CalibrationOptions {
    pub image_normal_quantile: f64,
    pub pixel_normal_quantile: f64,
}

impl Default for CalibrationOptions {
    fn default() -> Self {
        Self {
            image_normal_quantile: DEFAULT_IMAGE_NORMAL_QUANTILE,
            pixel_normal_quantile: DEFAULT_PIXEL_NORMAL_QUANTILE,
        }
    }
}

/// Image and pixel thresholds with their normalisation ranges; see the module documentation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Calibration {
    /// [`CALIBRATION_FORMAT`].
    pub format: u32,
    /// Content digest (16 hex digits).
    pub version: String,
    /// `None` without labelled normal images.
    pub image: Option<ImageCalibration>,
    /// `None` without labelled background pixels.
    pub pixel: Option<PixelCalibration>,
}

/// Why a calibration file was rejected.
#[derive(Debug, thiserror::Error)]
pub enum CalibrationError {
    #[error("calibration file: not valid calibration JSON: {source}; rewrite it with `Calibration::to_json`")]
    Json {
        #[source]
        source: serde_json::Error,
    },
    #[error("calibration file: format {found}, this build reads format {CALIBRATION_FORMAT}; recalibrate")]
    Format { found: u32 },
    #[error(
        "calibration file: version {stored} does not match its content (digest {computed}); \
         it was edited or damaged, recalibrate"
    )]
    Version { stored: String, computed: String },
}

/// What the digest covers: every field but `version`, in order.
#[derive(Serialize)]
struct Content<'a> {
    format: u32,
    image: &'a Option<ImageCalibration>,
    pixel: &'a Option<PixelCalibration>,
}

impl Calibration {
    /// Calibrates on labelled image scores (`labels[i]`: image i is anomalous) and the summed
    /// statistics of the images whose masks are known (`ImageStats::default()` when none are),
    /// with the default quantiles.
    pub fn fit(scores: &[f64], labels: &[bool], pixels: &ImageStats) -> Result<Calibration, MetricError> {
        Self::fit_with(scores, labels, pixels, CalibrationOptions::default())
    }

    /// [`Calibration::fit`] with chosen fallback quantiles.
    pub fn fit_with(
        scores: &[f64],
        labels: &[bool],
        pixels: &ImageStats,
        options: CalibrationOptions,
    ) -> Result<Calibration, MetricError> {
        for q in [options.image_normal_quantile, options.pixel_normal_quantile] {
            if !(q > 0.0 && q <= 1.0) {
                return Err(MetricError::Quantile { value: q });
            }
        }
        let image = fit_image(scores, labels, options.image_normal_quantile)?;
        let pixel = fit_pixel(pixels, options.pixel_normal_quantile)?;
        Ok(Self::new(image, pixel))
    }

    /// A calibration with these parts and its version.
    pub fn new(image: Option<ImageCalibration>, pixel: Option<PixelCalibration>) -> Calibration {
        let mut c = Calibration { format: CALIBRATION_FORMAT, version: String::new(), image, pixel };
        c.version = c.digest();
        c
    }

    /// The image-level normalised score, `None` without an image threshold.
    pub fn normalize(&self, score: f64) -> Option<f64> {
        self.image.as_ref().map(|i| i.normalize(score))
    }

    fn digest(&self) -> String {
        let content = Content { format: self.format, image: &self.image, pixel: &self.pixel };
        let bytes = serde_json::to_vec(&content).expect("calibration content serialises");
        crate::runtime::sha256_prefix(&bytes, 16)
    }

    /// Pretty-printed JSON, ending in a newline.
    pub fn to_json(&self) -> String {
        let mut s = serde_json::to_string_pretty(self).expect("calibration serialises");
        s.push('\n');
        s
    }

    /// Reads [`Calibration::to_json`]'s output, checking the format and the version.
    pub fn from_json(text: &str) -> Result<Calibration, CalibrationError> {
        let c: Calibration = serde_json::from_str(text).map_err(|source| CalibrationError::Json { source })?;
        if c.format != CALIBRATION_FORMAT {
            return Err(CalibrationError::Format { found: c.format });
        }
        let computed = c.digest();
        if computed != c.version {
            return Err(CalibrationError::Version { stored: c.version, computed });
        }
        Ok(c)
    }
}

fn fit_image(scores: &[f64], labels: &[bool], quantile: f64) -> Result<Option<ImageCalibration>, MetricError> {
    let metric = "calibration";
    if scores.len() != labels.len() {
        return Err(MetricError::LengthMismatch { metric, scores: scores.len(), labels: labels.len() });
    }
    for (index, &value) in scores.iter().enumerate() {
        if value.is_nan() {
            return Err(MetricError::NanScore { metric, index });
        }
        if !value.is_finite() {
            return Err(MetricError::NonFiniteScore { metric, index, value });
        }
    }
    let anomalous = labels.iter().filter(|&&l| l).count() as u64;
    let normal = labels.len() as u64 - anomalous;
    if normal == 0 {
        return Ok(None);
    }
    let (method, threshold) = if anomalous > 0 {
        let best = f1_max(scores, labels)?;
        (ThresholdMethod::F1Max { f1: best.f1 }, best.threshold)
    } else {
        let mut normals: Vec<f64> = scores.to_vec();
        normals.sort_unstable_by(|a, b| a.partial_cmp(b).expect("finite"));
        (ThresholdMethod::NormalQuantile { quantile }, normals[nearest_rank(quantile, normal) - 1])
    };
    let min = scores.iter().copied().fold(f64::INFINITY, f64::min);
    let max = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    Ok(Some(ImageCalibration { method, threshold, min, max, normal, anomalous }))
}

fn fit_pixel(stats: &ImageStats, quantile: f64) -> Result<Option<PixelCalibration>, MetricError> {
    let (background, defect) = (stats.n_background(), stats.n_defect());
    if background == 0 {
        return Ok(None);
    }
    let (method, threshold_q) = if defect > 0 {
        let best = pixel_f1_max(stats)?;
        (ThresholdMethod::F1Max { f1: best.f1 }, best.threshold_q)
    } else {
        let rank = nearest_rank(quantile, background) as u64;
        let mut seen = 0u64;
        let q = stats
            .bins()
            .iter()
            .zip(stats.bg_count())
            .find(|&(_, &n)| {
                seen += n;
                seen >= rank
            })
            .map(|(&q, _)| q)
            .expect("rank <= background");
        (ThresholdMethod::NormalQuantile { quantile }, q)
    };
    let (min_q, max_q) = (stats.bins()[0], *stats.bins().last().expect("pixels present"));
    Ok(Some(PixelCalibration { method, threshold_q, min_q, max_q, background, defect }))
}

/// The 1-based nearest rank ⌈q·n⌉ of a quantile q ∈ (0, 1] among n ≥ 1 values.
fn nearest_rank(q: f64, n: u64) -> usize {
    ((q * n as f64).ceil() as u64).clamp(1, n) as usize
}

/// `clamp((x − t) / (max − min) + 0.5, 0, 1)`; for max = min, 0 / ½ / 1 as x is below / at /
/// above t.
fn normalize(x: f64, t: f64, min: f64, max: f64) -> f64 {
    let range = max - min;
    if range > 0.0 {
        ((x - t) / range + 0.5).clamp(0.0, 1.0)
    } else if x > t {
        1.0
    } else if x < t {
        0.0
    } else {
        0.5
    }
}

/// Serde for an f64 stored as the string of its shortest round-trip decimal (see the module
/// documentation); reading rejects non-finite values.
mod exact_f64 {
    use serde::{de::Error, Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(v)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        let s = String::deserialize(d)?;
        match s.parse::<f64>() {
            Ok(v) if v.is_finite() => Ok(v),
            _ => Err(D::Error::custom(format!("`{s}` is not a finite number"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::quantize::quantize;

    fn stats(map: &[u16], mask: &[bool]) -> ImageStats {
        ImageStats::from_map(map, mask, map.len(), 1).unwrap()
    }

    #[test]
    fn both_classes_use_f1_max() {
        // P = 2: t=0.9 -> 2/3, t=0.7 -> 4/5 (TP2 FP1), t=0.2 -> 4/7
        let scores = [0.9, 0.7, 0.7, 0.2, 0.2];
        let labels = [true, true, false, false, false];
        let pixels =
            ImageStats::sum(&[stats(&[100, 900, 900], &[false, true, true]), stats(&[50, 300], &[false; 2])]).unwrap();
        let c = Calibration::fit(&scores, &labels, &pixels).unwrap();
        let image = c.image.unwrap();
        assert_eq!(image.method, ThresholdMethod::F1Max { f1: 0.8 });
        assert_eq!((image.threshold, image.min, image.max), (0.7, 0.2, 0.9));
        assert_eq!((image.normal, image.anomalous), (3, 2));
        assert!(image.is_anomalous(0.7) && !image.is_anomalous(0.6999));
        let pixel = c.pixel.unwrap();
        assert_eq!(pixel.method, ThresholdMethod::F1Max { f1: 1.0 });
        assert_eq!((pixel.threshold_q, pixel.min_q, pixel.max_q), (900, 50, 900));
        assert_eq!((pixel.background, pixel.defect), (3, 2));
        assert_eq!(pixel.anomalous_pixels(&pixels), 2);
        assert_eq!(pixel.anomalous_pixels(&stats(&[899, 900, 65535], &[false; 3])), 2);
        assert_eq!(pixel.threshold(), dequantize(900));
    }

    #[test]
    fn normal_only_uses_the_nearest_rank_quantile() {
        // 10 normal scores; q = 0.99 -> rank 10 (the highest), q = 0.5 -> rank 5, q = 0.55 -> 6
        let scores: Vec<f64> = (1..=10).rev().map(|i| i as f64 / 10.0).collect();
        let labels = [false; 10];
        let none = ImageStats::default();
        let c = Calibration::fit(&scores, &labels, &none).unwrap();
        let image = c.image.unwrap();
        assert_eq!(image.method, ThresholdMethod::NormalQuantile { quantile: 0.99 });
        assert_eq!(image.threshold, 1.0);
        assert!(c.pixel.is_none(), "no pixels: no pixel threshold");
        for (q, want) in [(0.5, 0.5), (0.55, 0.6), (0.1, 0.1), (0.01, 0.1), (1.0, 1.0)] {
            let options = CalibrationOptions { image_normal_quantile: q, ..CalibrationOptions::default() };
            let image = Calibration::fit_with(&scores, &labels, &none, options).unwrap().image.unwrap();
            assert_eq!(image.threshold, want, "q = {q}");
        }
        // pixels: background values 10 ×3, 20 ×1, 30 ×1 (n = 5): q = 0.6 -> rank 3 -> 10; 0.7 -> 4 -> 20
        let pixels = stats(&[10, 30, 10, 20, 10], &[false; 5]);
        for (q, want) in [(0.6, 10), (0.7, 20), (0.999, 30), (0.2, 10)] {
            let options = CalibrationOptions { pixel_normal_quantile: q, ..CalibrationOptions::default() };
            let pixel = Calibration::fit_with(&scores, &labels, &pixels, options).unwrap().pixel.unwrap();
            assert_eq!(pixel.threshold_q, want, "q = {q}");
            assert_eq!(pixel.method, ThresholdMethod::NormalQuantile { quantile: q });
        }
        for bad in [0.0, -0.1, 1.5, f64::NAN] {
            let options = CalibrationOptions { image_normal_quantile: bad, ..CalibrationOptions::default() };
            assert!(matches!(
                Calibration::fit_with(&scores, &labels, &none, options),
                Err(MetricError::Quantile { .. })
            ));
        }
    }

    #[test]
    fn no_normal_examples_give_no_threshold() {
        let c = Calibration::fit(&[0.3, 0.8], &[true, true], &stats(&[5, 6], &[true, true])).unwrap();
        assert!(c.image.is_none() && c.pixel.is_none());
        let c = Calibration::fit(&[], &[], &ImageStats::default()).unwrap();
        assert!(c.image.is_none() && c.pixel.is_none());
        assert_eq!(c.normalize(0.5), None);
    }

    #[test]
    fn bad_scores_are_errors() {
        let none = ImageStats::default();
        assert!(matches!(Calibration::fit(&[0.1], &[true, false], &none), Err(MetricError::LengthMismatch { .. })));
        assert!(matches!(Calibration::fit(&[f64::NAN], &[false], &none), Err(MetricError::NanScore { .. })));
        assert!(matches!(
            Calibration::fit(&[0.2, f64::INFINITY], &[false, true], &none),
            Err(MetricError::NonFiniteScore { index: 1, .. })
        ));
    }

    #[test]
    fn normalization_is_anomalib_min_max() {
        // anomalib: ((x - t) / (max - min)) + 0.5 clamped to [0, 1]
        // (binary fractions, so every step is exact)
        let image = ImageCalibration {
            method: ThresholdMethod::F1Max { f1: 1.0 },
            threshold: 0.625,
            min: 0.25,
            max: 1.25,
            normal: 1,
            anomalous: 1,
        };
        assert_eq!(image.normalize(0.625), 0.5);
        assert_eq!(image.normalize(1.0), 0.875);
        assert_eq!(image.normalize(0.25), 0.125);
        assert_eq!(image.normalize(1.25), 1.0);
        assert_eq!(image.normalize(1.5), 1.0, "clamped");
        assert_eq!(image.normalize(-5.0), 0.0, "clamped");
        let half_range = ImageCalibration { min: 0.5, max: 1.0, ..image };
        assert_eq!(half_range.normalize(0.75), 0.75);
        // degenerate range
        let flat = ImageCalibration { min: 0.625, max: 0.625, ..image };
        assert_eq!((flat.normalize(0.5), flat.normalize(0.625), flat.normalize(0.7)), (0.0, 0.5, 1.0));
        // monotone, threshold at 0.5
        let xs: Vec<f64> = (0..=100).map(|i| i as f64 / 100.0).collect();
        assert!(xs.windows(2).all(|w| image.normalize(w[0]) <= image.normalize(w[1])));
        let pixel = PixelCalibration {
            method: ThresholdMethod::F1Max { f1: 1.0 },
            threshold_q: quantize(0.5),
            min_q: 0,
            max_q: u16::MAX,
            background: 1,
            defect: 1,
        };
        assert_eq!(pixel.normalize(pixel.threshold_q), 0.5);
        assert_eq!(pixel.normalize(u16::MAX), (1.0 - dequantize(quantize(0.5))) + 0.5);
        assert_eq!(pixel.normalize(0), 0.0, "0.5 - 0.500008 clamped");
        assert_eq!(pixel.normalize(16384), dequantize(16384) - dequantize(quantize(0.5)) + 0.5);
    }

    #[test]
    fn json_round_trip_is_exact_and_versioned() {
        // 17-digit floats: the ones a lossy float reader would move
        let scores = [0.1 + 0.2, 0.30000000000000004 + f64::EPSILON, 1.0 / 3.0, 2.0 / 3.0, 0.7];
        let labels = [false, true, false, true, true];
        let pixels = stats(&[1, 2, 3, 60000], &[false, false, true, true]);
        let c = Calibration::fit(&scores, &labels, &pixels).unwrap();
        assert_eq!(c.version.len(), 16);
        let text = c.to_json();
        let back = Calibration::from_json(&text).unwrap();
        assert_eq!(back, c);
        assert_eq!(back.image.unwrap().threshold.to_bits(), c.image.unwrap().threshold.to_bits());
        assert_eq!(back.image.unwrap().min.to_bits(), c.image.unwrap().min.to_bits());
        // the version is a function of the content
        assert_eq!(Calibration::fit(&scores, &labels, &pixels).unwrap().version, c.version);
        let other = Calibration::fit(&scores, &[true, true, false, true, true], &pixels).unwrap();
        assert_ne!(other.version, c.version);
        // an edited threshold is caught
        let t = format!("\"threshold\": \"{}\"", c.image.unwrap().threshold);
        assert!(text.contains(&t), "{text}");
        let edited = text.replace(&t, "\"threshold\": \"0.5\"");
        assert!(matches!(Calibration::from_json(&edited), Err(CalibrationError::Version { .. })));
        let future = text.replace("\"format\": 1", "\"format\": 2");
        assert!(matches!(Calibration::from_json(&future), Err(CalibrationError::Format { found: 2 })));
        assert!(matches!(Calibration::from_json("{"), Err(CalibrationError::Json { .. })));
        let unknown = text.replacen('{', "{\"extra\": 1,", 1);
        assert!(matches!(Calibration::from_json(&unknown), Err(CalibrationError::Json { .. })));
    }
}
