//! The cluster, rehearsed here (issue #6): `promptad run SPEC --local` runs every work item of a
//! run spec as its own process against the S3 test server, as an Indexed Job's pods would. One
//! scoring worker is stopped with SIGTERM (it must exit 143 and be retried without counting) and
//! another is killed with SIGKILL mid-run (its index fails, as with backoffLimitPerIndex 0); the
//! same command run again finishes the work, and the results equal those of an undisturbed run of
//! the same spec, row for row.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{promptad, s3, Watched};
use promptad::run::{worker_range, RunPlan};
use promptad::store::Location;

const RUN_ID: &str = "rehearsal-k1-seed5";

fn spec_text(data: &str, models: &str, results: &str) -> String {
    format!(
        r#"
[dataset]
url = "{data}"
name = "synth"
catalog = "synth"
categories = ["weave", "washer"]
[backbone]
random_init = 3
[train]
shots = [1]
seeds = [5]
artifacts = "{models}"
steps = 5
[score]
out = "{results}"
run_id = "rehearsal"
workers_per_category = 2
batch_size = 1
[runtime]
device = "cpu"
"#
    )
}

fn output_text(output: &std::process::Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))
}

/// The pid of the worker running `promptad <job> --spec <spec> --index <index>`, if it runs.
fn worker_pid(job: &str, spec: &Path, index: usize) -> Option<u32> {
    let wanted = [job.to_string(), "--spec".into(), spec.display().to_string(), "--index".into(), index.to_string()];
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else { continue };
        let args: Vec<String> = cmdline.split(|&b| b == 0).map(|a| String::from_utf8_lossy(a).into_owned()).collect();
        if args.len() > wanted.len() && args[1..=wanted.len()] == wanted {
            return Some(pid);
        }
    }
    None
}

fn signal(pid: u32, name: &str) {
    let status = Command::new("kill").args([&format!("-{name}"), &pid.to_string()]).status().unwrap();
    assert!(status.success(), "kill -{name} {pid}");
}

/// (committed, total) units of worker `worker` of 2 for `category`, once the run's plan exists.
fn worker_progress(results: &Location, category: &str, worker: usize) -> Option<(usize, usize)> {
    let dir = format!("test/_runs/run={RUN_ID}/category={category}");
    let plan: RunPlan = serde_json::from_slice(&results.get(&format!("{dir}/plan.json")).ok()?).ok()?;
    let mine = &plan.units[worker_range(plan.units.len(), (worker, 2))];
    let committed =
        mine.iter().filter(|u| results.exists(&format!("{dir}/units/{}.json", u.name)).unwrap_or(false)).count();
    Some((committed, mine.len()))
}

/// How often the store is checked for a committed unit while waiting (the wait itself blocks on
/// the run's exit).
const PROGRESS_CHECK: Duration = Duration::from_millis(20);

/// Waits until worker `index` (category, worker) has committed a unit but not all of its units,
/// then sends it `signals` in order; returns what it had committed.
fn interrupt(
    run: &Watched,
    spec: &Path,
    results: &Location,
    index: usize,
    category: &str,
    worker: usize,
    signals: &[&str],
) -> (usize, usize) {
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        if let (Some(pid), Some((committed, total))) =
            (worker_pid("score", spec, index), worker_progress(results, category, worker))
        {
            if committed > 0 {
                signal(pid, "STOP");
                let (committed, total_now) = worker_progress(results, category, worker).unwrap();
                assert_eq!(total, total_now);
                assert!(
                    committed < total,
                    "score worker {index} finished all {total} units before it could be interrupted"
                );
                for name in signals {
                    signal(pid, name);
                }
                return (committed, total);
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "score worker {index} never committed a unit");
        if let Some(status) = run.ended_within(PROGRESS_CHECK.min(left)) {
            panic!("promptad run ended ({status}) before score worker {index} could be interrupted");
        }
    }
}

