//! The metrics against an independent reference: `tests/fixtures/metric_cases.json`, written by
//! `tests/fixtures/make_metric_cases.py` with scikit-learn (AUROC, AP), a numpy reproduction of
//! anomalib's AUPR (checked against torchmetrics when generated) and the MVTec AD AUPRO
//! (scipy.ndimage.label with a 3×3 structure). Checks the Rust reference functions, the per-image
//! statistics and their merge, and the SQL aggregates at several partitionings and batch sizes,
//! in memory and through Parquet.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, BooleanArray, Float64Array, Int64Array, RecordBatch, StringArray};
use arrow::compute::concat;
use arrow::datatypes::{DataType, Field, Float64Type, Schema};
use datafusion::datasource::MemTable;
use datafusion::prelude::{ParquetReadOptions, SessionConfig, SessionContext};
use promptad::metrics::{
    self, aupr, aupro, auroc, auroc_tie_bound, average_precision, dequantize, pixel_aupro, pixel_auroc, quantize,
    stats_data_type, stats_schema_field, to_arrow, ImageStats, MetricError, SegmentationMap,
};
use serde::Deserialize;

const TOL: f64 = 1e-9;

#[derive(Debug, Deserialize)]
struct Fixture {
    fpr_limits: Vec<String>,
    cases: Vec<Case>,
}

#[derive(Debug, Deserialize)]
struct Case {
    category: String,
    images: Vec<Image>,
    expected: Expected,
}

#[derive(Debug, Deserialize)]
struct Image {
    id: String,
    width: usize,
    height: usize,
    score: f64,
    label: u8,
    map: Vec<u16>,
    mask: String,
}

#[derive(Debug, Deserialize)]
struct Expected {
    image_auroc: Option<f64>,
    image_aupr: Option<f64>,
    image_ap: Option<f64>,
    pixel_auroc: Option<f64>,
    pixel_aupro: BTreeMap<String, Option<f64>>,
    n_regions: u64,
}

impl Image {
    fn mask(&self) -> Vec<bool> {
        self.mask.bytes().map(|b| b == b'1').collect()
    }
    fn scores(&self) -> Vec<f64> {
        self.map.iter().map(|&q| dequantize(q)).collect()
    }
    fn stats(&self) -> ImageStats {
        ImageStats::from_map(&self.map, &self.mask(), self.width, self.height).unwrap()
    }
}

fn fixture() -> Fixture {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/metric_cases.json");
    let text = std::fs::read_to_string(path).expect("run tests/fixtures/make_metric_cases.py");
    let f: Fixture = serde_json::from_str(&text).unwrap();
    assert!(f.cases.len() >= 10);
    f
}

/// `got` must be undefined exactly when `want` is null, else within `TOL`.
fn check(what: &str, got: Result<f64, MetricError>, want: Option<f64>) {
    match (got, want) {
        (Ok(g), Some(w)) => assert!((g - w).abs() <= TOL, "{what}: got {g}, want {w} (diff {:e})", (g - w).abs()),
        (Err(e), None) => assert!(e.is_undefined(), "{what}: unexpected error {e}"),
        (got, want) => panic!("{what}: got {got:?}, want {want:?}"),
    }
}

fn check_opt(what: &str, got: Option<f64>, want: Option<f64>) {
    match (got, want) {
        (Some(g), Some(w)) => assert!((g - w).abs() <= TOL, "{what}: got {g}, want {w} (diff {:e})", (g - w).abs()),
        (None, None) => {}
        (got, want) => panic!("{what}: got {got:?}, want {want:?}"),
    }
}

