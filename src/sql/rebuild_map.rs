//! `rebuild_map(grid, grid_side, map_size, sigma)`: the quantised anomaly map of a row of the
//! `maps` table, rebuilt from its patch-level grid (`schemas/pixel_maps.json`).
//!
//! A compact run stores each image's grid instead of its map; the map is
//! [`crate::detect::maps::rebuild_quantized`] of it, the same up-sampling, Gaussian and
//! quantisation the scoring ran, on the CPU. A NULL argument gives NULL.

use std::sync::{Arc, LazyLock};

use arrow::array::{Array, ArrayRef, AsArray, ListArray, UInt16Array};
use arrow::buffer::{NullBuffer, OffsetBuffer};
use arrow::datatypes::{DataType, Field, Float32Type, Float64Type, Int64Type};
use datafusion::common::{exec_err, plan_err, Result};
use datafusion::logical_expr::{
    ColumnarValue, DocSection, Documentation, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};

use crate::detect::maps::rebuild_quantized;

const NAME: &str = "rebuild_map";

const DOC_SECTION: DocSection = DocSection {
    include: true,
    label: "Anomaly Maps",
    description: Some("Anomaly maps of compact runs, rebuilt from their stored grids."),
};

static DOCUMENTATION: LazyLock<Documentation> = LazyLock::new(|| {
    Documentation::builder(
        DOC_SECTION,
        "The quantised anomaly map (map_size² u16 values, row-major, q = round(s · 65535)) of a maps \
         row, rebuilt from its grid: bilinear up-sampling to map_size, scipy's Gaussian filter, \
         quantisation. Equal to the stored map of a full run scored on the CPU.",
        "rebuild_map(grid, grid_side, map_size, sigma)",
    )
    .with_sql_example(
        "```sql\n> SELECT image_id, rebuild_map(grid, grid_side, map_size, sigma) AS anomaly_map FROM maps \
         WHERE image_id = 'bottle/test/broken_large/000.png';\n```",
    )
    .with_argument("grid", "The stored grid: a list of grid_side² float32 values.")
    .with_argument("grid_side", "Side of the grid (an integer).")
    .with_argument("map_size", "Side of the map (an integer).")
    .with_argument("sigma", "σ of the Gaussian, in map pixels.")
    .build()
});

fn map_item() -> Arc<Field> {
    Arc::new(Field::new_list_field(DataType::UInt16, true))
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct RebuildMap {
    signature: Signature,
}

impl ScalarUDFImpl for RebuildMap {
    fn name(&self) -> &str {
        NAME
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        let [grid, side, size, sigma] = arg_types else {
            return plan_err!("{NAME} takes 4 arguments (grid, grid_side, map_size, sigma), got {}", arg_types.len());
        };
        if !matches!(grid, DataType::List(_) | DataType::LargeList(_) | DataType::FixedSizeList(..) | DataType::Null) {
            return plan_err!("{NAME}: grid must be a list of numbers, got {grid}");
        }
        for (name, t) in [("grid_side", side), ("map_size", size)] {
            if !(t.is_integer() || t.is_null()) {
                return plan_err!("{NAME}: {name} must be an integer, got {t}");
            }
        }
        if !(sigma.is_numeric() || sigma.is_null()) {
            return plan_err!("{NAME}: sigma must be a number, got {sigma}");
        }
        Ok(vec![
            DataType::List(Arc::new(Field::new_list_field(DataType::Float32, true))),
            DataType::Int64,
            DataType::Int64,
            DataType::Float64,
        ])
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::List(map_item()))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let [grids, sides, sizes, sigmas] = arrays.as_slice() else {
            return exec_err!("{NAME} takes 4 arguments");
        };
        let grids = grids.as_list::<i32>();
        let (sides, sizes) = (sides.as_primitive::<Int64Type>(), sizes.as_primitive::<Int64Type>());
        let sigmas = sigmas.as_primitive::<Float64Type>();
        let mut values = Vec::new();
        let mut lengths = Vec::with_capacity(grids.len());
        let mut valid = Vec::with_capacity(grids.len());
        for row in 0..grids.len() {
            let present = [grids.is_valid(row), sides.is_valid(row), sizes.is_valid(row), sigmas.is_valid(row)];
            if present.contains(&false) {
                lengths.push(0);
                valid.push(false);
                continue;
            }
            let grid = grids.value(row);
            let grid = grid.as_primitive::<Float32Type>();
            if grid.null_count() > 0 {
                return exec_err!("{NAME}: row {row}: the grid holds NULL values");
            }
            let map = rebuild_quantized(grid.values(), sides.value(row), sizes.value(row), sigmas.value(row))
                .or_else(|e| exec_err!("{NAME}: row {row}: {e}"))?;
            lengths.push(map.len());
            valid.push(true);
            values.extend(map);
        }
        let list = ListArray::try_new(
            map_item(),
            OffsetBuffer::from_lengths(lengths),
            Arc::new(UInt16Array::from(values)),
            Some(NullBuffer::from(valid)),
        )?;
        Ok(ColumnarValue::Array(Arc::new(list) as ArrayRef))
    }

    fn documentation(&self) -> Option<&Documentation> {
        Some(&DOCUMENTATION)
    }
}

/// The `rebuild_map` scalar function (a shared instance).
pub fn rebuild_map_udf() -> Arc<ScalarUDF> {
    static INSTANCE: LazyLock<Arc<ScalarUDF>> = LazyLock::new(|| {
        Arc::new(ScalarUDF::from(RebuildMap { signature: Signature::user_defined(Volatility::Immutable) }))
    });
    Arc::clone(&INSTANCE)
}
