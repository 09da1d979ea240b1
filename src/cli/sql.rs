//! `promptad sql`: one SQL query over a scored run.

use std::process::ExitCode;

use anyhow::Result;
use clap::Args;

use crate::sql::{query, session, write_batches, Format, RunSelection};
use crate::store::Location;

/// Run a SQL query over a scored run's tables.
///
/// The output written by `promptad score` is queried with DataFusion SQL: every committed file of
/// every run (or one run with --run). Its tables (columns documented in schemas/):
///
/// scores: run, image_id, category, split, defect_type, gt_label (0/1, NULL if unknown),
/// image_path, pred_score (NULL for a skipped image), text_score, visual_max, max_pixel_score,
/// pred_label, anomalous_pixels (NULL without a calibration), calibration_version,
/// model_version, error.
///
/// maps: run, image_id, category, map_size, sigma, grid_side, grid (the patch grid the map is
/// made of), anomaly_map (the map as u16 over [0, 1], row-major; NULL unless scored with --maps
/// full). rebuild_map(grid, grid_side, map_size, sigma) gives the map of any row, e.g. "SELECT
/// image_id, rebuild_map(grid, grid_side, map_size, sigma) FROM maps WHERE image_id = '...'".
///
/// metric_stats: run, image_id, category, stats (per-image statistics for the pixel metrics).
///
/// Besides DataFusion's own functions, the exact metric aggregates image_auroc(score, label),
/// image_aupr(score, label), pixel_auroc(stats), pixel_aupro(stats [, fpr_limit]), f1_max,
/// f1_threshold, pixel_f1_max and pixel_f1_threshold are available, e.g. "SELECT s.defect_type, pixel_auroc(m.stats), pixel_aupro(m.stats) FROM scores
/// s JOIN metric_stats m ON s.image_id = m.image_id GROUP BY s.defect_type".
///
/// SHOW TABLES and SHOW COLUMNS FROM <table> list what is there. The run is read-only: statements
/// that create, change or write anything (CREATE, INSERT, COPY, SET) are refused.
#[derive(Debug, Args)]
pub struct SqlArgs {
    /// Output location given to `promptad score --out`: a local path, file:///path or
    /// s3://bucket/prefix (S3 settings from the AWS_* environment).
    #[arg(value_name = "OUT_URL")]
    pub out: String,
    /// Only this run's rows [default: every committed row of every run; the `run` column tells
    /// them apart].
    #[arg(long)]
    pub run: Option<String>,
    /// The query: one SQL statement (quote it for the shell).
    #[arg(value_name = "QUERY")]
    pub query: String,
    /// Output format: table (aligned, for reading), csv (with a header; no nested columns) or
    /// json (an array of row objects).
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
}

pub fn run(args: SqlArgs) -> Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let (schema, batches) = runtime.block_on(async {
        let runs = args.run.clone().map_or(RunSelection::All, RunSelection::One);
        let ctx = session(&Location::parse(&args.out)?, runs).await?;
        query(&ctx, &args.query).await
    })?;
    write_batches(&schema, &batches, args.format, std::io::stdout().lock())?;
    Ok(ExitCode::SUCCESS)
}
