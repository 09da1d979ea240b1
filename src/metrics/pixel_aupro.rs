//! [`PixelAupro`]: `pixel_aupro(stats [, fpr_limit])`, exact AUPRO from per-image statistics
//! (anomalib `pixel_AUPRO`).
//!
//! The definition is [`super::aupro::aupro`] (anomalib ≥ 2.3 `metrics/aupro.py` = the MVTec AD
//! reference): 8-connected ground-truth regions per image, FPR over all background pixels of the
//! group (normal images included), PRO = mean over regions of the per-region TPR, one point per
//! distinct score, trapezoid to `fpr_limit` (default 0.3) with the end point interpolated,
//! divided by `fpr_limit`. Computed from the sum of the rows' [`super::stats::ImageStats`]: exact
//! for the stored u16 scores. `fpr_limit` must be a constant in (0, 1]. NULL stats values are
//! skipped; a group without any region or without any background pixel gives NULL.

use std::sync::{Arc, LazyLock};

use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, FieldRef, Schema};
use datafusion::common::{plan_err, Result};
use datafusion::error::DataFusionError;
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::{
    Accumulator, AggregateUDF, AggregateUDFImpl, ColumnarValue, Documentation, Signature, Volatility,
};
use datafusion::scalar::ScalarValue;

use super::aupro::{check_fpr_limit, DEFAULT_FPR_LIMIT};
use super::pixel_auroc::{stats_state_field, PixelMetricAccumulator};
use super::stats_arrow::check_stats_type;
use super::DOC_SECTION;

const NAME: &str = "pixel_aupro";

/// The `pixel_aupro` aggregate; see the module documentation.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct PixelAupro {
    signature: Signature,
}

impl Default for PixelAupro {
    fn default() -> Self {
        Self::new()
    }
}

impl PixelAupro {
    pub fn new() -> Self {
        Self { signature: Signature::user_defined(Volatility::Immutable) }
    }
}

static DOCUMENTATION: LazyLock<Documentation> = LazyLock::new(|| {
    Documentation::builder(
        DOC_SECTION,
        "Exact area under the per-region-overlap curve (anomalib >= 2.3 / MVTec AD `pixel_AUPRO`) \
         from the per-image statistics of the metric_stats table: 8-connected ground-truth \
         regions, FPR over all background pixels (normal images included), PRO = mean over \
         regions of the per-region TPR, one point per distinct score, integrated to fpr_limit \
         with the end point interpolated, divided by fpr_limit. Exact for the stored u16 scores. \
         NULL when the group has no defect region or no background pixel.",
        "pixel_aupro(stats [, fpr_limit])",
    )
    .with_sql_example(
        "```sql\n> SELECT category, pixel_aupro(stats), pixel_aupro(stats, 0.05) FROM metric_stats GROUP BY category;\n```",
    )
    .with_argument(
        "stats",
        "Per-image statistics: Struct<bins: List<UInt16>, bg_count: List<UInt64>, fg_count: \
         List<UInt64>, region_weight: List<Decimal128(38, 0)>, n_regions: UInt64>.",
    )
    .with_argument("fpr_limit", "Constant FPR integration limit in (0, 1]; default 0.3.")
    .with_related_udf("pixel_auroc")
    .build()
});

/// The `pixel_aupro` aggregate function (a shared instance).
pub fn pixel_aupro_udaf() -> Arc<AggregateUDF> {
    static INSTANCE: LazyLock<Arc<AggregateUDF>> = LazyLock::new(|| Arc::new(AggregateUDF::from(PixelAupro::new())));
    Arc::clone(&INSTANCE)
}

/// Reads the constant `fpr_limit` argument (evaluated without input rows).
fn fpr_limit(args: &AccumulatorArgs) -> Result<f64> {
    let Some(expr) = args.exprs.get(1) else {
        return Ok(DEFAULT_FPR_LIMIT);
    };
    let not_constant = || DataFusionError::Plan(format!("{NAME}: fpr_limit must be a constant"));
    let empty = RecordBatch::new_empty(Arc::new(Schema::empty()));
    let value = match expr.evaluate(&empty).map_err(|_| not_constant())? {
        ColumnarValue::Scalar(ScalarValue::Float64(Some(v))) => v,
        ColumnarValue::Scalar(ScalarValue::Float64(None)) => {
            return plan_err!("{NAME}: fpr_limit is NULL");
        }
        _ => return Err(not_constant()),
    };
    check_fpr_limit(value).map_err(|e| DataFusionError::Plan(e.to_string()))?;
    Ok(value)
}

