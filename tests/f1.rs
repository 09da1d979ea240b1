//! The F1-max thresholds and the calibration against an independent reference:
//! `tests/fixtures/f1_cases.json`, written by `tests/fixtures/make_f1_cases.py` with scikit-learn's
//! `precision_recall_curve` (F1 from its precision and recall, the maximum, its threshold) and
//! numpy (nearest-rank quantiles, anomalib's min-max normalisation). Checks the reference
//! functions, the pixel version over merged statistics, `Calibration`, and the SQL aggregates at
//! several partitionings and batch sizes.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, BooleanArray, Float64Array, Int64Array, RecordBatch, StringArray};
use arrow::compute::concat;
use arrow::datatypes::{DataType, Field, Float64Type, Schema};
use datafusion::datasource::MemTable;
use datafusion::prelude::{SessionConfig, SessionContext};
use promptad::metrics::{
    self, confusion_at, dequantize, f1_max, pixel_confusion_at, pixel_f1_max, stats_data_type, stats_schema_field,
    to_arrow, Calibration, ImageStats, ThresholdMethod,
};
use serde::Deserialize;

/// Python computes F1 from float precision and recall; the Rust value is one division.
const TOL: f64 = 1e-12;

#[derive(Debug, Deserialize)]
struct Fixture {
    image_normal_quantile: f64,
    pixel_normal_quantile: f64,
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
    score: f64,
    label: u8,
    width: usize,
    height: usize,
    map: Vec<u16>,
    mask: String,
}

#[derive(Debug, Deserialize)]
struct Level {
    f1: f64,
    threshold: f64,
    anomalib_f1: f64,
    anomalib_threshold: f64,
    threshold_q: Option<u16>,
}

#[derive(Debug, Deserialize)]
struct ExpectedCalibration {
    image_threshold: Option<f64>,
    pixel_threshold_q: Option<u16>,
    normalized: Option<Vec<f64>>,
}

#[derive(Debug, Deserialize)]
struct Expected {
    image: Option<Level>,
    pixel: Option<Level>,
    calibration: ExpectedCalibration,
    n_pixels: u64,
}

impl Image {
    fn mask(&self) -> Vec<bool> {
        self.mask.bytes().map(|b| b == b'1').collect()
    }
    fn stats(&self) -> ImageStats {
        ImageStats::from_map(&self.map, &self.mask(), self.width, self.height).unwrap()
    }
}

impl Case {
    fn scores(&self) -> Vec<f64> {
        self.images.iter().map(|i| i.score).collect()
    }
    fn labels(&self) -> Vec<bool> {
        self.images.iter().map(|i| i.label == 1).collect()
    }
    fn merged_stats(&self) -> ImageStats {
        ImageStats::sum(&self.images.iter().map(Image::stats).collect::<Vec<_>>()).unwrap()
    }
}

fn fixture() -> Fixture {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/f1_cases.json");
    let text = std::fs::read_to_string(path).expect("run tests/fixtures/make_f1_cases.py");
    let f: Fixture = serde_json::from_str(&text).unwrap();
    assert!(f.cases.len() >= 15);
    f
}

fn close(what: &str, got: f64, want: f64) {
    assert!((got - want).abs() <= TOL, "{what}: got {got}, want {want} (diff {:e})", (got - want).abs());
}

#[test]
fn image_f1_max_matches_sklearn() {
    let f = fixture();
    let mut defined = 0;
    for c in &f.cases {
        let (scores, labels) = (c.scores(), c.labels());
        match (f1_max(&scores, &labels), &c.expected.image) {
            (Ok(got), Some(want)) => {
                let cat = &c.category;
                close(&format!("{cat} f1"), got.f1, want.f1);
                assert_eq!(got.threshold, want.threshold, "{cat}: threshold");
                assert_eq!(confusion_at(&scores, &labels, got.threshold).unwrap(), got.confusion, "{cat}");
                if want.anomalib_threshold != want.threshold {
                    // torch's float argmax may land on another threshold only when it is a tie
                    let c = confusion_at(&scores, &labels, want.anomalib_threshold).unwrap();
                    close(&format!("{cat} anomalib tie"), c.f1().unwrap(), got.f1);
                    assert!(want.anomalib_threshold > got.threshold, "{cat}: ties go to the lowest threshold");
                }
                close(&format!("{cat} anomalib f1"), want.anomalib_f1, got.f1);
                defined += 1;
            }
            (Err(e), None) => assert!(e.is_undefined(), "{}: {e}", c.category),
            (got, want) => panic!("{}: got {got:?}, want {want:?}", c.category),
        }
    }
    assert!(defined >= 15);
}

