//! Writing a run: the plan first, each unit's files then its commit record, the manifest last
//! (delta-rs' protocol: data under unique names, a small put-if-absent record makes it visible).

use std::collections::BTreeMap;

use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::paths::{self, Table};
use super::records::{RunManifest, RunPlan, UnitRecord};
use super::RunError;
use crate::store::Location;

/// Whether `run_id` is usable as a folder name on every store: letters, digits, `-`, `_`, `.`.
///
/// ```
/// assert!(promptad::run::is_valid_run_id("nightly-2026-12-01_k4.seed111"));
/// assert!(!promptad::run::is_valid_run_id("a/b") && !promptad::run::is_valid_run_id(""));
/// ```
pub fn is_valid_run_id(run_id: &str) -> bool {
    !run_id.is_empty() && run_id.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
}

pub fn check_run_id(run_id: &str) -> Result<(), RunError> {
    if !is_valid_run_id(run_id) {
        return Err(RunError::BadRunId { run_id: run_id.into() });
    }
    Ok(())
}

/// The default run id: a digest of everything that determines the outputs, so the same command
/// continues the same run.
pub fn derived_run_id(plan_inputs: &serde_json::Value) -> String {
    crate::runtime::sha256_prefix(plan_inputs.to_string().as_bytes(), 12)
}

/// The contiguous range of `n` units that worker `index` of `count` owns.
///
/// ```
/// use promptad::run::worker_range;
/// assert_eq!(worker_range(5, (0, 2)), 0..2);
/// assert_eq!(worker_range(5, (1, 2)), 2..5);
/// ```
pub fn worker_range(n: usize, (index, count): (usize, usize)) -> std::ops::Range<usize> {
    index * n / count..(index + 1) * n / count
}

/// The files of one unit, one per table.
pub fn unit_files(run_id: &str, category: &str, unit: &str) -> BTreeMap<Table, String> {
    Table::ALL.into_iter().map(|t| (t, paths::table_file(t, run_id, category, unit))).collect()
}

pub(crate) fn read_json<T: DeserializeOwned>(out: &Location, rel: &str, bytes: &[u8]) -> Result<T, RunError> {
    serde_json::from_slice(bytes).map_err(|source| RunError::BadRecord { url: out.url_of(rel), source })
}

fn to_json(value: &impl Serialize) -> Bytes {
    Bytes::from(serde_json::to_vec_pretty(value).expect("run records serialise"))
}

/// Writes the plan if the run has none; an existing plan must agree, else the run id is being
/// reused for different work. With `overwrite` the plan is replaced and the manifest removed (a
/// replaced run is incomplete until every unit is committed again).
pub fn publish_plan(out: &Location, plan: &RunPlan, overwrite: bool) -> Result<(), RunError> {
    let rel = paths::plan_file(&plan.run_id, &plan.category);
    if overwrite {
        out.delete(&paths::manifest_file(&plan.run_id, &plan.category))?;
        out.put(&rel, to_json(plan))?;
        return Ok(());
    }
    if !out.put_if_absent(&rel, to_json(plan))? {
        let existing: RunPlan = read_json(out, &rel, &out.get(&rel)?)?;
        if existing != *plan {
            return Err(RunError::PlanConflict {
                run_id: plan.run_id.clone(),
                category: plan.category.clone(),
                out: out.url().into(),
                existing: Box::new(existing),
                requested: Box::new(plan.clone()),
            });
        }
    }
    Ok(())
}

/// The plan of `category` in run `run_id`, if one was published.
pub fn read_plan(out: &Location, run_id: &str, category: &str) -> Result<Option<RunPlan>, RunError> {
    let rel = paths::plan_file(run_id, category);
    match out.get_if_exists(&rel)? {
        Some(bytes) => Ok(Some(read_json(out, &rel, &bytes)?)),
        None => Ok(None),
    }
}

/// Whether a unit's commit record exists.
pub fn is_committed(out: &Location, run_id: &str, category: &str, unit: &str) -> Result<bool, RunError> {
    Ok(out.exists(&paths::unit_record_file(run_id, category, unit))?)
}

/// Removes a unit's commit record, so that its files no longer count (before it is redone).
pub fn uncommit(out: &Location, run_id: &str, category: &str, unit: &str) -> Result<(), RunError> {
    Ok(out.delete(&paths::unit_record_file(run_id, category, unit))?)
}

/// The commit: from here on the unit's files are part of the run. Call it after every file of
/// the unit is complete.
pub fn commit_unit(out: &Location, run_id: &str, record: &UnitRecord) -> Result<(), RunError> {
    Ok(out.put(&paths::unit_record_file(run_id, &record.category, &record.unit), to_json(record))?)
}

/// Writes the run manifest once every unit of the plan is committed; returns whether the run is
/// complete.
pub fn publish_manifest_if_complete(out: &Location, plan: &RunPlan, overwrite: bool) -> Result<bool, RunError> {
    let mut images = 0;
    let mut skipped = 0;
    let mut files = Vec::new();
    for unit in &plan.units {
        let rel = paths::unit_record_file(&plan.run_id, &plan.category, &unit.name);
        let Some(bytes) = out.get_if_exists(&rel)? else { return Ok(false) };
        let record: UnitRecord = read_json(out, &rel, &bytes)?;
        images += record.images;
        skipped += record.skipped;
        files.extend(record.files.into_values());
    }
    let manifest = RunManifest {
        plan: plan.clone(),
        images,
        skipped,
        files,
        promptad_version: env!("CARGO_PKG_VERSION").into(),
        completed_unix: crate::runtime::unix_now(),
    };
    let rel = paths::manifest_file(&plan.run_id, &plan.category);
    if overwrite {
        out.put(&rel, to_json(&manifest))?;
    } else {
        // Two workers finishing together: the first manifest stands (same content but the time).
        out.put_if_absent(&rel, to_json(&manifest))?;
    }
    Ok(true)
}
