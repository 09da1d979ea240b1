//! [`PixelAuroc`]: `pixel_auroc(stats)`, exact pixel AUROC from per-image statistics
//! (anomalib `pixel_AUROC`).
//!
//! The definition is [`super::auroc::auroc`] over every pixel of every image in the group
//! (anomalib ≥ 2.3 `metrics/auroc.py` with `fields=["anomaly_map", "gt_mask"]`), computed from
//! the sum of the rows' [`ImageStats`] (`stats` column, layout in [`super::stats_arrow`]): exact
//! for the stored u16 scores; [`super::stats::auroc_tie_bound`] bounds the difference to float
//! scores. NULL stats values are skipped; a group without defect or without background pixels
//! gives NULL.

use std::sync::{Arc, LazyLock};

use arrow::array::ArrayRef;
use arrow::datatypes::{DataType, Field, FieldRef};
use datafusion::common::{exec_err, plan_err, Result};
use datafusion::error::DataFusionError;
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::utils::format_state_name;
use datafusion::logical_expr::{Accumulator, AggregateUDF, AggregateUDFImpl, Documentation, Signature, Volatility};
use datafusion::scalar::ScalarValue;

use super::aupro::{check_fpr_limit, pixel_aupro};
use super::auroc::pixel_auroc;
use super::f1::pixel_f1_max;
use super::labelled_scores::metric_scalar;
use super::stats::StatsSum;
use super::stats_arrow::{check_stats_type, stats_data_type, to_struct_array, StatsView};
use super::DOC_SECTION;

const NAME: &str = "pixel_auroc";

/// The `pixel_auroc` aggregate; see the module documentation.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct PixelAuroc {
    signature: Signature,
}

impl Default for PixelAuroc {
    fn default() -> Self {
        Self::new()
    }
}

impl PixelAuroc {
    pub fn new() -> Self {
        Self { signature: Signature::user_defined(Volatility::Immutable) }
    }
}

static DOCUMENTATION: LazyLock<Documentation> = LazyLock::new(|| {
    Documentation::builder(
        DOC_SECTION,
        "Exact area under the ROC curve over every pixel of every image in the group (anomalib \
         `pixel_AUROC`), from the per-image statistics of the metric_stats table: exact for the \
         stored u16 scores, ties counted half. NULL when the group has no defect or no background \
         pixel.",
        "pixel_auroc(stats)",
    )
    .with_sql_example("```sql\n> SELECT category, pixel_auroc(stats) FROM metric_stats GROUP BY category;\n```")
    .with_argument(
        "stats",
        "Per-image statistics: Struct<bins: List<UInt16>, bg_count: List<UInt64>, fg_count: \
         List<UInt64>, region_weight: List<Decimal128(38, 0)>, n_regions: UInt64>.",
    )
    .with_related_udf("pixel_aupro")
    .build()
});

/// The `pixel_auroc` aggregate function (a shared instance).
pub fn pixel_auroc_udaf() -> Arc<AggregateUDF> {
    static INSTANCE: LazyLock<Arc<AggregateUDF>> = LazyLock::new(|| Arc::new(AggregateUDF::from(PixelAuroc::new())));
    Arc::clone(&INSTANCE)
}

impl AggregateUDFImpl for PixelAuroc {
    fn name(&self) -> &str {
        NAME
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        let [stats] = arg_types else {
            return plan_err!("{NAME}(stats) takes 1 argument, got {}", arg_types.len());
        };
        match check_stats_type(stats) {
            Ok(()) => Ok(vec![stats.clone()]),
            Err(why) => plan_err!("{NAME}(stats): {why}"),
        }
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Float64)
    }

    fn is_nullable(&self) -> bool {
        true
    }

    fn accumulator(&self, _acc_args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        Ok(Box::new(PixelMetricAccumulator::auroc()))
    }

    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        Ok(vec![stats_state_field(args.name)])
    }

    fn documentation(&self) -> Option<&Documentation> {
        Some(&DOCUMENTATION)
    }
}

/// The one state field of `pixel_auroc`, `pixel_aupro` and the pixel F1 functions:
/// `<name>[stats]`, the merged statistics in the layout of [`stats_data_type`].
pub(crate) fn stats_state_field(name: &str) -> FieldRef {
    Arc::new(Field::new(format_state_name(name, "stats"), stats_data_type(), true))
}

/// Adds every non-null stats value of `array` to `sum`.
pub(crate) fn add_stats_column(sum: &mut StatsSum, array: &ArrayRef) -> Result<()> {
    StatsView::try_new(array.as_ref())
        .and_then(|view| view.add_all_to(sum))
        .map_err(|e| DataFusionError::External(Box::new(e)))
}

/// The state of a [`StatsSum`]: one stats value.
pub(crate) fn stats_state(sum: &mut StatsSum) -> Result<Vec<ScalarValue>> {
    let stats = sum.to_stats().map_err(|e| DataFusionError::External(Box::new(e)))?;
    Ok(vec![ScalarValue::Struct(Arc::new(to_struct_array(&[stats])))])
}

/// Which metric a [`PixelMetricAccumulator`] evaluates.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum PixelMetric {
    Auroc,
    /// `pixel_f1_max`: the largest F1 ([`super::f1::pixel_f1_max`]).
    F1Max,
    /// `pixel_f1_threshold`: the dequantised threshold it is reached at.
    F1Threshold,
    /// `fpr_limit` is a constant of the query, given to every partial and final accumulator, so
    /// it is not part of the state.
    Aupro {
        fpr_limit: f64,
    },
}

