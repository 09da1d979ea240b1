//! The `maps` table (`schemas/pixel_maps.json`): each scored image's anomaly map, stored in the
//! way the run chose ([`MapsMode`]).
//!
//! Every row carries the patch-level evidence its map is made of (`grid`: `grid_side`² fp32
//! values, 15 × 15 for ViT-B-16-plus-240) and the two parameters that turn it into the map
//! (`map_size`, `sigma`). The map is [`crate::detect::maps::smooth_map`] of the grid, quantised:
//! a deterministic function, so the ~1 KB grid stands for the ~257 KB of a 400 × 400 u16 map.
//! `anomaly_map` holds the quantised map itself only in full mode; [`StoredMap::quantized`] (and
//! the SQL function `rebuild_map`) recompute it otherwise.

use std::sync::Arc;

use arrow::array::{
    ArrayRef, FixedSizeListArray, Float32Array, Float64Array, Int32Array, ListArray, RecordBatch, UInt16Array,
};
use arrow::buffer::{NullBuffer, OffsetBuffer};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use serde::{Deserialize, Serialize};

use super::{batch, Result, RowKeys, SinkError};
use crate::detect::maps::{rebuild_quantized, RebuildError};

/// How a run stores its maps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MapsMode {
    /// The grid and the quantised map (`map_size`² u16 per image).
    Full,
    /// The grid only; the map is rebuilt on demand, to the same u16 values when scored on the CPU.
    #[default]
    Compact,
    /// No map rows at all (scores and statistics only).
    None,
}

impl MapsMode {
    pub fn name(self) -> &'static str {
        match self {
            MapsMode::Full => "full",
            MapsMode::Compact => "compact",
            MapsMode::None => "none",
        }
    }
}

fn map_item() -> Arc<Field> {
    Arc::new(Field::new("item", DataType::UInt16, false))
}

fn grid_item() -> Arc<Field> {
    Arc::new(Field::new_list_field(DataType::Float32, false))
}

/// The maps table for maps of `size` × `size`.
pub fn maps_schema(size: i32) -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("run", DataType::Utf8, false),
        Field::new("image_id", DataType::Utf8, false),
        Field::new("category", DataType::Utf8, false),
        Field::new("map_size", DataType::Int32, false),
        Field::new("sigma", DataType::Float64, false),
        Field::new("grid_side", DataType::Int32, false),
        Field::new("grid", DataType::List(grid_item()), false),
        Field::new("anomaly_map", DataType::FixedSizeList(map_item(), size * size), true),
    ]))
}

/// The maps of a batch of images, in the order of the row keys.
pub struct MapRows<'a> {
    pub map_size: i32,
    pub sigma: f64,
    pub grid_side: i32,
    /// `grid_side`² values per image, row-major.
    pub grids: &'a [Vec<f32>],
    /// The quantised maps (`map_size`² per image), stored only in full mode.
    pub maps: Option<&'a [Vec<u16>]>,
}

pub fn maps_batch(keys: &RowKeys, rows: &MapRows) -> Result<RecordBatch> {
    let n = rows.grids.len();
    let (size, side) = (rows.map_size as usize, rows.grid_side as usize);
    let broken = |source| SinkError::Batch { table: "maps", source };
    if let Some(bad) = rows.grids.iter().find(|g| g.len() != side * side) {
        return Err(broken(arrow::error::ArrowError::InvalidArgumentError(format!(
            "a grid of {} values is not {side}×{side}",
            bad.len()
        ))));
    }
    let grid = ListArray::try_new(
        grid_item(),
        OffsetBuffer::from_lengths(rows.grids.iter().map(Vec::len)),
        Arc::new(Float32Array::from_iter_values(rows.grids.iter().flatten().copied())),
        None,
    )
    .map_err(broken)?;
    let map = match rows.maps {
        Some(maps) => {
            let values = UInt16Array::from_iter_values(maps.iter().flatten().copied());
            FixedSizeListArray::try_new(map_item(), (size * size) as i32, Arc::new(values), None)
        }
        // Null entries still occupy their slots in the child array (zeros, never written).
        None => FixedSizeListArray::try_new(
            map_item(),
            (size * size) as i32,
            Arc::new(UInt16Array::from(vec![0u16; n * size * size])),
            Some(NullBuffer::new_null(n)),
        ),
    }
    .map_err(broken)?;
    let mut columns = keys.columns().to_vec();
    columns.extend([
        Arc::new(Int32Array::from(vec![rows.map_size; n])) as ArrayRef,
        Arc::new(Float64Array::from(vec![rows.sigma; n])),
        Arc::new(Int32Array::from(vec![rows.grid_side; n])),
        Arc::new(grid),
        Arc::new(map),
    ]);
    batch("maps", RecordBatch::try_new(maps_schema(rows.map_size), columns))
}

/// One row of the maps table, read back.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredMap {
    pub map_size: i64,
    pub sigma: f64,
    pub grid_side: i64,
    pub grid: Vec<f32>,
    /// The stored map (full mode), else `None`.
    pub map: Option<Vec<u16>>,
}

impl StoredMap {
    /// The quantised `map_size`² map: the stored one, or rebuilt from the grid.
    pub fn quantized(&self) -> std::result::Result<Vec<u16>, RebuildError> {
        match &self.map {
            Some(map) => Ok(map.clone()),
            None => rebuild_quantized(&self.grid, self.grid_side, self.map_size, self.sigma),
        }
    }
}
