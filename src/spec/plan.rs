//! The work of a run spec, numbered the way Kubernetes Indexed Jobs number their pods: training
//! index → (category, k, seed), scoring index → (archive, category, model, worker). The numbering
//! needs only the spec, never the data, so that a Job's `completions` can be written down before
//! anything runs (`promptad plan` prints it; `tests/k8s.rs` checks the manifests against it).
//!
//! ```text
//! training index  = (category_i · |shots| + shot_i) · |seeds| + seed_i
//! scoring index   = ((archive_i · |categories of the archive| + category_i) · |models| + model_i) · workers + worker
//! ```
//! A scoring worker owns units `worker·n/workers .. (worker+1)·n/workers` of its category's `n`
//! units ([`crate::run::worker_range`]); `n` is known once the archive is listed
//! (`promptad plan --check` shows it).

use serde::{Deserialize, Serialize};

use super::{ModelRef, Spec, SpecError};

/// The placeholders a run id may hold, resolved by each worker from its environment.
pub const RUN_ID_PLACEHOLDERS: [&str; 2] = ["{job_name}", "{schedule_date}"];

/// The environment variable holding the Kubernetes Job's name (the manifests set it from the
/// pod label `batch.kubernetes.io/job-name`).
pub const JOB_NAME_ENV: &str = "PROMPTAD_JOB_NAME";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    /// The spec file as given.
    pub spec: String,
    pub train: JobPlan<TrainItem>,
    pub score: JobPlan<ScoreItem>,
}

/// The work items of one Job; `completions` is what the Job's `spec.completions` must be.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobPlan<T> {
    pub completions: usize,
    pub items: Vec<T>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainItem {
    pub index: usize,
    pub category: String,
    pub k: usize,
    pub seed: u64,
    /// Where the model is written.
    pub artifact: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScoreItem {
    pub index: usize,
    pub archive: String,
    /// The archive's URL.
    pub data: String,
    pub category: String,
    pub k: usize,
    pub seed: u64,
    /// The model artifact that scores.
    pub model: String,
    /// The training work item that writes that model.
    pub train_index: usize,
    /// This worker among `workers` for the (archive, category, model).
    pub worker: usize,
    pub workers: usize,
    /// The run id, placeholders unresolved.
    pub run_id: String,
    /// The output root of the archive.
    pub out: String,
    /// The worker's units, when the archive was listed (`promptad plan --check`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub units: Option<UnitRange>,
}

/// A worker's contiguous range of a category's units.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UnitRange {
    /// Unit positions `start..end` of `of`.
    pub start: usize,
    pub end: usize,
    pub of: usize,
    /// Names of the first and last unit of the range (none when it is empty).
    pub first: Option<String>,
    pub last: Option<String>,
    pub images: usize,
}

/// The run id of one model's scoring: `<base>-k<k>-seed<seed>`.
///
/// ```
/// use promptad::spec::{plan::model_run_id, ModelRef};
/// assert_eq!(model_run_id("nightly-{schedule_date}", ModelRef { k: 4, seed: 111 }), "nightly-{schedule_date}-k4-seed111");
/// ```
pub fn model_run_id(base: &str, model: ModelRef) -> String {
    format!("{base}-k{}-seed{}", model.k, model.seed)
}

impl Spec {
    /// The numbered work of this spec; see the module documentation.
    pub fn plan(&self) -> Plan {
        let mut train = Vec::new();
        for category in &self.categories {
            for &k in &self.run.train.shots {
                for &seed in &self.run.train.seeds {
                    train.push(TrainItem {
                        index: train.len(),
                        category: category.clone(),
                        k,
                        seed,
                        artifact: self.artifact_url(category, k, seed),
                    });
                }
            }
        }
        let models = self.scoring_models();
        let workers = self.run.score.workers_per_category;
        let mut score = Vec::new();
        for archive in self.archives() {
            let categories = archive.categories.clone().unwrap_or_else(|| self.categories.clone());
            let out = format!("{}/{}", self.run.score.out.trim_end_matches('/'), archive.name);
            for category in &categories {
                for &model in &models {
                    let train_index = train
                        .iter()
                        .find(|t| &t.category == category && t.k == model.k && t.seed == model.seed)
                        .map(|t| t.index)
                        .expect("validated: every scoring model of every category is trained");
                    for worker in 0..workers {
                        score.push(ScoreItem {
                            index: score.len(),
                            archive: archive.name.clone(),
                            data: archive.url.clone(),
                            category: category.clone(),
                            k: model.k,
                            seed: model.seed,
                            model: self.artifact_url(category, model.k, model.seed),
                            train_index,
                            worker,
                            workers,
                            run_id: model_run_id(&self.run.score.run_id, model),
                            out: out.clone(),
                            units: None,
                        });
                    }
                }
            }
        }
        Plan {
            spec: self.file.display().to_string(),
            train: JobPlan { completions: train.len(), items: train },
            score: JobPlan { completions: score.len(), items: score },
        }
    }

