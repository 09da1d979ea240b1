//! Typed reads of a session's tables for the commands that act on results (`calibrate`,
//! `report`): one category's scored images, its summed pixel statistics, and the maps of a few
//! chosen images. Each reads only the columns and rows it returns: filters on `category` and
//! `image_id` go to the Parquet scan, so with `pushdown_filters` on (see [`selective_config`]) the
//! maps of the other images are skipped rather than decoded.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use arrow::datatypes::{DataType, Field, Float32Type, Float64Type, Int64Type, Int8Type, UInt16Type};
use datafusion::prelude::{col, lit, SessionConfig, SessionContext};

use super::{arrow_error, datafusion_error, Result, SqlError};
use crate::metrics::{from_arrow, ImageStats, StatsSum};
use crate::sink::StoredMap;

/// A session configuration for reading a few rows of large tables: row filters are evaluated
/// inside the Parquet scan, before the other columns are decoded.
pub fn selective_config() -> SessionConfig {
    SessionConfig::new().set_bool("datafusion.execution.parquet.pushdown_filters", true)
}

/// One scored image (rows recorded with an error are left out).
#[derive(Debug, Clone, PartialEq)]
pub struct ImageResult {
    pub image_id: String,
    pub defect_type: Option<String>,
    pub gt_label: Option<i8>,
    pub image_path: String,
    pub pred_score: f64,
    pub pred_label: Option<i8>,
    pub anomalous_pixels: Option<i64>,
    pub model_version: String,
    pub calibration_version: Option<String>,
}

/// The categories of the `scores` table, sorted.
pub async fn categories(ctx: &SessionContext) -> Result<Vec<String>> {
    distinct_strings(ctx, "category").await
}

/// The run ids of the `scores` table, sorted.
pub async fn runs(ctx: &SessionContext) -> Result<Vec<String>> {
    distinct_strings(ctx, "run").await
}

/// The one run of a session over `out` (one opened with [`super::RunSelection::One`] or
/// `Latest`); several runs ([`super::RunSelection::All`]) are [`SqlError::SeveralRuns`].
pub async fn single_run(ctx: &SessionContext, out: &str) -> Result<String> {
    match runs(ctx).await?.as_slice() {
        [one] => Ok(one.clone()),
        many => Err(SqlError::SeveralRuns { out: out.to_string(), runs: many.to_vec() }),
    }
}

async fn distinct_strings(ctx: &SessionContext, column: &'static str) -> Result<Vec<String>> {
    let batches = ctx
        .table("scores")
        .await
        .and_then(|t| t.select_columns(&[column]))
        .and_then(|t| t.distinct())
        .map_err(datafusion_error("listing the scores table"))?
        .collect()
        .await
        .map_err(datafusion_error("listing the scores table"))?;
    let mut values: Vec<String> = Vec::new();
    for batch in &batches {
        values.extend(strings(batch, "scores", column)?.into_iter().flatten());
    }
    values.sort();
    Ok(values)
}

/// The scored images of `category`, sorted by image id.
pub async fn image_results(ctx: &SessionContext, category: &str) -> Result<Vec<ImageResult>> {
    const COLUMNS: [&str; 9] = [
        "image_id",
        "defect_type",
        "gt_label",
        "image_path",
        "pred_score",
        "pred_label",
        "anomalous_pixels",
        "model_version",
        "calibration_version",
    ];
    let what = "reading the scores table";
    let batches = ctx
        .table("scores")
        .await
        .and_then(|t| t.filter(col("category").eq(lit(category)).and(col("pred_score").is_not_null())))
        .and_then(|t| t.select_columns(&COLUMNS))
        .map_err(datafusion_error(what))?
        .collect()
        .await
        .map_err(datafusion_error(what))?;
    let mut images = Vec::new();
    for batch in &batches {
        let text = |c| strings(batch, "scores", c);
        let (ids, defects, paths, models, calibrations) = (
            text("image_id")?,
            text("defect_type")?,
            text("image_path")?,
            text("model_version")?,
            text("calibration_version")?,
        );
        let gt = typed::<Int8Type>(batch, "scores", "gt_label", &DataType::Int8)?;
        let scores = typed::<Float64Type>(batch, "scores", "pred_score", &DataType::Float64)?;
        let labels = typed::<Int8Type>(batch, "scores", "pred_label", &DataType::Int8)?;
        let pixels = typed::<Int64Type>(batch, "scores", "anomalous_pixels", &DataType::Int64)?;
        for i in 0..batch.num_rows() {
            images.push(ImageResult {
                image_id: ids[i].clone().unwrap_or_default(),
                defect_type: defects[i].clone(),
                gt_label: gt[i],
                image_path: paths[i].clone().unwrap_or_default(),
                pred_score: scores[i].unwrap_or(f64::NAN),
                pred_label: labels[i],
                anomalous_pixels: pixels[i],
                model_version: models[i].clone().unwrap_or_default(),
                calibration_version: calibrations[i].clone(),
            });
        }
    }
    images.sort_by(|a, b| a.image_id.cmp(&b.image_id));
    Ok(images)
}

