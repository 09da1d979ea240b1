//! Product categories: the prompt name and the manual anomaly states of each.
//!
//! The 15 MVTec AD and 12 VisA categories are data (`assets/categories.json`), copied verbatim from
//! PromptAD's `ad_prompts.py` (reference `promptad-official-behaviour.md` §4), typos and duplicates
//! included: they change the prompt set and so the prototypes. A user's own category takes a
//! display name and optionally its own suffixes; without them only the 8 generic states are used.

use std::sync::OnceLock;

use serde::{Deserialize, Serialize};

use super::PromptError;

const CATEGORIES_JSON: &str = include_str!("../../assets/categories.json");

#[derive(Debug, Deserialize)]
struct CatalogFile {
    state_anomaly: Vec<String>,
    datasets: std::collections::BTreeMap<String, Vec<CatalogEntry>>,
}

#[derive(Debug, Clone, Deserialize)]
struct CatalogEntry {
    key: String,
    name: String,
    suffixes: Vec<String>,
}

/// A category ready to build prompts from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Category {
    /// The folder / dataset key, e.g. `metal_nut`.
    pub key: String,
    /// The object name in the prompts, e.g. `metal nut` (PromptAD's `class_mapping`).
    pub name: String,
    /// The manual anomaly states, generic first, then the category's own: `"damaged {}"`, ...
    pub anomaly_states: Vec<String>,
    /// `mvtec`, `visa`, or `None` for a user's own category.
    pub dataset: Option<String>,
}

/// The built-in catalogue.
pub struct Catalog {
    generic_states: Vec<String>,
    builtin: Vec<(String, CatalogEntry)>,
}

impl Catalog {
    pub fn builtin() -> &'static Catalog {
        static CATALOG: OnceLock<Catalog> = OnceLock::new();
        CATALOG.get_or_init(|| {
            let file: CatalogFile = serde_json::from_str(CATEGORIES_JSON).expect("assets/categories.json is valid");
            let builtin = file
                .datasets
                .into_iter()
                .flat_map(|(dataset, entries)| entries.into_iter().map(move |e| (dataset.clone(), e)))
                .collect();
            Catalog { generic_states: file.state_anomaly, builtin }
        })
    }

    /// PromptAD's `state_anomaly`: the 8 states every category gets.
    pub fn generic_states(&self) -> &[String] {
        &self.generic_states
    }

    /// The built-in category keys of a dataset (`mvtec`, `visa`) in the official order.
    pub fn keys(&self, dataset: &str) -> Vec<&str> {
        self.builtin.iter().filter(|(d, _)| d == dataset).map(|(_, e)| e.key.as_str()).collect()
    }

    pub fn all_keys(&self) -> Vec<&str> {
        self.builtin.iter().map(|(_, e)| e.key.as_str()).collect()
    }

    /// A built-in category, or a user's own one when `display_name` is given. Without a display
    /// name an unknown key is an error: a typo must not silently train with generic prompts.
    pub fn resolve(
        &self,
        key: &str,
        display_name: Option<&str>,
        own_suffixes: Option<&[String]>,
    ) -> Result<Category, PromptError> {
        if let Some((dataset, entry)) = self.builtin.iter().find(|(_, e)| e.key == key) {
            let mut anomaly_states = self.generic_states.clone();
            anomaly_states.extend(own_suffixes.map(<[String]>::to_vec).unwrap_or_else(|| entry.suffixes.clone()));
            return Ok(Category {
                key: key.to_string(),
                name: display_name.unwrap_or(&entry.name).to_string(),
                anomaly_states,
                dataset: Some(dataset.clone()),
            });
        }
        let Some(name) = display_name else {
            return Err(PromptError::UnknownCategory { key: key.to_string(), known: self.all_keys().join(", ") });
        };
        let mut anomaly_states = self.generic_states.clone();
        match own_suffixes {
            Some(suffixes) => anomaly_states.extend(suffixes.iter().cloned()),
            None => tracing::warn!(
                category = key,
                name,
                "no anomaly suffixes given for this category: using the 8 generic ones only"
            ),
        }
        for state in &anomaly_states {
            if state.matches("{}").count() != 1 {
                return Err(PromptError::BadState { state: state.clone() });
            }
        }
        Ok(Category { key: key.to_string(), name: name.to_string(), anomaly_states, dataset: None })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_prompt_counts_match_the_reference() {
        // M = 8 + per-class count (reference §4).
        let catalog = Catalog::builtin();
        for (key, m) in [
            ("bottle", 11),
            ("toothbrush", 10),
            ("carpet", 14),
            ("metal_nut", 12),
            ("fryum", 14),
            ("pcb4", 15),
            ("candle", 15),
        ] {
            assert_eq!(catalog.resolve(key, None, None).unwrap().anomaly_states.len(), m, "{key}");
        }
        assert_eq!(catalog.keys("mvtec").len(), 15);
        assert_eq!(catalog.keys("visa").len(), 12);
        assert_eq!(catalog.resolve("pcb2", None, None).unwrap().name, "printed circuit board");
    }

    #[test]
    fn unknown_category_needs_a_display_name() {
        let catalog = Catalog::builtin();
        let err = catalog.resolve("bottel", None, None).unwrap_err().to_string();
        assert!(err.contains("bottel") && err.contains("bottle") && err.contains("--category-name"), "{err}");
        let own = catalog.resolve("gasket", Some("rubber gasket"), None).unwrap();
        assert_eq!((own.name.as_str(), own.anomaly_states.len(), own.dataset.clone()), ("rubber gasket", 8, None));
        let own = catalog.resolve("gasket", Some("rubber gasket"), Some(&["{} with tear".to_string()])).unwrap();
        assert_eq!(own.anomaly_states.last().unwrap(), "{} with tear");
        assert!(catalog.resolve("gasket", Some("g"), Some(&["torn".to_string()])).is_err());
    }
}
