//! `promptad run --local`: a run spec rehearsed on this machine, every work item its own process,
//! retried the way the manifests' `podFailurePolicy` retries pods.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Args;

use crate::exit::{self, Retry};
use crate::spec::plan::{model_run_id, resolve_run_id, JOB_NAME_ENV};
use crate::spec::Spec;

/// Rehearse a run spec here, as a cluster would run it: every work item its own process.
///
/// Runs every training work item (`promptad train --spec SPEC --index N` for each N that
/// `promptad plan SPEC` lists), then every scoring work item (`promptad score --spec SPEC --index
/// N`), each as its own process with JOB_COMPLETION_INDEX set, --parallel at a time, and finally
/// `promptad eval` over each archive's run of each model.
///
/// Failed work items are handled as the Kubernetes manifests' podFailurePolicy handles pods: a
/// permanent exit code (2, 64, 65, 66; see `promptad --help`) fails the index at once; 143 (stopped by SIGTERM) is
/// retried without counting; anything else, a killed process included, is retried up to
/// --backoff-limit-per-index times. Nothing done is redone (trained models are kept, committed
/// units are skipped), so after a failure the same command continues where the run stopped.
///
/// Exit code: 0 when every work item succeeded and every run evaluated; 1 otherwise.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The run spec (TOML).
    #[arg(value_name = "SPEC")]
    pub spec: PathBuf,
    /// Run the work items as processes on this machine. Required: this is the only mode here (on a
    /// cluster, apply an overlay of k8s/; see the README).
    #[arg(long, required = true)]
    pub local: bool,
    /// Work items running at a time (a Job's parallelism).
    #[arg(long, default_value_t = 2, value_name = "P")]
    pub parallel: usize,
    /// Retries of a work item after a retryable failure (the Jobs' backoffLimitPerIndex).
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub backoff_limit_per_index: usize,
    /// The scoring run id [default: the spec's score.run_id]; each model's run is <id>-k<k>-seed<s>.
    #[arg(long, alias = "run-id", value_name = "ID")]
    pub run: Option<String>,
}

/// Starts of one index stopped by SIGTERM after which the rehearsal gives up on it anyway.
const MAX_STOPPED_STARTS: usize = 10;

struct Task {
    index: usize,
    label: String,
    /// Failures counted against the backoff limit.
    failures: usize,
    starts: usize,
}

struct Running {
    task: Task,
    child: Child,
    relays: Vec<std::thread::JoinHandle<()>>,
    started: Instant,
}

/// A work item that did not succeed, and why.
struct Failed {
    job: &'static str,
    index: usize,
    label: String,
    why: String,
}

