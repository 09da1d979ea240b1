//! The run protocol: how a scoring run lays out, commits and reads its files. `pipeline::score`
//! writes through it, `sql` and `eval` read through it.
//!
//! ```text
//! <out>/scores/run=<id>/category=<c>/part-<unit>.parquet
//! <out>/maps/run=<id>/category=<c>/part-<unit>.parquet
//! <out>/metric_stats/run=<id>/category=<c>/part-<unit>.parquet
//! <out>/_runs/run=<id>/category=<c>/plan.json            the category's work units (first worker)
//! <out>/_runs/run=<id>/category=<c>/units/<unit>.json     a unit's commit record, after its files
//! <out>/_runs/run=<id>/category=<c>/manifest.json         written last, once every unit is committed
//! ```
//!
//! A run spans categories (one nightly re-scoring of an archive is one run), and each category
//! of the run has its own plan and manifest. A unit's files count only once its commit record
//! exists ([`committed_files`]), so a worker killed mid-unit leaves nothing visible. A re-run
//! skips committed units; two workers given the same unit write the same files, each atomically.

pub mod commit;
pub mod paths;
pub mod read;
pub mod records;

pub use commit::{
    check_run_id, commit_unit, derived_run_id, is_committed, is_valid_run_id, publish_manifest_if_complete,
    publish_plan, read_plan, uncommit, unit_files, worker_range,
};
pub use paths::Table;
pub use read::{committed_files, CommittedRuns};
pub use records::{PlannedUnit, RunManifest, RunPlan, UnitRecord};

use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("run id {run_id:?}: use letters, digits, '-', '_' and '.' only")]
    BadRunId { run_id: String },
    #[error("{url}: not a valid run record ({source}); it was not written by this promptad, or was damaged")]
    BadRecord {
        url: String,
        #[source]
        source: serde_json::Error,
    },
    #[error(
        "run {run_id} of {category} in {out} was started with different work ({}); choose another run id (e.g. \
         the date), or overwrite the run",
        existing.differences(requested).join("; ")
    )]
    PlanConflict { run_id: String, category: String, out: String, existing: Box<RunPlan>, requested: Box<RunPlan> },
}
