//! `promptad shard`: packs a folder dataset at any URL into Parquet image shards
//! ([`super::shard`]), streaming: one row group of images is in memory at a time, and the encoded
//! bytes are copied without decoding.

use bytes::Bytes;
use rayon::prelude::*;

use super::dataset::fetch;
use super::folder::{is_image, list_categories, scan_category, Sample, Split};
use super::shard::{
    write_shard, ImageRecord, ShardInfo, ShardList, ROWS_PER_ROW_GROUP, SHARD_LIST, SHARD_SCHEMA_VERSION,
};
use super::DataError;
use crate::store::Location;

type Result<T, E = DataError> = std::result::Result<T, E>;

#[derive(Debug, Clone)]
pub struct PackOptions {
    pub rows_per_shard: usize,
    /// Only these categories of a folder dataset [default: all].
    pub categories: Option<Vec<String>>,
    /// Pack every image under the source as one unlabelled category of this name (an archive
    /// of production images), split `test`, no labels or masks.
    pub plain_category: Option<String>,
    pub overwrite: bool,
}

/// Packs `src` into shards under `dst`; `_shards.json` is written last, so an interrupted pack
/// is not mistaken for a complete one. `on_images(n)` reports progress.
pub fn pack(
    src: &Location,
    dst: &Location,
    options: &PackOptions,
    mut on_images: impl FnMut(usize),
) -> Result<ShardList> {
    if options.rows_per_shard == 0 {
        return Err(DataError::NoRowsPerShard);
    }
    src.check_reachable()?;
    if dst.exists(SHARD_LIST)? {
        if !options.overwrite {
            return Err(DataError::AlreadyPacked {
                url: dst.url().into(),
                what: format!("image shards ({SHARD_LIST})"),
            });
        }
        dst.delete(SHARD_LIST)?;
    }
    // Shards of an earlier, interrupted or larger pack must not survive next to the new ones.
    for folder in dst.list_dirs("")?.into_iter().filter(|d| d.starts_with("category=")) {
        if !options.overwrite && !dst.list(&folder)?.is_empty() {
            return Err(DataError::AlreadyPacked {
                url: dst.url().into(),
                what: format!("shard files ({folder}/) but no {SHARD_LIST} (an interrupted pack?)"),
            });
        }
        dst.delete_all(&folder)?;
    }
    let mut shards = Vec::new();
    match &options.plain_category {
        Some(category) => {
            let samples = plain_samples(src, category)?;
            if samples.is_empty() {
                return Err(DataError::NoImages { url: src.url().into() });
            }
            shards.extend(pack_split(
                src,
                dst,
                category,
                "test",
                &samples,
                false,
                options.rows_per_shard,
                &mut on_images,
            )?);
        }
        None => {
            let available = list_categories(src)?;
            if available.is_empty() {
                return Err(DataError::NoCategories { url: src.url().into() });
            }
            let categories = options.categories.clone().unwrap_or_else(|| available.clone());
            for category in &categories {
                if !available.contains(category) {
                    return Err(DataError::UnknownCategory {
                        root: src.url().into(),
                        category: category.clone(),
                        available: available.join(", "),
                    });
                }
                let folder = scan_category(src, category)?;
                shards.extend(pack_split(
                    src,
                    dst,
                    category,
                    "train",
                    &folder.train_good,
                    true,
                    options.rows_per_shard,
                    &mut on_images,
                )?);
                shards.extend(pack_split(
                    src,
                    dst,
                    category,
                    "test",
                    &folder.test,
                    true,
                    options.rows_per_shard,
                    &mut on_images,
                )?);
            }
        }
    }
    let list = ShardList { schema_version: SHARD_SCHEMA_VERSION, source: src.url().to_string(), shards };
    dst.put(SHARD_LIST, Bytes::from(serde_json::to_vec_pretty(&list).expect("a shard list serialises")))?;
    Ok(list)
}

#[allow(clippy::too_many_arguments)]
fn pack_split(
    src: &Location,
    dst: &Location,
    category: &str,
    split: &str,
    samples: &[Sample],
    labelled: bool,
    rows_per_shard: usize,
    on_images: &mut impl FnMut(usize),
) -> Result<Vec<ShardInfo>> {
    let mut shards = Vec::new();
    for (index, chunk) in samples.chunks(rows_per_shard).enumerate() {
        // Fetched one row group at a time, in parallel within it.
        let groups = chunk.chunks(ROWS_PER_ROW_GROUP).map(|group| -> Result<Vec<ImageRecord>> {
            group.par_iter().map(|s| fetch(src, s).map(|r| if labelled { r } else { unlabelled(r) })).collect()
        });
        let records = groups.flat_map(|group| match group {
            Ok(records) => records.into_iter().map(Ok).collect::<Vec<_>>(),
            Err(e) => vec![Err(e)],
        });
        let shard = write_shard(dst, category, split, index, records.inspect(|_| on_images(1)))?;
        tracing::info!(shard = %dst.url_of(&shard.path), rows = shard.rows, bytes = shard.bytes, "shard written");
        shards.push(shard);
    }
    Ok(shards)
}

/// Every image below `src`, sorted, as samples of `category` (their labels are dropped by
/// [`unlabelled`]).
fn plain_samples(src: &Location, category: &str) -> Result<Vec<Sample>> {
    Ok(src
        .list("")?
        .iter()
        .map(|o| src.relative(&o.location))
        .filter(|rel| is_image(rel))
        .map(|rel| {
            let id_path = rel.rsplit_once('.').map_or(rel.as_str(), |(s, _)| s).to_string();
            Sample {
                id: format!("{category}/test/{id_path}"),
                category: category.into(),
                split: Split::Test,
                defect_type: String::new(),
                image: rel,
                mask: None,
            }
        })
        .collect())
}

/// An archive image: no defect type, no label.
fn unlabelled(mut record: ImageRecord) -> ImageRecord {
    record.defect_type = None;
    record.gt_label = None;
    record
}
