//! SQL over a scored run: the run's tables in a DataFusion session with the metric functions,
//! and the canned evaluation query (`promptad eval`).
//!
//! [`session`] registers the three Hive-partitioned tables that `promptad score` writes under a run
//! directory (see [`crate::pipeline::score::table_file`]):
//!
//! | table          | columns                                                                   |
//! |----------------|---------------------------------------------------------------------------|
//! | `scores`       | image_id, split, defect_type, gt_label, image_path, pred_score, text_score, visual_max, max_pixel_score, model_version, error, category |
//! | `maps`         | image_id, anomaly_map (FixedSizeList<UInt16>, the quantised map), category |
//! | `metric_stats` | image_id, stats (per-image [`crate::metrics::ImageStats`]), category      |
//!
//! `category` is the Hive partition key (`<table>/category=<c>/part-*.parquet`). The `scores` and
//! `metric_stats` files also hold it as a column; each table is registered with the file schema
//! *without* that column plus the partition column, so `category` appears once and comes from the
//! path (the Parquet reader reads columns by name and skips the copy in the file). Only files named
//! `part-*.parquet` are read: the `.partial-*.parquet` files of a scoring in progress are not.
//!
//! The metric aggregates of [`crate::metrics`] are registered too: `image_auroc(score, label)`,
//! `image_aupr(score, label)`, `pixel_auroc(stats)`, `pixel_aupro(stats [, fpr_limit])`.
//!
//! [`eval`] runs [`EVAL_PER_CATEGORY_SQL`] (one row per category), then [`EVAL_MEAN_SQL`] over
//! its result (the mean row), and returns both as one batch with the schema of [`EvalRow`].
//!
//! Only local run directories are supported: a path or a `file://` URL. `s3://` is not yet.

mod output;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{anyhow, bail, Context, Result};
use arrow::array::{Array, AsArray, RecordBatch};
use arrow::compute::concat_batches;
use arrow::datatypes::{DataType, Float64Type, Int64Type, Schema};
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl};
use datafusion::execution::context::SQLOptions;
use datafusion::prelude::{SessionConfig, SessionContext};

pub use output::{write_batches, Format};

/// The tables of a scored run, in the order they are registered.
pub const TABLES: [&str; 3] = ["scores", "maps", "metric_stats"];

/// The Hive partition column of every table.
pub const PARTITION_COLUMN: &str = "category";

/// Files of a table that are read (relative to `<table>/category=<c>/`); what `promptad score`
/// writes is `part-00000.parquet`.
const FILE_GLOB: &str = "part-*.parquet";

/// Name under which [`EVAL_MEAN_SQL`] sees the result of [`EVAL_PER_CATEGORY_SQL`].
pub const EVAL_PER_CATEGORY_TABLE: &str = "eval_per_category";

/// The evaluation, step 1: one row per category of `scores`, ordered by category.
///
/// Image metrics over the images with a score (`image_auroc` / `image_aupr` skip NULL scores,
/// i.e. the images recorded with an error by `--skip-bad`); pixel metrics over the per-image
/// statistics of the category; AUPRO integrated to FPR 0.3. A metric that is undefined (one class
/// missing) is NULL. `n_images` counts every row, skipped images included; `n_anomalous` the rows
/// with `gt_label = 1`; `n_skipped` the rows without a score.
pub const EVAL_PER_CATEGORY_SQL: &str = "\
WITH images AS (
    SELECT category,
           image_auroc(pred_score, gt_label)     AS image_auroc,
           image_aupr(pred_score, gt_label)      AS image_aupr,
           COUNT(*)                              AS n_images,
           COUNT(*) FILTER (WHERE gt_label = 1)  AS n_anomalous,
           COUNT(*) - COUNT(pred_score)          AS n_skipped
    FROM scores
    GROUP BY category
),
pixels AS (
    SELECT category,
           pixel_auroc(stats)       AS pixel_auroc,
           pixel_aupro(stats, 0.3)  AS pixel_aupro
    FROM metric_stats
    GROUP BY category
)
SELECT i.category, i.image_auroc, i.image_aupr, p.pixel_auroc, p.pixel_aupro,
       i.n_images, i.n_anomalous, i.n_skipped
FROM images i LEFT JOIN pixels p ON i.category = p.category
ORDER BY i.category";

/// The evaluation, step 2: the `mean` row over the result of [`EVAL_PER_CATEGORY_SQL`]
/// (registered as [`EVAL_PER_CATEGORY_TABLE`]): each metric averaged over the categories where it
/// is defined (`AVG` ignores NULLs; NULL if it is defined nowhere), the counts totalled.
pub const EVAL_MEAN_SQL: &str = "\
SELECT 'mean' AS category,
       AVG(image_auroc) AS image_auroc, AVG(image_aupr) AS image_aupr,
       AVG(pixel_auroc) AS pixel_auroc, AVG(pixel_aupro) AS pixel_aupro,
       SUM(n_images) AS n_images, SUM(n_anomalous) AS n_anomalous, SUM(n_skipped) AS n_skipped
