//! Parquet writers for the scoring outputs: per-image scores, anomaly maps and metric statistics.
//! The column layouts are published in `schemas/` (a test checks every writer against them).
//!
//! A file is written to a local staging file (so memory does not grow with it) and published on
//! `finish` with one atomic store write ([`Location::upload_file`]): readers see the whole file or
//! nothing, and a writer dropped or killed before `finish` publishes nothing.

use std::fs::File;
use std::sync::Arc;

use arrow::array::{ArrayRef, Float64Array, Int64Array, Int8Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;

use crate::metrics::stats::ImageStats;
use crate::store::Location;

mod maps;
pub mod published;

pub use maps::{maps_batch, maps_schema, MapRows, MapsMode, StoredMap};

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("cannot write {url}: {source}")]
    Parquet {
        url: String,
        #[source]
        source: parquet::errors::ParquetError,
    },
    #[error("cannot build a batch of the `{table}` table: {source}")]
    Batch {
        table: &'static str,
        #[source]
        source: arrow::error::ArrowError,
    },
    #[error("cannot stage a file in {dir} (set PROMPTAD_STAGING_DIR to a folder with room): {source}")]
    Staging {
        dir: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

type Result<T, E = SinkError> = std::result::Result<T, E>;

/// One Parquet file being written to `<location>/<rel>`.
pub struct AtomicParquetWriter {
    tmp: tempfile::NamedTempFile,
    writer: ArrowWriter<File>,
    location: Location,
    rel: String,
    rows: usize,
}

impl AtomicParquetWriter {
    pub fn create(location: &Location, rel: &str, schema: SchemaRef) -> Result<Self> {
        Self::with_properties(
            location,
            rel,
            schema,
            WriterProperties::builder()
                .set_compression(Compression::ZSTD(ZstdLevel::try_new(3).expect("zstd level 3 is valid")))
                .build(),
        )
    }

    pub fn with_properties(location: &Location, rel: &str, schema: SchemaRef, props: WriterProperties) -> Result<Self> {
        let tmp = staging_file()?;
        let parquet = |source| SinkError::Parquet { url: location.url_of(rel), source };
        let file = tmp.reopen().map_err(|e| parquet(e.into()))?;
        let writer = ArrowWriter::try_new(file, schema, Some(props)).map_err(parquet)?;
        Ok(Self { tmp, writer, location: location.clone(), rel: rel.to_string(), rows: 0 })
    }

    pub fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        self.rows += batch.num_rows();
        // One row group per batch keeps memory flat for large maps.
        self.writer
            .write(batch)
            .and_then(|()| self.writer.flush())
            .map_err(|source| SinkError::Parquet { url: self.location.url_of(&self.rel), source })
    }

    /// Closes the file and publishes it; returns the rows written.
    pub fn finish(self) -> Result<usize> {
        let url = self.location.url_of(&self.rel);
        self.writer.close().map_err(|source| SinkError::Parquet { url, source })?;
        self.location.upload_file(&self.rel, self.tmp.path())?;
        Ok(self.rows)
    }
}

/// A local staging file, in `PROMPTAD_STAGING_DIR` if set (a volume with room in a pod), else
/// the system's temporary folder; removed when dropped.
pub fn staging_file() -> Result<tempfile::NamedTempFile> {
    let dir = std::env::var_os("PROMPTAD_STAGING_DIR").map(std::path::PathBuf::from).unwrap_or_else(std::env::temp_dir);
    std::fs::create_dir_all(&dir)
        .and_then(|()| tempfile::Builder::new().prefix(".promptad-").suffix(".parquet").tempfile_in(&dir))
        .map_err(|source| SinkError::Staging { dir, source })
}

/// One scored image.
#[derive(Debug, Clone)]
pub struct ScoreRow {
    pub run: String,
    pub image_id: String,
    pub category: String,
    pub split: String,
    /// `good`, the defect type, or null for an unlabelled archive image.
    pub defect_type: Option<String>,
    /// 1 = defect, 0 = good, null = unknown (an unlabelled archive image).
    pub gt_label: Option<i8>,
    pub image_path: String,
    /// The fused image score (`pred_score`, anomalib's name); null for a skipped image.
    pub pred_score: Option<f64>,
    pub text_score: Option<f64>,
    pub visual_max: Option<f64>,
    pub max_pixel_score: Option<f64>,
    /// The calibration's decision (1 = anomalous), null without one.
    pub pred_label: Option<i8>,
    /// Stored map pixels at or above the calibration's pixel threshold, null without one.
    pub anomalous_pixels: Option<i64>,
    pub calibration_version: Option<String>,
    pub model_version: String,
    /// Why the image was skipped (`--skip-bad`), else null.
    pub error: Option<String>,
}

