//! Exact anomaly-detection metrics (DESIGN §6): in-memory reference functions, per-image
//! sufficient statistics that merge exactly, and DataFusion aggregate functions over them.
//!
//! Definitions follow anomalib ≥ 2.3 and the MVTec AD reference (shared/reference/ecosystem.md
//! §1.2); each file states its own with its source:
//!
//! | SQL                              | reference                | file              |
//! |----------------------------------|--------------------------|-------------------|
//! | `image_auroc(score, label)`      | [`auroc::auroc`]         | `image_auroc.rs`  |
//! | `image_aupr(score, label)`       | [`aupr::aupr`]           | `image_aupr.rs`   |
//! | `pixel_auroc(stats)`             | [`auroc::pixel_auroc`]   | `pixel_auroc.rs`  |
//! | `pixel_aupro(stats [, limit])`   | [`aupro::pixel_aupro`]   | `pixel_aupro.rs`  |
//! | `f1_max(score, label)`           | [`f1::f1_max`] `.f1`     | `image_f1.rs`     |
//! | `f1_threshold(score, label)`     | [`f1::f1_max`] `.threshold` | `image_f1.rs`  |
//! | `pixel_f1_max(stats)`            | [`f1::pixel_f1_max`] `.f1` | `pixel_f1.rs`   |
//! | `pixel_f1_threshold(stats)`      | [`f1::pixel_f1_max`] `.threshold` | `pixel_f1.rs` |
//!
//! [`calibration::Calibration`] turns the F1 thresholds of a labelled set into the decisions
//! (`score >= threshold`) and anomalib-style normalised scores a scoring run reports.
//!
//! `stats` is the per-image [`ImageStats`] column ([`stats_arrow`] has its Arrow layout);
//! scores are stored quantised ([`quantize`]). Every metric is exact for the values it is given
//! (grouped thresholds, ties counted half); an undefined metric (one class missing) is
//! [`MetricError::Undefined`] in Rust and NULL in SQL.

use std::sync::Arc;

use datafusion::logical_expr::{AggregateUDF, DocSection};
use datafusion::prelude::SessionContext;

pub mod aupr;
pub mod aupro;
pub mod auroc;
pub mod calibration;
pub mod curve;
pub mod curve_points;
pub mod error;
pub mod f1;
pub mod image_aupr;
pub mod image_auroc;
pub mod image_f1;
mod labelled_scores;
pub mod pixel_aupro;
pub mod pixel_auroc;
pub mod pixel_f1;
pub mod quantize;
pub mod stats;
pub mod stats_arrow;
#[cfg(test)]
mod test_support;

pub use aupr::{aupr, average_precision};
pub use aupro::{aupro, pixel_aupro, SegmentationMap, DEFAULT_FPR_LIMIT};
pub use auroc::{auroc, pixel_auroc};
pub use calibration::{Calibration, CalibrationError, ImageCalibration, PixelCalibration, ThresholdMethod};
pub use error::{MetricError, UndefinedReason};
pub use f1::{confusion_at, f1_max, pixel_confusion_at, pixel_f1_max, Confusion, F1Max, PixelF1Max};
pub use image_aupr::image_aupr_udaf;
pub use image_auroc::image_auroc_udaf;
pub use image_f1::{f1_max_udaf, f1_threshold_udaf};
pub use pixel_aupro::pixel_aupro_udaf;
pub use pixel_auroc::pixel_auroc_udaf;
pub use pixel_f1::{pixel_f1_max_udaf, pixel_f1_threshold_udaf};
pub use quantize::{dequantize, quantize};
pub use stats::{auroc_tie_bound, ImageStats, StatsSum};
pub use stats_arrow::{from_arrow, stats_data_type, stats_schema_field, to_arrow};

/// Where the functions appear in the generated SQL reference.
pub const DOC_SECTION: DocSection = DocSection {
    include: true,
    label: "Anomaly Detection Metrics",
    description: Some("Exact AUROC, AUPR, AUPRO and F1-max thresholds (anomalib >= 2.3 / MVTec AD definitions)."),
};

/// Every aggregate function of this module.
pub fn all_functions() -> Vec<Arc<AggregateUDF>> {
    vec![
        image_auroc_udaf(),
        image_aupr_udaf(),
        pixel_auroc_udaf(),
        pixel_aupro_udaf(),
        f1_max_udaf(),
        f1_threshold_udaf(),
        pixel_f1_max_udaf(),
        pixel_f1_threshold_udaf(),
    ]
}

/// Registers [`all_functions`] with a session.
pub fn register_all(ctx: &SessionContext) {
    for f in all_functions() {
        ctx.register_udaf(f.as_ref().clone());
    }
}

/// `Expr` builders for the DataFrame API.
pub mod expr_fn {
    use datafusion::logical_expr::{lit, Expr};

    pub fn image_auroc(score: Expr, label: Expr) -> Expr {
        super::image_auroc_udaf().call(vec![score, label])
    }
    pub fn image_aupr(score: Expr, label: Expr) -> Expr {
        super::image_aupr_udaf().call(vec![score, label])
    }
    pub fn pixel_auroc(stats: Expr) -> Expr {
        super::pixel_auroc_udaf().call(vec![stats])
    }
    pub fn pixel_aupro(stats: Expr, fpr_limit: f64) -> Expr {
        super::pixel_aupro_udaf().call(vec![stats, lit(fpr_limit)])
    }
    pub fn f1_max(score: Expr, label: Expr) -> Expr {
        super::f1_max_udaf().call(vec![score, label])
    }
    pub fn f1_threshold(score: Expr, label: Expr) -> Expr {
        super::f1_threshold_udaf().call(vec![score, label])
    }
    pub fn pixel_f1_max(stats: Expr) -> Expr {
        super::pixel_f1_max_udaf().call(vec![stats])
    }
    pub fn pixel_f1_threshold(stats: Expr) -> Expr {
        super::pixel_f1_threshold_udaf().call(vec![stats])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::execution::FunctionRegistry;
    use std::collections::HashSet;

    #[test]
    fn test_no_duplicate_name() {
        let mut names = HashSet::new();
        for f in all_functions() {
            for name in std::iter::once(f.name()).chain(f.aliases().iter().map(String::as_str)) {
                assert!(names.insert(name.to_lowercase()), "duplicate function name: {name}");
            }
        }
        assert_eq!(names.len(), 8);
    }

    #[test]
    fn every_function_is_documented_and_registered() {
        let ctx = SessionContext::new();
        register_all(&ctx);
        for f in all_functions() {
            let doc = f.documentation().expect("documented");
            assert!(doc.syntax_example.starts_with(f.name()), "{}", f.name());
            assert_eq!(doc.doc_section.label, DOC_SECTION.label);
            assert!(ctx.udaf(f.name()).is_ok(), "{} registered", f.name());
        }
        // no clash with DataFusion's built-in aggregates
        let builtin: HashSet<String> = datafusion::functions_aggregate::all_default_aggregate_functions()
            .iter()
            .map(|f| f.name().to_lowercase())
            .collect();
        for f in all_functions() {
            assert!(!builtin.contains(f.name()), "{} shadows a built-in", f.name());
        }
    }
}
