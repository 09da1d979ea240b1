//! [`LabelledScores`]: the state of `image_auroc` and `image_aupr`, every (score, label) pair.
//!
//! One row per image, so keeping every pair and sorting once in `evaluate` is cheap (8 MiB per
//! million images) and exact. State fields, in this order:
//!
//! | name                  | type            | content                         |
//! |-----------------------|-----------------|---------------------------------|
//! | `<name>[scores]`      | `List<Float64>` | the scores seen, any order      |
//! | `<name>[labels]`      | `List<Boolean>` | the labels, parallel to scores  |

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, BooleanArray, Float64Array, ListArray};
use arrow::buffer::OffsetBuffer;
use arrow::datatypes::{DataType, Field, FieldRef, Float64Type, Int64Type};
use datafusion::common::{exec_err, plan_err, Result, ScalarValue};
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::utils::format_state_name;
use datafusion::logical_expr::{Accumulator, AggregateUDFImpl, Documentation, Signature, Volatility};

use super::error::MetricError;

/// Coerces `(score, label)`: score numeric → Float64; label BOOLEAN stays, integers → Int64
/// (values must be 0 or 1).
pub(crate) fn coerce_score_label(name: &str, arg_types: &[DataType]) -> Result<Vec<DataType>> {
    let [score, label] = arg_types else {
        return plan_err!("{name}(score, label) takes 2 arguments, got {}", arg_types.len());
    };
    let score = if score.is_numeric() || score == &DataType::Null {
        DataType::Float64
    } else {
        return plan_err!("{name}(score, label): score must be numeric, got {score}");
    };
    let label = match label {
        DataType::Boolean | DataType::Null => DataType::Boolean,
        t if t.is_integer() => DataType::Int64,
        t => return plan_err!("{name}(score, label): label must be BOOLEAN or an integer 0/1, got {t}"),
    };
    Ok(vec![score, label])
}

fn list_field(name: &str, field: &str, item: DataType) -> FieldRef {
    Arc::new(Field::new_list(format_state_name(name, field), Field::new_list_field(item, true), true))
}

/// All (score, label) pairs of a group.
#[derive(Debug, Default, Clone)]
pub(crate) struct LabelledScores {
    pub scores: Vec<f64>,
    pub labels: Vec<bool>,
}

impl LabelledScores {
    pub fn state_fields(name: &str) -> Vec<FieldRef> {
        vec![list_field(name, "scores", DataType::Float64), list_field(name, "labels", DataType::Boolean)]
    }

    /// Appends the rows where neither score nor label is null.
    pub fn update(&mut self, metric: &str, values: &[ArrayRef]) -> Result<()> {
        let [scores, labels] = values else {
            return exec_err!("{metric}: expected 2 arguments, got {}", values.len());
        };
        let scores = scores.as_primitive_opt::<Float64Type>().ok_or_else(|| {
            datafusion::error::DataFusionError::Execution(format!(
                "{metric}: score is {}, not Float64",
                scores.data_type()
            ))
        })?;
        match labels.data_type() {
            DataType::Boolean => {
                let labels = labels.as_boolean();
                for i in 0..scores.len() {
                    if scores.is_valid(i) && labels.is_valid(i) {
                        self.push(metric, scores.value(i), labels.value(i))?;
                    }
                }
            }
            DataType::Int64 => {
                let labels = labels.as_primitive::<Int64Type>();
                for i in 0..scores.len() {
                    if scores.is_valid(i) && labels.is_valid(i) {
                        let label = match labels.value(i) {
                            0 => false,
                            1 => true,
                            v => return exec_err!("{metric}: label must be 0 or 1, got {v}"),
                        };
                        self.push(metric, scores.value(i), label)?;
                    }
                }
            }
            t => return exec_err!("{metric}: label is {t}, not BOOLEAN or Int64"),
        }
        Ok(())
    }

    fn push(&mut self, metric: &str, score: f64, label: bool) -> Result<()> {
        if score.is_nan() {
            return exec_err!("{metric}: score is NaN");
        }
        self.scores.push(score);
        self.labels.push(label);
        Ok(())
    }

    pub fn state(&self) -> Vec<ScalarValue> {
        let n = self.scores.len();
        let scores = ListArray::new(
            Arc::new(Field::new_list_field(DataType::Float64, true)),
            OffsetBuffer::from_lengths([n]),
            Arc::new(Float64Array::from(self.scores.clone())),
            None,
        );
        let labels = ListArray::new(
            Arc::new(Field::new_list_field(DataType::Boolean, true)),
            OffsetBuffer::from_lengths([n]),
            Arc::new(BooleanArray::from(self.labels.clone())),
            None,
        );
        vec![ScalarValue::List(Arc::new(scores)), ScalarValue::List(Arc::new(labels))]
    }

