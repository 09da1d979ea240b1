//! `promptad::sql` and the `eval` / `sql` subcommands on a real (small) scored run: the SQL
//! evaluation equals the in-memory reference metrics, does not depend on the partitioning, and
//! bad input gets clear errors.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use arrow::array::{AsArray, RecordBatch};
use common::{copy_dir, dataset, loc, promptad};
use datafusion::prelude::SessionConfig;
use promptad::artifact::random_backbone;
use promptad::artifact::Artifact;
use promptad::data::prepare::Compat;
use promptad::data::synth::{generate, SynthConfig};
use promptad::detect::DetectConfig;
use promptad::metrics::{aupr, auroc, pixel_aupro, pixel_auroc, ImageStats, DEFAULT_FPR_LIMIT};
use promptad::pipeline::score::{score_category, ScoreOptions};
use promptad::pipeline::train::{train_category_quietly, TrainJob};
use promptad::sql::{self, EvalRow, RunSelection};
use promptad::stop::StopToken;
use promptad::store::Location;
use tch::Device;

const CATEGORIES: [&str; 2] = ["marble", "washer"];
/// The category with one corrupt (skipped) defect image.
const DAMAGED: &str = "washer";
const TOL: f64 = 1e-12;

/// What scoring returned for one category, to check the SQL against.
struct Scored {
    image_scores: Vec<(f64, bool)>,
    pixel_stats: ImageStats,
    rows: usize,
    skipped: usize,
    /// Test images per defect type (from the dataset folder), skipped ones included.
    per_defect_type: BTreeMap<String, usize>,
}

struct Fixture {
    run: PathBuf,
    scored: BTreeMap<String, Scored>,
}

/// One scored run for all tests of this file, built once: 2 generated categories, a 2-step model
/// each, one corrupt image in `washer` scored with `skip_bad`.
fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let root = fixture_dir();
        let data = root.join("data");
        let config = SynthConfig {
            seed: 11,
            categories: CATEGORIES.iter().map(|c| c.to_string()).collect(),
            image_size: 96,
            train_good: 2,
            test_good: 3,
            test_defective_per_type: 2,
            overwrite: false,
            ..SynthConfig::default()
        };
        generate(&config, &data, || {}).unwrap();
        let (clip, backbone) = random_backbone(3, Device::Cpu).unwrap();
        let run = root.join("run");
        let mut scored = BTreeMap::new();
        for category in CATEGORIES {
            let test = data.join(category).join("test");
            let mut per_defect_type = BTreeMap::new();
            for entry in std::fs::read_dir(&test).unwrap() {
                let entry = entry.unwrap();
                per_defect_type.insert(
                    entry.file_name().to_string_lossy().into_owned(),
                    std::fs::read_dir(entry.path()).unwrap().count(),
                );
            }
            if category == DAMAGED {
                let defect = per_defect_type.keys().find(|d| *d != "good").unwrap();
                std::fs::write(test.join(defect).join("000.png"), b"not an image").unwrap();
            }
            let job = TrainJob {
                category_name: Some(category.into()),
                anomaly_suffixes: Some(vec!["{} with scratch".into(), "{} with crack".into()]),
                ..TrainJob::official(data.display().to_string(), category, 2, 1, 2)
            };
            let model = root.join("models").join(category);
            train_category_quietly(&job, &clip, backbone.clone(), &loc(&model)).unwrap();
            let artifact = Artifact::read(&loc(&model)).unwrap();
            let options =
                ScoreOptions { batch_size: 8, compat: Compat::Rgb, skip_bad: true, ..ScoreOptions::default() };
            let summary = score_category(
                &artifact,
                &clip,
                DetectConfig::default(),
                &dataset(&data),
                category,
                &loc(&run),
                &options,
                &StopToken::new(),
                |_| {},
            )
            .unwrap();
            scored.insert(
                category.to_string(),
                Scored {
                    image_scores: summary.image_scores.iter().map(|s| (s.pred_score, s.is_defect)).collect(),
                    pixel_stats: summary.pixel_stats,
                    rows: summary.images,
                    skipped: summary.skipped.len(),
                    per_defect_type,
                },
            );
        }
        assert_eq!(scored[DAMAGED].skipped, 1, "the corrupt image is skipped");
        Fixture { run, scored }
    })
}