#[test]
fn reference_functions_match_python() {
    let f = fixture();
    for c in &f.cases {
        let cat = &c.category;
        let scores: Vec<f64> = c.images.iter().map(|i| i.score).collect();
        let labels: Vec<bool> = c.images.iter().map(|i| i.label == 1).collect();
        check(&format!("{cat} image_auroc"), auroc(&scores, &labels), c.expected.image_auroc);
        check(&format!("{cat} image_aupr"), aupr(&scores, &labels), c.expected.image_aupr);
        check(&format!("{cat} image_ap"), average_precision(&scores, &labels), c.expected.image_ap);

        let pix_scores: Vec<f64> = c.images.iter().flat_map(|i| i.scores()).collect();
        let pix_labels: Vec<bool> = c.images.iter().flat_map(|i| i.mask()).collect();
        check(&format!("{cat} pixel_auroc"), auroc(&pix_scores, &pix_labels), c.expected.pixel_auroc);

        let scores: Vec<Vec<f64>> = c.images.iter().map(|i| i.scores()).collect();
        let masks: Vec<Vec<bool>> = c.images.iter().map(|i| i.mask()).collect();
        let maps: Vec<SegmentationMap> = c
            .images
            .iter()
            .zip(scores.iter().zip(&masks))
            .map(|(i, (s, m))| SegmentationMap { scores: s, mask: m, width: i.width, height: i.height })
            .collect();
        for limit in &f.fpr_limits {
            let l: f64 = limit.parse().unwrap();
            check(&format!("{cat} pixel_aupro@{limit}"), aupro(&maps, l), c.expected.pixel_aupro[limit]);
        }
    }
}

#[test]
fn merged_stats_equal_reference_bit_for_bit() {
    let f = fixture();
    for c in &f.cases {
        let cat = &c.category;
        let stats: Vec<ImageStats> = c.images.iter().map(Image::stats).collect();
        let merged = ImageStats::sum(&stats).unwrap();
        assert_eq!(merged.n_regions(), c.expected.n_regions, "{cat}: 8-connected regions");

        // merge law on real cases: reversed, and in uneven chunks, pairwise
        assert_eq!(ImageStats::sum(stats.iter().rev()).unwrap(), merged, "{cat}");
        let mut acc = ImageStats::default();
        for chunk in stats.chunks(3).rev() {
            acc.merge(&ImageStats::sum(chunk).unwrap()).unwrap();
        }
        assert_eq!(acc, merged, "{cat}");

        let pix_scores: Vec<f64> = c.images.iter().flat_map(|i| i.scores()).collect();
        let pix_labels: Vec<bool> = c.images.iter().flat_map(|i| i.mask()).collect();
        let exact = auroc(&pix_scores, &pix_labels);
        let hist = pixel_auroc(&merged);
        assert_eq!(exact.as_ref().map(|v| v.to_bits()).ok(), hist.as_ref().map(|v| v.to_bits()).ok(), "{cat}");
        check(&format!("{cat} pixel_auroc(stats)"), hist, c.expected.pixel_auroc);

        let scores: Vec<Vec<f64>> = c.images.iter().map(|i| i.scores()).collect();
        let masks: Vec<Vec<bool>> = c.images.iter().map(|i| i.mask()).collect();
        let maps: Vec<SegmentationMap> = c
            .images
            .iter()
            .zip(scores.iter().zip(&masks))
            .map(|(i, (s, m))| SegmentationMap { scores: s, mask: m, width: i.width, height: i.height })
            .collect();
        for limit in &f.fpr_limits {
            let l: f64 = limit.parse().unwrap();
            let exact = aupro(&maps, l);
            let hist = pixel_aupro(&merged, l);
            assert_eq!(exact.as_ref().map(|v| v.to_bits()).ok(), hist.as_ref().map(|v| v.to_bits()).ok(), "{cat}@{l}");
            check(&format!("{cat} pixel_aupro(stats)@{limit}"), hist, c.expected.pixel_aupro[limit]);
        }
    }
}

/// Float scores that quantise to the stored values: the exact float AUROC stays within the
/// tie bound of the stats AUROC, and the bound is not vacuous where ties are heavy.
#[test]
fn tie_bound_holds_for_float_scores() {
    let f = fixture();
    let mut seed = 42u64;
    let mut jitter = move || {
        seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((seed >> 11) as f64 / (1u64 << 53) as f64 - 0.5) * 0.98 / 65535.0
    };
    let mut max_seen = 0.0f64;
    for c in &f.cases {
        let merged = ImageStats::sum(&c.images.iter().map(Image::stats).collect::<Vec<_>>()).unwrap();
        let Ok(hist) = pixel_auroc(&merged) else {
            continue;
        };
        let bound = auroc_tie_bound(&merged).unwrap();
        for _ in 0..5 {
            let floats: Vec<f64> = c
                .images
                .iter()
                .flat_map(|i| i.map.iter().map(|&q| (dequantize(q) + jitter()).clamp(0.0, 1.0)).collect::<Vec<_>>())
                .collect();
            assert!(floats.iter().zip(c.images.iter().flat_map(|i| i.map.iter())).all(|(&s, &q)| quantize(s) == q));
            let labels: Vec<bool> = c.images.iter().flat_map(|i| i.mask()).collect();
            let exact = auroc(&floats, &labels).unwrap();
            let diff = (exact - hist).abs();
            assert!(diff <= bound + 1e-15, "{}: |{exact} - {hist}| = {diff} > bound {bound}", c.category);
            max_seen = max_seen.max(diff);
        }
    }
    assert!(max_seen > 0.0, "jitter should break some ties");
}

