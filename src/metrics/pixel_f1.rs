//! [`PixelF1`]: `pixel_f1_max(stats)` and `pixel_f1_threshold(stats)`, anomalib's F1-adaptive
//! pixel threshold (`F1AdaptiveThreshold(fields=["anomaly_map", "gt_mask"])`) and the F1 it
//! reaches, from per-image statistics.
//!
//! The definition is [`super::f1::pixel_f1_max`]: over every pixel of every image in the group,
//! one candidate threshold per stored u16 value present, a pixel anomalous when its stored value
//! is `>=` the threshold, the largest F1 = 2·TP / (TP + FP + P), the lowest threshold among equal
//! F1. Computed from the sum of the rows' [`super::stats::ImageStats`], so it is exact for the
//! stored scores and equals the in-memory reference on the dequantised pixels bit for bit.
//! `pixel_f1_threshold` returns the threshold as a score (`q / 65535`). The state is that of
//! `pixel_auroc` ([`PixelMetricAccumulator`]: one merged stats value). NULL stats values are
//! skipped; a group without defect pixels gives NULL.

use std::sync::{Arc, LazyLock};

use arrow::datatypes::{DataType, FieldRef};
use datafusion::common::{plan_err, Result};
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::{Accumulator, AggregateUDF, AggregateUDFImpl, Documentation, Signature, Volatility};

use super::pixel_auroc::{stats_state_field, PixelMetric, PixelMetricAccumulator};
use super::stats_arrow::check_stats_type;
use super::DOC_SECTION;

const STATS: &str = "Per-image statistics: Struct<bins: List<UInt16>, bg_count: List<UInt64>, fg_count: \
                     List<UInt64>, region_weight: List<Decimal128(38, 0)>, n_regions: UInt64>.";

/// What a [`PixelF1`] returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PixelF1Output {
    /// `pixel_f1_max`: the largest F1.
    F1,
    /// `pixel_f1_threshold`: the threshold it is reached at, as a score.
    Threshold,
}

/// The `pixel_f1_max` and `pixel_f1_threshold` aggregates; see the module documentation.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct PixelF1 {
    output: PixelF1Output,
    signature: Signature,
}

impl PixelF1 {
    pub fn new(output: PixelF1Output) -> Self {
        Self { output, signature: Signature::user_defined(Volatility::Immutable) }
    }
}

static F1_DOCUMENTATION: LazyLock<Documentation> = LazyLock::new(|| {
    Documentation::builder(
        DOC_SECTION,
        "The largest F1 over every pixel of every image in the group of any threshold (anomalib \
         pixel `F1AdaptiveThreshold`), from the per-image statistics of the metric_stats table: \
         one candidate per stored u16 value, a pixel anomalous when its value >= threshold, \
         F1 = 2·TP / (TP + FP + P). Exact for the stored scores. NULL when the group has no \
         defect pixel.",
        "pixel_f1_max(stats)",
    )
    .with_sql_example(
        "```sql\n> SELECT category, pixel_f1_max(stats), pixel_f1_threshold(stats) FROM metric_stats GROUP BY category;\n```",
    )
    .with_argument("stats", STATS)
    .with_related_udf("pixel_f1_threshold")
    .with_related_udf("f1_max")
    .build()
});

static THRESHOLD_DOCUMENTATION: LazyLock<Documentation> = LazyLock::new(|| {
    Documentation::builder(
        DOC_SECTION,
        "The pixel threshold anomalib's `F1AdaptiveThreshold` picks, from the per-image \
         statistics of the metric_stats table: the stored value at which pixel F1 is largest \
         (the lowest such value when several tie), returned as the score it stands for \
         (value / 65535; a pixel is anomalous when its score >= threshold). NULL when the group \
         has no defect pixel.",
        "pixel_f1_threshold(stats)",
    )
    .with_sql_example("```sql\n> SELECT category, pixel_f1_threshold(stats) FROM metric_stats GROUP BY category;\n```")
    .with_argument("stats", STATS)
    .with_related_udf("pixel_f1_max")
    .with_related_udf("f1_threshold")
    .build()
});

/// The `pixel_f1_max` aggregate function (a shared instance).
pub fn pixel_f1_max_udaf() -> Arc<AggregateUDF> {
    static INSTANCE: LazyLock<Arc<AggregateUDF>> =
        LazyLock::new(|| Arc::new(AggregateUDF::from(PixelF1::new(PixelF1Output::F1))));
    Arc::clone(&INSTANCE)
}

/// The `pixel_f1_threshold` aggregate function (a shared instance).
pub fn pixel_f1_threshold_udaf() -> Arc<AggregateUDF> {
    static INSTANCE: LazyLock<Arc<AggregateUDF>> =
        LazyLock::new(|| Arc::new(AggregateUDF::from(PixelF1::new(PixelF1Output::Threshold))));
    Arc::clone(&INSTANCE)
}

impl PixelF1 {
    fn metric(&self) -> PixelMetric {
        match self.output {
            PixelF1Output::F1 => PixelMetric::F1Max,
            PixelF1Output::Threshold => PixelMetric::F1Threshold,
        }
    }
}

