//! The JSON records of a run: the plan, a unit's commit record and the category's manifest
//! (`schemas/run_manifest.json`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The work of one category of a run, written once by the first worker; every worker checks it
/// agrees, so one run id never mixes two models or two datasets.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunPlan {
    pub run_id: String,
    pub category: String,
    pub model_version: String,
    pub dataset: String,
    pub map_size: i64,
    /// How the maps table stores the run's maps; plans written before compact maps stored full ones.
    #[serde(default = "full_maps")]
    pub maps: crate::sink::MapsMode,
    /// The work units, in order.
    pub units: Vec<PlannedUnit>,
    /// The calibration whose decisions the run's score rows carry (`pred_label`,
    /// `anomalous_pixels`); absent when the run makes none. Part of the agreement: one run never
    /// mixes decided and undecided rows, or two calibrations.
    #[serde(default)]
    pub calibration: Option<crate::metrics::Calibration>,
}

impl RunPlan {
    /// What differs from `other`, one `field: this, now other` line per field.
    pub fn differences(&self, other: &RunPlan) -> Vec<String> {
        let mut lines = Vec::new();
        let mut compare = |field: &str, this: String, that: String| {
            if this != that {
                lines.push(format!("{field} {this}, now {that}"));
            }
        };
        compare("model", self.model_version.clone(), other.model_version.clone());
        compare("data", self.dataset.clone(), other.dataset.clone());
        compare("map size", self.map_size.to_string(), other.map_size.to_string());
        compare("maps", self.maps.name().into(), other.maps.name().into());
        let units = |p: &RunPlan| format!("{} units", p.units.len());
        compare("units", units(self), units(other));
        if self.units.len() == other.units.len() && self.units != other.units {
            compare("units", "as planned".into(), "different names or sizes".into());
        }
        let calibration = |p: &RunPlan| p.calibration.as_ref().map_or("none".to_string(), |c| c.version.clone());
        compare("calibration", calibration(self), calibration(other));
        if lines.is_empty() {
            lines.push("the plans differ".into());
        }
        lines
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlannedUnit {
    pub name: String,
    pub images: usize,
}

/// A unit's commit record: its files exist and are complete.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UnitRecord {
    pub unit: String,
    pub category: String,
    pub images: usize,
    pub skipped: usize,
    /// Relative to the output root, one per table (keyed by the table's name).
    pub files: BTreeMap<String, String>,
    pub seconds: f64,
}

/// The manifest of one category of a run, written last.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunManifest {
    pub plan: RunPlan,
    pub images: usize,
    pub skipped: usize,
    pub files: Vec<String>,
    pub promptad_version: String,
    pub completed_unix: u64,
}

fn full_maps() -> crate::sink::MapsMode {
    crate::sink::MapsMode::Full
}
