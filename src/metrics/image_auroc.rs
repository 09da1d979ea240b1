//! [`ImageAuroc`]: `image_auroc(score, label)`, exact AUROC over images (anomalib `image_AUROC`).
//!
//! The definition is [`super::auroc::auroc`]: trapezoid over the exact ROC (anomalib ≥ 2.3
//! `metrics/auroc.py`), ties with half credit. Rows with a NULL score or label are skipped; a
//! group without anomalous or without normal images gives NULL.

use std::sync::{Arc, LazyLock};

use arrow::array::ArrayRef;
use arrow::datatypes::{DataType, FieldRef};
use datafusion::common::Result;
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::{
    Accumulator, AggregateUDF, AggregateUDFImpl, Documentation, Signature, Volatility,
};
use datafusion::scalar::ScalarValue;

use super::auroc::auroc;
use super::labelled_scores::{coerce_score_label, metric_scalar, LabelledScores};
use super::DOC_SECTION;

const NAME: &str = "image_auroc";

/// The `image_auroc` aggregate; see the module documentation.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct ImageAuroc {
    signature: Signature,
}

impl Default for ImageAuroc {
    fn default() -> Self {
        Self::new()
    }
}

impl ImageAuroc {
    pub fn new() -> Self {
        Self {
            signature: Signature::user_defined(Volatility::Immutable),
        }
    }
}

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
        LazyLock::new(|| Arc::new(AggregateUDF::from(ImageAuroc::new())));
    Arc::clone(&INSTANCE)
}

impl AggregateUDFImpl for ImageAuroc {
    fn name(&self) -> &str {
        NAME
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        coerce_score_label(NAME, arg_types)
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Float64)
    }

    fn is_nullable(&self) -> bool {
        true
    }

    fn accumulator(&self, _acc_args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        Ok(Box::new(ImageAurocAccumulator::default()))
    }

    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        Ok(LabelledScores::state_fields(args.name))
    }

    fn documentation(&self) -> Option<&Documentation> {
        Some(&DOCUMENTATION)
    }
}

/// Accumulator of `image_auroc`. State: [`LabelledScores`] (`[scores]: List<Float64>`,
/// `[labels]: List<Boolean>`), merged by concatenation.
#[derive(Debug, Default)]
pub struct ImageAurocAccumulator {
    pairs: LabelledScores,
}

impl Accumulator for ImageAurocAccumulator {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        self.pairs.update(NAME, values)
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        metric_scalar(auroc(&self.pairs.scores, &self.pairs.labels))
    }

    fn size(&self) -> usize {
        self.pairs.size()
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        Ok(self.pairs.state())
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        self.pairs.merge(NAME, states)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{BooleanArray, Float64Array, Int64Array};

    fn batch(scores: &[Option<f64>], labels: &[Option<bool>]) -> Vec<ArrayRef> {
        vec![
            Arc::new(Float64Array::from(scores.to_vec())),
            Arc::new(BooleanArray::from(labels.to_vec())),
        ]
    }

    fn state_arrays(acc: &mut ImageAurocAccumulator) -> Vec<ArrayRef> {
        acc.state()
            .unwrap()
            .iter()
            .map(|s| s.to_array().unwrap())
            .collect()
    }

    #[test]
    fn evaluates_with_ties_and_nulls() {
        let mut acc = ImageAurocAccumulator::default();
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
        let mut acc = ImageAurocAccumulator::default();
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
        let mut acc = ImageAurocAccumulator::default();
        assert_eq!(acc.evaluate().unwrap(), ScalarValue::Float64(None));
        acc.update_batch(&batch(&[Some(0.1), Some(0.2)], &[Some(true), Some(true)]))
            .unwrap();
        assert_eq!(acc.evaluate().unwrap(), ScalarValue::Float64(None));
    }

    #[test]
    fn nan_is_an_error() {
        let mut acc = ImageAurocAccumulator::default();
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
        let mut whole = ImageAurocAccumulator::default();
        whole.update_batch(&batch(&scores, &labels)).unwrap();
        let want = whole.evaluate().unwrap();
        for split in [0, 1, 5, 22, 23] {
            let mut a = ImageAurocAccumulator::default();
            let mut b = ImageAurocAccumulator::default();
            a.update_batch(&batch(&scores[..split], &labels[..split]))
                .unwrap();
            b.update_batch(&batch(&scores[split..], &labels[split..]))
                .unwrap();
            // final accumulator sees only states, in either order
            let mut fin = ImageAurocAccumulator::default();
            fin.merge_batch(&state_arrays(&mut b)).unwrap();
            fin.merge_batch(&state_arrays(&mut a)).unwrap();
            assert_eq!(fin.evaluate().unwrap(), want, "split at {split}");
        }
    }

    #[test]
    fn coercion() {
        let u = ImageAuroc::new();
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
