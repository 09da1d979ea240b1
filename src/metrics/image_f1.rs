//! `f1_max(score, label)` and `f1_threshold(score, label)`: anomalib's F1-adaptive image
//! threshold (`F1AdaptiveThreshold(fields=["pred_score", "gt_label"])`) and the F1 it reaches.
//!
//! The definition is [`super::f1::f1_max`]: one candidate threshold per distinct score, a
//! prediction anomalous when `score >= threshold`, F1 = 2·TP / (TP + FP + P) compared exactly,
//! the lowest threshold among equal F1. Both functions share the state of `image_auroc`
//! ([`super::labelled_scores::LabelledScores`]: every (score, label) pair, merged by
//! concatenation). Rows with a NULL score or label are skipped; a group without anomalous images
//! gives NULL (anomalib would return the lowest score with a warning); a group without normal
//! images gives F1 1 at the lowest score.

use std::sync::{Arc, LazyLock};

use datafusion::logical_expr::{AggregateUDF, Documentation};

use super::error::MetricError;
use super::f1::f1_max;
use super::labelled_scores::ImageMetricUdaf;
use super::DOC_SECTION;

const F1_MAX: &str = "f1_max";
const F1_THRESHOLD: &str = "f1_threshold";

const LABEL: &str = "Ground truth: BOOLEAN, or an integer 0 (normal) / 1 (anomalous).";
const SCORE: &str = "Image anomaly score, any numeric type (higher = more anomalous).";

fn f1_value(scores: &[f64], labels: &[bool]) -> Result<f64, MetricError> {
    f1_max(scores, labels).map(|r| r.f1)
}

fn f1_threshold_value(scores: &[f64], labels: &[bool]) -> Result<f64, MetricError> {
    f1_max(scores, labels).map(|r| r.threshold)
}

static F1_MAX_DOCUMENTATION: LazyLock<Documentation> = LazyLock::new(|| {
    Documentation::builder(
        DOC_SECTION,
        "The largest F1 over images of any threshold (anomalib `F1Max` / `F1AdaptiveThreshold`): \
         one candidate per distinct score, an image anomalous when score >= threshold, F1 = \
         2·TP / (TP + FP + P). NULL when the group has no anomalous image.",
        "f1_max(score, label)",
    )
    .with_sql_example(
        "```sql\n> SELECT category, f1_max(score, label), f1_threshold(score, label)\n  FROM scores GROUP BY category;\n```",
    )
    .with_argument("score", SCORE)
    .with_argument("label", LABEL)
    .with_related_udf("f1_threshold")
    .with_related_udf("pixel_f1_max")
    .build()
});

static F1_THRESHOLD_DOCUMENTATION: LazyLock<Documentation> = LazyLock::new(|| {
    Documentation::builder(
        DOC_SECTION,
        "The image threshold anomalib's `F1AdaptiveThreshold` picks: the score at which F1 is \
         largest (an image anomalous when score >= threshold), the lowest such score when \
         several tie. NULL when the group has no anomalous image.",
        "f1_threshold(score, label)",
    )
    .with_sql_example("```sql\n> SELECT category, f1_threshold(score, label) FROM scores GROUP BY category;\n```")
    .with_argument("score", SCORE)
    .with_argument("label", LABEL)
    .with_related_udf("f1_max")
    .with_related_udf("pixel_f1_threshold")
    .build()
});

/// The `f1_max` aggregate function (a shared instance).
pub fn f1_max_udaf() -> Arc<AggregateUDF> {
    static INSTANCE: LazyLock<Arc<AggregateUDF>> = LazyLock::new(|| {
        Arc::new(AggregateUDF::from(ImageMetricUdaf::new(F1_MAX, f1_value, || &F1_MAX_DOCUMENTATION)))
    });
    Arc::clone(&INSTANCE)
}

