//! `image_auroc(score, label)`, exact AUROC over images (anomalib `image_AUROC`).
//!
//! The definition is [`super::auroc::auroc`]: trapezoid over the exact ROC (anomalib ≥ 2.3
//! `metrics/auroc.py`), ties with half credit. Rows with a NULL score or label are skipped; a
//! group without anomalous or without normal images gives NULL.

use std::sync::{Arc, LazyLock};

use datafusion::logical_expr::{AggregateUDF, Documentation};

use super::auroc::auroc;
use super::labelled_scores::ImageMetricUdaf;
use super::DOC_SECTION;

const NAME: &str = "image_auroc";

static DOCUMENTATION: LazyLock<Documentation> = LazyLock::new(|| {
    Documentation::builder(
        DOC_SECTION,
        "Exact area under the ROC curve over images (anomalib `image_AUROC`): the trapezoid over \
         the exact ROC curve, one point per distinct score, tied scores counted half. NULL when the \
         group has no anomalous or no normal image.",
        "image_auroc(score, label)",
    )
    .with_sql_example("```sql\n> SELECT category, image_auroc(score, label) FROM scores GROUP BY category;\n```")
    .with_argument("score", "Image anomaly score, any numeric type (higher = more anomalous).")
    .with_argument("label", "Ground truth: BOOLEAN, or an integer 0 (normal) / 1 (anomalous).")
    .with_related_udf("image_aupr")
    .build()
});

/// The `image_auroc` aggregate function (a shared instance).
pub fn image_auroc_udaf() -> Arc<AggregateUDF> {
    static INSTANCE: LazyLock<Arc<AggregateUDF>> =
        LazyLock::new(|| Arc::new(AggregateUDF::from(ImageMetricUdaf::new(NAME, auroc, || &DOCUMENTATION))));
    Arc::clone(&INSTANCE)
}
