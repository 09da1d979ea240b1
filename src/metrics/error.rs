//! [`MetricError`]: why a metric has no value, or why its input was rejected.

use std::fmt;

/// Why a metric is undefined for a set: it has a value only when both classes are present.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum UndefinedReason {
    /// The set is empty.
    Empty,
    /// No positive (anomalous image, defect pixel) in the set.
    NoPositives,
    /// No negative (normal image, background pixel) in the set.
    NoNegatives,
    /// No ground-truth region (AUPRO): every mask is empty.
    NoRegions,
    /// No background pixel (AUPRO): every mask is full.
    NoBackground,
}

impl fmt::Display for UndefinedReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            UndefinedReason::Empty => "the set is empty",
            UndefinedReason::NoPositives => "the set has no positives",
            UndefinedReason::NoNegatives => "the set has no negatives",
            UndefinedReason::NoRegions => "the masks hold no defect region",
            UndefinedReason::NoBackground => "the masks hold no background pixel",
        })
    }
}

/// Errors of `promptad::metrics`. `Undefined` is a result, not a failure: the SQL functions
/// turn it into NULL; everything else is bad input.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MetricError {
    /// The metric has no value for this set.
    #[error("{metric}: undefined: {reason}")]
    Undefined { metric: &'static str, reason: UndefinedReason },
    /// Scores and labels (or map and mask) differ in length.
    #[error("{metric}: {scores} scores but {labels} labels")]
    LengthMismatch { metric: &'static str, scores: usize, labels: usize },
    /// A score is NaN: it has no place in a ranking.
    #[error("{metric}: score at index {index} is NaN")]
    NanScore { metric: &'static str, index: usize },
    /// A score is ±∞ where a finite value is required (a calibration file holds finite numbers).
    #[error("{metric}: score at index {index} is not finite ({value}); calibrate on finite scores")]
    NonFiniteScore { metric: &'static str, index: usize, value: f64 },
    /// A quantile for the normal-only threshold must lie in (0, 1].
    #[error("calibration: normal quantile {value} is outside (0, 1]")]
    Quantile { value: f64 },
    /// A map or mask does not have `width × height` values.
    #[error("{what}: {len} values, expected {width}×{height}")]
    Shape { what: &'static str, len: usize, width: usize, height: usize },
    /// The FPR integration limit of AUPRO must lie in (0, 1].
    #[error("pixel_aupro: fpr_limit {value} is outside (0, 1]")]
    FprLimit { value: f64 },
    /// A count or weight sum exceeded its integer type (or the Decimal128(38, 0) range).
    #[error("image stats: {what} overflowed while merging")]
    Overflow { what: &'static str },
    /// An Arrow value is not a valid stats value (see `stats::stats_data_type`).
    #[error("image stats: invalid Arrow value: {reason}")]
    InvalidStats { reason: String },
}

impl MetricError {
    pub(crate) fn undefined(metric: &'static str, reason: UndefinedReason) -> Self {
        MetricError::Undefined { metric, reason }
    }

    /// True for [`MetricError::Undefined`].
    pub fn is_undefined(&self) -> bool {
        matches!(self, MetricError::Undefined { .. })
    }
}
