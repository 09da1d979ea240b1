//! The Arrow form of [`ImageStats`]: one value per image in the `metric_stats` table, and the
//! state of the `pixel_auroc` / `pixel_aupro` aggregates.
//!
//! ```text
//! stats: Struct<
//!     bins:          List<UInt16>            non-empty score bins (stored u16 values), ascending
//!     bg_count:      List<UInt64>            background pixels per bin
//!     fg_count:      List<UInt64>            defect pixels per bin
//!     region_weight: List<Decimal128(38, 0)> Σ round(2^80 / |region|) over the bin's defect pixels
//!     n_regions:     UInt64                  8-connected ground-truth regions
//! >
//! ```
//! The four lists of a value are parallel (same length). Integers only, so sums are exact in any
//! order; Decimal128(38, 0) holds the u128 fixed-point weights losslessly, survives Parquet
//! (FIXED_LEN_BYTE_ARRAY decimal) and can be summed in SQL. The reader looks children up by name
//! and ignores nullability flags, so a table written by another tool with nullable items reads too.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, Decimal128Array, ListArray, StructArray, UInt16Array, UInt64Array};
use arrow::buffer::OffsetBuffer;
use arrow::datatypes::{DataType, Decimal128Type, Field, Fields, UInt16Type, UInt64Type};

use super::error::MetricError;
use super::stats::{ImageStats, StatsSum, REGION_WEIGHT_MAX};

const BINS: &str = "bins";
const BG_COUNT: &str = "bg_count";
const FG_COUNT: &str = "fg_count";
const REGION_WEIGHT: &str = "region_weight";
const N_REGIONS: &str = "n_regions";

fn stats_fields() -> Fields {
    Fields::from(vec![
        Field::new_list(BINS, Field::new_list_field(DataType::UInt16, false), false),
        Field::new_list(BG_COUNT, Field::new_list_field(DataType::UInt64, false), false),
        Field::new_list(FG_COUNT, Field::new_list_field(DataType::UInt64, false), false),
        Field::new_list(REGION_WEIGHT, Field::new_list_field(DataType::Decimal128(38, 0), false), false),
        Field::new(N_REGIONS, DataType::UInt64, false),
    ])
}

/// The Arrow type of one stats value (see the module documentation).
pub fn stats_data_type() -> DataType {
    DataType::Struct(stats_fields())
}

/// The `stats` column of the `metric_stats` table: [`stats_data_type`], nullable (an image
/// without a map has no stats), with the units in the field metadata.
pub fn stats_schema_field() -> Field {
    Field::new("stats", stats_data_type(), true).with_metadata(
        [
            ("promptad.score_quantization".to_string(), "u16: q = round(clamp(s, 0, 1) * 65535)".to_string()),
            ("promptad.region_weight_unit".to_string(), "2^-80 region (pixel weight round(2^80 / |r|))".to_string()),
            ("promptad.connectivity".to_string(), "8".to_string()),
        ]
        .into(),
    )
}

/// One stats value per item, in the layout of [`stats_data_type`] (no nulls).
pub fn to_arrow(stats: &[ImageStats]) -> ArrayRef {
    Arc::new(to_struct_array(stats))
}

/// [`to_arrow`] as the concrete `StructArray`.
pub fn to_struct_array(stats: &[ImageStats]) -> StructArray {
    let fields = stats_fields();
    let lengths: Vec<usize> = stats.iter().map(|s| s.bins().len()).collect();
    let list = |i: usize, values: ArrayRef| -> ArrayRef {
        let DataType::List(item) = fields[i].data_type() else { unreachable!("list field") };
        Arc::new(ListArray::new(item.clone(), OffsetBuffer::from_lengths(lengths.iter().copied()), values, None))
    };
    let bins = UInt16Array::from_iter_values(stats.iter().flat_map(|s| s.bins().iter().copied()));
    let bg = UInt64Array::from_iter_values(stats.iter().flat_map(|s| s.bg_count().iter().copied()));
    let fg = UInt64Array::from_iter_values(stats.iter().flat_map(|s| s.fg_count().iter().copied()));
    // every weight is ≤ REGION_WEIGHT_MAX < 2^127, so the i128 cast is lossless
    let weight =
        Decimal128Array::from_iter_values(stats.iter().flat_map(|s| s.region_weight().iter().map(|&w| w as i128)))
            .with_precision_and_scale(38, 0)
            .expect("38, 0 is a valid decimal type");
    let n_regions = UInt64Array::from_iter_values(stats.iter().map(|s| s.n_regions()));
    let columns: Vec<ArrayRef> = vec![
        list(0, Arc::new(bins)),
        list(1, Arc::new(bg)),
        list(2, Arc::new(fg)),
        list(3, Arc::new(weight)),
        Arc::new(n_regions),
    ];
    StructArray::new(fields, columns, None)
}