impl AggregateUDFImpl for PixelF1 {
    fn name(&self) -> &str {
        match self.output {
            PixelF1Output::F1 => "pixel_f1_max",
            PixelF1Output::Threshold => "pixel_f1_threshold",
        }
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        let name = self.name();
        let [stats] = arg_types else {
            return plan_err!("{name}(stats) takes 1 argument, got {}", arg_types.len());
        };
        match check_stats_type(stats) {
            Ok(()) => Ok(vec![stats.clone()]),
            Err(why) => plan_err!("{name}(stats): {why}"),
        }
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Float64)
    }

    fn is_nullable(&self) -> bool {
        true
    }

    fn accumulator(&self, _acc_args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        Ok(Box::new(PixelMetricAccumulator::f1(self.metric())))
    }

    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        Ok(vec![stats_state_field(args.name)])
    }

    fn documentation(&self) -> Option<&Documentation> {
        Some(match self.output {
            PixelF1Output::F1 => &F1_DOCUMENTATION,
            PixelF1Output::Threshold => &THRESHOLD_DOCUMENTATION,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::f1::f1_max;
    use crate::metrics::quantize::dequantize;
    use crate::metrics::stats::ImageStats;
    use crate::metrics::stats_arrow::{stats_data_type, to_arrow};
    use crate::metrics::test_support::merged;
    use arrow::array::new_null_array;
    use datafusion::scalar::ScalarValue;

    fn images() -> Vec<(Vec<u16>, Vec<bool>)> {
        let mut seed = 23u64;
        let mut next = move || {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            seed >> 33
        };
        (0..12)
            .map(|i| {
                let map: Vec<u16> = (0..30).map(|_| (next() % 20) as u16 * 3000).collect();
                let mask: Vec<bool> = map.iter().map(|&q| i % 3 != 0 && (q > 40000 || next() % 6 == 0)).collect();
                (map, mask)
            })
            .collect()
    }

    #[test]
    fn equals_reference_and_merge_law() {
        let imgs = images();
        let stats: Vec<ImageStats> = imgs.iter().map(|(m, k)| ImageStats::from_map(m, k, 6, 5).unwrap()).collect();
        let scores: Vec<f64> = imgs.iter().flat_map(|(m, _)| m.iter().map(|&q| dequantize(q))).collect();
        let labels: Vec<bool> = imgs.iter().flat_map(|(_, k)| k.iter().copied()).collect();
        let reference = f1_max(&scores, &labels).unwrap();
        for (metric, want) in [(PixelMetric::F1Max, reference.f1), (PixelMetric::F1Threshold, reference.threshold)] {
            let want = ScalarValue::Float64(Some(want));
            let mut whole = PixelMetricAccumulator::f1(metric);
            whole.update_batch(&[to_arrow(&stats)]).unwrap();
            assert_eq!(whole.evaluate().unwrap(), want, "{metric:?}");
            for split in [0, 1, 5, 11, 12] {
                let got = merged(
                    || PixelMetricAccumulator::f1(metric),
                    &[to_arrow(&stats[..split])],
                    &[to_arrow(&stats[split..])],
                );
                assert_eq!(got, want, "{metric:?}: split at {split}");
            }
        }
    }

    #[test]
    fn nulls_and_undefined() {
        for metric in [PixelMetric::F1Max, PixelMetric::F1Threshold] {
            let mut acc = PixelMetricAccumulator::f1(metric);
            acc.update_batch(&[new_null_array(&stats_data_type(), 2)]).unwrap();
            assert_eq!(acc.evaluate().unwrap(), ScalarValue::Float64(None));
            let normal = ImageStats::from_map(&[1, 2, 3, 4], &[false; 4], 2, 2).unwrap();
            acc.update_batch(&[to_arrow(&[normal])]).unwrap();
            assert_eq!(acc.evaluate().unwrap(), ScalarValue::Float64(None), "{metric:?}: no defect pixel");
            // defect pixels at 9 above background 1..4: F1 1 at 9
            let defect = ImageStats::from_map(&[9, 9], &[true, true], 2, 1).unwrap();
            acc.update_batch(&[to_arrow(&[defect])]).unwrap();
            let want = if metric == PixelMetric::F1Max { 1.0 } else { dequantize(9) };
            assert_eq!(acc.evaluate().unwrap(), ScalarValue::Float64(Some(want)));
        }
    }

    #[test]
    fn names_and_arguments() {
        let (f1, t) = (PixelF1::new(PixelF1Output::F1), PixelF1::new(PixelF1Output::Threshold));
        assert_eq!((f1.name(), t.name()), ("pixel_f1_max", "pixel_f1_threshold"));
        assert_ne!(f1, t);
        for u in [f1, t] {
            assert!(u.coerce_types(&[DataType::Float64]).is_err());
            assert!(u.coerce_types(&[stats_data_type(), DataType::Float64]).is_err());
            assert_eq!(u.coerce_types(&[stats_data_type()]).unwrap(), vec![stats_data_type()]);
        }
    }
}
