//! SQL over scored runs: the tables of an output location in a DataFusion session with the metric
//! functions, and the canned evaluation query (`promptad eval`).
//!
//! [`session`] registers the three tables that `promptad score` writes under an output location
//! (see [`crate::pipeline::score`]), on any store (`s3://`, `file://`, a path):
//!
//! | table          | columns                                                                   |
//! |----------------|---------------------------------------------------------------------------|
//! | `scores`       | run, image_id, category, split, defect_type, gt_label, image_path, pred_score, text_score, visual_max, max_pixel_score, pred_label, anomalous_pixels, calibration_version, model_version, error |
//! | `maps`         | run, image_id, category, map_size, sigma, grid_side, grid (List<Float32>), anomaly_map (FixedSizeList<UInt16>, the quantised map; NULL in compact runs: `rebuild_map(grid, grid_side, map_size, sigma)`) |
//! | `metric_stats` | run, image_id, category, stats (per-image [`crate::metrics::ImageStats`]) |
//!
//! (`schemas/` documents each.) A table holds exactly the *committed* files
//! ([`crate::run::committed_files`]): a unit being written or abandoned by a killed
//! worker is not read, even though its Hive-style folders `<table>/run=<id>/category=<c>/` exist.
//! [`RunSelection`] narrows the session to one run (what `promptad eval` does) or keeps all.
//!
//! The metric aggregates of [`crate::metrics`] are registered too: `image_auroc(score, label)`,
//! `image_aupr(score, label)`, `pixel_auroc(stats)`, `pixel_aupro(stats [, fpr_limit])`, and the
//! scalar `rebuild_map(grid, grid_side, map_size, sigma)` that turns a compact row's grid back into
//! its map.
//!
//! [`eval`] runs [`EVAL_PER_CATEGORY_SQL`] (one row per category), then [`EVAL_MEAN_SQL`] over
//! its result (the mean row), and returns both as one batch with the schema of [`EvalRow`].

mod output;
mod rebuild_map;
pub mod results;

use std::sync::Arc;

use arrow::array::{AsArray, RecordBatch};
use arrow::compute::concat_batches;
use arrow::datatypes::{DataType, Float64Type, Int64Type, Schema};
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl};
use datafusion::execution::context::SQLOptions;
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::prelude::{SessionConfig, SessionContext};

pub use output::{write_batches, Format, OutputError};
pub use rebuild_map::rebuild_map_udf;

