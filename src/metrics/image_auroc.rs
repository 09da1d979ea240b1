//! `image_auroc(score, label)`, exact AUROC over images (anomalib `image_AUROC`).
//!
//! The definition is [`super::auroc::auroc`]: trapezoid over the exact ROC (anomalib ≥ 2.3
//! `metrics/auroc.py`), ties with half credit. Rows with a NULL score or label are skipped; a
//! group without anomalous or without normal images gives NULL.

use std::sync::{Arc, LazyLock};

use datafusion::logical_expr::{AggregateUDF, Documentation};

use super::auroc::auroc;
use super::labelled_scores::ImageMetricUdaf;
use super::DOC_SECTION;

const NAME: &str = "image_auroc";

static DOCUMENTATION: LazyLock<Documentation> = LazyLock::new(|| {
    Documentation::builder(
        DOC_SECTION,
        "Exact area under the ROC curve over images (anomalib `image_AUROC`): the trapezoid over \
         the exact ROC curve, one point per distinct score, tied scores counted half. NULL when the \
         group has no anomalous or no normal image.",
        "image_auroc(score, label)",
    )
    .with_sql_example(
        "```sql\n> SELECT category, image_auroc(score, label) FROM scores GROUP BY category;\n```",
    )
    .with_argument("score", "Image anomaly score, any numeric type (higher = more anomalous).")
    .with_argument("label", "Ground truth: BOOLEAN, or an integer 0 (normal) / 1 (anomalous).")
    .with_related_udf("image_aupr")
    .build()
});

/// The `image_auroc` aggregate function (a shared instance).
pub fn image_auroc_udaf() -> Arc<AggregateUDF> {
    static INSTANCE: LazyLock<Arc<AggregateUDF>> =
        LazyLock::new(|| Arc::new(AggregateUDF::from(ImageMetricUdaf::new(NAME, auroc, || &DOCUMENTATION))));
    Arc::clone(&INSTANCE)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::labelled_scores::ImageMetricAccumulator;
    use arrow::array::{ArrayRef, BooleanArray, Float64Array, Int64Array};
    use arrow::datatypes::DataType;
    use datafusion::logical_expr::{Accumulator, AggregateUDFImpl};
    use datafusion::scalar::ScalarValue;

    fn accumulator() -> ImageMetricAccumulator {
        ImageMetricAccumulator::new(NAME, auroc)
    }

    fn batch(scores: &[Option<f64>], labels: &[Option<bool>]) -> Vec<ArrayRef> {
        vec![
            Arc::new(Float64Array::from(scores.to_vec())),
            Arc::new(BooleanArray::from(labels.to_vec())),
        ]
    }

    fn state_arrays(acc: &mut ImageMetricAccumulator) -> Vec<ArrayRef> {
        acc.state()
            .unwrap()
            .iter()
            .map(|s| s.to_array().unwrap())
            .collect()
    }

    #[test]
    fn evaluates_with_ties_and_nulls() {
        let mut acc = accumulator();
        acc.update_batch(&batch(
            &[Some(0.5), Some(0.5), Some(0.9), None, Some(0.1)],
            &[
                Some(true),
                Some(false),
                Some(true),
                Some(false),
                Some(false),
            ],
        ))
        .unwrap();
        // nulls skipped; pairs: (0.5+) vs 0.5- tie, everything else won: 3.5 / 4
        assert_eq!(acc.evaluate().unwrap(), ScalarValue::Float64(Some(0.875)));
    }

    #[test]
    fn integer_labels() {
        let mut acc = accumulator();
        let values: Vec<ArrayRef> = vec![
            Arc::new(Float64Array::from(vec![0.2, 0.8])),
            Arc::new(Int64Array::from(vec![0, 1])),
        ];
        acc.update_batch(&values).unwrap();
        assert_eq!(acc.evaluate().unwrap(), ScalarValue::Float64(Some(1.0)));
        let bad: Vec<ArrayRef> = vec![
            Arc::new(Float64Array::from(vec![0.2])),
            Arc::new(Int64Array::from(vec![2])),
        ];
        assert!(acc
            .update_batch(&bad)
            .unwrap_err()
            .to_string()
            .contains("label must be 0 or 1"));
    }

    #[test]
    fn undefined_is_null() {
        let mut acc = accumulator();
        assert_eq!(acc.evaluate().unwrap(), ScalarValue::Float64(None));
        acc.update_batch(&batch(&[Some(0.1), Some(0.2)], &[Some(true), Some(true)]))
            .unwrap();
        assert_eq!(acc.evaluate().unwrap(), ScalarValue::Float64(None));
    }

    #[test]
    fn nan_is_an_error() {
        let mut acc = accumulator();
        assert!(acc
            .update_batch(&batch(&[Some(f64::NAN)], &[Some(true)]))
            .is_err());
    }

    #[test]
    fn merge_law() {
        let scores: Vec<Option<f64>> = (0..23)
            .map(|i| Some(((i * 7) % 11) as f64 / 10.0))
            .collect();
        let labels: Vec<Option<bool>> = (0..23).map(|i| Some(i % 3 == 0)).collect();
        let mut whole = accumulator();
        whole.update_batch(&batch(&scores, &labels)).unwrap();
        let want = whole.evaluate().unwrap();
        for split in [0, 1, 5, 22, 23] {
            let mut a = accumulator();
            let mut b = accumulator();
            a.update_batch(&batch(&scores[..split], &labels[..split]))
                .unwrap();
            b.update_batch(&batch(&scores[split..], &labels[split..]))
                .unwrap();
            // final accumulator sees only states, in either order
            let mut fin = accumulator();
            fin.merge_batch(&state_arrays(&mut b)).unwrap();
            fin.merge_batch(&state_arrays(&mut a)).unwrap();
            assert_eq!(fin.evaluate().unwrap(), want, "split at {split}");
        }
    }

    #[test]
    fn coercion() {
        let u = ImageMetricUdaf::new(NAME, auroc, || &DOCUMENTATION);
        assert_eq!(
            u.coerce_types(&[DataType::Float32, DataType::Int32])
                .unwrap(),
            vec![DataType::Float64, DataType::Int64]
        );
        assert!(u
            .coerce_types(&[DataType::Utf8, DataType::Boolean])
            .is_err());
        assert!(u
            .coerce_types(&[DataType::Float64, DataType::Utf8])
            .is_err());
        assert!(u.coerce_types(&[DataType::Float64]).is_err());
    }
}
