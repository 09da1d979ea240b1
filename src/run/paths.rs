//! Every object path of a scoring run, one function each (the layout of [`super`]).
//!
//! Paths are relative to the run's output location (`OUT`), so the same names serve `s3://`,
//! `file://` and plain paths.

use std::fmt;

/// The folder of the run bookkeeping: plans, commit records and manifests.
pub const RUNS_DIR: &str = "_runs";

/// The tables a scoring run writes. [`Table::ALL`] is the one list of them, in commit order:
/// the order a unit's files are finished in, scores last (a scores row is what users count).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Table {
    /// Per-image anomaly maps (`schemas/pixel_maps.json`).
    Maps,
    /// Per-image metric sufficient statistics (`schemas/metric_stats.json`).
    MetricStats,
    /// Per-image scores (`schemas/image_scores.json`).
    Scores,
}

impl Table {
    pub const ALL: [Table; 3] = [Table::Maps, Table::MetricStats, Table::Scores];

    /// The table's name: its top-level folder and its SQL name.
    pub fn name(self) -> &'static str {
        match self {
            Table::Maps => "maps",
            Table::MetricStats => "metric_stats",
            Table::Scores => "scores",
        }
    }

    /// The table a name (or the first folder of a relative path) stands for.
    ///
    /// ```
    /// use promptad::run::Table;
    /// assert_eq!(Table::from_name("metric_stats"), Some(Table::MetricStats));
    /// assert_eq!(Table::from_name("_runs"), None);
    /// ```
    pub fn from_name(name: &str) -> Option<Table> {
        Table::ALL.into_iter().find(|t| t.name() == name)
    }
}

impl fmt::Display for Table {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The output file of `table` for one work unit.
///
/// ```
/// use promptad::run::{paths, Table};
/// assert_eq!(paths::table_file(Table::Scores, "r1", "bottle", "test-00002"),
///            "scores/run=r1/category=bottle/part-test-00002.parquet");
/// ```
pub fn table_file(table: Table, run_id: &str, category: &str, unit: &str) -> String {
    format!("{table}/run={run_id}/category={category}/part-{unit}.parquet")
}

/// The run id of an output file (its `run=` folder).
///
/// ```
/// use promptad::run::paths;
/// assert_eq!(paths::run_of_file("maps/run=nightly-1/category=bottle/part-a.parquet"), Some("nightly-1"));
/// assert_eq!(paths::run_of_file("maps/bottle/part-a.parquet"), None);
/// ```
pub fn run_of_file(file: &str) -> Option<&str> {
    file.split('/').nth(1).and_then(|p| p.strip_prefix("run="))
}

/// The bookkeeping folder of one category of a run.
///
/// ```
/// use promptad::run::paths;
/// assert_eq!(paths::category_dir("r1", "bottle"), "_runs/run=r1/category=bottle");
/// ```
pub fn category_dir(run_id: &str, category: &str) -> String {
    format!("{RUNS_DIR}/run={run_id}/category={category}")
}

/// The category's work units, written once by the first worker.
///
/// ```
/// use promptad::run::paths;
/// assert_eq!(paths::plan_file("r1", "bottle"), "_runs/run=r1/category=bottle/plan.json");
/// ```
pub fn plan_file(run_id: &str, category: &str) -> String {
    format!("{}/plan.json", category_dir(run_id, category))
}

/// The folder of the units' commit records.
///
/// ```
/// use promptad::run::paths;
/// assert_eq!(paths::units_dir("r1", "bottle"), "_runs/run=r1/category=bottle/units");
/// ```
pub fn units_dir(run_id: &str, category: &str) -> String {
    format!("{}/units", category_dir(run_id, category))
}

/// A unit's commit record: written after its files, it makes them part of the run.
///
/// ```
/// use promptad::run::paths;
/// assert_eq!(paths::unit_record_file("r1", "bottle", "test-00002"),
///            "_runs/run=r1/category=bottle/units/test-00002.json");
/// ```
pub fn unit_record_file(run_id: &str, category: &str, unit: &str) -> String {
    format!("{}/{unit}.json", units_dir(run_id, category))
}

/// The category's manifest, written last, once every unit is committed.
///
/// ```
/// use promptad::run::paths;
/// assert_eq!(paths::manifest_file("r1", "bottle"), "_runs/run=r1/category=bottle/manifest.json");
/// ```
pub fn manifest_file(run_id: &str, category: &str) -> String {
    format!("{}/manifest.json", category_dir(run_id, category))
}
