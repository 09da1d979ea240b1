//! Compact maps (`--maps compact`, the default) against full ones on the same data: the grid a
//! compact run stores rebuilds, through `rebuild_map` in SQL and through the report's reader,
//! to exactly the u16 maps a full run stores (CPU), the grid itself rebuilds to the official map
//! (PyTorch `F.interpolate` + `scipy.ndimage.gaussian_filter`, tests/fixtures/rebuild_map_reference.py),
//! scores and statistics do not depend on the mode, and a compact map costs under 16 KiB.

mod common;

use std::collections::HashMap;

use arrow::array::{Array, AsArray};
use arrow::datatypes::{Float64Type, Int64Type, UInt16Type};
use common::{dataset, files_under, loc, python};
use promptad::artifact::{random_backbone, Artifact};
use promptad::data::synth::{generate, SynthConfig};
use promptad::pipeline::score::{score_category, ScoreError, ScoreOptions};
use promptad::pipeline::train::{train_category_quietly, TrainJob};
use promptad::run::RunError;
use promptad::sink::MapsMode;
use promptad::sql::results::maps_of;
use promptad::sql::{query, session, RunSelection};
use promptad::stop::StopToken;
use promptad::store::block_on;
use tch::Device;

const CATEGORY: &str = "weave";

/// A string column as `String`s (DataFusion may hand out string views).
fn strings(column: &dyn Array) -> Vec<String> {
    let column = arrow::compute::cast(column, &arrow::datatypes::DataType::Utf8).unwrap();
    column.as_string::<i32>().iter().map(|v| v.unwrap().to_string()).collect()
}

fn rows_u16(list: &dyn Array, row: usize) -> Vec<u16> {
    let values = match list.data_type() {
        arrow::datatypes::DataType::List(_) => list.as_list::<i32>().value(row),
        _ => list.as_fixed_size_list().value(row),
    };
    values.as_primitive::<UInt16Type>().values().to_vec()
}