/// The pixel statistics of every labelled image of `category`, summed (empty without any).
pub async fn pixel_stats(ctx: &SessionContext, category: &str) -> Result<ImageStats> {
    let what = "reading the metric_stats table";
    let mut stream = ctx
        .table("metric_stats")
        .await
        .and_then(|t| t.filter(col("category").eq(lit(category))))
        .and_then(|t| t.select_columns(&["stats"]))
        .map_err(datafusion_error(what))?
        .execute_stream()
        .await
        .map_err(datafusion_error(what))?;
    let mut sum = StatsSum::new();
    use futures::StreamExt;
    while let Some(batch) = stream.next().await {
        let batch = batch.map_err(datafusion_error(what))?;
        let column = batch.column_by_name("stats").ok_or_else(|| missing("metric_stats", "stats", "stats struct"))?;
        for stats in from_arrow(column.as_ref())?.into_iter().flatten() {
            sum.add(&stats)?;
        }
    }
    Ok(sum.finish()?)
}

/// The stored (u16) maps of the images `ids` of `category`, by image id (rebuilt from their grid
/// where the run stored compact maps); an id without a map (`--maps none`) is absent.
pub async fn maps_of(ctx: &SessionContext, category: &str, ids: &[String]) -> Result<HashMap<String, Vec<u16>>> {
    let what = "reading the maps table";
    if ids.is_empty() {
        return Ok(HashMap::new());
    }
    let wanted = col("image_id").in_list(ids.iter().map(|id| lit(id.as_str())).collect(), false);
    let batches = ctx
        .table("maps")
        .await
        .and_then(|t| t.filter(col("category").eq(lit(category)).and(wanted)))
        .and_then(|t| t.select_columns(&["image_id", "map_size", "sigma", "grid_side", "grid", "anomaly_map"]))
        .map_err(datafusion_error(what))?
        .collect()
        .await
        .map_err(datafusion_error(what))?;
    let mut maps = HashMap::new();
    for batch in &batches {
        for (id, stored) in stored_maps(batch)? {
            let map = stored.quantized().map_err(|source| SqlError::Rebuild { image_id: id.clone(), source })?;
            maps.insert(id, map);
        }
    }
    Ok(maps)
}

/// The rows of a batch of the maps table (columns image_id, map_size, sigma, grid_side, grid,
/// anomaly_map).
fn stored_maps(batch: &RecordBatch) -> Result<Vec<(String, StoredMap)>> {
    let ids = strings(batch, "maps", "image_id")?;
    let sizes = typed::<Int64Type>(batch, "maps", "map_size", &DataType::Int64)?;
    let sigmas = typed::<Float64Type>(batch, "maps", "sigma", &DataType::Float64)?;
    let sides = typed::<Int64Type>(batch, "maps", "grid_side", &DataType::Int64)?;
    let grids =
        column(batch, "maps", "grid", &DataType::List(Arc::new(Field::new_list_field(DataType::Float32, true))))?;
    let grids = grids.as_list_opt::<i32>().ok_or_else(|| missing("maps", "grid", "list of float32"))?;
    let column = batch.column_by_name("anomaly_map").ok_or_else(|| missing("maps", "anomaly_map", "list"))?;
    let list = column.as_fixed_size_list_opt().ok_or_else(|| missing("maps", "anomaly_map", "fixed-size list"))?;
    let mut rows = Vec::with_capacity(ids.len());
    for (i, id) in ids.into_iter().enumerate() {
        let map = match list.is_valid(i) {
            true => Some(
                list.value(i)
                    .as_primitive_opt::<UInt16Type>()
                    .ok_or_else(|| missing("maps", "anomaly_map", "list of uint16"))?
                    .values()
                    .to_vec(),
            ),
            false => None,
        };
        let grid = grids.value(i);
        let grid = grid.as_primitive_opt::<Float32Type>().ok_or_else(|| missing("maps", "grid", "list of float32"))?;
        let number = |v: Option<i64>, name| v.ok_or_else(|| missing("maps", name, "a non-null number"));
        rows.push((
            id.unwrap_or_default(),
            StoredMap {
                map_size: number(sizes[i], "map_size")?,
                sigma: sigmas[i].ok_or_else(|| missing("maps", "sigma", "a non-null number"))?,
                grid_side: number(sides[i], "grid_side")?,
                grid: grid.values().to_vec(),
                map,
            },
        ));
    }
    Ok(rows)
}

fn missing(table: &'static str, column: &'static str, expected: &'static str) -> SqlError {
    SqlError::Column { table, column, expected }
}

fn column(batch: &RecordBatch, table: &'static str, name: &'static str, to: &DataType) -> Result<ArrayRef> {
    let c = batch.column_by_name(name).ok_or_else(|| missing(table, name, "a column"))?;
    arrow::compute::cast(c, to).map_err(arrow_error("converting a column"))
}

fn strings(batch: &RecordBatch, table: &'static str, name: &'static str) -> Result<Vec<Option<String>>> {
    let c = column(batch, table, name, &DataType::Utf8)?;
    Ok(c.as_string::<i32>().iter().map(|v| v.map(str::to_string)).collect())
}

fn typed<T: arrow::datatypes::ArrowPrimitiveType>(
    batch: &RecordBatch,
    table: &'static str,
    name: &'static str,
    to: &DataType,
) -> Result<Vec<Option<T::Native>>> {
    let c = column(batch, table, name, to)?;
    let c = c.as_primitive_opt::<T>().ok_or_else(|| missing(table, name, "a number"))?;
    Ok((0..c.len()).map(|i| c.is_valid(i).then(|| c.value(i))).collect())
}
