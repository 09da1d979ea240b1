//! `promptad plan`: a run spec validated and its work items numbered.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::Args;
use serde::Serialize;

use super::values::ReportFormat;
use crate::data::dataset::Dataset;
use crate::exit;
use crate::run::worker_range;
use crate::spec::plan::{Plan, UnitRange};
use crate::spec::{Problem, Spec};
use crate::store::Location;

/// Validate a run spec and print its work items (what each Job index does).
///
/// Reads a run spec (TOML, see jobs/README.md), checks it (unknown keys, unknown categories,
/// URLs, shots, seeds, models) and prints the work of the training Job (index → category, k,
/// seed and artifact) and of the scoring Job and nightly CronJob (index → archive, category,
/// model, worker and run id), each with the number of completions its Kubernetes Job needs.
///
/// With --check it also reaches every location through the store (S3 settings from the AWS_*
/// environment): the dataset and each category in it with enough normal images for the largest
/// k, the backbone weights, the archives and the unit range each scoring worker gets, the output
/// and artifact roots. Models not trained yet are listed, not errors.
///
/// Exit codes (the table of `promptad --help`): 0 valid (and, with --check, everything
/// reachable); 64 invalid spec; 65 or 66 something is unusable or missing; 75 a store could not
/// be reached.
#[derive(Debug, Args)]
pub struct PlanArgs {
    /// The run spec (TOML).
    #[arg(value_name = "SPEC")]
    pub spec: PathBuf,
    /// Also check the dataset, weights, archives and output roots through the store.
    #[arg(long)]
    pub check: bool,
    /// table (for reading) or json (the plan as data: {spec, train: {completions, items}, score: ...}).
    #[arg(long, value_enum, default_value_t = ReportFormat::Table)]
    pub format: ReportFormat,
}

/// The plan with the result of `--check`.
#[derive(Debug, Serialize)]
struct CheckedPlan {
    #[serde(flatten)]
    plan: Plan,
    #[serde(skip_serializing_if = "Option::is_none")]
    check: Option<CheckReport>,
}

#[derive(Debug, Clone, Default, Serialize)]
struct CheckReport {
    ok: bool,
    problems: Vec<Problem>,
    notes: Vec<String>,
    /// The exit code the problems call for.
    #[serde(skip)]
    code: u8,
}

impl CheckReport {
    fn fail(&mut self, key: &str, error: anyhow::Error) {
        let code = super::exit_code(&error);
        // The worst problem decides: missing input over a temporary failure over the rest.
        let rank = |c: u8| match c {
            exit::BAD_CONFIG | exit::BAD_INPUT | exit::MISSING_INPUT => 3,
            exit::TEMPORARY => 2,
            _ => 1,
        };
        if self.code == 0 || rank(code) > rank(self.code) {
            self.code = if code == exit::FAILED { exit::MISSING_INPUT } else { code };
        }
        self.problems.push(Problem { key: key.into(), message: format!("{error:#}") });
    }
}

pub fn run(args: PlanArgs) -> Result<ExitCode> {
    let spec = match Spec::load(&args.spec) {
        Ok(spec) => spec,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(ExitCode::from(exit::BAD_CONFIG));
        }
    };
    let mut plan = spec.plan();
    let check = args.check.then(|| check(&spec, &mut plan));
    let code = check.as_ref().map_or(exit::OK, |c| c.code);
    let text = match args.format {
        ReportFormat::Json => {
            format!("{}\n", serde_json::to_string_pretty(&CheckedPlan { plan, check: check.clone() })?)
        }
        ReportFormat::Table => {
            let mut text = plan.to_text();
            if let Some(check) = &check {
                text.push('\n');
                for note in &check.notes {
                    text.push_str(&format!("note: {note}\n"));
                }
                if check.ok {
                    text.push_str("check: every location reached, every category found\n");
                }
            }
            text
        }
    };
    // A closed pipe (`promptad plan SPEC | head`) is not an error.
    if let Err(e) = std::io::stdout().lock().write_all(text.as_bytes()) {
        if e.kind() != std::io::ErrorKind::BrokenPipe {
            return Err(e.into());
        }
    }
    for problem in check.iter().flat_map(|c| &c.problems) {
        eprintln!("error: {problem}");
    }
    Ok(ExitCode::from(code))
}

