//! Prompt learning: categories and their prompt strings, the prompt learner, the losses and the
//! training loop (reference `promptad-official-behaviour.md` §3–§6).

pub mod categories;
pub mod learner;
pub mod loss;
pub mod train;

use crate::clip::ClipError;

#[derive(Debug, thiserror::Error)]
pub enum PromptError {
    #[error("unknown category {key:?}; built-in categories are: {known}. For a category of your own pass its display name with --category-name (and optionally --anomaly-suffixes)")]
    UnknownCategory { key: String, known: String },
    #[error(
        "anomaly state {state:?} must contain exactly one {{}} where the object name goes, e.g. \"{{}} with scratch\""
    )]
    BadState { state: String },
    #[error("prompt configuration: {0}")]
    Config(String),
    #[error("training diverged at step {step}: loss {loss}; lower the learning rate or use fp32")]
    Diverged { step: usize, loss: f64 },
    #[error(transparent)]
    Clip(#[from] ClipError),
    #[error(transparent)]
    Stopped(#[from] crate::stop::Stopped),
}
