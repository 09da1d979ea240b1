//! `schemas/` is the published contract: every writer must produce exactly the columns, types and
//! nullability its file describes. Checked on the writers' schemas and on real files written by
//! a small shard → train → score run.

mod common;

use std::collections::HashMap;
use std::path::Path;

use arrow::array::{AsArray, RecordBatch};
use arrow::datatypes::{Float32Type, Schema};
use common::{dataset, files_under, loc};
use promptad::artifact::random_backbone;
use promptad::artifact::{prompts_schema, Artifact, PROMPTS};
use promptad::data::pack::{pack, PackOptions};
use promptad::data::shard::shard_schema;
use promptad::data::synth::{generate, SynthConfig};
use promptad::detect::DetectConfig;
use promptad::pipeline::score::{score_category, ScoreOptions};
use promptad::pipeline::train::{train_category_quietly, TrainJob};
use promptad::sink::published::{shape, PublishedTable};
use promptad::sink::{maps_schema, scores_schema, stats_schema};
use promptad::stop::StopToken;
use tch::Device;

const MAP_SIZE: i64 = 400;

fn published(name: &str) -> Schema {
    PublishedTable::get(name).unwrap().arrow_schema(&HashMap::from([("map_size", MAP_SIZE)])).unwrap()
}

fn assert_same(name: &str, written: &Schema) {
    assert_eq!(shape(written), shape(&published(name)), "schemas/{name}.json and the writer disagree");
}

fn read(path: &Path) -> (Schema, Vec<RecordBatch>) {
    let reader =
        parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(path).unwrap())
            .unwrap();
    let schema = reader.schema().as_ref().clone();
    (schema, reader.build().unwrap().map(Result::unwrap).collect())
}

#[test]
fn the_writers_schemas_are_the_published_ones() {
    assert_same("image_shard", &shard_schema());
    assert_same("image_scores", &scores_schema());
    assert_same("pixel_maps", &maps_schema(MAP_SIZE as i32));
    assert_same("metric_stats", &stats_schema());
    assert_same("prompt_artifact", &prompts_schema());
}

#[test]
fn written_files_match_the_published_schemas() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, shards) = (tmp.path().join("data"), tmp.path().join("shards"));
    let config = SynthConfig {
        seed: 3,
        categories: vec!["washer".into()],
        image_size: 80,
        train_good: 2,
        test_good: 2,
        test_defective_per_type: 1,
        overwrite: false,
        ..SynthConfig::default()
    };
    generate(&config, &data, || {}).unwrap();
    let options = PackOptions { rows_per_shard: 3, categories: None, plain_category: None, overwrite: false };
    pack(&loc(&data), &loc(&shards), &options, |_| {}).unwrap();
    for shard in files_under(&shards, ".parquet") {
        assert_same("image_shard", &read(&shard).0);
    }

    let (clip, backbone) = random_backbone(2, Device::Cpu).unwrap();
    let job = TrainJob {
        category_name: Some("washer".into()),
        ..TrainJob::official(shards.display().to_string(), "washer", 1, 4, 1)
    };
    let model = tmp.path().join("model");
    train_category_quietly(&job, &clip, backbone, &loc(&model)).unwrap();
    let (schema, batches) = read(&model.join(PROMPTS));
    assert_same("prompt_artifact", &schema);
    // The table holds the artifact's tensors, value for value.
    let artifact = Artifact::read(&loc(&model)).unwrap();
    let batch = arrow::compute::concat_batches(&batches[0].schema(), &batches).unwrap();
    let names = batch.column_by_name("tensor").unwrap().as_string::<i32>();
    let values = batch.column_by_name("values").unwrap().as_list::<i32>();
    assert_eq!(batch.num_rows(), artifact.tensors.len());
    for i in 0..batch.num_rows() {
        let want: Vec<f32> = Vec::try_from(artifact.tensors[names.value(i)].flatten(0, -1)).unwrap();
        let got: Vec<f32> = values.value(i).as_primitive::<Float32Type>().values().to_vec();
        assert_eq!(got, want, "{}", names.value(i));
    }

    let out = tmp.path().join("scores");
    let summary = score_category(
        &artifact,
        &clip,
        DetectConfig::default(),
        &dataset(&shards),
        "washer",
        &loc(&out),
        &ScoreOptions::default(),
        &StopToken::new(),
        |_| {},
    )
    .unwrap();
    assert!(summary.run_complete);
    for (table, name) in [("scores", "image_scores"), ("maps", "pixel_maps"), ("metric_stats", "metric_stats")] {
        let files = files_under(&out.join(table), ".parquet");
        assert!(!files.is_empty(), "{table}");
        for file in files {
            assert_same(name, &read(&file).0);
        }
    }

    // The run manifest's fields are the published ones, nested included.
    let manifest_file = files_under(&out.join("_runs"), "manifest.json").pop().unwrap();
    let manifest: serde_json::Value = serde_json::from_slice(&std::fs::read(manifest_file).unwrap()).unwrap();
    let published = published("run_manifest");
    let keys = |v: &serde_json::Value| {
        let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
        k.sort();
        k
    };
    let names = |fields: &arrow::datatypes::Fields| {
        let mut n: Vec<String> = fields.iter().map(|f| f.name().clone()).collect();
        n.sort();
        n
    };
    assert_eq!(keys(&manifest), names(published.fields()));
    let arrow::datatypes::DataType::Struct(plan) = published.field_with_name("plan").unwrap().data_type() else {
        panic!("plan is a struct")
    };
    assert_eq!(keys(&manifest["plan"]), names(plan));
    let units = plan.iter().find(|f| f.name() == "units").unwrap();
    let arrow::datatypes::DataType::List(item) = units.data_type() else { panic!("units is a list") };
    let arrow::datatypes::DataType::Struct(unit) = item.data_type() else { panic!("a unit is a struct") };
    assert_eq!(keys(&manifest["plan"]["units"][0]), names(unit));
}