/// Reaches everything the spec names; fills in each scoring worker's unit range.
fn check(spec: &Spec, plan: &mut Plan) -> CheckReport {
    let mut report = CheckReport::default();
    let run = &spec.run;
    let max_k = run.train.shots.iter().copied().max().unwrap_or(1);
    match Dataset::open(&run.dataset.url) {
        Err(e) => report.fail("dataset.url", e.into()),
        Ok(dataset) => match dataset.categories() {
            Err(e) => report.fail("dataset.url", e.into()),
            Ok(available) => {
                for category in &spec.categories {
                    if !available.contains(category) {
                        report.fail(
                            "dataset.categories",
                            anyhow::Error::from(crate::worker::WorkerError::MissingCategory {
                                category: category.clone(),
                                data: run.dataset.url.clone(),
                                available: available.join(", "),
                            }),
                        );
                        continue;
                    }
                    match dataset.train_good(category) {
                        Ok(good) if good.len() < max_k => report.fail(
                            "train.shots",
                            anyhow::Error::from(crate::data::DataError::NotEnoughShots {
                                category: category.clone(),
                                k: max_k,
                                available: good.len(),
                            }),
                        ),
                        Ok(_) => {}
                        Err(e) => report.fail(&format!("dataset ({category})"), e.into()),
                    }
                }
            }
        },
    }
    if let Some(url) = &run.backbone.weights {
        let found = url.rsplit_once('/').map_or(Ok(None), |(folder, name)| {
            Location::parse(folder).and_then(|l| l.head(name)).map(|m| m.map(|m| m.size))
        });
        match found {
            Ok(Some(size)) => report.notes.push(format!("backbone weights {url}: {:.1} MB", size as f64 / 1e6)),
            Ok(None) => report.fail(
                "backbone.weights",
                anyhow::Error::from(crate::store::StoreError::NotFound { url: url.clone() })
                    .context("upload the OpenCLIP safetensors checkpoint there (README: Running on Kubernetes)"),
            ),
            Err(e) => report.fail("backbone.weights", e.into()),
        }
    }
    for (key, url) in [("train.artifacts", &run.train.artifacts), ("score.out", &run.score.out)] {
        if let Err(e) = Location::parse(url).and_then(|l| l.check_reachable()) {
            report.fail(key, e.into());
        }
    }
    let mut missing_models = 0;
    for item in &plan.train.items {
        match Location::parse(&item.artifact).and_then(|l| l.exists("manifest.json")) {
            Ok(true) => {}
            Ok(false) => missing_models += 1,
            Err(e) => {
                report.fail("train.artifacts", e.into());
                break;
            }
        }
    }
    report.notes.push(format!(
        "{} of {} models trained so far",
        plan.train.completions - missing_models,
        plan.train.completions
    ));

    for (i, archive) in spec.archives().iter().enumerate() {
        let key = if run.score.archives.is_empty() {
            "dataset.url (the default archive)".to_string()
        } else {
            format!("score.archives[{i}].url")
        };
        let dataset = match Dataset::open(&archive.url) {
            Ok(d) => d,
            Err(e) => {
                report.fail(&key, e.into());
                continue;
            }
        };
        let mut units_of = std::collections::BTreeMap::new();
        for item in plan.score.items.iter_mut().filter(|s| s.archive == archive.name) {
            if !units_of.contains_key(&item.category) {
                let units = dataset.test_units(&item.category, run.score.rows_per_unit);
                if let Err(e) = &units {
                    report.fail(&key, anyhow::anyhow!("{e:#}"));
                }
                units_of.insert(item.category.clone(), units.ok());
            }
            let Some(Some(units)) = units_of.get(&item.category) else { continue };
            let range = worker_range(units.len(), (item.worker, item.workers));
            let mine = &units[range.clone()];
            item.units = Some(UnitRange {
                start: range.start,
                end: range.end,
                of: units.len(),
                first: mine.first().map(|u| u.name.clone()),
                last: mine.last().map(|u| u.name.clone()),
                images: mine.iter().map(|u| u.images).sum(),
            });
            if mine.is_empty() && item.worker + 1 == item.workers {
                report.notes.push(format!(
                    "archive {} category {}: {} units for {} workers, so some workers have nothing to do; lower score.workers_per_category or score.rows_per_unit",
                    archive.name, item.category, units.len(), item.workers
                ));
            }
        }
    }
    report.ok = report.problems.is_empty();
    report
}