/// Reads a stats column: `None` for a null value. Checks every invariant of [`ImageStats`].
pub fn from_arrow(array: &dyn Array) -> Result<Vec<Option<ImageStats>>, MetricError> {
    let view = StatsView::try_new(array)?;
    (0..view.len())
        .map(|i| {
            if view.is_null(i) {
                return Ok(None);
            }
            let row = view.row(i)?;
            ImageStats::from_parts(
                row.bins.to_vec(),
                row.bg.to_vec(),
                row.fg.to_vec(),
                row.weight.iter().map(|&w| w as u128).collect(),
                row.n_regions,
            )
            .map(Some)
        })
        .collect()
}

/// Checks that `data_type` is a stats type (children by name, nullability ignored); the message
/// says what is wrong.
pub fn check_stats_type(data_type: &DataType) -> Result<(), String> {
    let DataType::Struct(fields) = data_type else {
        return Err(format!("expected a stats Struct ({}), got {data_type}", stats_data_type()));
    };
    let want = stats_fields();
    for f in want.iter() {
        let Some((_, got)) = fields.find(f.name()) else {
            return Err(format!("stats Struct lacks the field `{}`", f.name()));
        };
        let ok = match (f.data_type(), got.data_type()) {
            (DataType::List(a), DataType::List(b)) => match (a.data_type(), b.data_type()) {
                (DataType::Decimal128(_, 0), DataType::Decimal128(_, 0)) => true,
                (x, y) => x == y,
            },
            (a, b) => a == b,
        };
        if !ok {
            return Err(format!("stats field `{}` is {}, expected {}", f.name(), got.data_type(), f.data_type()));
        }
    }
    Ok(())
}

/// One value of a stats column, borrowed.
#[derive(Debug, Clone, Copy)]
pub(crate) struct StatsRow<'a> {
    pub bins: &'a [u16],
    pub bg: &'a [u64],
    pub fg: &'a [u64],
    pub weight: &'a [i128],
    pub n_regions: u64,
}

/// A typed, validated view over a stats column (a `StructArray`, possibly sliced).
pub(crate) struct StatsView<'a> {
    array: &'a StructArray,
    bins: &'a ListArray,
    bg: &'a ListArray,
    fg: &'a ListArray,
    weight: &'a ListArray,
    n_regions: &'a UInt64Array,
}

fn invalid<T>(reason: impl Into<String>) -> Result<T, MetricError> {
    Err(MetricError::InvalidStats { reason: reason.into() })
}