impl AggregateUDFImpl for PixelAupro {
    fn name(&self) -> &str {
        NAME
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        let (stats, limit) = match arg_types {
            [stats] => (stats, None),
            [stats, limit] => (stats, Some(limit)),
            _ => return plan_err!("{NAME}(stats [, fpr_limit]) takes 1 or 2 arguments, got {}", arg_types.len()),
        };
        if let Err(why) = check_stats_type(stats) {
            return plan_err!("{NAME}(stats): {why}");
        }
        let mut out = vec![stats.clone()];
        if let Some(limit) = limit {
            if !(limit.is_numeric() || limit == &DataType::Null) {
                return plan_err!("{NAME}(stats, fpr_limit): fpr_limit must be numeric, got {limit}");
            }
            out.push(DataType::Float64);
        }
        Ok(out)
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Float64)
    }

    fn is_nullable(&self) -> bool {
        true
    }

    fn accumulator(&self, acc_args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        Ok(Box::new(PixelMetricAccumulator::aupro(fpr_limit(&acc_args)?)?))
    }

    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        Ok(vec![stats_state_field(args.name)])
    }

    fn documentation(&self) -> Option<&Documentation> {
        Some(&DOCUMENTATION)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::aupro::{aupro, SegmentationMap};
    use crate::metrics::quantize::dequantize;
    use crate::metrics::stats::ImageStats;
    use crate::metrics::stats_arrow::{stats_data_type, to_arrow};
    use crate::metrics::test_support::merged;
    use arrow::array::new_null_array;

    const W: usize = 7;
    const H: usize = 6;

    fn images() -> Vec<(Vec<u16>, Vec<bool>)> {
        let mut seed = 5u64;
        let mut next = move || {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            seed >> 33
        };
        (0..10)
            .map(|i| {
                let mask: Vec<bool> = (0..W * H).map(|_| i % 4 != 0 && next() % 5 == 0).collect();
                let map: Vec<u16> =
                    mask.iter().map(|&m| (next() % 25) as u16 * 2000 + if m { 15000 } else { 0 }).collect();
                (map, mask)
            })
            .collect()
    }

    #[test]
    fn equals_reference_bitwise_and_merge_law() {
        let imgs = images();
        let stats: Vec<ImageStats> = imgs.iter().map(|(m, k)| ImageStats::from_map(m, k, W, H).unwrap()).collect();
        let scores: Vec<Vec<f64>> = imgs.iter().map(|(m, _)| m.iter().map(|&q| dequantize(q)).collect()).collect();
        let maps: Vec<SegmentationMap> = imgs
            .iter()
            .zip(&scores)
            .map(|((_, k), s)| SegmentationMap { scores: s, mask: k, width: W, height: H })
            .collect();
        for limit in [0.3, 0.05, 1.0] {
            let want = ScalarValue::Float64(Some(aupro(&maps, limit).unwrap()));
            let mut whole = PixelMetricAccumulator::aupro(limit).unwrap();
            whole.update_batch(&[to_arrow(&stats)]).unwrap();
            assert_eq!(whole.evaluate().unwrap(), want, "limit {limit}");
            for split in [0, 3, 9, 10] {
                let new = || PixelMetricAccumulator::aupro(limit).unwrap();
                let got = merged(new, &[to_arrow(&stats[..split])], &[to_arrow(&stats[split..])]);
                assert_eq!(got, want, "limit {limit}, split at {split}");
            }
        }
    }

    #[test]
    fn hand_computed_and_undefined() {
        // one image 5×1: background values 4, 3, 2, 1 (×1/65535), a 1-pixel region at 3:
        // points (0,0) (¼,0)[4] (½,1)[3: bg and region together] …; to 0.3: interpolate
        // between (¼, 0) and (½, 1): PRO(0.3) = 0.2; area = 0.05·0.2/2; / 0.3
        let s = ImageStats::from_map(&[4, 3, 3, 2, 1], &[false, true, false, false, false], 5, 1).unwrap();
        let mut acc = PixelMetricAccumulator::aupro(0.3).unwrap();
        acc.update_batch(&[to_arrow(&[s])]).unwrap();
        let ScalarValue::Float64(Some(v)) = acc.evaluate().unwrap() else { panic!() };
        assert!((v - 0.05 * 0.2 / 2.0 / 0.3).abs() < 1e-15, "{v}");

        let mut acc = PixelMetricAccumulator::aupro(0.3).unwrap();
        acc.update_batch(&[new_null_array(&stats_data_type(), 2)]).unwrap();
        assert_eq!(acc.evaluate().unwrap(), ScalarValue::Float64(None));
        let normal = ImageStats::from_map(&[1, 2], &[false, false], 2, 1).unwrap();
        acc.update_batch(&[to_arrow(&[normal])]).unwrap();
        assert_eq!(acc.evaluate().unwrap(), ScalarValue::Float64(None));
    }

    #[test]
    fn invalid_limits_and_arguments() {
        for bad in [0.0, 1.01, -1.0, f64::NAN] {
            assert!(PixelMetricAccumulator::aupro(bad).is_err());
        }
        let u = PixelAupro::new();
        assert_eq!(
            u.coerce_types(&[stats_data_type(), DataType::Int32]).unwrap(),
            vec![stats_data_type(), DataType::Float64]
        );
        assert!(u.coerce_types(&[stats_data_type(), DataType::Utf8]).is_err());
        assert!(u.coerce_types(&[DataType::Utf8]).is_err());
        assert!(u.coerce_types(&[]).is_err());
    }
}
