//! Parquet image shards (`schemas/image_shard.json`): one row per image with its encoded bytes,
//! so an archive of millions of small files becomes a few thousand large objects that stream.
//!
//! ```text
//! <root>/category=<c>/split=<train|test>/part-<nnnnn>.parquet   rows sorted by image_id
//! <root>/_shards.json                                           written last: the shard list
//! ```
//! Encoded bytes are copied as they are (never decoded and re-encoded). Row groups hold
//! [`ROWS_PER_ROW_GROUP`] images, so a reader holds one row group at a time.

// parquet 59 deprecates `ParquetObjectReader` in favour of hand-written `AsyncFileReader`s; it is
// still the reader DataFusion 55 itself uses, and it does what is needed here (ranged GETs).
#![allow(deprecated)]

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, BinaryArray, Int8Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use bytes::Bytes;
use futures::StreamExt;
use parquet::arrow::async_reader::{ParquetObjectReader, ParquetRecordBatchStream};
use parquet::arrow::{ParquetRecordBatchStreamBuilder, ProjectionMask};
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;
use serde::{Deserialize, Serialize};

use super::DataError;
use crate::sink::AtomicParquetWriter;
use crate::store::{block_on, Location};

/// The version of `schemas/image_shard.json` this code writes and reads.
pub const SHARD_SCHEMA_VERSION: u32 = 1;
pub const SHARD_LIST: &str = "_shards.json";
pub const ROWS_PER_ROW_GROUP: usize = 16;

type Result<T, E = DataError> = std::result::Result<T, E>;

pub fn shard_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("image_id", DataType::Utf8, false),
        Field::new("category", DataType::Utf8, false),
        Field::new("split", DataType::Utf8, false),
        Field::new("defect_type", DataType::Utf8, true),
        Field::new("gt_label", DataType::Int8, true),
        Field::new("image", DataType::Binary, false),
        Field::new("mask", DataType::Binary, true),
        Field::new("source_uri", DataType::Utf8, false),
    ]))
}

/// One image of a dataset with its encoded bytes, wherever it came from.
#[derive(Debug, Clone)]
pub struct ImageRecord {
    pub image_id: String,
    pub category: String,
    pub split: String,
    pub defect_type: Option<String>,
    pub gt_label: Option<i8>,
    pub image: Bytes,
    pub mask: Option<Bytes>,
    /// Where the image was first read from (a file path or URL).
    pub source_uri: String,
    /// Where it is read from now, for error messages: `<shard url> row <n>` or the file URL.
    pub origin: String,
}

/// One entry of `_shards.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShardInfo {
    /// Relative to the shard root: `category=<c>/split=<s>/part-<nnnnn>.parquet`.
    pub path: String,
    pub category: String,
    pub split: String,
    pub rows: usize,
    pub bytes: u64,
}

