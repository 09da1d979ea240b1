//! Datasets at any URL: folder layouts and Parquet image shards, decoding, k-shot selection,
//! synthetic data.

pub mod dataset;
pub mod folder;
pub mod pack;
pub mod prepare;
pub mod shard;
pub mod synth;

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("category {category:?} not found in {root} (a folder dataset needs {category}/train/good images, image shards category={category}/); available: [{available}]")]
    UnknownCategory { root: String, category: String, available: String },
    #[error("defect image {image} has no mask; expected {expected} (MVTec) or the same stem as .png (VisA)")]
    MissingMask { image: String, expected: String },
    #[error("{url}: no dataset there (expected MVTec AD / VisA category folders or image shards from `promptad shard`); check the URL")]
    NoDataset { url: String },
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error("k = {k} shots requested for category {category:?} but its train/good folder has {available} images")]
    NotEnoughShots { category: String, k: usize, available: usize },
    #[error("shot {name:?} is not an image of {category}/train/good (give file names or stems)")]
    UnknownShot { category: String, name: String },
    #[error("image {path}: {message}")]
    Image { path: String, message: String },
    #[error("the shards of {category:?} in {url} hold no normal training images (split=train, gt_label 0)")]
    NoTrainImages { category: String, url: String },
    #[error("image {image} vanished from the shards of {url} while it was being read; was the dataset replaced?")]
    Vanished { image: String, url: String },
    #[error("shard {url} does not exist (was it deleted, or is the shard list stale?)")]
    ShardMissing { url: String },
    #[error("shard {url} is not a readable Parquet file ({source}); it may be truncated or damaged: pack it again")]
    ShardUnreadable {
        url: String,
        #[source]
        source: parquet::errors::ParquetError,
    },
    #[error(
        "shard {url} cannot be read after row {row} ({source}); it may be truncated, damaged or deleted during the run"
    )]
    ShardTruncated {
        url: String,
        row: usize,
        #[source]
        source: parquet::errors::ParquetError,
    },
    #[error("shard {url}: column `{column}` is {found}, expected {expected} (schemas/image_shard.json)")]
    ShardColumn { url: String, column: String, expected: String, found: String },
    #[error("{url} is not a shard list ({source})")]
    BadShardList {
        url: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("{url} has shard schema version {found}, this promptad reads {expected}")]
    ShardListVersion { url: String, found: u32, expected: u32 },
    #[error("cannot build a shard batch: {0}")]
    ShardBatch(#[source] arrow::error::ArrowError),
    #[error(transparent)]
    Sink(#[from] crate::sink::SinkError),
    #[error(
        "{url} is not a description written by `promptad synth` ({source}); fix or remove it, or pass --category-name"
    )]
    BadSynthSummary {
        url: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("rows per shard must be at least 1")]
    NoRowsPerShard,
    #[error("{url} already holds {what}; overwrite it to pack again")]
    AlreadyPacked { url: String, what: String },
    #[error("{url}: no images found (png, jpg, jpeg, bmp, tif, tiff)")]
    NoImages { url: String },
    #[error("{url}: no category folders with train/good images (MVTec AD / VisA layout); a folder of unlabelled images is packed as a plain category")]
    NoCategories { url: String },
}
