//! Reading a run: exactly the committed files, as SQL and reports must see them.

use std::collections::BTreeMap;

use super::commit::read_json;
use super::paths::{self, Table, RUNS_DIR};
use super::records::{RunManifest, UnitRecord};
use super::RunError;
use crate::store::Location;

/// What an output location holds: the committed files of every run, per table, and the
/// manifests of the complete ones.
#[derive(Debug, Clone, Default)]
pub struct CommittedRuns {
    /// Relative paths, sorted, per table (every table present, possibly empty).
    pub files: BTreeMap<Table, Vec<String>>,
    pub manifests: Vec<RunManifest>,
}

impl CommittedRuns {
    pub fn is_empty(&self) -> bool {
        self.files.values().all(Vec::is_empty)
    }

    /// Every run id with a committed file, sorted.
    pub fn run_ids(&self) -> Vec<String> {
        let mut runs: Vec<String> =
            self.files.values().flatten().filter_map(|f| paths::run_of_file(f)).map(str::to_string).collect();
        runs.sort();
        runs.dedup();
        runs
    }

    /// The most recently completed run; if no run is complete, the only run there is.
    pub fn latest_run(&self) -> Option<String> {
        self.manifests
            .iter()
            .max_by_key(|m| (m.completed_unix, m.plan.run_id.clone()))
            .map(|m| m.plan.run_id.clone())
            .or_else(|| match self.run_ids().as_slice() {
                [only] => Some(only.clone()),
                _ => None,
            })
    }

    /// Keeps the files of one run only.
    pub fn retain_run(&mut self, run_id: &str) {
        for list in self.files.values_mut() {
            list.retain(|f| paths::run_of_file(f) == Some(run_id));
        }
        self.manifests.retain(|m| m.plan.run_id == run_id);
    }
}

/// Every committed output file under `out`: complete runs from their manifest, runs in progress
/// from their units' commit records. A file that no record names (a unit being written, or one
/// abandoned by a killed worker) is not listed.
pub fn committed_files(out: &Location) -> Result<CommittedRuns, RunError> {
    let mut runs =
        CommittedRuns { files: Table::ALL.into_iter().map(|t| (t, Vec::new())).collect(), ..Default::default() };
    let mut add = |file: String| {
        if let Some(list) = file.split('/').next().and_then(Table::from_name).and_then(|t| runs.files.get_mut(&t)) {
            list.push(file);
        }
    };
    let mut manifests = Vec::new();
    for run in out.list_dirs(RUNS_DIR)? {
        for category in out.list_dirs(&format!("{RUNS_DIR}/{run}"))? {
            let dir = format!("{RUNS_DIR}/{run}/{category}");
            let manifest_file = format!("{dir}/manifest.json");
            if let Some(bytes) = out.get_if_exists(&manifest_file)? {
                let manifest: RunManifest = read_json(out, &manifest_file, &bytes)?;
                manifest.files.iter().cloned().for_each(&mut add);
                manifests.push(manifest);
                continue;
            }
            for object in out.list(&format!("{dir}/units"))? {
                let rel = out.relative(&object.location);
                let record: UnitRecord = read_json(out, &rel, &out.get(&rel)?)?;
                record.files.into_values().for_each(&mut add);
            }
        }
    }
    for list in runs.files.values_mut() {
        list.sort();
        list.dedup();
    }
    runs.manifests = manifests;
    Ok(runs)
}