/// The `f1_threshold` aggregate function (a shared instance).
pub fn f1_threshold_udaf() -> Arc<AggregateUDF> {
    static INSTANCE: LazyLock<Arc<AggregateUDF>> = LazyLock::new(|| {
        Arc::new(AggregateUDF::from(ImageMetricUdaf::new(F1_THRESHOLD, f1_threshold_value, || {
            &F1_THRESHOLD_DOCUMENTATION
        })))
    });
    Arc::clone(&INSTANCE)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::labelled_scores::ImageMetricAccumulator;
    use crate::metrics::test_support::merged;
    use arrow::array::{ArrayRef, BooleanArray, Float64Array, Int64Array};
    use datafusion::logical_expr::Accumulator;
    use datafusion::scalar::ScalarValue;

    fn batch(scores: &[Option<f64>], labels: &[Option<bool>]) -> Vec<ArrayRef> {
        vec![Arc::new(Float64Array::from(scores.to_vec())), Arc::new(BooleanArray::from(labels.to_vec()))]
    }

    fn accumulators() -> [ImageMetricAccumulator; 2] {
        [ImageMetricAccumulator::new(F1_MAX, f1_value), ImageMetricAccumulator::new(F1_THRESHOLD, f1_threshold_value)]
    }

    #[test]
    fn values_with_ties_nulls_and_integer_labels() {
        // P = 2: t=0.9 TP1 FP0 -> 2/3; t=0.5 (tied +, -) TP2 FP1 -> 4/5; t=0.1 TP2 FP2 -> 4/6
        let values = batch(
            &[Some(0.5), Some(0.5), Some(0.9), None, Some(0.1), Some(0.7)],
            &[Some(true), Some(false), Some(true), Some(false), Some(false), None],
        );
        let [mut f1, mut t] = accumulators();
        f1.update_batch(&values).unwrap();
        t.update_batch(&values).unwrap();
        assert_eq!(f1.evaluate().unwrap(), ScalarValue::Float64(Some(0.8)));
        assert_eq!(t.evaluate().unwrap(), ScalarValue::Float64(Some(0.5)));

        let ints: Vec<ArrayRef> =
            vec![Arc::new(Float64Array::from(vec![0.2, 0.8, 0.3])), Arc::new(Int64Array::from(vec![0, 1, 0]))];
        let [mut f1, mut t] = accumulators();
        f1.update_batch(&ints).unwrap();
        t.update_batch(&ints).unwrap();
        assert_eq!(f1.evaluate().unwrap(), ScalarValue::Float64(Some(1.0)));
        assert_eq!(t.evaluate().unwrap(), ScalarValue::Float64(Some(0.8)));
    }

    #[test]
    fn no_positives_is_null_no_negatives_is_defined() {
        for mut acc in accumulators() {
            assert_eq!(acc.evaluate().unwrap(), ScalarValue::Float64(None));
            acc.update_batch(&batch(&[Some(0.1), Some(0.2)], &[Some(false), Some(false)])).unwrap();
            assert_eq!(acc.evaluate().unwrap(), ScalarValue::Float64(None));
            assert!(acc.update_batch(&batch(&[Some(f64::NAN)], &[Some(true)])).is_err());
        }
        let [mut f1, mut t] = accumulators();
        let only_anomalous = batch(&[Some(0.4), Some(0.6)], &[Some(true), Some(true)]);
        f1.update_batch(&only_anomalous).unwrap();
        t.update_batch(&only_anomalous).unwrap();
        assert_eq!(f1.evaluate().unwrap(), ScalarValue::Float64(Some(1.0)));
        assert_eq!(t.evaluate().unwrap(), ScalarValue::Float64(Some(0.4)));
    }

    #[test]
    fn merge_law() {
        let scores: Vec<Option<f64>> = (0..29).map(|i| Some(((i * 5) % 13) as f64 / 12.0)).collect();
        let labels: Vec<Option<bool>> = (0..29).map(|i| Some(i % 4 == 1 || i % 7 == 0)).collect();
        for (name, metric) in [(F1_MAX, f1_value as fn(&[f64], &[bool]) -> _), (F1_THRESHOLD, f1_threshold_value)] {
            let mut whole = ImageMetricAccumulator::new(name, metric);
            whole.update_batch(&batch(&scores, &labels)).unwrap();
            let want = whole.evaluate().unwrap();
            assert!(!want.is_null());
            for split in [0, 1, 6, 28, 29] {
                let (first, second) =
                    (batch(&scores[..split], &labels[..split]), batch(&scores[split..], &labels[split..]));
                let got = merged(|| ImageMetricAccumulator::new(name, metric), &first, &second);
                assert_eq!(got, want, "{name}: split at {split}");
            }
        }
    }
}
