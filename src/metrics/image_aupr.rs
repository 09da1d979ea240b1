//! `image_aupr(score, label)`, area under the precision–recall curve over images,
//! as anomalib reports it (`image_AUPR`).
//!
//! The definition is [`super::aupr::aupr`] (anomalib ≥ 2.3 `metrics/aupr.py`): torchmetrics'
//! exact PR curve, then the trapezoid after a stable sort by recall; not scikit-learn's average
//! precision. Rows with a NULL score or label are skipped; a group without anomalous or without
//! normal images gives NULL.

use std::sync::{Arc, LazyLock};

use datafusion::logical_expr::{AggregateUDF, Documentation};

use super::aupr::aupr;
use super::labelled_scores::ImageMetricUdaf;
use super::DOC_SECTION;

const NAME: &str = "image_aupr";

static DOCUMENTATION: LazyLock<Documentation> = LazyLock::new(|| {
    Documentation::builder(
        DOC_SECTION,
        "Area under the precision-recall curve over images, as anomalib reports `image_AUPR`: the \
         exact curve (one point per distinct score, plus recall 0 / precision 1), trapezoid after a \
         stable sort by recall (torchmetrics `auc(recall, precision, reorder=True)`). Not \
         scikit-learn's average precision; a perfect ranking scores below 1 when negatives follow the \
         last positive. NULL when the group has no anomalous or no normal image.",
        "image_aupr(score, label)",
    )
    .with_sql_example("```sql\n> SELECT category, image_aupr(score, label) FROM scores GROUP BY category;\n```")
    .with_argument("score", "Image anomaly score, any numeric type (higher = more anomalous).")
    .with_argument("label", "Ground truth: BOOLEAN, or an integer 0 (normal) / 1 (anomalous).")
    .with_related_udf("image_auroc")
    .build()
});

/// The `image_aupr` aggregate function (a shared instance).
pub fn image_aupr_udaf() -> Arc<AggregateUDF> {
    static INSTANCE: LazyLock<Arc<AggregateUDF>> =
        LazyLock::new(|| Arc::new(AggregateUDF::from(ImageMetricUdaf::new(NAME, aupr, || &DOCUMENTATION))));
    Arc::clone(&INSTANCE)
}
