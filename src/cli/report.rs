//! `promptad report`: a scored run as one self-contained HTML page.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::Args;

use crate::report::{write_report, ReportOptions};
use crate::sql::RunSelection;
use crate::store::Location;

/// Write an HTML report on a scored run: metrics, curves, histograms and a gallery per category.
///
/// Reads one run (by default the most recently completed one) of the output of `promptad score`
/// on any store and writes DIR/index.html: one file with everything inline (charts as SVG,
/// pictures as data URIs, no script, nothing fetched), to open in a browser or archive. Per
/// category: image AUROC and AUPR, pixel AUROC, AUPRO, F1-max, and, when the run has a
/// calibration (`promptad calibrate`), the decisions against the labels (TP, FP, FN, TN,
/// precision, recall, F1); the ROC, PR and PRO curves; histograms of normal and anomalous image
/// scores with the threshold; and a gallery of the most anomalous defects, the missed defects
/// and the worst false alarms, each as image, ground truth, anomaly map overlay and predicted-mask
/// contour. A run without calibration is reported without decisions, and the page says so.
///
/// Only what is shown is read: the scores and pixel statistics of each category, and the maps,
/// images and masks of the gallery's images (from the dataset named in the run's plan).
#[derive(Debug, Args)]
#[command(after_long_help = crate::exit::help_text())]
pub struct ReportArgs {
    /// Output location of the scored run (`promptad score --out`).
    #[arg(value_name = "OUT_URL")]
    pub out: String,
    /// The run to report [default: the most recently completed run].
    #[arg(long, value_name = "ID")]
    pub run: Option<String>,
    /// Folder the page is written to, as DIR/index.html.
    #[arg(long = "out", short = 'o', value_name = "DIR")]
    pub dir: PathBuf,
    /// Images per gallery group (most anomalous defects, missed defects, false alarms).
    #[arg(long, default_value_t = 4, value_name = "N")]
    pub per_group: usize,
}

pub fn run(args: ReportArgs) -> Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let out = Location::parse(&args.out)?;
    let runs = args.run.clone().map_or(RunSelection::Latest, RunSelection::One);
    let options = ReportOptions { per_group: args.per_group };
    let summary = runtime.block_on(write_report(&out, runs, &args.dir, &options))?;
    println!(
        "report on run {} ({} categories{}): {}",
        summary.run,
        summary.categories.len(),
        if summary.calibrated { "" } else { ", no calibration: no decisions" },
        summary.path.display()
    );
    Ok(ExitCode::SUCCESS)
}