/// `<target tmp>/eval-fixture-<pid>`: one per test process (several may run at once), the
/// folders of processes that have ended removed first.
fn fixture_dir() -> PathBuf {
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
    for entry in std::fs::read_dir(tmp).into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(pid) = name.strip_prefix("eval-fixture-") {
            if !Path::new("/proc").join(pid).exists() {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }
    let root = tmp.join(format!("eval-fixture-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    root
}

fn block_on<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap().block_on(f)
}

fn session(run: &Path) -> anyhow::Result<datafusion::prelude::SessionContext> {
    Ok(block_on(sql::session(&Location::parse(run.to_str().unwrap())?, RunSelection::Latest))?)
}

fn eval_with(run: &Path, target_partitions: usize) -> RecordBatch {
    block_on(async {
        let out = Location::parse(run.to_str().unwrap()).unwrap();
        let ctx = sql::session_with_config(
            &out,
            RunSelection::Latest,
            SessionConfig::new().with_target_partitions(target_partitions),
        )
        .await
        .unwrap();
        sql::eval(&ctx).await.unwrap()
    })
}

fn close(what: &str, got: Option<f64>, want: Option<f64>) {
    match (got, want) {
        (Some(g), Some(w)) => assert!((g - w).abs() <= TOL, "{what}: SQL {g} vs reference {w}"),
        (g, w) => assert_eq!(g, w, "{what}"),
    }
}

/// The reference numbers of one category: (image AUROC, image AUPR, pixel AUROC, AUPRO).
fn reference(s: &Scored) -> [Option<f64>; 4] {
    let (scores, labels): (Vec<f64>, Vec<bool>) = s.image_scores.iter().copied().unzip();
    [
        auroc(&scores, &labels).ok(),
        aupr(&scores, &labels).ok(),
        pixel_auroc(&s.pixel_stats).ok(),
        pixel_aupro(&s.pixel_stats, DEFAULT_FPR_LIMIT).ok(),
    ]
}

fn metrics(r: &EvalRow) -> [Option<f64>; 4] {
    [r.image_auroc, r.image_aupr, r.pixel_auroc, r.pixel_aupro]
}

const METRICS: [&str; 4] = ["image_auroc", "image_aupr", "pixel_auroc", "pixel_aupro"];

#[test]
fn eval_equals_the_reference_metrics() {
    let f = fixture();
    let batch = eval_with(&f.run, 4);
    let rows = EvalRow::from_batch(&batch).unwrap();
    let names: Vec<&str> = rows.iter().map(|r| r.category.as_str()).collect();
    assert_eq!(names, ["marble", "washer", "mean"]);
    let mut sums = [0.0; 4];
    for (row, (category, s)) in rows.iter().zip(&f.scored) {
        assert_eq!(&row.category, category);
        let want = reference(s);
        for (i, name) in METRICS.iter().enumerate() {
            assert!(want[i].is_some(), "{category} {name} is defined");
            close(&format!("{category} {name}"), metrics(row)[i], want[i]);
            sums[i] += want[i].unwrap();
        }
        eprintln!("{category}: {row:?}");
        assert_eq!(row.n_images as usize, s.rows);
        assert_eq!(row.n_skipped as usize, s.skipped);
        let anomalous: usize = s.per_defect_type.iter().filter(|(d, _)| *d != "good").map(|(_, n)| n).sum();
        assert_eq!(row.n_anomalous as usize, anomalous);
        assert_eq!(s.image_scores.len() + s.skipped, s.rows);
    }
    let mean = &rows[2];
    for (i, name) in METRICS.iter().enumerate() {
        close(&format!("mean {name}"), metrics(mean)[i], Some(sums[i] / 2.0));
    }
    assert_eq!(mean.n_images, rows[0].n_images + rows[1].n_images);
    assert_eq!(mean.n_anomalous, rows[0].n_anomalous + rows[1].n_anomalous);
    assert_eq!(mean.n_skipped, 1);
}

#[test]
fn partitioning_does_not_change_the_results() {
    let f = fixture();
    let one = eval_with(&f.run, 1);
    let four = eval_with(&f.run, 4);
    assert_eq!(one, four, "target_partitions 1 vs 4");
    // the file:// URL of the run reads the same tables
    let url = format!("file://{}", f.run.canonicalize().unwrap().display());
    assert_eq!(eval_with(Path::new(&url), 2), one, "{url}");
    // the whole output with every run, grouped by run, gives the same rows
    let all = block_on(async {
        let ctx = sql::session(&Location::parse(&url).unwrap(), RunSelection::All).await.unwrap();
        sql::eval(&ctx).await.unwrap()
    });
    assert_eq!(all, one, "one run there: All = Latest");
}

#[test]
fn tables_have_one_category_column() {
    let f = fixture();
    let ctx = session(&f.run).unwrap();
    block_on(async {
        for table in promptad::run::Table::ALL.map(|t| t.name()) {
            let (schema, _) = sql::query(&ctx, &format!("SELECT * FROM {table} LIMIT 1")).await.unwrap();
            let n = schema.fields().iter().filter(|c| c.name() == "category").count();
            assert_eq!(n, 1, "{table}: {schema:?}");
            let (_, batches) = sql::query(
                &ctx,
                &format!("SELECT category, COUNT(*) AS n FROM {table} GROUP BY category ORDER BY category"),
            )
            .await
            .unwrap();
            let batch = arrow::compute::concat_batches(&batches[0].schema(), &batches).unwrap();
            let categories = arrow::compute::cast(batch.column(0), &arrow::datatypes::DataType::Utf8).unwrap();
            let counts = batch.column(1).as_primitive::<arrow::datatypes::Int64Type>();
            for (i, category) in CATEGORIES.iter().enumerate() {
                assert_eq!(categories.as_string::<i32>().value(i), *category, "{table}");
                let s = &f.scored[*category];
                // scores has every image; maps and metric_stats only the scored ones
                let want = if table == "scores" { s.rows } else { s.image_scores.len() };
                assert_eq!(counts.value(i) as usize, want, "{table} {category}");
            }
        }
        // a filter on the partition column and a join of all three tables on image_id
        let (_, batches) = sql::query(
            &ctx,
            "SELECT COUNT(*) FROM scores s JOIN metric_stats m ON s.image_id = m.image_id JOIN maps p ON p.image_id = s.image_id WHERE s.category = 'marble'",
        )
        .await
        .unwrap();
        assert_eq!(
            batches[0].column(0).as_primitive::<arrow::datatypes::Int64Type>().value(0) as usize,
            f.scored["marble"].image_scores.len()
        );
    });
}

/// Splits CSV output into its header and rows (the values here hold no commas or quotes).
fn csv(text: &str) -> (Vec<String>, Vec<Vec<String>>) {
    let mut lines = text.lines().map(|l| l.split(',').map(str::to_string).collect::<Vec<_>>());
    let header = lines.next().expect("a header line");
    (header, lines.collect())
}

fn parse(cell: &str) -> Option<f64> {
    if cell.is_empty() {
        None
    } else {
        Some(cell.parse().unwrap_or_else(|_| panic!("not a number: {cell}")))
    }
}

fn run_ok(args: &[&str]) -> String {
    let out = promptad(args);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "promptad {args:?} failed (is the subcommand wired into src/cli/mod.rs?):\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[test]
fn cli_eval_in_every_format() {
    let f = fixture();
    let want = EvalRow::from_batch(&eval_with(&f.run, 2)).unwrap();
    let run = f.run.to_str().unwrap();

    let table = run_ok(&["eval", run]);
    for column in
        ["category", "image_auroc", "image_aupr", "pixel_auroc", "pixel_aupro", "n_images", "n_anomalous", "n_skipped"]
    {
        assert!(
            table.lines().next().is_some_and(|l| l.starts_with('+')) && table.contains(column),
            "{column}:\n{table}"
        );
    }
    for row in ["marble", "washer", "mean"] {
        assert!(table.lines().any(|l| l.starts_with(&format!("| {row} "))), "no row {row}:\n{table}");
    }

    let (header, rows) = csv(&run_ok(&["eval", run, "--format", "csv"]));
    assert_eq!(
        header,
        ["category", "image_auroc", "image_aupr", "pixel_auroc", "pixel_aupro", "n_images", "n_anomalous", "n_skipped"]
    );
    assert_eq!(rows.len(), want.len());
    for (row, w) in rows.iter().zip(&want) {
        assert_eq!(row[0], w.category);
        for i in 0..4 {
            close(&format!("csv {} {}", w.category, METRICS[i]), parse(&row[1 + i]), metrics(w)[i]);
        }
        assert_eq!(
            row[5..].iter().map(|c| c.parse::<i64>().unwrap()).collect::<Vec<_>>(),
            [w.n_images, w.n_anomalous, w.n_skipped]
        );
    }

    let json: serde_json::Value = serde_json::from_str(&run_ok(&["eval", run, "--format", "json"])).unwrap();
    let rows = json.as_array().expect("a JSON array");
    assert_eq!(rows.len(), want.len());
    for (row, w) in rows.iter().zip(&want) {
        assert_eq!(row["category"], w.category.as_str());
        for i in 0..4 {
            close(&format!("json {} {}", w.category, METRICS[i]), row[METRICS[i]].as_f64(), metrics(w)[i]);
        }
        assert_eq!(row["n_images"], w.n_images);
        assert_eq!(row["n_skipped"], w.n_skipped);
    }
}

#[test]
fn cli_sql_groups_by_defect_type() {
    let f = fixture();
    let query =
        "SELECT s.defect_type, COUNT(*) AS images, COUNT(m.stats) AS with_stats, pixel_auroc(m.stats) AS pixel_auroc, \
                 pixel_aupro(m.stats, 0.3) AS pixel_aupro \
                 FROM scores s LEFT JOIN metric_stats m ON s.image_id = m.image_id \
                 GROUP BY s.defect_type ORDER BY s.defect_type";
    let (header, rows) = csv(&run_ok(&["sql", f.run.to_str().unwrap(), query, "--format", "csv"]));
    assert_eq!(header, ["defect_type", "images", "with_stats", "pixel_auroc", "pixel_aupro"]);
    let mut want: BTreeMap<String, usize> = BTreeMap::new();
    for s in f.scored.values() {
        for (d, n) in &s.per_defect_type {
            *want.entry(d.clone()).or_default() += n;
        }
    }
    let got: BTreeMap<String, usize> = rows.iter().map(|r| (r[0].clone(), r[1].parse().unwrap())).collect();
    assert_eq!(got, want);
    for row in &rows {
        let (auroc, aupro) = (parse(&row[3]), parse(&row[4]));
        if row[0] == "good" {
            // normal images only: no defect pixel, both metrics undefined
            assert_eq!((auroc, aupro), (None, None), "{row:?}");
        } else {
            assert!(
                auroc.is_some_and(|v| (0.0..=1.0).contains(&v)) && aupro.is_some_and(|v| (0.0..=1.0).contains(&v)),
                "{row:?}"
            );
        }
    }
    let skipped: usize = rows.iter().map(|r| r[1].parse::<usize>().unwrap() - r[2].parse::<usize>().unwrap()).sum();
    assert_eq!(skipped, 1, "the skipped image has no stats");

    // json and table of the same kind of query
    let json: serde_json::Value = serde_json::from_str(&run_ok(&[
        "sql",
        f.run.to_str().unwrap(),
        "SELECT category, COUNT(*) AS n FROM maps GROUP BY category ORDER BY category",
        "--format",
        "json",
    ]))
    .unwrap();
    assert_eq!(json[0]["category"], "marble");
    assert_eq!(json[1]["n"], f.scored["washer"].image_scores.len());
    let table = run_ok(&["sql", f.run.to_str().unwrap(), "SHOW TABLES"]);
    for t in promptad::run::Table::ALL.map(|t| t.name()) {
        assert!(table.contains(t), "{table}");
    }
}

fn err_of<T, E: Into<anyhow::Error>>(result: Result<T, E>) -> String {
    match result {
        Ok(_) => panic!("expected an error"),
        Err(e) => format!("{:#}", e.into()),
    }
}

#[test]
fn errors_name_the_problem() {
    let f = fixture();
    let tmp = tempfile::tempdir().unwrap();
    let session_err = |p: &Path| err_of(session(p));

    let missing = tmp.path().join("no-such-run");
    let e = session_err(&missing);
    assert!(e.contains("does not exist") && e.contains("no-such-run"), "{e}");

    let e = session_err(tmp.path());
    assert!(e.contains("holds no scored run") && e.contains("promptad score"), "{e}");

    // a committed file that has gone missing is named
    let damaged = tmp.path().join("damaged");
    copy_dir(&f.run, &damaged);
    let victim = find_files(&damaged.join("scores"))[0].clone();
    std::fs::remove_file(&victim).unwrap();
    let e = err_of(block_on(async {
        let ctx = sql::session(&Location::parse(damaged.to_str().unwrap())?, RunSelection::All).await?;
        sql::query(&ctx, "SELECT COUNT(*) FROM scores").await
    }));
    assert!(e.contains(victim.file_name().unwrap().to_str().unwrap()), "{e}");

    // bad SQL: the parser's or planner's message
    let ctx = session(&f.run).unwrap();
    block_on(async {
        let e = err_of(sql::query(&ctx, "SELEC * FROM scores").await);
        assert!(e.contains("SELEC"), "{e}");
        let e = err_of(sql::query(&ctx, "SELECT no_such_column FROM scores").await);
        assert!(e.contains("no_such_column"), "{e}");
        let e = err_of(sql::query(&ctx, "SELECT * FROM no_such_table").await);
        assert!(e.contains("no_such_table"), "{e}");
        let e = err_of(sql::query(&ctx, "SELECT pixel_aupro(stats, 2.0) FROM metric_stats").await);
        assert!(e.contains("fpr_limit"), "{e}");
        // read-only
        let e = err_of(sql::query(&ctx, "CREATE TABLE t AS SELECT 1").await);
        assert!(e.to_lowercase().contains("ddl"), "{e}");
        let e = err_of(sql::query(&ctx, "COPY scores TO '/tmp/x.parquet'").await);
        assert!(e.to_lowercase().contains("dml"), "{e}");
    });
}

#[test]
fn cli_errors_name_the_problem() {
    let f = fixture();
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("no-such-run");
    // non-zero exit, the message on stderr
    let fails = |args: &[&str], needle: &str| {
        let out = promptad(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "promptad {args:?} succeeded");
        assert!(stderr.contains(needle), "promptad {args:?}: {needle:?} not in:\n{stderr}");
    };
    fails(&["eval", missing.to_str().unwrap()], "does not exist");
    fails(&["eval", tmp.path().to_str().unwrap()], "holds no scored run");
    fails(&["sql", f.run.to_str().unwrap(), "SELECT no_such_column FROM scores"], "no_such_column");
}

#[test]
fn uncommitted_files_are_not_read() {
    let f = fixture();
    let tmp = tempfile::tempdir().unwrap();
    let copy = tmp.path().join("run");
    copy_dir(&f.run, &copy);
    // What a worker killed mid-unit leaves: a unit's files without its commit record, next to
    // the committed ones, and a staging file.
    for table in promptad::run::Table::ALL.map(|t| t.name()) {
        let committed = find_files(&copy.join(table));
        let uncommitted = committed[0].with_file_name("part-test-00099.parquet");
        std::fs::copy(&committed[0], &uncommitted).unwrap();
        std::fs::write(committed[0].with_file_name("part-test-00098.parquet#1"), b"PAR1 not finished").unwrap();
    }
    assert_eq!(eval_with(&copy, 2), eval_with(&f.run, 2));
}

/// Every file below `dir`, sorted.
fn find_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_dir() {
            files.extend(find_files(&entry.path()));
        } else {
            files.push(entry.path());
        }
    }
    files.sort();
    files
}