FROM eval_per_category";

/// Statements [`query`] refuses: the tables of a run are read-only here.
pub fn read_only() -> SQLOptions {
    SQLOptions::new().with_allow_ddl(false).with_allow_dml(false).with_allow_statements(false)
}

/// A session over the run at `run_dir` (a local path or a `file://` URL) with the default
/// configuration; see [`session_with_config`].
pub async fn session(run_dir: &Path) -> Result<SessionContext> {
    session_with_config(run_dir, SessionConfig::new()).await
}

/// A session over the run at `run_dir` with `config` (information_schema is switched on, so
/// `SHOW TABLES` and `SHOW COLUMNS FROM scores` work): the tables [`TABLES`] and the metric
/// functions registered. Errors name what is missing when `run_dir` is not a scored run.
pub async fn session_with_config(run_dir: &Path, config: SessionConfig) -> Result<SessionContext> {
    let dir = local_dir(run_dir)?;
    check_run(&dir)?;
    let ctx = SessionContext::new_with_config(config.with_information_schema(true));
    crate::metrics::register_all(&ctx);
    for table in TABLES {
        register_table(&ctx, &dir, table).await.with_context(|| format!("cannot register the `{table}` table of {}", dir.display()))?;
    }
    Ok(ctx)
}

/// Runs one read-only SQL statement and collects its result.
pub async fn query(ctx: &SessionContext, sql: &str) -> Result<(Arc<Schema>, Vec<RecordBatch>)> {
    let frame = ctx.sql_with_options(sql, read_only()).await.map_err(|e| anyhow!("{e}")).with_context(|| {
        let config = ctx.copied_config();
        let names = &config.options().catalog;
        let mut tables = ctx.catalog(&names.default_catalog).and_then(|c| c.schema(&names.default_schema)).map(|s| s.table_names()).unwrap_or_default();
        tables.sort();
        format!("the query cannot be planned (tables: {})", tables.join(", "))
    })?;
    let schema = Arc::new(frame.schema().as_arrow().clone());
    let batches = frame.collect().await.map_err(|e| anyhow!("{e}")).context("the query failed")?;
    Ok((schema, batches))
}

/// The evaluation table: one row per category ([`EVAL_PER_CATEGORY_SQL`]), then the `mean` row
/// ([`EVAL_MEAN_SQL`]). Columns: category (Utf8), image_auroc, image_aupr, pixel_auroc,
/// pixel_aupro (Float64, NULL where undefined), n_images, n_anomalous, n_skipped (Int64).
pub async fn eval(ctx: &SessionContext) -> Result<RecordBatch> {
    let (schema, batches) = query(ctx, EVAL_PER_CATEGORY_SQL).await.context("evaluation query (per category)")?;
    let per_category = concat_batches(&schema, &batches)?;
    // The mean runs in a session of its own over the materialised rows: the caller's session is
    // left as it was, and the per-category aggregates are not computed a second time.
    let mean_ctx = SessionContext::new_with_config(ctx.copied_config());
    mean_ctx.register_batch(EVAL_PER_CATEGORY_TABLE, per_category.clone())?;
    let (_, mean) = query(&mean_ctx, EVAL_MEAN_SQL).await.context("evaluation query (mean)")?;
    let mean = concat_batches(&mean.first().map(|b| b.schema()).unwrap_or_else(|| schema.clone()), &mean)?;
    // Same column types by construction; nullability is the per-category schema's
    let mean = RecordBatch::try_new(schema.clone(), mean.columns().to_vec()).context("the mean row does not match the per-category rows")?;
    Ok(concat_batches(&schema, [&per_category, &mean])?)
}

/// One row of [`eval`]'s table.
#[derive(Debug, Clone, PartialEq)]
pub struct EvalRow {
    pub category: String,
    pub image_auroc: Option<f64>,
    pub image_aupr: Option<f64>,
    pub pixel_auroc: Option<f64>,
    pub pixel_aupro: Option<f64>,
    pub n_images: i64,
    pub n_anomalous: i64,
    pub n_skipped: i64,
}