    /// The training work item `index`, or an error naming the number of items.
    pub fn train_item(&self, index: usize) -> Result<TrainItem, SpecError> {
        let plan = self.plan();
        plan.train.items.get(index).cloned().ok_or(SpecError::IndexOutOfRange {
            path: self.file.clone(),
            job: "training",
            index,
            completions: plan.train.completions,
        })
    }

    /// The scoring work item `index`, or an error naming the number of items.
    pub fn score_item(&self, index: usize) -> Result<ScoreItem, SpecError> {
        let plan = self.plan();
        plan.score.items.get(index).cloned().ok_or(SpecError::IndexOutOfRange {
            path: self.file.clone(),
            job: "scoring",
            index,
            completions: plan.score.completions,
        })
    }
}

/// A run id template is valid if, placeholders aside, it uses letters, digits, '-', '_' and '.'.
pub fn check_run_id_template(template: &str) -> Result<(), SpecError> {
    let mut bare = template.to_string();
    for placeholder in RUN_ID_PLACEHOLDERS {
        bare = bare.replace(placeholder, "x");
    }
    if bare.is_empty() || !bare.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) {
        return Err(SpecError::RunId {
            template: template.into(),
            reason: format!(
                "use letters, digits, '-', '_' and '.', and the placeholders {}",
                RUN_ID_PLACEHOLDERS.join(" and ")
            ),
        });
    }
    Ok(())
}

/// Resolves the placeholders of a run id. `job_name` is the Kubernetes Job's name: `{job_name}`
/// is it, `{schedule_date}` is the UTC date in the name a CronJob gives its Jobs
/// (`<cronjob>-<minutes since 1970>`), so every pod of one nightly Job, retried ones too, gets the
/// same run id, and each night a new one.
///
/// ```
/// use promptad::spec::plan::resolve_run_id;
/// assert_eq!(resolve_run_id("nightly-{schedule_date}", Some("promptad-nightly-29402040")).unwrap(), "nightly-2025-11-26");
/// assert_eq!(resolve_run_id("eval", None).unwrap(), "eval");
/// assert!(resolve_run_id("nightly-{schedule_date}", Some("promptad-nightly-manual")).is_err());
/// ```
pub fn resolve_run_id(template: &str, job_name: Option<&str>) -> Result<String, SpecError> {
    check_run_id_template(template)?;
    let mut id = template.to_string();
    let need_job = |what: &str| {
        SpecError::RunId {
        template: template.into(),
        reason: format!("{what} needs the Job's name in {JOB_NAME_ENV} (the manifests set it from the pod label batch.kubernetes.io/job-name); outside a Job pass --run-id"),
    }
    };
    if id.contains("{job_name}") {
        let job = job_name.ok_or_else(|| need_job("{job_name}"))?;
        id = id.replace("{job_name}", job);
    }
    if id.contains("{schedule_date}") {
        let job = job_name.ok_or_else(|| need_job("{schedule_date}"))?;
        let minutes = job.rsplit_once('-').and_then(|(_, m)| m.parse::<i64>().ok()).filter(|&m| m > 0).ok_or_else(|| SpecError::RunId {
            template: template.into(),
            reason: format!(
                "{{schedule_date}} is read from the name a CronJob gives its Jobs (<cronjob>-<minutes since 1970>), and {job:?} is not one; \
                 for a Job made by hand pass --run-id (e.g. nightly-2025-01-31)"
            ),
        })?;
        let date = minutes.checked_mul(60).and_then(utc_date).ok_or_else(|| SpecError::RunId {
            template: template.into(),
            reason: format!(
                "{job:?} names minute {minutes} since 1970, which is no date; for a Job made by hand pass --run-id \
                 (e.g. nightly-2025-01-31)"
            ),
        })?;
        id = id.replace("{schedule_date}", &date);
    }
    Ok(id)
}