use crate::run::{committed_files, RunError, Table};
use crate::store::{Location, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum SqlError {
    #[error(transparent)]
    Run(#[from] RunError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{path} does not exist (expected the --out of `promptad score`)")]
    NoOutput { path: std::path::PathBuf },
    #[error("{out} holds no scored run (no committed units under _runs/); run `promptad score --out {out}` first")]
    NoRun { out: String },
    #[error("run {run_id:?} has no committed output in {out}; runs there: [{}]", runs.join(", "))]
    UnknownRun { run_id: String, out: String, runs: Vec<String> },
    #[error("{out} holds several runs and none is complete; choose one with --run (runs: [{}])", runs.join(", "))]
    AmbiguousRun { out: String, runs: Vec<String> },
    #[error("cannot register the `{table}` table of {out}: no committed `{table}` files (an interrupted run? re-run `promptad score`)")]
    NoFiles { table: Table, out: String },
    #[error("the query cannot be planned (tables: {}): {source}", tables.join(", "))]
    Query {
        tables: Vec<String>,
        #[source]
        source: datafusion::error::DataFusionError,
    },
    #[error("{what}: {source}")]
    DataFusion {
        what: &'static str,
        #[source]
        source: datafusion::error::DataFusionError,
    },
    #[error("{what}: {source}")]
    Arrow {
        what: &'static str,
        #[source]
        source: arrow::error::ArrowError,
    },
    #[error("{out} holds several runs; choose one with --run (runs: [{}])", runs.join(", "))]
    SeveralRuns { out: String, runs: Vec<String> },
    #[error("the evaluation table has no column `{column}` of type {expected}")]
    EvalColumn { column: String, expected: &'static str },
    #[error("listing the committed files stopped unexpectedly: {0}")]
    Listing(#[from] tokio::task::JoinError),
    #[error(
        "the `{table}` table has no column `{column}` readable as {expected}; it was not written by this promptad"
    )]
    Column { table: &'static str, column: &'static str, expected: &'static str },
    #[error(transparent)]
    Metric(#[from] crate::metrics::MetricError),
    #[error("the stored map of image {image_id} cannot be rebuilt: {source}")]
    Rebuild {
        image_id: String,
        #[source]
        source: crate::detect::maps::RebuildError,
    },
}

type Result<T, E = SqlError> = std::result::Result<T, E>;

fn datafusion_error(what: &'static str) -> impl FnOnce(datafusion::error::DataFusionError) -> SqlError {
    move |source| SqlError::DataFusion { what, source }
}

fn arrow_error(what: &'static str) -> impl FnOnce(arrow::error::ArrowError) -> SqlError {
    move |source| SqlError::Arrow { what, source }
}

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

/// Which runs of an output location a session reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunSelection {
    /// Every committed file of every run (the `run` column tells them apart).
    All,
    /// One run by id.
    One(String),
    /// The most recently completed run; if no run is complete, the only run there is.
    Latest,
}

/// A session over the output location `out` with the default configuration; see
/// [`session_with_config`].
pub async fn session(out: &Location, runs: RunSelection) -> Result<SessionContext> {
    session_with_config(out, runs, SessionConfig::new()).await
}

/// A session over `out` with `config` (information_schema is switched on, so `SHOW TABLES` and
/// `SHOW COLUMNS FROM scores` work): the tables of [`Table::ALL`] and the metric functions registered.
/// Errors name what is missing when `out` holds no scored run.
pub async fn session_with_config(out: &Location, runs: RunSelection, config: SessionConfig) -> Result<SessionContext> {
    let (out_for_listing, runs_for_listing) = (out.clone(), runs.clone());
    // Listing the commit records is blocking store I/O.
    let (files, run) = tokio::task::spawn_blocking(move || select_files(&out_for_listing, &runs_for_listing)).await??;
    let ctx = SessionContext::new_with_config(config.with_information_schema(true));
    crate::metrics::register_all(&ctx);
    ctx.register_udf(rebuild_map_udf().as_ref().clone());
    let store_url = ObjectStoreUrl::parse(out.store_url()).map_err(datafusion_error("the output's store URL"))?;
    ctx.runtime_env().register_object_store(store_url.as_ref(), out.store());
    for table in Table::ALL {
        let urls = files[&table]
            .iter()
            .map(|f| ListingTableUrl::parse(out.url_of(f)))
            .collect::<datafusion::error::Result<Vec<_>>>()
            .map_err(datafusion_error("a committed file's URL"))?;
        if urls.is_empty() {
            return Err(SqlError::NoFiles { table, out: out.url().into() });
        }
        register_table(&ctx, urls, table).await.map_err(datafusion_error("cannot register a table"))?;
    }
    if let Some(run) = run {
        tracing::debug!(run = %run, "session over one run");
    }
    Ok(ctx)
}

/// The committed files of each table.
type FilesByTable = std::collections::BTreeMap<Table, Vec<String>>;

/// The committed files of the selected runs, per table, and the run chosen (if one).
fn select_files(out: &Location, runs: &RunSelection) -> Result<(FilesByTable, Option<String>)> {
    if let Some(path) = out.local_path().filter(|p| !p.exists()) {
        return Err(SqlError::NoOutput { path });
    }
    out.check_reachable()?;
    let mut committed = committed_files(out)?;
    if committed.is_empty() {
        return Err(SqlError::NoRun { out: out.url().into() });
    }
    let all_runs = committed.run_ids();
    let chosen = match runs {
        RunSelection::All => None,
        RunSelection::One(id) if all_runs.contains(id) => Some(id.clone()),
        RunSelection::One(id) => {
            return Err(SqlError::UnknownRun { run_id: id.clone(), out: out.url().into(), runs: all_runs });
        }
        RunSelection::Latest => Some(
            committed.latest_run().ok_or_else(|| SqlError::AmbiguousRun { out: out.url().into(), runs: all_runs })?,
        ),
    };
    if let Some(run) = &chosen {
        committed.retain_run(run);
    }
    Ok((committed.files, chosen))
}

/// Runs one read-only SQL statement and collects its result.
pub async fn query(ctx: &SessionContext, sql: &str) -> Result<(Arc<Schema>, Vec<RecordBatch>)> {
    let frame = ctx.sql_with_options(sql, read_only()).await.map_err(|source| {
        let config = ctx.copied_config();
        let names = &config.options().catalog;
        let mut tables = ctx
            .catalog(&names.default_catalog)
            .and_then(|c| c.schema(&names.default_schema))
            .map(|s| s.table_names())
            .unwrap_or_default();
        tables.sort();
        SqlError::Query { tables, source }
    })?;
    let schema = Arc::new(frame.schema().as_arrow().clone());
    let batches = frame.collect().await.map_err(datafusion_error("the query failed"))?;
    Ok((schema, batches))
}

/// The evaluation table: one row per category ([`EVAL_PER_CATEGORY_SQL`]), then the `mean` row
/// ([`EVAL_MEAN_SQL`]). Columns: category (Utf8), image_auroc, image_aupr, pixel_auroc,
/// pixel_aupro (Float64, NULL where undefined), n_images, n_anomalous, n_skipped (Int64).
pub async fn eval(ctx: &SessionContext) -> Result<RecordBatch> {
    let (schema, batches) = query(ctx, EVAL_PER_CATEGORY_SQL).await?;
    let per_category = concat_batches(&schema, &batches).map_err(arrow_error("the per-category rows"))?;
    // The mean runs in a session of its own over the materialised rows: the caller's session is
    // left as it was, and the per-category aggregates are not computed a second time.
    let mean_ctx = SessionContext::new_with_config(ctx.copied_config());
    mean_ctx
        .register_batch(EVAL_PER_CATEGORY_TABLE, per_category.clone())
        .map_err(datafusion_error("the per-category rows"))?;
    let (_, mean) = query(&mean_ctx, EVAL_MEAN_SQL).await?;
    let mean = concat_batches(&mean.first().map(|b| b.schema()).unwrap_or_else(|| schema.clone()), &mean)
        .map_err(arrow_error("the mean row"))?;
    // The literal 'mean' is Utf8 while a category read from Parquet may be Utf8View: the mean
    // row takes the per-category row's types (and nullability).
    let columns = mean
        .columns()
        .iter()
        .zip(schema.fields())
        .map(|(c, f)| arrow::compute::cast(c, f.data_type()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(arrow_error("the mean row"))?;
    let mean = RecordBatch::try_new(schema.clone(), columns)
        .map_err(arrow_error("the mean row does not match the per-category rows"))?;
    concat_batches(&schema, [&per_category, &mean]).map_err(arrow_error("the evaluation table"))
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
        let missing = |column: &str, expected| SqlError::EvalColumn { column: column.into(), expected };
        let float = |name: &str| -> Result<Vec<Option<f64>>> {
            let c = batch.column_by_name(name).and_then(|c| c.as_primitive_opt::<Float64Type>());
            Ok(c.ok_or_else(|| missing(name, "Float64"))?.iter().collect())
        };
        let count = |name: &str| -> Result<Vec<i64>> {
            let c = batch.column_by_name(name).and_then(|c| c.as_primitive_opt::<Int64Type>());
            Ok(c.ok_or_else(|| missing(name, "Int64"))?.iter().map(|v| v.unwrap_or(0)).collect())
        };
        let category = batch.column_by_name("category").ok_or_else(|| missing("category", "Utf8"))?;
        let category = arrow::compute::cast(category, &DataType::Utf8).map_err(arrow_error("the category column"))?;
        let category = category.as_string::<i32>();
        let (ia, ip, pa, pp) =
            (float("image_auroc")?, float("image_aupr")?, float("pixel_auroc")?, float("pixel_aupro")?);
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

/// Registers the files `urls` as the listing table `table`, its schema read from the first file.
async fn register_table(
    ctx: &SessionContext,
    urls: Vec<ListingTableUrl>,
    table: Table,
) -> datafusion::error::Result<()> {
    let options = ListingOptions::new(Arc::new(ParquetFormat::default())).with_file_extension(".parquet");
    let config =
        ListingTableConfig::new_with_multi_paths(urls).with_listing_options(options).infer_schema(&ctx.state()).await?;
    ctx.register_table(table.name(), Arc::new(ListingTable::try_new(config)?))?;
    Ok(())
}
