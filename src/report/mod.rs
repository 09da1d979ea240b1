//! `promptad report`: one self-contained HTML page on a scored run: how well each category did
//! and where it failed.
//!
//! For each category of the run: a metrics table row (image AUROC and AUPR, pixel AUROC, AUPRO,
//! F1-max, and with a calibration the decisions counted against the labels), the ROC, PR and PRO
//! curves, the histograms of the normal and anomalous image scores with the threshold, and a
//! gallery of the most anomalous defects, the missed defects and the worst false alarms
//! ([`gallery`]).
//!
//! It reads the run's committed tables from any store and reads only what it shows: the scores
//! and the pixel statistics of each category (small), the maps of the gallery's images only
//! (filters pushed into the Parquet scan, [`crate::sql::results`]), and those images and masks
//! from the dataset the run's plan names. The page goes to `<dir>/index.html`, written whole
//! (a temporary file, then a rename), so an interrupted report never leaves half a page.

pub mod gallery;
pub mod page;
pub mod plots;
pub mod summary;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::data::dataset::Dataset;
use crate::data::shard::ImageRecord;
use crate::metrics::{Calibration, MetricError};
use crate::run::{read_plan, RunError, RunPlan};
use crate::sql::results::{categories, image_results, maps_of, pixel_stats, selective_config, single_run, ImageResult};
use crate::sql::{session_with_config, RunSelection, SqlError};
use crate::store::Location;
use page::{CategoryPage, PageHeader, ShownEntry};
use summary::CategorySummary;

/// The page's file name inside the report folder.
pub const REPORT_FILE: &str = "index.html";

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error(transparent)]
    Sql(#[from] SqlError),
    #[error(transparent)]
    Run(#[from] RunError),
    #[error(transparent)]
    Metric(#[from] MetricError),
    #[error("cannot write the report to {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

type Result<T, E = ReportError> = std::result::Result<T, E>;

#[derive(Debug, Clone)]
pub struct ReportOptions {
    /// Images per gallery group and category.
    pub per_group: usize,
}

impl Default for ReportOptions {
    fn default() -> Self {
        Self { per_group: 4 }
    }
}

/// What a report holds, for the caller to print.
#[derive(Debug, Clone)]
pub struct ReportSummary {
    pub path: PathBuf,
    pub run: String,
    /// Whether the run has a calibration (its rows carry decisions).
    pub calibrated: bool,
    pub categories: Vec<CategorySummary>,
}

/// Writes the report on `run` of `out` to `<dir>/index.html`; see the module documentation.
pub async fn write_report(
    out: &Location,
    run: RunSelection,
    dir: &Path,
    options: &ReportOptions,
) -> Result<ReportSummary> {
    let ctx = session_with_config(out, run, selective_config()).await?;
    let run = single_run(&ctx, out.url()).await?;
    let mut pages = Vec::new();
    for category in categories(&ctx).await? {
        let images = image_results(&ctx, &category).await?;
        let pixels = pixel_stats(&ctx, &category).await?;
        let plan = tokio::task::block_in_place(|| read_plan(out, &run, &category))?;
        let calibration = plan.as_ref().and_then(|p| p.calibration.as_ref());
        let summary = CategorySummary::new(&category, &images, &pixels, calibration)?;
        let decided = calibration.is_some_and(|c| c.image.is_some());
        let chosen = gallery::choose(&images, options.per_group, decided);
        let ids: Vec<String> = chosen.iter().map(|(_, i)| i.image_id.clone()).collect();
        let maps = maps_of(&ctx, &category, &ids).await?;
        let (records, note) = tokio::task::block_in_place(|| gallery_records(plan.as_ref(), &category, &ids));
        let side = plan.as_ref().map_or(0, |p| p.map_size as usize);
        let entries = chosen
            .into_iter()
            .map(|(group, image)| {
                shown(group, image, records.get(&image.image_id), maps.get(&image.image_id), side, calibration)
            })
            .collect();
        let threshold = summary.decisions.as_ref().and_then(|d| d.image_threshold);
        let charts = vec![
            plots::roc(&summary),
            plots::pr(&summary),
            plots::pro(&summary),
            plots::histogram(&summary, threshold),
        ]
        .into_iter()
        .map(|c| c.map_err(|e| e.to_string()))
        .collect();
        tracing::info!(run = %run, category, images = summary.images, "report: category done");
        pages.push(CategoryPage { summary, charts, entries, decided, note });
    }
    let calibrated = pages.iter().any(|p| p.summary.decisions.is_some());
    let html = page::render(&PageHeader { out: out.url(), run: &run, calibrated }, &pages);
    let path = dir.join(REPORT_FILE);
    write_whole(&path, html.as_bytes())?;
    Ok(ReportSummary { path, run, calibrated, categories: pages.into_iter().map(|p| p.summary).collect() })
}

/// The dataset records of the gallery's images, by id, and a note when they cannot be read (the
/// gallery then shows the maps over a grey background).
fn gallery_records(
    plan: Option<&RunPlan>,
    category: &str,
    ids: &[String],
) -> (HashMap<String, ImageRecord>, Option<String>) {
    let Some(plan) = plan else {
        return (HashMap::new(), Some("the run has no plan.json: its dataset is unknown, images are not shown".into()));
    };
    match Dataset::open(&plan.dataset).and_then(|d| d.test_records(category, ids)) {
        Ok(records) => {
            let found: HashMap<String, ImageRecord> = records.into_iter().map(|r| (r.image_id.clone(), r)).collect();
            let note = (found.len() < ids.len()).then(|| {
                format!("{} of the shown images are no longer in the dataset {}", ids.len() - found.len(), plan.dataset)
            });
            (found, note)
        }
        Err(e) => (HashMap::new(), Some(format!("the images cannot be read from the run's dataset: {e}"))),
    }
}

fn shown(
    group: gallery::Group,
    image: &ImageResult,
    record: Option<&ImageRecord>,
    map: Option<&Vec<u16>>,
    side: usize,
    calibration: Option<&Calibration>,
) -> ShownEntry {
    let pixel = calibration.and_then(|c| c.pixel.as_ref());
    let panels = match map {
        Some(map) => gallery::panels(record, map, side, pixel).map_err(|e| e.to_string()),
        None => Err("no committed map".to_string()),
    };
    ShownEntry {
        group,
        image_id: image.image_id.clone(),
        defect_type: image.defect_type.clone(),
        gt_label: image.gt_label,
        pred_score: image.pred_score,
        pred_label: image.pred_label,
        anomalous_pixels: image.anomalous_pixels,
        panels,
    }
}

/// Writes `bytes` to `path` through a temporary file in the same folder and a rename.
fn write_whole(path: &Path, bytes: &[u8]) -> Result<()> {
    let io = |source| ReportError::Io { path: path.to_path_buf(), source };
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(io)?;
    let mut tmp = tempfile::Builder::new().prefix(".promptad-report-").tempfile_in(dir).map_err(io)?;
    std::io::Write::write_all(&mut tmp, bytes).map_err(io)?;
    // A report is for reading: not the temporary file's owner-only mode.
    let readable = <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o644);
    tmp.as_file().set_permissions(readable).map_err(io)?;
    tmp.persist(path).map_err(|e| io(e.error))?;
    Ok(())
}