fn eval_json(results: &str) -> serde_json::Value {
    let out = promptad(&["eval", &format!("{results}/test"), "--run", RUN_ID, "--format", "json"]);
    assert!(out.status.success(), "{}", output_text(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn scores_csv(results: &str) -> String {
    let query = "SELECT category, image_id, pred_score, text_score, visual_max, max_pixel_score, model_version FROM scores ORDER BY category, image_id";
    let out = promptad(&["sql", &format!("{results}/test"), "--run", RUN_ID, query, "--format", "csv"]);
    assert!(out.status.success(), "{}", output_text(&out));
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn a_rehearsal_with_a_stopped_and_a_killed_worker_gives_the_results_of_an_undisturbed_one() {
    let started = Instant::now();
    s3::server();
    let dir = tempfile::tempdir().unwrap();
    let local = dir.path().join("synth");
    let out = promptad(&[
        "synth",
        local.to_str().unwrap(),
        "--categories",
        "weave,washer",
        "--image-size",
        "64",
        "--train-good",
        "3",
        "--test-good",
        "4",
        "--test-defective",
        "1",
    ]);
    assert!(out.status.success(), "{}", output_text(&out));
    // On the S3 server as image shards of one image each: one work unit per image.
    let data = s3::url("rehearsal-data");
    let out = promptad(&["shard", local.to_str().unwrap(), &data, "--rows-per-shard", "1"]);
    assert!(out.status.success(), "{}", output_text(&out));

    let write = |name: &str, models: &str, results: &str| -> PathBuf {
        let path = dir.path().join(name);
        std::fs::write(&path, spec_text(&data, models, results)).unwrap();
        path
    };
    let (models_a, results_a) = (s3::url("rehearsal-a-models"), s3::url("rehearsal-a-results"));
    let (models_b, results_b) = (s3::url("rehearsal-b-models"), s3::url("rehearsal-b-results"));
    let spec_a = write("undisturbed.toml", &models_a, &results_a);
    let spec_b = write("disturbed.toml", &models_b, &results_b);

    // The undisturbed run.
    let out = promptad(&["run", spec_a.to_str().unwrap(), "--local", "--parallel", "2"]);
    let text_a = output_text(&out);
    assert!(out.status.success(), "{text_a}");
    assert!(text_a.contains(&format!("run {RUN_ID}:")), "the run ends with eval: {text_a}");
    let undisturbed = started.elapsed().as_secs_f64();

    // The disturbed run: no retries for counted failures, so the killed index fails the run.
    let log = dir.path().join("disturbed.log");
    let run = Watched::spawn(
        Command::new(env!("CARGO_BIN_EXE_promptad"))
            .args(["run", spec_b.to_str().unwrap(), "--local", "--parallel", "2", "--backoff-limit-per-index", "0"])
            .stdout(Stdio::from(std::fs::File::create(&log).unwrap()))
            .stderr(Stdio::from(std::fs::File::options().append(true).open(&log).unwrap())),
    );
    let results = Location::parse(&results_b).unwrap();
    // Scoring index 0 is weave's worker 0 of 2; index 3 is washer's worker 1 of 2.
    let (stopped_at, stopped_of) = interrupt(&run, &spec_b, &results, 0, "weave", 0, &["TERM", "CONT"]);
    let (killed_at, killed_of) = interrupt(&run, &spec_b, &results, 3, "washer", 1, &["KILL"]);
    let status = run.wait();
    let text_b = std::fs::read_to_string(&log).unwrap();
    eprintln!(
        "stopped score worker 0 after {stopped_at}/{stopped_of} units, killed worker 3 after {killed_at}/{killed_of}"
    );
    assert_eq!(status.code(), Some(1), "{text_b}");
    assert!(text_b.contains("[score 0] exit code 143"), "SIGTERM must stop the worker cleanly with 143: {text_b}");
    assert!(text_b.contains("[score 3] killed by signal 9"), "{text_b}");
    assert!(
        text_b.contains("1 work item(s) failed") && text_b.contains("score index 3"),
        "only the killed index fails: {text_b}"
    );

    // Nothing partial is visible: the washer rows in the tables are those of committed units.
    let visible = promptad(&[
        "sql",
        &format!("{results_b}/test"),
        "--run",
        RUN_ID,
        "SELECT count(*) AS n FROM scores WHERE category = 'washer'",
        "--format",
        "csv",
    ]);
    let visible: usize = String::from_utf8_lossy(&visible.stdout).lines().nth(1).unwrap().trim().parse().unwrap();
    let plan: RunPlan =
        serde_json::from_slice(&results.get(&format!("test/_runs/run={RUN_ID}/category=washer/plan.json")).unwrap())
            .unwrap();
    let committed: usize = plan
        .units
        .iter()
        .filter(|u| results.exists(&format!("test/_runs/run={RUN_ID}/category=washer/units/{}.json", u.name)).unwrap())
        .map(|u| u.images)
        .sum();
    assert_eq!(visible, committed, "rows visible vs rows of committed units");
    assert!(committed < plan.units.iter().map(|u| u.images).sum::<usize>());

    // The same command again finishes the work, without redoing what was done.
    let out = promptad(&["run", spec_b.to_str().unwrap(), "--local", "--parallel", "2"]);
    let text_c = output_text(&out);
    assert!(out.status.success(), "{text_c}");
    assert!(
        text_c.contains("already at") && text_c.contains("nothing to do"),
        "models are not trained again: {text_c}"
    );
    let resumed = text_c
        .lines()
        .find(|l| l.starts_with("[score 3]") && l.contains("units already committed"))
        .unwrap_or_else(|| panic!("{text_c}"));
    assert!(
        resumed.contains(&format!(" {killed_at} units already committed")),
        "the killed worker's committed units are kept: {resumed}"
    );

    // Same results, row for row.
    let (eval_a, eval_b) = (eval_json(&results_a), eval_json(&results_b));
    assert_eq!(eval_a, eval_b, "eval differs:\n{eval_a:#}\n{eval_b:#}");
    let (scores_a, scores_b) = (scores_csv(&results_a), scores_csv(&results_b));
    assert_eq!(
        scores_a.lines().count(),
        1 + 7 + 8,
        "weave: 4 good + 3 defect types, washer: 4 good + 4 defect types:\n{scores_a}"
    );
    assert_eq!(scores_a, scores_b);
    eprintln!("{eval_b:#}");
    eprintln!("undisturbed run {undisturbed:.1} s; whole test {:.1} s", started.elapsed().as_secs_f64());
}