impl ShardInfo {
    /// The shard's name within its category: `<split>-<nnnnn>`.
    pub fn unit_name(&self) -> String {
        let stem = self.path.rsplit('/').next().unwrap_or(&self.path).trim_end_matches(".parquet");
        format!("{}-{}", self.split, stem.trim_start_matches("part-"))
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ShardList {
    pub schema_version: u32,
    pub source: String,
    pub shards: Vec<ShardInfo>,
}

/// The relative path of shard `index` of `category`/`split`.
pub fn shard_path(category: &str, split: &str, index: usize) -> String {
    format!("category={category}/split={split}/part-{index:05}.parquet")
}

/// Writes one shard from `records` (fetched lazily, one row group at a time) and returns its entry.
pub fn write_shard(
    root: &Location,
    category: &str,
    split: &str,
    index: usize,
    records: impl Iterator<Item = Result<ImageRecord>>,
) -> Result<ShardInfo> {
    let path = shard_path(category, split, index);
    // The images are already compressed: Parquet compression would only cost time.
    let props = WriterProperties::builder()
        .set_compression(Compression::UNCOMPRESSED)
        .set_max_row_group_row_count(Some(ROWS_PER_ROW_GROUP))
        .build();
    let mut writer = AtomicParquetWriter::with_properties(root, &path, shard_schema(), props)?;
    let mut group = Vec::with_capacity(ROWS_PER_ROW_GROUP);
    let mut bytes = 0u64;
    for record in records {
        let record = record?;
        bytes += record.image.len() as u64 + record.mask.as_ref().map_or(0, |m| m.len() as u64);
        group.push(record);
        if group.len() == ROWS_PER_ROW_GROUP {
            writer.write(&shard_batch(&group)?)?;
            group.clear();
        }
    }
    if !group.is_empty() {
        writer.write(&shard_batch(&group)?)?;
    }
    let rows = writer.finish()?;
    Ok(ShardInfo { path, category: category.into(), split: split.into(), rows, bytes })
}

fn shard_batch(records: &[ImageRecord]) -> Result<RecordBatch> {
    let text = |f: fn(&ImageRecord) -> &str| Arc::new(StringArray::from_iter_values(records.iter().map(f))) as ArrayRef;
    RecordBatch::try_new(
        shard_schema(),
        vec![
            text(|r| &r.image_id),
            text(|r| &r.category),
            text(|r| &r.split),
            Arc::new(StringArray::from_iter(records.iter().map(|r| r.defect_type.as_deref()))),
            Arc::new(Int8Array::from_iter(records.iter().map(|r| r.gt_label))),
            Arc::new(BinaryArray::from_iter_values(records.iter().map(|r| r.image.as_ref()))),
            Arc::new(BinaryArray::from_iter(records.iter().map(|r| r.mask.as_deref()))),
            text(|r| &r.source_uri),
        ],
    )
    .map_err(DataError::ShardBatch)
}

/// The shards under `root`: from `_shards.json` when it exists, else by listing
/// `category=*/split=*/part-*.parquet` (a shard set written by another tool), with each shard's
/// row count read from its Parquet footer.
pub fn list_shards(root: &Location) -> Result<Vec<ShardInfo>> {
    if let Some(list) = read_shard_list(root)? {
        return Ok(list.shards);
    }
    let mut shards = Vec::new();
    for object in root.list("")? {
        let rel = root.relative(&object.location);
        let parts: Vec<&str> = rel.split('/').collect();
        let (Some(category), Some(split)) = (
            parts.first().and_then(|p| p.strip_prefix("category=")),
            parts.get(1).and_then(|p| p.strip_prefix("split=")),
        ) else {
            continue;
        };
        if parts.len() == 3 && parts[2].starts_with("part-") && parts[2].ends_with(".parquet") {
            shards.push(ShardInfo {
                path: rel.clone(),
                category: category.into(),
                split: split.into(),
                rows: 0,
                bytes: object.size,
            });
        }
    }
    let rows = footer_row_counts(root, &shards)?;
    for (shard, rows) in shards.iter_mut().zip(rows) {
        shard.rows = rows;
    }
    Ok(shards)
}

/// Footer reads of a listing done at once: enough in flight to hide the latency of a remote store.
const FOOTERS_IN_FLIGHT: usize = 16;

/// The row count of each shard from its Parquet footer (a ranged read per shard, no data read).
fn footer_row_counts(root: &Location, shards: &[ShardInfo]) -> Result<Vec<usize>> {
    block_on(async {
        futures::stream::iter(shards)
            .map(|shard| async move {
                let url = root.url_of(&shard.path);
                let reader = ParquetObjectReader::new(root.store(), root.path(&shard.path)).with_file_size(shard.bytes);
                let builder = ParquetRecordBatchStreamBuilder::new(reader)
                    .await
                    .map_err(|source| DataError::ShardUnreadable { url: url.clone(), source })?;
                let rows = builder.metadata().file_metadata().num_rows();
                usize::try_from(rows).map_err(|_| DataError::ShardColumn {
                    url,
                    column: "(footer row count)".into(),
                    expected: "a row count of 0 or more".into(),
                    found: rows.to_string(),
                })
            })
            .buffered(FOOTERS_IN_FLIGHT)
            .collect::<Vec<Result<usize>>>()
            .await
            .into_iter()
            .collect()
    })
}

pub fn read_shard_list(root: &Location) -> Result<Option<ShardList>> {
    let Some(bytes) = root.get_if_exists(SHARD_LIST)? else { return Ok(None) };
    let url = root.url_of(SHARD_LIST);
    let list: ShardList =
        serde_json::from_slice(&bytes).map_err(|source| DataError::BadShardList { url: url.clone(), source })?;
    if list.schema_version != SHARD_SCHEMA_VERSION {
        return Err(DataError::ShardListVersion { url, found: list.schema_version, expected: SHARD_SCHEMA_VERSION });
    }
    Ok(Some(list))
}

/// Reads a shard in batches of up to `batch_rows` records. Without `with_bytes` the `image` and
/// `mask` columns are not fetched (their fields are left empty): enough to choose shots.
pub struct ShardReader {
    stream: ParquetRecordBatchStream<ParquetObjectReader>,
    url: String,
    next_row: usize,
}

impl ShardReader {
    pub fn open(root: &Location, shard: &str, batch_rows: usize, with_bytes: bool) -> Result<Self> {
        let url = root.url_of(shard);
        let meta = root.head(shard)?.ok_or_else(|| DataError::ShardMissing { url: url.clone() })?;
        let reader = ParquetObjectReader::new(root.store(), root.path(shard)).with_file_size(meta.size);
        let stream = block_on(async {
            let builder = ParquetRecordBatchStreamBuilder::new(reader)
                .await
                .map_err(|source| DataError::ShardUnreadable { url: url.clone(), source })?;
            let schema = builder.schema().clone();
            check_schema(&schema, &url)?;
            let wanted: Vec<usize> = schema
                .fields()
                .iter()
                .enumerate()
                .filter(|(_, f)| with_bytes || !matches!(f.name().as_str(), "image" | "mask"))
                .filter(|(_, f)| shard_schema().field_with_name(f.name()).is_ok())
                .map(|(i, _)| i)
                .collect();
            let mask = ProjectionMask::roots(builder.parquet_schema(), wanted);
            builder
                .with_projection(mask)
                .with_batch_size(batch_rows.max(1))
                .build()
                .map_err(|source| DataError::ShardUnreadable { url: url.clone(), source })
        })?;
        Ok(Self { stream, url, next_row: 0 })
    }

    fn convert(&mut self, batch: &RecordBatch) -> Result<Vec<ImageRecord>> {
        let url = &self.url;
        let text = |name: &str| -> Result<Option<&StringArray>> {
            Ok(batch.column_by_name(name).map(|c| c.as_string::<i32>()))
        };
        let need = |name: &str| -> Result<&StringArray> {
            text(name)?.ok_or_else(|| DataError::ShardColumn {
                url: url.clone(),
                column: name.into(),
                expected: "Utf8".into(),
                found: "nothing (no such column)".into(),
            })
        };
        let (ids, categories, splits, sources) =
            (need("image_id")?, need("category")?, need("split")?, need("source_uri")?);
        let defect_types = text("defect_type")?;
        let labels = batch.column_by_name("gt_label").map(|c| c.as_primitive::<arrow::datatypes::Int8Type>());
        let images = batch.column_by_name("image").map(|c| c.as_binary::<i32>());
        let masks = batch.column_by_name("mask").map(|c| c.as_binary::<i32>());
        let first = self.next_row;
        let records = (0..batch.num_rows())
            .map(|i| ImageRecord {
                image_id: ids.value(i).to_string(),
                category: categories.value(i).to_string(),
                split: splits.value(i).to_string(),
                defect_type: defect_types.filter(|a| a.is_valid(i)).map(|a| a.value(i).to_string()),
                gt_label: labels.filter(|a| a.is_valid(i)).map(|a| a.value(i)),
                image: images.map(|a| Bytes::copy_from_slice(a.value(i))).unwrap_or_default(),
                mask: masks.filter(|a| a.is_valid(i)).map(|a| Bytes::copy_from_slice(a.value(i))),
                source_uri: sources.value(i).to_string(),
                origin: format!("{url} row {}", first + i),
            })
            .collect();
        self.next_row += batch.num_rows();
        Ok(records)
    }
}

impl Iterator for ShardReader {
    type Item = Result<Vec<ImageRecord>>;

    fn next(&mut self) -> Option<Self::Item> {
        let batch = block_on(self.stream.next())?;
        Some(
            batch
                .map_err(|source| DataError::ShardTruncated { url: self.url.clone(), row: self.next_row, source })
                .and_then(|b| self.convert(&b)),
        )
    }
}

/// Every column of `schemas/image_shard.json` present with its type.
fn check_schema(schema: &Schema, url: &str) -> Result<()> {
    for expected in shard_schema().fields() {
        let column_error = |found: String| DataError::ShardColumn {
            url: url.into(),
            column: expected.name().clone(),
            expected: expected.data_type().to_string(),
            found,
        };
        let Ok(found) = schema.field_with_name(expected.name()) else {
            return Err(column_error("missing".into()));
        };
        if found.data_type() != expected.data_type() {
            return Err(column_error(found.data_type().to_string()));
        }
    }
    Ok(())
}