// ---------------------------------------------------------------- SQL

/// All cases as one table: one row per image, plus two all-NULL rows in `random_small`.
fn cases_batch(f: &Fixture) -> RecordBatch {
    let images: Vec<(&str, &Image)> =
        f.cases.iter().flat_map(|c| c.images.iter().map(move |i| (c.category.as_str(), i))).collect();
    let stats: Vec<ImageStats> = images.iter().map(|(_, i)| i.stats()).collect();
    let n_null = 2;
    let category = StringArray::from_iter_values(
        images.iter().map(|(c, _)| *c).chain(std::iter::repeat_n("random_small", n_null)),
    );
    let id = StringArray::from_iter_values(
        images.iter().map(|(_, i)| i.id.clone()).chain((0..n_null).map(|k| format!("null{k}"))),
    );
    let score = Float64Array::from_iter(images.iter().map(|(_, i)| Some(i.score)).chain([None, Some(0.5)]));
    let label = BooleanArray::from_iter(images.iter().map(|(_, i)| Some(i.label == 1)).chain([Some(true), None]));
    let label_int = Int64Array::from_iter(images.iter().map(|(_, i)| Some(i.label as i64)).chain([Some(1), None]));
    let stats_col =
        concat(&[to_arrow(&stats).as_ref(), arrow::array::new_null_array(&stats_data_type(), n_null).as_ref()])
            .unwrap();
    let schema = Arc::new(Schema::new(vec![
        Field::new("category", DataType::Utf8, false),
        Field::new("image_id", DataType::Utf8, false),
        Field::new("score", DataType::Float64, true),
        Field::new("label", DataType::Boolean, true),
        Field::new("label_int", DataType::Int64, true),
        stats_schema_field(),
    ]));
    let columns: Vec<ArrayRef> =
        vec![Arc::new(category), Arc::new(id), Arc::new(score), Arc::new(label), Arc::new(label_int), stats_col];
    RecordBatch::try_new(schema, columns).unwrap()
}

/// Splits the rows into `partitions` partitions of small, uneven batches (a row's partition
/// depends on a stride, so categories are spread over partitions).
fn partitioned(batch: &RecordBatch, partitions: usize) -> Vec<Vec<RecordBatch>> {
    let mut parts: Vec<Vec<usize>> = vec![Vec::new(); partitions];
    for row in 0..batch.num_rows() {
        parts[(row * 7 + row / 3) % partitions].push(row);
    }
    parts
        .into_iter()
        .map(|rows| {
            let mut out = Vec::new();
            let mut k = 0;
            let mut size = 1;
            while k < rows.len() {
                let take = size.min(rows.len() - k);
                let idx = arrow::array::UInt32Array::from_iter_values(rows[k..k + take].iter().map(|&r| r as u32));
                out.push(arrow::compute::take_record_batch(batch, &idx).unwrap());
                k += take;
                size = size % 3 + 1;
            }
            out
        })
        .collect()
}

const QUERY: &str = "SELECT category, \
       image_auroc(score, label) AS image_auroc, \
       image_aupr(score, label_int) AS image_aupr, \
       pixel_auroc(stats) AS pixel_auroc, \
       pixel_aupro(stats) AS aupro_default, \
       pixel_aupro(stats, 0.3) AS aupro_30, \
       pixel_aupro(stats, 0.1) AS aupro_10, \
       pixel_aupro(stats, 0.05) AS aupro_05, \
       pixel_aupro(stats, 1) AS aupro_100 \
     FROM cases GROUP BY category ORDER BY category";

type Row = Vec<Option<f64>>;

