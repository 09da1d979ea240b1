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
}