    pub fn merge(&mut self, metric: &str, states: &[ArrayRef]) -> Result<()> {
        let [scores, labels] = states else {
            return exec_err!("{metric}: expected 2 state columns, got {}", states.len());
        };
        let (scores, labels) = (scores.as_list::<i32>(), labels.as_list::<i32>());
        let score_values = scores.values().as_primitive::<Float64Type>();
        let label_values = labels.values().as_boolean();
        for i in 0..scores.len() {
            if scores.is_null(i) || labels.is_null(i) {
                continue;
            }
            let (s, l) = (scores.value_offsets(), labels.value_offsets());
            let (s0, s1, l0, l1) = (s[i] as usize, s[i + 1] as usize, l[i] as usize, l[i + 1] as usize);
            if s1 - s0 != l1 - l0 {
                return exec_err!("{metric}: state has {} scores but {} labels", s1 - s0, l1 - l0);
            }
            for (j, k) in (s0..s1).zip(l0..l1) {
                self.scores.push(score_values.value(j));
                self.labels.push(label_values.value(k));
            }
        }
        Ok(())
    }

    pub fn size(&self) -> usize {
        std::mem::size_of::<Self>() + self.scores.capacity() * 8 + self.labels.capacity()
    }
}

/// An evaluated metric as SQL: undefined → NULL, bad input → error.
pub(crate) fn metric_scalar(result: Result<f64, MetricError>) -> Result<ScalarValue> {
    match result {
        Ok(v) => Ok(ScalarValue::Float64(Some(v))),
        Err(e) if e.is_undefined() => Ok(ScalarValue::Float64(None)),
        Err(e) => Err(datafusion::error::DataFusionError::External(Box::new(e))),
    }
}

/// A metric over (score, label) pairs: `image_auroc`, `image_aupr`.
pub(crate) type PairMetric = fn(&[f64], &[bool]) -> Result<f64, MetricError>;

/// The aggregate of an image-level metric: one implementation for every [`PairMetric`], named
/// and documented by the file that defines the function (`image_auroc.rs`, `image_aupr.rs`).
/// Two instances are equal when their names are: a name identifies a function in a registry.
#[derive(Debug)]
pub struct ImageMetricUdaf {
    name: &'static str,
    metric: PairMetric,
    documentation: fn() -> &'static Documentation,
    signature: Signature,
}

impl PartialEq for ImageMetricUdaf {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
    }
}

impl Eq for ImageMetricUdaf {}

impl std::hash::Hash for ImageMetricUdaf {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.name.hash(state);
    }
}

impl ImageMetricUdaf {
    pub(crate) fn new(name: &'static str, metric: PairMetric, documentation: fn() -> &'static Documentation) -> Self {
        Self { name, metric, documentation, signature: Signature::user_defined(Volatility::Immutable) }
    }
}

impl AggregateUDFImpl for ImageMetricUdaf {
    fn name(&self) -> &str {
        self.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        coerce_score_label(self.name, arg_types)
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Float64)
    }

    fn is_nullable(&self) -> bool {
        true
    }

    fn accumulator(&self, _acc_args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        Ok(Box::new(ImageMetricAccumulator::new(self.name, self.metric)))
    }

    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        Ok(LabelledScores::state_fields(args.name))
    }

    fn documentation(&self) -> Option<&Documentation> {
        Some((self.documentation)())
    }
}

/// Accumulator of an image-level metric. State: [`LabelledScores`] (`[scores]: List<Float64>`,
/// `[labels]: List<Boolean>`), merged by concatenation.
#[derive(Debug)]
pub struct ImageMetricAccumulator {
    name: &'static str,
    metric: PairMetric,
    pairs: LabelledScores,
}

impl ImageMetricAccumulator {
    pub(crate) fn new(name: &'static str, metric: PairMetric) -> Self {
        Self { name, metric, pairs: LabelledScores::default() }
    }
}