#[test]
fn pixel_f1_max_matches_sklearn_on_expanded_histograms() {
    let f = fixture();
    let mut defined = 0;
    for c in &f.cases {
        let cat = &c.category;
        let merged = c.merged_stats();
        assert_eq!(merged.n_background() + merged.n_defect(), c.expected.n_pixels, "{cat}");
        match (pixel_f1_max(&merged), &c.expected.pixel) {
            (Ok(got), Some(want)) => {
                close(&format!("{cat} pixel f1"), got.f1, want.f1);
                assert_eq!(Some(got.threshold_q), want.threshold_q, "{cat}: threshold_q");
                // (serde_json's default float reader may land one ulp off a 17-digit number, so
                // the stored value is the exact check and the JSON float a close one)
                assert_eq!(got.threshold, dequantize(got.threshold_q));
                close(&format!("{cat} pixel threshold"), got.threshold, want.threshold);
                assert_eq!(pixel_confusion_at(&merged, got.threshold_q), got.confusion, "{cat}");
                // the histogram version is the reference on the dequantised pixels, bit for bit
                let scores: Vec<f64> = c.images.iter().flat_map(|i| i.map.iter().map(|&q| dequantize(q))).collect();
                let labels: Vec<bool> = c.images.iter().flat_map(|i| i.mask()).collect();
                let exact = f1_max(&scores, &labels).unwrap();
                assert_eq!((exact.f1.to_bits(), exact.threshold), (got.f1.to_bits(), got.threshold), "{cat}");
                assert_eq!(exact.confusion, got.confusion, "{cat}");
                // summing per-image anomalous pixels gives the predicted positives
                let per_image: u64 =
                    c.images.iter().map(|i| pixel_confusion_at(&i.stats(), got.threshold_q).predicted_positive()).sum();
                assert_eq!(per_image, got.confusion.predicted_positive(), "{cat}");
                defined += 1;
            }
            (Err(e), None) => assert!(e.is_undefined(), "{cat}: {e}"),
            (got, want) => panic!("{cat}: got {got:?}, want {want:?}"),
        }
    }
    assert!(defined >= 9);
}

#[test]
fn calibration_matches_python() {
    let f = fixture();
    for c in &f.cases {
        let cat = &c.category;
        let (scores, labels) = (c.scores(), c.labels());
        let cal = Calibration::fit(&scores, &labels, &c.merged_stats()).unwrap();
        let want = &c.expected.calibration;
        assert_eq!(cal.image.map(|i| i.threshold), want.image_threshold, "{cat}: image threshold");
        assert_eq!(cal.pixel.map(|p| p.threshold_q), want.pixel_threshold_q, "{cat}: pixel threshold");
        if let Some(image) = cal.image {
            let normal_only = !labels.contains(&true);
            let expected_method = if normal_only {
                ThresholdMethod::NormalQuantile { quantile: f.image_normal_quantile }
            } else {
                ThresholdMethod::F1Max { f1: f1_max(&scores, &labels).unwrap().f1 }
            };
            assert_eq!(image.method, expected_method, "{cat}");
            if let Some(normalized) = &want.normalized {
                for (s, w) in scores.iter().zip(normalized) {
                    close(&format!("{cat} normalize({s})"), image.normalize(*s), *w);
                }
                assert!(scores.iter().all(|&s| image.is_anomalous(s) == (s >= image.threshold)));
            }
            assert_eq!(image.normalize(image.threshold), 0.5, "{cat}");
        }
        if let Some(pixel) = cal.pixel {
            if let ThresholdMethod::NormalQuantile { quantile } = pixel.method {
                assert_eq!(quantile, f.pixel_normal_quantile, "{cat}");
            }
        }
        let back = Calibration::from_json(&cal.to_json()).unwrap();
        assert_eq!(back, cal, "{cat}: JSON round trip");
    }
}