/// `YYYY-MM-DD` of a Unix time, UTC; `None` outside the dates chrono represents (about
/// ±262,000 years).
fn utc_date(unix_seconds: i64) -> Option<String> {
    use chrono::Datelike;
    let date = chrono::DateTime::from_timestamp(unix_seconds, 0)?.date_naive();
    Some(format!("{:04}-{:02}-{:02}", date.year(), date.month(), date.day()))
}

impl Plan {
    /// The plan as a human reads it: one line per work item.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        out.push_str(&format!("run spec {}\n\n", self.spec));
        out.push_str(&format!("training Job: completions {} (one model per index)\n", self.train.completions));
        out.push_str(&format!("  {:>5}  {:<16} {:>3} {:>6}  {}\n", "index", "category", "k", "seed", "artifact"));
        for t in &self.train.items {
            out.push_str(&format!("  {:>5}  {:<16} {:>3} {:>6}  {}\n", t.index, t.category, t.k, t.seed, t.artifact));
        }
        out.push_str(&format!(
            "\nscoring Job and nightly CronJob: completions {} (one (archive, category, model, worker) per index)\n",
            self.score.completions
        ));
        out.push_str(&format!(
            "  {:>5}  {:<10} {:<16} {:<12} {:>7}  {:<44} {}\n",
            "index", "archive", "category", "model", "worker", "units", "run id"
        ));
        for s in &self.score.items {
            let units = match &s.units {
                None => format!("part {} of {} of the units", s.worker + 1, s.workers),
                Some(u) if u.start == u.end => format!("none (category has {} units)", u.of),
                Some(u) => format!(
                    "{}..={} ({}/{}, {} images)",
                    u.first.as_deref().unwrap_or("?"),
                    u.last.as_deref().unwrap_or("?"),
                    u.end - u.start,
                    u.of,
                    u.images
                ),
            };
            out.push_str(&format!(
                "  {:>5}  {:<10} {:<16} {:<12} {:>7}  {:<44} {}\n",
                s.index,
                s.archive,
                s.category,
                format!("k{} seed{}", s.k, s.seed),
                format!("{}/{}", s.worker, s.workers),
                units,
                s.run_id
            ));
        }
        let mut outs: Vec<&str> = self.score.items.iter().map(|s| s.out.as_str()).collect();
        outs.dedup();
        for out_url in outs {
            out.push_str(&format!("\nresults: {out_url} (promptad eval {out_url})\n"));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_match_known_days() {
        assert_eq!(utc_date(0).as_deref(), Some("1970-01-01"));
        assert_eq!(utc_date(951_782_400).as_deref(), Some("2000-02-29"));
        assert_eq!(utc_date(1_767_225_599).as_deref(), Some("2025-12-31"));
        assert_eq!(utc_date(1_767_225_600).as_deref(), Some("2026-01-01"));
        // the minute a CronJob "0 2 * * *" fired on 2025-11-26 (02:00 UTC)
        assert_eq!(utc_date(29_402_040 * 60).as_deref(), Some("2025-11-26"));
    }

    #[test]
    fn a_schedule_minute_beyond_the_calendar_is_an_error_not_an_overflow() {
        // i64::MAX minutes overflow when turned into seconds; 10^13 minutes is past year 262143.
        for minutes in [i64::MAX.to_string(), 10_000_000_000_000i64.to_string()] {
            let job = format!("promptad-nightly-{minutes}");
            let err = resolve_run_id("nightly-{schedule_date}", Some(&job)).unwrap_err().to_string();
            assert!(err.contains(&minutes) && err.contains("--run-id"), "{err}");
        }
    }

    #[test]
    fn run_id_placeholders_need_a_job_name() {
        assert_eq!(resolve_run_id("{job_name}", Some("promptad-score-mvtec")).unwrap(), "promptad-score-mvtec");
        let err = resolve_run_id("nightly-{schedule_date}", None).unwrap_err().to_string();
        assert!(err.contains(JOB_NAME_ENV) && err.contains("--run-id"), "{err}");
        assert!(check_run_id_template("a b").is_err());
        assert!(check_run_id_template("{date}").is_err(), "only the documented placeholders");
    }
}