pub fn run(args: RunArgs) -> Result<ExitCode> {
    let spec = Spec::load(&args.spec)?;
    let plan = spec.plan();
    let exe = std::env::current_exe().context("cannot find the promptad binary to start workers with")?;
    let stem = args.spec.file_stem().map_or("spec".into(), |s| s.to_string_lossy().to_string());
    let job_name = format!("promptad-{stem}");
    // Resolve the run ids before starting anything: a placeholder that cannot be resolved here
    // would fail every scoring worker the same way.
    let base = args.run.clone().unwrap_or_else(|| spec.run.score.run_id.clone());
    let mut evals: Vec<(String, String)> = Vec::new();
    for item in &plan.score.items {
        let id =
            resolve_run_id(&model_run_id(&base, crate::spec::ModelRef { k: item.k, seed: item.seed }), Some(&job_name))
                .context(
                    "the local rehearsal names its Jobs promptad-<spec name>, which has no CronJob date; pass --run",
                )?;
        if !evals.contains(&(item.out.clone(), id.clone())) {
            evals.push((item.out.clone(), id));
        }
    }
    let parallel = args.parallel.max(1);
    let started = Instant::now();
    eprintln!(
        "promptad run: {} training and {} scoring work items from {}, {parallel} at a time",
        plan.train.completions,
        plan.score.completions,
        args.spec.display()
    );

    let train_tasks =
        plan.train.items.iter().map(|t| (t.index, format!("{} k{} seed{}", t.category, t.k, t.seed))).collect();
    let spec_arg = args.spec.display().to_string();
    let mut failed = run_job(
        &exe,
        "train",
        &spec_arg,
        &[],
        train_tasks,
        parallel,
        args.backoff_limit_per_index,
        &format!("{job_name}-train"),
    );
    if failed.is_empty() {
        let mut extra = Vec::new();
        if let Some(id) = &args.run {
            extra = vec!["--run".to_string(), id.clone()];
        }
        let score_tasks = plan
            .score
            .items
            .iter()
            .map(|s| {
                (
                    s.index,
                    format!("{} {} k{} seed{} worker {}/{}", s.archive, s.category, s.k, s.seed, s.worker, s.workers),
                )
            })
            .collect();
        failed = run_job(
            &exe,
            "score",
            &spec_arg,
            &extra,
            score_tasks,
            parallel,
            args.backoff_limit_per_index,
            &format!("{job_name}-score"),
        );
    } else {
        eprintln!("promptad run: training failed, so scoring was not started (as after a failed training Job)");
    }
    if !failed.is_empty() {
        eprintln!("promptad run: {} work item(s) failed after {:.1} s:", failed.len(), started.elapsed().as_secs_f64());
        for f in &failed {
            eprintln!("  {} index {} ({}): {}", f.job, f.index, f.label, f.why);
        }
        eprintln!("fix the cause and run the same command again: finished models and committed units are kept");
        return Ok(ExitCode::FAILURE);
    }
    let mut ok = true;
    for (out, id) in &evals {
        println!("\n{out}, run {id}:");
        std::io::stdout().flush()?;
        let status =
            Command::new(&exe).args(["eval", out, "--run", id]).status().context("cannot start promptad eval")?;
        ok &= status.success();
    }
    eprintln!("promptad run: done in {:.1} s", started.elapsed().as_secs_f64());
    Ok(if ok { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// Runs the tasks of one Job to the end; returns the ones that failed for good.
#[allow(clippy::too_many_arguments)]
fn run_job(
    exe: &Path,
    job: &'static str,
    spec: &str,
    extra: &[String],
    tasks: Vec<(usize, String)>,
    parallel: usize,
    backoff_limit: usize,
    job_name: &str,
) -> Vec<Failed> {
    let mut queue: VecDeque<Task> =
        tasks.into_iter().map(|(index, label)| Task { index, label, failures: 0, starts: 0 }).collect();
    let mut running: Vec<Running> = Vec::new();
    let mut failed = Vec::new();
    while !queue.is_empty() || !running.is_empty() {
        while running.len() < parallel {
            let Some(mut task) = queue.pop_front() else { break };
            task.starts += 1;
            match start(exe, job, spec, extra, task.index, job_name) {
                Ok((child, relays)) => running.push(Running { task, child, relays, started: Instant::now() }),
                Err(e) => failed.push(Failed { job, index: task.index, label: task.label, why: format!("{e:#}") }),
            }
        }
        std::thread::sleep(Duration::from_millis(20));
        let mut i = 0;
        while i < running.len() {
            let status = match running[i].child.try_wait() {
                Ok(Some(status)) => status,
                Ok(None) => {
                    i += 1;
                    continue;
                }
                Err(e) => {
                    let r = running.swap_remove(i);
                    failed.push(Failed {
                        job,
                        index: r.task.index,
                        label: r.task.label,
                        why: format!("cannot wait for the worker: {e}"),
                    });
                    continue;
                }
            };
            let Running { mut task, relays, started, .. } = running.swap_remove(i);
            for relay in relays {
                let _ = relay.join();
            }
            let seconds = started.elapsed().as_secs_f64();
            let (verdict, why) = verdict(&status);
            eprintln!(
                "[{job} {}] {} ({}) after {seconds:.1} s: {why}",
                task.index,
                describe_status(&status),
                task.label
            );
            match verdict {
                Verdict::Done => {}
                Verdict::FailIndex => failed.push(Failed {
                    job,
                    index: task.index,
                    label: task.label,
                    why: format!("{}: {why}", describe_status(&status)),
                }),
                Verdict::RetryUncounted if task.starts < MAX_STOPPED_STARTS => queue.push_back(task),
                Verdict::RetryUncounted => failed.push(Failed {
                    job,
                    index: task.index,
                    label: task.label,
                    why: format!("stopped {MAX_STOPPED_STARTS} times"),
                }),
                Verdict::Retry => {
                    task.failures += 1;
                    if task.failures > backoff_limit {
                        let why = format!(
                            "{}: {why}; {} failure(s), backoff limit {backoff_limit}",
                            describe_status(&status),
                            task.failures
                        );
                        failed.push(Failed { job, index: task.index, label: task.label, why });
                    } else {
                        queue.push_back(task);
                    }
                }
            }
        }
    }
    failed.sort_by_key(|f| f.index);
    failed
}

#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    Done,
    /// A permanent failure (`FailIndex`).
    FailIndex,
    /// Stopped, not broken (`Ignore`).
    RetryUncounted,
    /// Counted against the backoff limit.
    Retry,
}

fn verdict(status: &ExitStatus) -> (Verdict, String) {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(0), _) => (Verdict::Done, exit::describe(exit::OK)),
        (Some(code), _) if exit::codes(Retry::Never).contains(&(code as u8)) => {
            (Verdict::FailIndex, exit::describe(code as u8))
        }
        (Some(code), _) if exit::codes(Retry::NotCounted).contains(&(code as u8)) => {
            (Verdict::RetryUncounted, exit::describe(code as u8))
        }
        (Some(code), _) => (Verdict::Retry, exit::describe(code as u8)),
        // Killed by SIGTERM before its handler was in place: stopped, like a preempted pod.
        (None, Some(15)) => (Verdict::RetryUncounted, "killed by SIGTERM: retried without counting".into()),
        (None, _) => (Verdict::Retry, "killed by a signal: retried".into()),
    }
}

