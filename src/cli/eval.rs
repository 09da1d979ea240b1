//! `promptad eval`: the metrics of a scored run, computed in SQL.

use std::process::ExitCode;

use anyhow::Result;
use clap::Args;

use crate::sql::{eval, session, write_batches, Format, RunSelection};
use crate::store::Location;

/// Evaluate a scored run: AUROC, AUPR and AUPRO per category.
///
/// Reads one run (by default the latest complete one) of the output written by `promptad score`
/// (its committed scores, maps and metric_stats files) with DataFusion and prints one row per category:
/// image AUROC and image AUPR over the image scores, pixel AUROC and AUPRO (to FPR 0.3) over the
/// per-image pixel statistics, the number of images, of anomalous images and of skipped images
/// (no score). A last row, `mean`, averages each metric over the categories where it is defined
/// and totals the counts. Every metric is exact for the stored scores (anomalib >= 2.3 / MVTec AD
/// definitions); an undefined one (one class missing) is empty (csv) or null (json).
///
/// The numbers come from a SQL query with the aggregate functions image_auroc, image_aupr,
/// pixel_auroc and pixel_aupro; `promptad sql` runs your own queries over the same tables.
#[derive(Debug, Args)]
pub struct EvalArgs {
    /// Output location given to `promptad score --out`: a local path, file:///path or
    /// s3://bucket/prefix (S3 settings from the AWS_* environment).
    #[arg(value_name = "OUT_URL")]
    pub out: String,
    /// The run to evaluate [default: the most recently completed run].
    #[arg(long)]
    pub run: Option<String>,
    /// Output format: table (aligned, for reading), csv (with a header) or json (an array of row
    /// objects).
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
}

pub fn run(args: EvalArgs) -> Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let batch = runtime.block_on(async {
        let runs = args.run.clone().map_or(RunSelection::Latest, RunSelection::One);
        let ctx = session(&Location::parse(&args.out)?, runs).await?;
        eval(&ctx).await
    })?;
    write_batches(batch.schema().as_ref(), std::slice::from_ref(&batch), args.format, std::io::stdout().lock())?;
    Ok(ExitCode::SUCCESS)
}