impl Accumulator for ImageMetricAccumulator {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        self.pairs.update(self.name, values)
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        metric_scalar((self.metric)(&self.pairs.scores, &self.pairs.labels))
    }

    fn size(&self) -> usize {
        self.pairs.size()
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        Ok(self.pairs.state())
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        self.pairs.merge(self.name, states)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::test_support::merged;
    use crate::metrics::{aupr::aupr, auroc::auroc};
    use arrow::array::Int64Array;

    /// Every image metric, with the value it gives the `ties_and_nulls` case and a perfect
    /// 1-vs-1 ranking given as integer labels (hand-computed in each metric's own file).
    const METRICS: [(&str, PairMetric, f64, f64); 2] = [
        // AUROC: the tied pair counts half, everything else is won: 3.5 / 4; perfect: 1.
        ("image_auroc", auroc, 0.875, 1.0),
        // anomalib AUPR: levels 0.9 (+), 0.5 (+ and -), 0.1 (-): ½·(1 + 1)/2 + ½·(1 + ½)/2;
        // a perfect 1-vs-1 ranking gives 0.75 (torchmetrics 1.9.0 agrees).
        ("image_aupr", aupr, 0.875, 0.75),
    ];

    fn batch(scores: &[Option<f64>], labels: &[Option<bool>]) -> Vec<ArrayRef> {
        vec![Arc::new(Float64Array::from(scores.to_vec())), Arc::new(BooleanArray::from(labels.to_vec()))]
    }

    #[test]
    fn values_with_ties_nulls_and_integer_labels() {
        for (name, metric, ties_and_nulls, perfect) in METRICS {
            let mut acc = ImageMetricAccumulator::new(name, metric);
            acc.update_batch(&batch(
                &[Some(0.5), Some(0.5), Some(0.9), None, Some(0.1)],
                &[Some(true), Some(false), Some(true), Some(false), Some(false)],
            ))
            .unwrap();
            assert_eq!(acc.evaluate().unwrap(), ScalarValue::Float64(Some(ties_and_nulls)), "{name}");

            let mut acc = ImageMetricAccumulator::new(name, metric);
            let values: Vec<ArrayRef> =
                vec![Arc::new(Float64Array::from(vec![0.2, 0.8])), Arc::new(Int64Array::from(vec![0, 1]))];
            acc.update_batch(&values).unwrap();
            assert_eq!(acc.evaluate().unwrap(), ScalarValue::Float64(Some(perfect)), "{name}");
            let bad: Vec<ArrayRef> = vec![Arc::new(Float64Array::from(vec![0.2])), Arc::new(Int64Array::from(vec![2]))];
            assert!(acc.update_batch(&bad).unwrap_err().to_string().contains("label must be 0 or 1"), "{name}");
        }
    }

    #[test]
    fn undefined_is_null_and_nan_is_an_error() {
        for (name, metric, _, _) in METRICS {
            let mut acc = ImageMetricAccumulator::new(name, metric);
            assert_eq!(acc.evaluate().unwrap(), ScalarValue::Float64(None));
            acc.update_batch(&batch(&[Some(0.1), Some(0.2)], &[Some(true), Some(true)])).unwrap();
            assert_eq!(acc.evaluate().unwrap(), ScalarValue::Float64(None), "{name}: no negatives");
            assert!(acc.update_batch(&batch(&[Some(f64::NAN)], &[Some(true)])).is_err(), "{name}");
        }
    }

    #[test]
    fn merge_law() {
        let scores: Vec<Option<f64>> = (0..23).map(|i| Some(((i * 7) % 11) as f64 / 10.0)).collect();
        let labels: Vec<Option<bool>> = (0..23).map(|i| Some(i % 3 == 0)).collect();
        for (name, metric, _, _) in METRICS {
            let mut whole = ImageMetricAccumulator::new(name, metric);
            whole.update_batch(&batch(&scores, &labels)).unwrap();
            let want = whole.evaluate().unwrap();
            for split in [0, 1, 5, 22, 23] {
                let (first, second) =
                    (batch(&scores[..split], &labels[..split]), batch(&scores[split..], &labels[split..]));
                let got = merged(|| ImageMetricAccumulator::new(name, metric), &first, &second);
                assert_eq!(got, want, "{name}: split at {split}");
            }
        }
    }

    #[test]
    fn coercion() {
        let u = ImageMetricUdaf::new("image_auroc", auroc, || unreachable!("documentation is not read here"));
        assert_eq!(
            u.coerce_types(&[DataType::Float32, DataType::Int32]).unwrap(),
            vec![DataType::Float64, DataType::Int64]
        );
        assert!(u.coerce_types(&[DataType::Utf8, DataType::Boolean]).is_err());
        assert!(u.coerce_types(&[DataType::Float64, DataType::Utf8]).is_err());
        assert!(u.coerce_types(&[DataType::Float64]).is_err());
    }
}
