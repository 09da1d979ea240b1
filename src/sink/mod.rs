//! Parquet writers for the scoring outputs: per-image scores, anomaly maps and metric statistics.
//! Each file appears atomically: written under a temporary name in its folder, renamed on finish;
//! a writer dropped before `finish` leaves nothing behind.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use arrow::array::{ArrayRef, FixedSizeListArray, Float64Array, Int8Array, RecordBatch, StringArray, UInt16Array};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;

use crate::metrics::stats::ImageStats;

/// One Parquet file being written.
pub struct AtomicParquetWriter {
    tmp: tempfile::NamedTempFile,
    writer: ArrowWriter<File>,
    path: PathBuf,
    rows: usize,
}

impl AtomicParquetWriter {
    pub fn create(path: &Path, schema: SchemaRef) -> Result<Self> {
        let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let tmp = tempfile::Builder::new().prefix(".partial-").suffix(".parquet").tempfile_in(dir)?;
        let props = WriterProperties::builder().set_compression(Compression::ZSTD(ZstdLevel::try_new(3)?)).build();
        let writer = ArrowWriter::try_new(tmp.reopen()?, schema, Some(props))?;
        Ok(Self { tmp, writer, path: path.to_path_buf(), rows: 0 })
    }

    pub fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        self.rows += batch.num_rows();
        self.writer.write(batch).with_context(|| format!("writing {}", self.path.display()))?;
        // One row group per batch keeps memory flat for large maps.
        self.writer.flush()?;
        Ok(())
    }

    /// Closes the file and moves it into place; returns the rows written.
    pub fn finish(self) -> Result<usize> {
        self.writer.close().with_context(|| format!("closing {}", self.path.display()))?;
        self.tmp.persist(&self.path).with_context(|| format!("cannot move {} into place", self.path.display()))?;
        Ok(self.rows)
    }
}

/// One scored image.
#[derive(Debug, Clone)]
pub struct ScoreRow {
    pub image_id: String,
    pub category: String,
    pub split: String,
    pub defect_type: String,
    pub gt_label: i8,
    pub image_path: String,
    /// The fused image score (`pred_score`, anomalib's name); null for a skipped image.
    pub pred_score: Option<f64>,
    pub text_score: Option<f64>,
    pub visual_max: Option<f64>,
    pub max_pixel_score: Option<f64>,
    pub model_version: String,
    /// Why the image was skipped (`--skip-bad`), else null.
    pub error: Option<String>,
}

pub fn scores_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("image_id", DataType::Utf8, false),
        Field::new("category", DataType::Utf8, false),
        Field::new("split", DataType::Utf8, false),
        Field::new("defect_type", DataType::Utf8, false),
        Field::new("gt_label", DataType::Int8, false),
        Field::new("image_path", DataType::Utf8, false),
        Field::new("pred_score", DataType::Float64, true),
        Field::new("text_score", DataType::Float64, true),
        Field::new("visual_max", DataType::Float64, true),
        Field::new("max_pixel_score", DataType::Float64, true),
        Field::new("model_version", DataType::Utf8, false),
        Field::new("error", DataType::Utf8, true),
    ]))
}

pub fn scores_batch(rows: &[ScoreRow]) -> Result<RecordBatch> {
    let text = |f: fn(&ScoreRow) -> &str| Arc::new(StringArray::from_iter_values(rows.iter().map(f))) as ArrayRef;
    let float = |f: fn(&ScoreRow) -> Option<f64>| Arc::new(Float64Array::from_iter(rows.iter().map(f))) as ArrayRef;
    Ok(RecordBatch::try_new(
        scores_schema(),
        vec![
            text(|r| &r.image_id),
            text(|r| &r.category),
            text(|r| &r.split),
            text(|r| &r.defect_type),
            Arc::new(Int8Array::from_iter_values(rows.iter().map(|r| r.gt_label))),
            text(|r| &r.image_path),
            float(|r| r.pred_score),
            float(|r| r.text_score),
            float(|r| r.visual_max),
            float(|r| r.max_pixel_score),
            text(|r| &r.model_version),
            Arc::new(StringArray::from_iter(rows.iter().map(|r| r.error.as_deref()))),
        ],
    )?)
}

/// Maps are `u16` over [0, 1] (`metrics::quantize`), one fixed-size list of `size²` per image,
/// row-major.
pub fn maps_schema(size: i32) -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("image_id", DataType::Utf8, false),
        Field::new("anomaly_map", DataType::FixedSizeList(Arc::new(Field::new("item", DataType::UInt16, false)), size * size), false),
    ]))
}

pub fn maps_batch(size: i32, ids: &[String], maps: &[Vec<u16>]) -> Result<RecordBatch> {
    let values = UInt16Array::from_iter_values(maps.iter().flatten().copied());
    let list = FixedSizeListArray::try_new(Arc::new(Field::new("item", DataType::UInt16, false)), size * size, Arc::new(values), None)?;
    Ok(RecordBatch::try_new(maps_schema(size), vec![Arc::new(StringArray::from_iter_values(ids)), Arc::new(list)])?)
}

pub fn stats_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("image_id", DataType::Utf8, false),
        Field::new("category", DataType::Utf8, false),
        crate::metrics::stats_arrow::stats_schema_field(),
    ]))
}

pub fn stats_batch(ids: &[String], categories: &[String], stats: &[ImageStats]) -> Result<RecordBatch> {
    Ok(RecordBatch::try_new(
        stats_schema(),
        vec![
            Arc::new(StringArray::from_iter_values(ids)),
            Arc::new(StringArray::from_iter_values(categories)),
            crate::metrics::stats_arrow::to_arrow(stats),
        ],
    )?)
}