async fn run(ctx: &SessionContext, sql: &str) -> datafusion::error::Result<BTreeMap<String, Row>> {
    let batches = ctx.sql(sql).await?.collect().await?;
    let mut out = BTreeMap::new();
    for b in batches {
        let cats = arrow::compute::cast(b.column(0), &DataType::Utf8)?;
        let cats = cats.as_string::<i32>();
        for r in 0..b.num_rows() {
            let vals = (1..b.num_columns())
                .map(|c| {
                    let a = b.column(c).as_primitive::<Float64Type>();
                    a.is_valid(r).then(|| a.value(r))
                })
                .collect();
            out.insert(cats.value(r).to_string(), vals);
        }
    }
    Ok(out)
}

fn session(partitions: usize, batch_size: usize) -> SessionContext {
    let config = SessionConfig::new().with_target_partitions(partitions).with_batch_size(batch_size);
    let ctx = SessionContext::new_with_config(config);
    metrics::register_all(&ctx);
    ctx
}

fn check_rows(f: &Fixture, rows: &BTreeMap<String, Row>, how: &str) {
    assert_eq!(rows.len(), f.cases.len(), "{how}: one row per category");
    for c in &f.cases {
        let r = &rows[&c.category];
        let e = &c.expected;
        let w = |m: &str| format!("{how} {} {m}", c.category);
        check_opt(&w("image_auroc"), r[0], e.image_auroc);
        check_opt(&w("image_aupr"), r[1], e.image_aupr);
        check_opt(&w("pixel_auroc"), r[2], e.pixel_auroc);
        check_opt(&w("pixel_aupro()"), r[3], e.pixel_aupro["0.3"]);
        check_opt(&w("pixel_aupro(0.3)"), r[4], e.pixel_aupro["0.3"]);
        check_opt(&w("pixel_aupro(0.1)"), r[5], e.pixel_aupro["0.1"]);
        check_opt(&w("pixel_aupro(0.05)"), r[6], e.pixel_aupro["0.05"]);
        check_opt(&w("pixel_aupro(1)"), r[7], e.pixel_aupro["1.0"]);
    }
}

fn bits(rows: &BTreeMap<String, Row>) -> BTreeMap<String, Vec<Option<u64>>> {
    rows.iter().map(|(k, v)| (k.clone(), v.iter().map(|x| x.map(f64::to_bits)).collect())).collect()
}

#[tokio::test]
async fn sql_matches_python_at_every_partitioning() {
    let f = fixture();
    let batch = cases_batch(&f);
    let mut first: Option<BTreeMap<String, Vec<Option<u64>>>> = None;
    for table_partitions in [1, 3] {
        for target_partitions in [1, 2, 8] {
            for batch_size in [1, 2, 3] {
                let how = format!("table {table_partitions} / target {target_partitions} / batch {batch_size}");
                let ctx = session(target_partitions, batch_size);
                let table = MemTable::try_new(batch.schema(), partitioned(&batch, table_partitions)).unwrap();
                ctx.register_table("cases", Arc::new(table)).unwrap();
                let rows = run(&ctx, QUERY).await.unwrap_or_else(|e| panic!("{how}: {e}"));
                check_rows(&f, &rows, &how);
                let b = bits(&rows);
                match &first {
                    None => first = Some(b),
                    Some(want) => assert_eq!(&b, want, "{how}: results differ from the first configuration"),
                }
            }
        }
    }
}

#[tokio::test]
async fn sql_without_group_by_equals_reference_over_all_images() {
    let f = fixture();
    let batch = cases_batch(&f);
    let ctx = session(4, 2);
    ctx.register_table("cases", Arc::new(MemTable::try_new(batch.schema(), partitioned(&batch, 4)).unwrap())).unwrap();
    let rows = run(&ctx, "SELECT 'all', image_auroc(score, label), pixel_auroc(stats), pixel_aupro(stats) FROM cases")
        .await
        .unwrap();
    let all: Vec<&Image> = f.cases.iter().flat_map(|c| &c.images).collect();
    let scores: Vec<f64> = all.iter().map(|i| i.score).collect();
    let labels: Vec<bool> = all.iter().map(|i| i.label == 1).collect();
    let merged = ImageStats::sum(&all.iter().map(|i| i.stats()).collect::<Vec<_>>()).unwrap();
    let r = &rows["all"];
    assert_eq!(r[0], Some(auroc(&scores, &labels).unwrap()));
    assert_eq!(r[1], Some(pixel_auroc(&merged).unwrap()));
    assert_eq!(r[2], Some(pixel_aupro(&merged, 0.3).unwrap()));
}