fn describe_status(status: &ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit code {code}"),
        (None, Some(signal)) => format!("killed by signal {signal}"),
        _ => "ended".into(),
    }
}

/// Starts one worker with its output relayed line by line, prefixed with its job and index.
fn start(
    exe: &Path,
    job: &str,
    spec: &str,
    extra: &[String],
    index: usize,
    job_name: &str,
) -> Result<(Child, Vec<std::thread::JoinHandle<()>>)> {
    let mut child = Command::new(exe)
        .args([job, "--spec", spec, "--index", &index.to_string()])
        .args(extra)
        .env("JOB_COMPLETION_INDEX", index.to_string())
        .env(JOB_NAME_ENV, job_name)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot start {} {job} --index {index}", exe.display()))?;
    let prefix = format!("[{job} {index}] ");
    let out = child.stdout.take().map(|s| relay(s, prefix.clone(), false));
    let err = child.stderr.take().map(|s| relay(s, prefix, true));
    Ok((child, out.into_iter().chain(err).collect()))
}

fn relay(stream: impl Read + Send + 'static, prefix: String, to_stderr: bool) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines().map_while(Result::ok) {
            if to_stderr {
                eprintln!("{prefix}{line}");
            } else {
                println!("{prefix}{line}");
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;

    #[test]
    fn exit_statuses_are_judged_like_the_pod_failure_policy() {
        let code = |c: i32| ExitStatus::from_raw(c << 8);
        assert_eq!(verdict(&code(0)).0, Verdict::Done);
        for permanent in [2, 64, 65, 66] {
            assert_eq!(verdict(&code(permanent)).0, Verdict::FailIndex, "{permanent}");
        }
        assert_eq!(verdict(&code(143)).0, Verdict::RetryUncounted);
        assert_eq!(verdict(&code(75)).0, Verdict::Retry);
        assert_eq!(verdict(&code(1)).0, Verdict::Retry);
        assert_eq!(
            verdict(&ExitStatus::from_raw(9)).0,
            Verdict::Retry,
            "SIGKILL counts, as a pod killed for memory does"
        );
        assert_eq!(verdict(&ExitStatus::from_raw(15)).0, Verdict::RetryUncounted);
    }
}
