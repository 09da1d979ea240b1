//! `promptad shard`: a folder dataset packed into Parquet image shards.

use std::process::ExitCode;

use anyhow::Result;
use clap::Args;

use crate::data::pack::{pack, PackOptions};
use crate::store::Location;

/// Pack a folder dataset into Parquet image shards.
///
/// Reads an MVTec AD or VisA 1cls folder dataset (or `promptad synth` output), or with
/// --plain-category any folder of images, and writes one Parquet row per image (image_id,
/// category, split, defect_type, gt_label, the encoded image bytes, the encoded mask bytes,
/// source_uri; see schemas/image_shard.json) to OUT/category=<c>/split=<s>/part-<n>.parquet,
/// then OUT/_shards.json, the shard list, last. Bytes are copied as they are, never decoded;
/// memory holds one row group (16 images) at a time. `promptad train` and `promptad score`
/// read the shards directly (--data OUT).
///
/// SRC and OUT (--out) are URLs: a local path, file:///path or s3://bucket/prefix (S3 settings from the
/// AWS_* environment).
#[derive(Debug, Args)]
pub struct ShardArgs {
    /// The folder dataset.
    #[arg(value_name = "SRC")]
    pub src: String,
    /// Where the shards go.
    #[arg(long, value_name = "URL", required_unless_present = "dst")]
    pub out: Option<String>,
    /// Where the shards go, as a positional argument (the old spelling, kept for one release).
    #[arg(value_name = "DST", hide = true, conflicts_with = "out")]
    pub dst: Option<String>,
    /// Images per shard (per category and split); a shard is the unit of scoring work.
    #[arg(long, default_value_t = 256)]
    pub rows_per_shard: usize,
    /// Only these categories, comma-separated [default: all].
    #[arg(long, value_delimiter = ',')]
    pub categories: Option<Vec<String>>,
    /// SRC is a folder of unlabelled images (any layout): pack them all as this category, split
    /// "test", without labels or masks.
    #[arg(long, value_name = "NAME")]
    pub plain_category: Option<String>,
    /// Replace shards already at OUT.
    #[arg(long)]
    pub overwrite: bool,
}

pub fn run(args: ShardArgs) -> Result<ExitCode> {
    let dst = args.out.as_deref().or(args.dst.as_deref()).expect("clap requires --out or DST");
    let (src, dst) = (Location::parse(&args.src)?, Location::parse(dst)?);
    let options = PackOptions {
        rows_per_shard: args.rows_per_shard,
        categories: args.categories.clone(),
        plain_category: args.plain_category.clone(),
        overwrite: args.overwrite,
    };
    let bar = super::progress_bar(0, "packing");
    let list = pack(&src, &dst, &options, |n| bar.inc(n as u64))?;
    bar.finish_and_clear();
    let rows: usize = list.shards.iter().map(|s| s.rows).sum();
    let bytes: u64 = list.shards.iter().map(|s| s.bytes).sum();
    println!("{rows} images ({:.1} MB) packed into {} shards under {dst}", bytes as f64 / 1e6, list.shards.len());
    Ok(ExitCode::SUCCESS)
}