/// Accumulator of `pixel_auroc`, `pixel_aupro`, `pixel_f1_max` and `pixel_f1_threshold`. State:
/// `[stats]`, the sum of the statistics seen so far (a [`StatsSum`], exact integer sums, so
/// partial states merge in any order).
#[derive(Debug)]
pub struct PixelMetricAccumulator {
    sum: StatsSum,
    metric: PixelMetric,
}

impl PixelMetricAccumulator {
    pub fn auroc() -> Self {
        Self { sum: StatsSum::new(), metric: PixelMetric::Auroc }
    }

    pub fn aupro(fpr_limit: f64) -> Result<Self> {
        if check_fpr_limit(fpr_limit).is_err() {
            return exec_err!("pixel_aupro: fpr_limit {fpr_limit} is outside (0, 1]");
        }
        Ok(Self { sum: StatsSum::new(), metric: PixelMetric::Aupro { fpr_limit } })
    }

    /// `F1Max` or `F1Threshold` (`Auroc` and `Aupro` have their own constructors).
    pub fn f1(metric: PixelMetric) -> Self {
        debug_assert!(matches!(metric, PixelMetric::F1Max | PixelMetric::F1Threshold));
        Self { sum: StatsSum::new(), metric }
    }
}

impl Accumulator for PixelMetricAccumulator {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        add_stats_column(&mut self.sum, &values[0])
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        let stats = self.sum.to_stats().map_err(|e| DataFusionError::External(Box::new(e)))?;
        metric_scalar(match self.metric {
            PixelMetric::Auroc => pixel_auroc(&stats),
            PixelMetric::Aupro { fpr_limit } => pixel_aupro(&stats, fpr_limit),
            PixelMetric::F1Max => pixel_f1_max(&stats).map(|r| r.f1),
            PixelMetric::F1Threshold => pixel_f1_max(&stats).map(|r| r.threshold),
        })
    }

    fn size(&self) -> usize {
        self.sum.size()
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        stats_state(&mut self.sum)
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        add_stats_column(&mut self.sum, &states[0])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::auroc::auroc;
    use crate::metrics::quantize::dequantize;
    use crate::metrics::stats::ImageStats;
    use crate::metrics::stats_arrow::to_arrow;
    use crate::metrics::test_support::merged;
    use arrow::array::new_null_array;

    fn images() -> Vec<(Vec<u16>, Vec<bool>)> {
        let mut seed = 11u64;
        let mut next = move || {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            seed >> 33
        };
        (0..12)
            .map(|i| {
                let map: Vec<u16> = (0..30).map(|_| (next() % 20) as u16 * 3000).collect();
                let mask: Vec<bool> = (0..30).map(|_| i % 3 != 0 && next() % 4 == 0).collect();
                (map, mask)
            })
            .collect()
    }

    fn stats_of(imgs: &[(Vec<u16>, Vec<bool>)]) -> Vec<ImageStats> {
        imgs.iter().map(|(m, k)| ImageStats::from_map(m, k, 6, 5).unwrap()).collect()
    }

    #[test]
    fn equals_reference_and_merge_law() {
        let imgs = images();
        let stats = stats_of(&imgs);
        let scores: Vec<f64> = imgs.iter().flat_map(|(m, _)| m.iter().map(|&q| dequantize(q))).collect();
        let labels: Vec<bool> = imgs.iter().flat_map(|(_, k)| k.iter().copied()).collect();
        let want = ScalarValue::Float64(Some(auroc(&scores, &labels).unwrap()));

        let mut whole = PixelMetricAccumulator::auroc();
        whole.update_batch(&[to_arrow(&stats)]).unwrap();
        assert_eq!(whole.evaluate().unwrap(), want);

        for split in [0, 1, 4, 11, 12] {
            let got = merged(PixelMetricAccumulator::auroc, &[to_arrow(&stats[..split])], &[to_arrow(&stats[split..])]);
            assert_eq!(got, want, "split at {split}");
        }
    }

    #[test]
    fn nulls_and_undefined() {
        let mut acc = PixelMetricAccumulator::auroc();
        acc.update_batch(&[new_null_array(&stats_data_type(), 3)]).unwrap();
        assert_eq!(acc.evaluate().unwrap(), ScalarValue::Float64(None));
        // only normal images: no defect pixel
        let normal = ImageStats::from_map(&[1, 2, 3, 4], &[false; 4], 2, 2).unwrap();
        acc.update_batch(&[to_arrow(&[normal])]).unwrap();
        assert_eq!(acc.evaluate().unwrap(), ScalarValue::Float64(None));
        let defect = ImageStats::from_map(&[9, 9], &[true, true], 2, 1).unwrap();
        acc.update_batch(&[to_arrow(&[defect])]).unwrap();
        assert_eq!(acc.evaluate().unwrap(), ScalarValue::Float64(Some(1.0)));
    }

    #[test]
    fn rejects_non_stats_arguments() {
        let u = PixelAuroc::new();
        assert!(u.coerce_types(&[DataType::Float64]).is_err());
        assert!(u.coerce_types(&[stats_data_type(), DataType::Float64]).is_err());
        assert_eq!(u.coerce_types(&[stats_data_type()]).unwrap(), vec![stats_data_type()]);
    }
}
