//! [`ImageAupr`]: `image_aupr(score, label)`, area under the precision–recall curve over images,
//! as anomalib reports it (`image_AUPR`).
//!
//! The definition is [`super::aupr::aupr`] (anomalib ≥ 2.3 `metrics/aupr.py`): torchmetrics'
//! exact PR curve, then the trapezoid after a stable sort by recall; not scikit-learn's average
//! precision. Rows with a NULL score or label are skipped; a group without anomalous or without
//! normal images gives NULL.

use std::sync::{Arc, LazyLock};

use arrow::array::ArrayRef;
use arrow::datatypes::{DataType, FieldRef};
use datafusion::common::Result;
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::{
    Accumulator, AggregateUDF, AggregateUDFImpl, Documentation, Signature, Volatility,
};
use datafusion::scalar::ScalarValue;

use super::aupr::aupr;
use super::labelled_scores::{coerce_score_label, metric_scalar, LabelledScores};
use super::DOC_SECTION;

const NAME: &str = "image_aupr";

/// The `image_aupr` aggregate; see the module documentation.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct ImageAupr {
    signature: Signature,
}

impl Default for ImageAupr {
    fn default() -> Self {
        Self::new()
    }
}

impl ImageAupr {
    pub fn new() -> Self {
        Self {
            signature: Signature::user_defined(Volatility::Immutable),
        }
    }
}

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
        LazyLock::new(|| Arc::new(AggregateUDF::from(ImageAupr::new())));
    Arc::clone(&INSTANCE)
}

impl AggregateUDFImpl for ImageAupr {
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
        Ok(Box::new(ImageAuprAccumulator::default()))
    }

    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        Ok(LabelledScores::state_fields(args.name))
    }

    fn documentation(&self) -> Option<&Documentation> {
        Some(&DOCUMENTATION)
    }
}

/// Accumulator of `image_aupr`. State: [`LabelledScores`] (`[scores]: List<Float64>`,
/// `[labels]: List<Boolean>`), merged by concatenation.
#[derive(Debug, Default)]
pub struct ImageAuprAccumulator {
    pairs: LabelledScores,
}

impl Accumulator for ImageAuprAccumulator {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        self.pairs.update(NAME, values)
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        metric_scalar(aupr(&self.pairs.scores, &self.pairs.labels))
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

    fn state_arrays(acc: &mut ImageAuprAccumulator) -> Vec<ArrayRef> {
        acc.state()
            .unwrap()
            .iter()
            .map(|s| s.to_array().unwrap())
            .collect()
    }

    #[test]
    fn evaluates_with_ties_and_nulls() {
        let mut acc = ImageAuprAccumulator::default();
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
        let mut acc = ImageAuprAccumulator::default();
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
        let mut acc = ImageAuprAccumulator::default();
        assert_eq!(acc.evaluate().unwrap(), ScalarValue::Float64(None));
        acc.update_batch(&batch(&[Some(0.1), Some(0.2)], &[Some(true), Some(true)]))
            .unwrap();
        assert_eq!(acc.evaluate().unwrap(), ScalarValue::Float64(None));
    }

    #[test]
    fn nan_is_an_error() {
        let mut acc = ImageAuprAccumulator::default();
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
        let mut whole = ImageAuprAccumulator::default();
        whole.update_batch(&batch(&scores, &labels)).unwrap();
        let want = whole.evaluate().unwrap();
        for split in [0, 1, 5, 22, 23] {
            let mut a = ImageAuprAccumulator::default();
            let mut b = ImageAuprAccumulator::default();
            a.update_batch(&batch(&scores[..split], &labels[..split]))
                .unwrap();
            b.update_batch(&batch(&scores[split..], &labels[split..]))
                .unwrap();
            // final accumulator sees only states, in either order
            let mut fin = ImageAuprAccumulator::default();
            fin.merge_batch(&state_arrays(&mut b)).unwrap();
            fin.merge_batch(&state_arrays(&mut a)).unwrap();
            assert_eq!(fin.evaluate().unwrap(), want, "split at {split}");
        }
    }

    #[test]
    fn coercion() {
        let u = ImageAupr::new();
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