pub fn scores_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("run", DataType::Utf8, false),
        Field::new("image_id", DataType::Utf8, false),
        Field::new("category", DataType::Utf8, false),
        Field::new("split", DataType::Utf8, false),
        Field::new("defect_type", DataType::Utf8, true),
        Field::new("gt_label", DataType::Int8, true),
        Field::new("image_path", DataType::Utf8, false),
        Field::new("pred_score", DataType::Float64, true),
        Field::new("text_score", DataType::Float64, true),
        Field::new("visual_max", DataType::Float64, true),
        Field::new("max_pixel_score", DataType::Float64, true),
        Field::new("pred_label", DataType::Int8, true),
        Field::new("anomalous_pixels", DataType::Int64, true),
        Field::new("calibration_version", DataType::Utf8, true),
        Field::new("model_version", DataType::Utf8, false),
        Field::new("error", DataType::Utf8, true),
    ]))
}

pub fn scores_batch(rows: &[ScoreRow]) -> Result<RecordBatch> {
    let text = |f: fn(&ScoreRow) -> &str| Arc::new(StringArray::from_iter_values(rows.iter().map(f))) as ArrayRef;
    let float = |f: fn(&ScoreRow) -> Option<f64>| Arc::new(Float64Array::from_iter(rows.iter().map(f))) as ArrayRef;
    batch(
        "scores",
        RecordBatch::try_new(
            scores_schema(),
            vec![
                text(|r| &r.run),
                text(|r| &r.image_id),
                text(|r| &r.category),
                text(|r| &r.split),
                Arc::new(StringArray::from_iter(rows.iter().map(|r| r.defect_type.as_deref()))),
                Arc::new(Int8Array::from_iter(rows.iter().map(|r| r.gt_label))),
                text(|r| &r.image_path),
                float(|r| r.pred_score),
                float(|r| r.text_score),
                float(|r| r.visual_max),
                float(|r| r.max_pixel_score),
                Arc::new(Int8Array::from_iter(rows.iter().map(|r| r.pred_label))),
                Arc::new(Int64Array::from_iter(rows.iter().map(|r| r.anomalous_pixels))),
                Arc::new(StringArray::from_iter(rows.iter().map(|r| r.calibration_version.as_deref()))),
                text(|r| &r.model_version),
                Arc::new(StringArray::from_iter(rows.iter().map(|r| r.error.as_deref()))),
            ],
        ),
    )
}

/// The identity columns every output row starts with.
pub struct RowKeys<'a> {
    pub run: &'a str,
    pub image_ids: &'a [String],
    pub categories: &'a [String],
}

impl RowKeys<'_> {
    fn columns(&self) -> [ArrayRef; 3] {
        [
            Arc::new(StringArray::from_iter_values(std::iter::repeat_n(self.run, self.image_ids.len()))),
            Arc::new(StringArray::from_iter_values(self.image_ids)),
            Arc::new(StringArray::from_iter_values(self.categories)),
        ]
    }
}

pub fn stats_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("run", DataType::Utf8, false),
        Field::new("image_id", DataType::Utf8, false),
        Field::new("category", DataType::Utf8, false),
        crate::metrics::stats_arrow::stats_schema_field(),
    ]))
}

pub fn stats_batch(keys: &RowKeys, stats: &[ImageStats]) -> Result<RecordBatch> {
    let mut columns = keys.columns().to_vec();
    columns.push(crate::metrics::stats_arrow::to_arrow(stats));
    batch("metric_stats", RecordBatch::try_new(stats_schema(), columns))
}

fn batch(table: &'static str, built: Result<RecordBatch, arrow::error::ArrowError>) -> Result<RecordBatch> {
    built.map_err(|source| SinkError::Batch { table, source })
}