#[test]
fn compact_maps_rebuild_the_full_maps_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let config = SynthConfig {
        seed: 4,
        categories: vec![CATEGORY.into()],
        image_size: 128,
        train_good: 1,
        test_good: 3,
        test_defective_per_type: 1,
        overwrite: false,
        ..SynthConfig::default()
    };
    generate(&config, &data, || {}).unwrap();
    let (clip, backbone) = random_backbone(5, Device::Cpu).unwrap();
    let job = TrainJob {
        category_name: Some(CATEGORY.into()),
        anomaly_suffixes: Some(vec!["{} with a tear".into()]),
        ..TrainJob::official(data.display().to_string(), CATEGORY, 1, 2, 2)
    };
    let model = loc(&tmp.path().join("model"));
    train_category_quietly(&job, &clip, backbone, &model).unwrap();
    let artifact = Artifact::read(&model).unwrap();
    let out = tmp.path().join("scores");
    let score = |mode: MapsMode, run: &str| {
        let options = ScoreOptions { batch_size: 4, run_id: Some(run.into()), maps: mode, ..ScoreOptions::default() };
        let detect = artifact.manifest.detect.clone();
        score_category(
            &artifact,
            &clip,
            detect,
            &dataset(&data),
            CATEGORY,
            &loc(&out),
            &options,
            &StopToken::new(),
            |_| {},
        )
    };
    for mode in [MapsMode::Full, MapsMode::Compact, MapsMode::None] {
        score(mode, mode.name()).unwrap();
    }
    let images = score(MapsMode::Full, "full").unwrap().units_already_done;
    assert_eq!(images, 1, "re-running the same run and mode continues it");

    // One run never mixes two ways of storing maps.
    let conflict = score(MapsMode::Full, "compact").err().expect("a plan conflict");
    assert!(matches!(conflict, ScoreError::Run(RunError::PlanConflict { .. })), "{conflict}");
    assert!(conflict.to_string().contains("maps"), "the conflict names the field: {conflict}");

    let ctx = block_on(session(&loc(&out), RunSelection::All)).unwrap();
    let sql = |text: &str| block_on(query(&ctx, text)).unwrap().1;

    // Which rows each mode writes.
    let counts = sql("SELECT run, COUNT(*) AS n, COUNT(anomaly_map) AS full_maps FROM maps GROUP BY run ORDER BY run");
    let counts = arrow::compute::concat_batches(&counts[0].schema(), &counts).unwrap();
    let runs = strings(counts.column(0));
    assert_eq!(runs, ["compact", "full"], "--maps none writes no map rows");
    let n = counts.column(1).as_primitive::<Int64Type>().values().to_vec();
    let stored = counts.column(2).as_primitive::<Int64Type>().values().to_vec();
    assert_eq!(n[0], n[1]);
    assert_eq!(stored, [0, n[1]], "only the full run stores the maps themselves");
    let total = n[0] as usize;
    assert!(total >= 4);

    // The compact grid rebuilds to the full run's stored map, u16 for u16; so does the full run's
    // own grid (the grid stored is the one its map was made of).
    let rebuilt = sql(
        "SELECT f.image_id, f.anomaly_map, rebuild_map(c.grid, c.grid_side, c.map_size, c.sigma) AS from_compact, \
                rebuild_map(f.grid, f.grid_side, f.map_size, f.sigma) AS from_full \
         FROM maps f JOIN maps c ON f.image_id = c.image_id WHERE f.run = 'full' AND c.run = 'compact'",
    );
    let mut compared = 0;
    for batch in &rebuilt {
        for row in 0..batch.num_rows() {
            let full = rows_u16(batch.column(1).as_ref(), row);
            assert_eq!(full.len(), 400 * 400);
            assert_eq!(rows_u16(batch.column(2).as_ref(), row), full, "compact row {row}");
            assert_eq!(rows_u16(batch.column(3).as_ref(), row), full, "full row {row}");
            compared += 1;
        }
    }
    assert_eq!(compared, total);

    // The report's reader gives the same maps for both runs.
    let ids: Vec<String> =
        sql("SELECT image_id FROM maps WHERE run = 'full'").iter().flat_map(|b| strings(b.column(0))).collect();
    let of_run = |run: &str| {
        let ctx = block_on(session(&loc(&out), RunSelection::One(run.into()))).unwrap();
        block_on(maps_of(&ctx, CATEGORY, &ids)).unwrap()
    };
    assert_eq!(of_run("compact"), of_run("full"));
    assert!(of_run("none").is_empty());

    // Scores and statistics do not depend on how maps are stored.
    let per_run =
        sql("SELECT s.run, s.image_id, s.pred_score, s.max_pixel_score FROM scores s ORDER BY s.run, s.image_id");
    let mut by_run: HashMap<String, Vec<(String, f64, f64)>> = HashMap::new();
    for batch in &per_run {
        let (runs, ids) = (strings(batch.column(0)), strings(batch.column(1)));
        for row in 0..batch.num_rows() {
            by_run.entry(runs[row].clone()).or_default().push((
                ids[row].clone(),
                batch.column(2).as_primitive::<Float64Type>().value(row),
                batch.column(3).as_primitive::<Float64Type>().value(row),
            ));
        }
    }
    assert_eq!(by_run["full"], by_run["compact"]);
    assert_eq!(by_run["full"], by_run["none"]);
    let pixel =
        sql("SELECT run, pixel_auroc(stats), pixel_aupro(stats, 0.3) FROM metric_stats GROUP BY run ORDER BY run");
    let pixel = arrow::compute::concat_batches(&pixel[0].schema(), &pixel).unwrap();
    for column in [1, 2] {
        let v = pixel.column(column).as_primitive::<Float64Type>().values().to_vec();
        assert_eq!(v.len(), 3);
        assert!(v[0] == v[1] && v[1] == v[2], "column {column}: {v:?}");
    }

    // The grid rebuilds to the official computation (PyTorch + scipy), within one u16 step.
    let grids = sql("SELECT grid, grid_side, map_size, sigma, anomaly_map FROM maps WHERE run = 'full' LIMIT 2");
    let batch = &grids[0];
    let side = batch.column(1).as_primitive::<arrow::datatypes::Int32Type>().value(0);
    let size = batch.column(2).as_primitive::<arrow::datatypes::Int32Type>().value(0);
    let sigma = batch.column(3).as_primitive::<Float64Type>().value(0);
    assert_eq!((side as i64, size, sigma), (clip.visual.image_size() / 16, 400, 4.0));
    let grid_values: Vec<Vec<f32>> = (0..batch.num_rows())
        .map(|r| {
            batch.column(0).as_list::<i32>().value(r).as_primitive::<arrow::datatypes::Float32Type>().values().to_vec()
        })
        .collect();
    let request = tmp.path().join("grids.json");
    let answer = tmp.path().join("maps.json");
    std::fs::write(
        &request,
        serde_json::json!({"grid_side": side, "map_size": size, "sigma": sigma, "grids": grid_values}).to_string(),
    )
    .unwrap();
    let status = std::process::Command::new(python())
        .arg(common::fixture("rebuild_map_reference.py"))
        .args([&request, &answer])
        .status()
        .unwrap();
    assert!(status.success());
    let reference: serde_json::Value = serde_json::from_slice(&std::fs::read(&answer).unwrap()).unwrap();
    for row in 0..batch.num_rows() {
        let ours = rows_u16(batch.column(4).as_ref(), row);
        let theirs: Vec<i64> = reference["maps"][row].as_array().unwrap().iter().map(|v| v.as_i64().unwrap()).collect();
        let worst = ours.iter().zip(&theirs).map(|(&a, &b)| (a as i64 - b).abs()).max().unwrap();
        let exact = ours.iter().zip(&theirs).filter(|(&a, &b)| a as i64 == b).count();
        assert!(worst <= 1, "row {row}: max |Δq| = {worst}");
        assert!(exact as f64 >= 0.999 * ours.len() as f64, "row {row}: {exact} of {} exact", ours.len());
    }

    // What each mode costs on disk, per image.
    let bytes_per_image = |run: &str| {
        let files = files_under(&out.join(format!("maps/run={run}")), ".parquet");
        files.iter().map(|f| std::fs::metadata(f).unwrap().len()).sum::<u64>() as f64 / total as f64
    };
    let (compact, full) = (bytes_per_image("compact"), bytes_per_image("full"));
    println!("maps per image: compact {compact:.0} B, full {full:.0} B ({total} images)");
    assert!(compact <= 16384.0, "compact maps cost {compact} B per image");
    assert!(full > 8.0 * compact, "full {full} B vs compact {compact} B");

    // A grid that does not fit its side is an error naming the row.
    let bad = block_on(query(&ctx, "SELECT rebuild_map(grid, 7, map_size, sigma) FROM maps WHERE run = 'compact'"))
        .expect_err("a wrong grid_side is an error");
    assert!(bad.to_string().contains("not 7×7") || format!("{bad:?}").contains("not 7×7"), "{bad:?}");
}