#[tokio::test]
async fn sql_through_parquet() {
    let f = fixture();
    let batch = cases_batch(&f);
    let dir = tempfile::tempdir().unwrap();
    for (k, part) in partitioned(&batch, 3).into_iter().enumerate() {
        let file = std::fs::File::create(dir.path().join(format!("part-{k}.parquet"))).unwrap();
        let mut w = parquet::arrow::ArrowWriter::try_new(file, batch.schema(), None).unwrap();
        for b in part {
            w.write(&b).unwrap();
        }
        w.close().unwrap();
    }
    let ctx = session(2, 3);
    ctx.register_parquet("cases", dir.path().to_str().unwrap(), ParquetReadOptions::default()).await.unwrap();
    let schema = ctx.table("cases").await.unwrap().schema().as_arrow().clone();
    assert_eq!(schema.field_with_name("stats").unwrap().data_type(), &stats_data_type());
    let rows = run(&ctx, QUERY).await.unwrap();
    check_rows(&f, &rows, "parquet");
}

#[tokio::test]
async fn sql_errors() {
    let f = fixture();
    let batch = cases_batch(&f);
    let ctx = session(2, 8);
    ctx.register_table("cases", Arc::new(MemTable::try_new(batch.schema(), vec![vec![batch]]).unwrap())).unwrap();
    for (sql, needle) in [
        ("SELECT pixel_aupro(stats, 1.5) FROM cases", "fpr_limit"),
        ("SELECT pixel_aupro(stats, 0) FROM cases", "fpr_limit"),
        ("SELECT pixel_aupro(stats, score) FROM cases", "constant"),
        ("SELECT pixel_aupro(stats, 'x') FROM cases", "numeric"),
        ("SELECT pixel_auroc(score) FROM cases", "stats"),
        ("SELECT pixel_auroc(stats, stats) FROM cases", "1 argument"),
        ("SELECT image_auroc(score, category) FROM cases", "label"),
        ("SELECT image_auroc(category, label) FROM cases", "score"),
        ("SELECT image_aupr(score) FROM cases", "2 arguments"),
        ("SELECT image_auroc(score, label_int + 1) FROM cases", "label must be 0 or 1"),
    ] {
        let result = match ctx.sql(sql).await {
            Ok(df) => df.collect().await.map(|_| ()),
            Err(e) => Err(e),
        };
        let err = result.expect_err(sql).to_string();
        assert!(err.contains(needle), "{sql}: error `{err}` lacks `{needle}`");
    }
}

#[tokio::test]
async fn dataframe_api_expr_fn() {
    use datafusion::prelude::col;
    use promptad::metrics::expr_fn;

    let f = fixture();
    let batch = cases_batch(&f);
    let ctx = session(2, 2);
    let df = ctx.read_batch(batch).unwrap();
    let out = df
        .aggregate(
            vec![col("category")],
            vec![
                expr_fn::image_auroc(col("score"), col("label")).alias("image_auroc"),
                expr_fn::image_aupr(col("score"), col("label")).alias("image_aupr"),
                expr_fn::pixel_auroc(col("stats")).alias("pixel_auroc"),
                expr_fn::pixel_aupro(col("stats"), 0.1).alias("aupro_10"),
            ],
        )
        .unwrap()
        .collect()
        .await
        .unwrap();
    let mut seen = 0;
    for b in out {
        let cats = b.column(0).as_string::<i32>();
        for r in 0..b.num_rows() {
            let c = f.cases.iter().find(|c| c.category == cats.value(r)).unwrap();
            let v = |k: usize| {
                let a = b.column(k).as_primitive::<Float64Type>();
                a.is_valid(r).then(|| a.value(r))
            };
            check_opt("df image_auroc", v(1), c.expected.image_auroc);
            check_opt("df image_aupr", v(2), c.expected.image_aupr);
            check_opt("df pixel_auroc", v(3), c.expected.pixel_auroc);
            check_opt("df pixel_aupro(0.1)", v(4), c.expected.pixel_aupro["0.1"]);
            seen += 1;
        }
    }
    assert_eq!(seen, f.cases.len());
}
