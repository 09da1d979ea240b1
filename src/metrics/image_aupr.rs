//! `image_aupr(score, label)`, area under the precision–recall curve over images,
//! as anomalib reports it (`image_AUPR`).
//!
//! The definition is [`super::aupr::aupr`] (anomalib ≥ 2.3 `metrics/aupr.py`): torchmetrics'
//! exact PR curve, then the trapezoid after a stable sort by recall; not scikit-learn's average
//! precision. Rows with a NULL score or label are skipped; a group without anomalous or without
//! normal images gives NULL.

use std::sync::{Arc, LazyLock};

use datafusion::logical_expr::{AggregateUDF, Documentation};

use super::aupr::aupr;
use super::labelled_scores::ImageMetricUdaf;
use super::DOC_SECTION;

const NAME: &str = "image_aupr";

static DOCUMENTATION: LazyLock<Documentation> = LazyLock::new(|| {
    Documentation::builder(
        DOC_SECTION,
        "Area under the precision-recall curve over images, as anomalib reports `image_AUPR`: the \
         exact curve (one point per distinct score, plus recall 0 / precision 1), trapezoid after a \
         stable sort by recall (torchmetrics `auc(recall, precision, reorder=True)`). Not \
         scikit-learn's average precision; a perfect ranking scores below 1 when negatives follow the \
         last positive. NULL when the group has no anomalous or no normal image.",
        "image_aupr(score, label)",
    )
    .with_sql_example(
        "```sql\n> SELECT category, image_aupr(score, label) FROM scores GROUP BY category;\n```",
    )
    .with_argument("score", "Image anomaly score, any numeric type (higher = more anomalous).")
    .with_argument("label", "Ground truth: BOOLEAN, or an integer 0 (normal) / 1 (anomalous).")
    .with_related_udf("image_auroc")
    .build()
});

/// The `image_aupr` aggregate function (a shared instance).
pub fn image_aupr_udaf() -> Arc<AggregateUDF> {
    static INSTANCE: LazyLock<Arc<AggregateUDF>> =
        LazyLock::new(|| Arc::new(AggregateUDF::from(ImageMetricUdaf::new(NAME, aupr, || &DOCUMENTATION))));
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
        ImageMetricAccumulator::new(NAME, aupr)
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
        // nulls skipped; levels 0.9 (+), 0.5 (+ and -), 0.1 (-): recall ½ entered at 1, left at 1;
        // recall 1 entered at ½ (after 0.1), so ½·(1 + 1)/2 + ½·(1 + ½)/2
        assert_eq!(
            acc.evaluate().unwrap(),
            ScalarValue::Float64(Some(0.5 + 0.375))
        );
    }

    #[test]
    fn integer_labels() {
        let mut acc = accumulator();
        let values: Vec<ArrayRef> = vec![
            Arc::new(Float64Array::from(vec![0.2, 0.8])),
            Arc::new(Int64Array::from(vec![0, 1])),
        ];
        acc.update_batch(&values).unwrap();
        // anomalib's AUPR of a perfect 1-vs-1 ranking (torchmetrics 1.9.0 gives 0.75)
        assert_eq!(acc.evaluate().unwrap(), ScalarValue::Float64(Some(0.75)));
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
        let u = ImageMetricUdaf::new(NAME, aupr, || &DOCUMENTATION);
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