// ---------------------------------------------------------------- SQL

/// All cases as one table, one row per image, plus two rows with a NULL score or label.
fn cases_batch(f: &Fixture) -> RecordBatch {
    let images: Vec<(&str, &Image)> =
        f.cases.iter().flat_map(|c| c.images.iter().map(move |i| (c.category.as_str(), i))).collect();
    let stats: Vec<ImageStats> = images.iter().map(|(_, i)| i.stats()).collect();
    let n_null = 2;
    let first = f.cases[0].category.as_str();
    let category =
        StringArray::from_iter_values(images.iter().map(|(c, _)| *c).chain(std::iter::repeat_n(first, n_null)));
    let score = Float64Array::from_iter(images.iter().map(|(_, i)| Some(i.score)).chain([None, Some(99.0)]));
    let label = BooleanArray::from_iter(images.iter().map(|(_, i)| Some(i.label == 1)).chain([Some(true), None]));
    let label_int = Int64Array::from_iter(images.iter().map(|(_, i)| Some(i.label as i64)).chain([Some(1), None]));
    let stats_col =
        concat(&[to_arrow(&stats).as_ref(), arrow::array::new_null_array(&stats_data_type(), n_null).as_ref()])
            .unwrap();
    let schema = Arc::new(Schema::new(vec![
        Field::new("category", DataType::Utf8, false),
        Field::new("score", DataType::Float64, true),
        Field::new("label", DataType::Boolean, true),
        Field::new("label_int", DataType::Int64, true),
        stats_schema_field(),
    ]));
    let columns: Vec<ArrayRef> =
        vec![Arc::new(category), Arc::new(score), Arc::new(label), Arc::new(label_int), stats_col];
    RecordBatch::try_new(schema, columns).unwrap()
}

/// Splits the rows into `partitions` partitions of small, uneven batches.
fn partitioned(batch: &RecordBatch, partitions: usize) -> Vec<Vec<RecordBatch>> {
    let mut parts: Vec<Vec<u32>> = vec![Vec::new(); partitions];
    for row in 0..batch.num_rows() {
        parts[(row * 7 + row / 3) % partitions].push(row as u32);
    }
    parts
        .into_iter()
        .map(|rows| {
            let mut out = Vec::new();
            let (mut k, mut size) = (0, 1);
            while k < rows.len() {
                let take = size.min(rows.len() - k);
                let idx = arrow::array::UInt32Array::from_iter_values(rows[k..k + take].iter().copied());
                out.push(arrow::compute::take_record_batch(batch, &idx).unwrap());
                k += take;
                size = size % 5 + 1;
            }
            out
        })
        .collect()
}

const QUERY: &str = "SELECT category, \
       f1_max(score, label), f1_threshold(score, label_int), \
       pixel_f1_max(stats), pixel_f1_threshold(stats) \
     FROM cases GROUP BY category";

type Row = Vec<Option<f64>>;

