//! promptad: PromptAD (Li et al., CVPR 2024) few-shot industrial anomaly detection as a batch
//! pipeline. One module per stage of the data flow (DESIGN §3); the `promptad` binary is a thin
//! layer over them (`cli`).

pub mod artifact;
pub mod cli;
pub mod clip;
pub mod data;
pub mod detect;
pub mod exit;
pub mod metrics;
pub mod pipeline;
pub mod prompt;
pub mod report;
pub mod run;
pub mod runtime;
pub mod sink;
pub mod spec;
pub mod sql;
pub mod stop;
pub mod store;
pub mod worker;