impl EvalRow {
    /// Reads the rows of [`eval`]'s table.
    pub fn from_batch(batch: &RecordBatch) -> Result<Vec<EvalRow>> {
        let column = |name: &str| batch.column_by_name(name).ok_or_else(|| anyhow!("the evaluation table has no column `{name}`"));
        let float = |name: &str| -> Result<Vec<Option<f64>>> {
            let c = column(name)?;
            let c = c.as_primitive_opt::<Float64Type>().ok_or_else(|| anyhow!("`{name}` is {}, not Float64", c.data_type()))?;
            Ok(c.iter().collect())
        };
        let count = |name: &str| -> Result<Vec<i64>> {
            let c = column(name)?;
            let c = c.as_primitive_opt::<Int64Type>().ok_or_else(|| anyhow!("`{name}` is {}, not Int64", c.data_type()))?;
            Ok(c.iter().map(|v| v.unwrap_or(0)).collect())
        };
        let category = arrow::compute::cast(column("category")?, &DataType::Utf8)?;
        let category = category.as_string::<i32>();
        let (ia, ip, pa, pp) = (float("image_auroc")?, float("image_aupr")?, float("pixel_auroc")?, float("pixel_aupro")?);
        let (ni, na, ns) = (count("n_images")?, count("n_anomalous")?, count("n_skipped")?);
        Ok((0..batch.num_rows())
            .map(|i| EvalRow {
                category: category.value(i).to_string(),
                image_auroc: ia[i],
                image_aupr: ip[i],
                pixel_auroc: pa[i],
                pixel_aupro: pp[i],
                n_images: ni[i],
                n_anomalous: na[i],
                n_skipped: ns[i],
            })
            .collect())
    }
}

/// The local directory `run_dir` names: a path, or a `file://` URL (percent-decoded).
pub fn local_dir(run_dir: &Path) -> Result<PathBuf> {
    let text = run_dir.to_string_lossy();
    let Some((scheme, _)) = text.split_once("://").filter(|(s, _)| is_scheme(s)) else {
        return Ok(run_dir.to_path_buf());
    };
    match scheme.to_ascii_lowercase().as_str() {
        "file" => {
            let url = ListingTableUrl::parse(text.as_ref()).map_err(|e| anyhow!("{text}: not a valid file:// URL: {e}"))?;
            Ok(PathBuf::from(format!("/{}", url.prefix().as_ref())))
        }
        "s3" | "s3a" => bail!("{text}: s3:// run directories are not supported yet; only a local path or a file:// URL (copy the run locally first)"),
        other => bail!("{text}: unsupported URL scheme `{other}://`; only a local path or a file:// URL"),
    }
}

fn is_scheme(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic()) && chars.all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
}

/// The data files of `table`: `<dir>/<table>/category=<c>/part-*.parquet`.
fn table_files(dir: &Path, table: &str) -> Vec<PathBuf> {
    let Ok(partitions) = std::fs::read_dir(dir.join(table)) else {
        return Vec::new();
    };
    let mut files = Vec::new();
    for partition in partitions.flatten() {
        let name = partition.file_name();
        if !name.to_string_lossy().starts_with("category=") {
            continue;
        }
        for file in std::fs::read_dir(partition.path()).into_iter().flatten().flatten() {
            let n = file.file_name().to_string_lossy().into_owned();
            if n.starts_with("part-") && n.ends_with(".parquet") && file.path().is_file() {
                files.push(file.path());
            }
        }
    }
    files
}

/// Checks that `dir` is a scored run: every table has at least one partition file.
fn check_run(dir: &Path) -> Result<()> {
    if !dir.exists() {
        bail!("run directory {} does not exist", dir.display());
    }
    if !dir.is_dir() {
        bail!("{} is not a directory (expected a run directory written by `promptad score`)", dir.display());
    }
    let text = dir.to_string_lossy();
    if let Some(c) = text.chars().find(|c| "*?[".contains(*c)) {
        bail!("{}: run directory paths containing `{c}` are not supported (it reads as a glob pattern)", dir.display());
    }
    let missing: Vec<String> =
        TABLES.iter().filter(|t| table_files(dir, t).is_empty()).map(|t| format!("{t}/{PARTITION_COLUMN}=<category>/part-00000.parquet")).collect();
    if !missing.is_empty() {
        bail!("{} is not a scored run (written by `promptad score`): missing {}", dir.display(), missing.join(", "));
    }
    Ok(())
}

/// Registers `<dir>/<table>/` as a listing table partitioned by `category`.
async fn register_table(ctx: &SessionContext, dir: &Path, table: &str) -> Result<()> {
    let location = format!("{}/{FILE_GLOB}", dir.join(table).display());
    let url = ListingTableUrl::parse(&location)?;
    let options = ListingOptions::new(Arc::new(ParquetFormat::default()))
        .with_file_extension(".parquet")
        .with_table_partition_cols(vec![(PARTITION_COLUMN.to_string(), DataType::Utf8)]);
    let inferred = options.infer_schema(&ctx.state(), &url).await?;
    // The partition column is appended from the path; a copy stored in the files is left out.
    let file_schema = Schema::new_with_metadata(
        inferred.fields().iter().filter(|f| f.name() != PARTITION_COLUMN).cloned().collect::<Vec<_>>(),
        inferred.metadata().clone(),
    );
    let config = ListingTableConfig::new(url).with_listing_options(options).with_schema(Arc::new(file_schema));
    ctx.register_table(table, Arc::new(ListingTable::try_new(config)?))?;
    Ok(())
}