async fn run(ctx: &SessionContext, sql: &str) -> datafusion::error::Result<BTreeMap<String, Row>> {
    let mut out = BTreeMap::new();
    for b in ctx.sql(sql).await?.collect().await? {
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

/// What the reference functions give a case, in the query's column order.
fn reference_row(c: &Case) -> Row {
    let image = f1_max(&c.scores(), &c.labels()).ok();
    let pixel = pixel_f1_max(&c.merged_stats()).ok();
    vec![image.map(|r| r.f1), image.map(|r| r.threshold), pixel.map(|r| r.f1), pixel.map(|r| r.threshold)]
}

fn bits(row: &Row) -> Vec<Option<u64>> {
    row.iter().map(|v| v.map(f64::to_bits)).collect()
}

#[tokio::test]
async fn sql_equals_reference_at_every_partitioning() {
    let f = fixture();
    let batch = cases_batch(&f);
    for table_partitions in [1, 3] {
        for target_partitions in [1, 2, 8] {
            for batch_size in [1, 2, 3] {
                let how = format!("table {table_partitions} / target {target_partitions} / batch {batch_size}");
                let ctx = session(target_partitions, batch_size);
                let table = MemTable::try_new(batch.schema(), partitioned(&batch, table_partitions)).unwrap();
                ctx.register_table("cases", Arc::new(table)).unwrap();
                let rows = run(&ctx, QUERY).await.unwrap_or_else(|e| panic!("{how}: {e}"));
                assert_eq!(rows.len(), f.cases.len(), "{how}");
                for c in &f.cases {
                    let got = &rows[&c.category];
                    assert_eq!(bits(got), bits(&reference_row(c)), "{how}: {}", c.category);
                    // and against scikit-learn
                    assert_eq!(got[1], c.expected.image.as_ref().map(|l| l.threshold), "{how}: {}", c.category);
                    let pixel_threshold = c.expected.pixel.as_ref().map(|l| dequantize(l.threshold_q.unwrap()));
                    assert_eq!(got[3], pixel_threshold, "{how}: {}", c.category);
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
    let sql = "SELECT 'all', f1_max(score, label), f1_threshold(score, label), pixel_f1_max(stats), \
               pixel_f1_threshold(stats) FROM cases";
    let rows = run(&ctx, sql).await.unwrap();
    let all: Vec<&Image> = f.cases.iter().flat_map(|c| &c.images).collect();
    let scores: Vec<f64> = all.iter().map(|i| i.score).collect();
    let labels: Vec<bool> = all.iter().map(|i| i.label == 1).collect();
    let image = f1_max(&scores, &labels).unwrap();
    let pixel = pixel_f1_max(&ImageStats::sum(&all.iter().map(|i| i.stats()).collect::<Vec<_>>()).unwrap()).unwrap();
    let want = vec![Some(image.f1), Some(image.threshold), Some(pixel.f1), Some(pixel.threshold)];
    assert_eq!(bits(&rows["all"]), bits(&want));
}

#[tokio::test]
async fn sql_errors() {
    let f = fixture();
    let batch = cases_batch(&f);
    let ctx = session(2, 8);
    ctx.register_table("cases", Arc::new(MemTable::try_new(batch.schema(), vec![vec![batch]]).unwrap())).unwrap();
    for (sql, needle) in [
        ("SELECT pixel_f1_max(score) FROM cases", "stats"),
        ("SELECT pixel_f1_threshold(stats, stats) FROM cases", "1 argument"),
        ("SELECT f1_max(score, category) FROM cases", "label"),
        ("SELECT f1_threshold(category, label) FROM cases", "score"),
        ("SELECT f1_max(score) FROM cases", "2 arguments"),
        ("SELECT f1_threshold(score, label_int + 1) FROM cases", "label must be 0 or 1"),
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
    let out = ctx
        .read_batch(batch)
        .unwrap()
        .aggregate(
            vec![col("category")],
            vec![
                expr_fn::f1_max(col("score"), col("label")),
                expr_fn::f1_threshold(col("score"), col("label")),
                expr_fn::pixel_f1_max(col("stats")),
                expr_fn::pixel_f1_threshold(col("stats")),
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
            let got: Row = (1..5)
                .map(|k| {
                    let a = b.column(k).as_primitive::<Float64Type>();
                    a.is_valid(r).then(|| a.value(r))
                })
                .collect();
            assert_eq!(bits(&got), bits(&reference_row(c)), "{}", c.category);
            seen += 1;
        }
    }
    assert_eq!(seen, f.cases.len());
}