impl<'a> StatsView<'a> {
    pub fn try_new(array: &'a dyn Array) -> Result<StatsView<'a>, MetricError> {
        check_stats_type(array.data_type()).or_else(invalid)?;
        let array = array.as_struct();
        let child = |name: &str| array.column_by_name(name).expect("checked by check_stats_type");
        Ok(StatsView {
            array,
            bins: child(BINS).as_list::<i32>(),
            bg: child(BG_COUNT).as_list::<i32>(),
            fg: child(FG_COUNT).as_list::<i32>(),
            weight: child(REGION_WEIGHT).as_list::<i32>(),
            n_regions: child(N_REGIONS).as_primitive::<UInt64Type>(),
        })
    }

    pub fn len(&self) -> usize {
        self.array.len()
    }

    pub fn is_null(&self, i: usize) -> bool {
        self.array.is_null(i)
    }

    /// Row `i` (not null), with the invariants of [`ImageStats::from_parts`] checked except
    /// the order of the bins (a sum does not need it; `from_arrow` checks it).
    pub fn row(&self, i: usize) -> Result<StatsRow<'a>, MetricError> {
        fn slice<'b, T: arrow::datatypes::ArrowPrimitiveType>(
            list: &'b ListArray,
            i: usize,
            name: &str,
        ) -> Result<&'b [T::Native], MetricError> {
            if list.is_null(i) {
                return invalid(format!("`{name}` is null in a non-null stats value"));
            }
            let offsets = list.value_offsets();
            let (start, end) = (offsets[i] as usize, offsets[i + 1] as usize);
            let values = list.values().as_primitive::<T>();
            if values.null_count() > 0 && (start..end).any(|j| values.is_null(j)) {
                return invalid(format!("`{name}` holds a null item"));
            }
            Ok(&values.values()[start..end])
        }
        let bins = slice::<UInt16Type>(self.bins, i, BINS)?;
        let bg = slice::<UInt64Type>(self.bg, i, BG_COUNT)?;
        let fg = slice::<UInt64Type>(self.fg, i, FG_COUNT)?;
        let weight = slice::<Decimal128Type>(self.weight, i, REGION_WEIGHT)?;
        if self.n_regions.is_null(i) {
            return invalid("`n_regions` is null in a non-null stats value");
        }
        let n_regions = self.n_regions.value(i);
        let n = bins.len();
        if bg.len() != n || fg.len() != n || weight.len() != n {
            return invalid(format!(
                "bins, bg_count, fg_count and region_weight differ in length ({n}, {}, {}, {})",
                bg.len(),
                fg.len(),
                weight.len()
            ));
        }
        let mut has_defects = false;
        for j in 0..n {
            let w = weight[j];
            if w < 0 || w as u128 > REGION_WEIGHT_MAX {
                return invalid(format!("region_weight {w} of bin {} is outside [0, 10^38 - 1]", bins[j]));
            }
            if (fg[j] == 0) != (w == 0) {
                return invalid(format!("bin {} has {} defect pixels but region weight {w}", bins[j], fg[j]));
            }
            has_defects |= fg[j] > 0;
        }
        if has_defects != (n_regions > 0) {
            return invalid(format!("{n_regions} regions but defect pixels present: {has_defects}"));
        }
        Ok(StatsRow { bins, bg, fg, weight, n_regions })
    }

    /// Adds every non-null value to `sum`.
    pub fn add_all_to(&self, sum: &mut StatsSum) -> Result<(), MetricError> {
        for i in 0..self.len() {
            if self.is_null(i) {
                continue;
            }
            let r = self.row(i)?;
            sum.add_parts(r.bins, r.bg, r.fg, r.weight.iter().map(|&w| w as u128), r.n_regions)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::new_null_array;

    fn sample() -> Vec<ImageStats> {
        vec![
            ImageStats::from_map(&[0, 10, 10, 65535], &[false, true, true, false], 2, 2).unwrap(),
            ImageStats::from_map(&[3, 3, 3, 3, 3, 3], &[false; 6], 3, 2).unwrap(),
            ImageStats::default(),
            ImageStats::from_map(&[1, 2, 3, 4], &[true; 4], 2, 2).unwrap(),
        ]
    }

    #[test]
    fn round_trip() {
        let stats = sample();
        let array = to_arrow(&stats);
        assert_eq!(array.data_type(), &stats_data_type());
        assert_eq!(array.len(), 4);
        let back: Vec<ImageStats> = from_arrow(array.as_ref()).unwrap().into_iter().map(Option::unwrap).collect();
        assert_eq!(back, stats);
        // a slice reads as the same values
        let sliced = array.slice(1, 3);
        let back: Vec<ImageStats> = from_arrow(sliced.as_ref()).unwrap().into_iter().map(Option::unwrap).collect();
        assert_eq!(back, stats[1..4]);
    }

    #[test]
    fn nulls_are_none() {
        let nulls = new_null_array(&stats_data_type(), 2);
        assert_eq!(from_arrow(nulls.as_ref()).unwrap(), vec![None, None]);
    }

    #[test]
    fn wrong_types_are_rejected() {
        let not_struct = UInt64Array::from(vec![1u64]);
        assert!(matches!(from_arrow(&not_struct), Err(MetricError::InvalidStats { .. })));
        let DataType::Struct(fields) = stats_data_type() else { unreachable!() };
        let fewer = DataType::Struct(fields.iter().take(4).cloned().collect());
        assert!(check_stats_type(&fewer).unwrap_err().contains("n_regions"));
        // nullable items are accepted
        let nullable = DataType::Struct(
            fields
                .iter()
                .map(|f| match f.data_type() {
                    DataType::List(item) => {
                        Arc::new(Field::new_list(f.name(), Field::new_list_field(item.data_type().clone(), true), true))
                    }
                    _ => f.clone(),
                })
                .collect(),
        );
        assert!(check_stats_type(&nullable).is_ok());
    }

    #[test]
    fn schema_field_carries_units() {
        let f = stats_schema_field();
        assert_eq!(f.name(), "stats");
        assert!(f.is_nullable());
        assert!(f.metadata()["promptad.region_weight_unit"].contains("2^-80"));
    }
}
