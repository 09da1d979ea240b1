//! The jobs the CLI runs, as library functions: train a category, score a dataset, the demo.

pub mod demo;
pub mod score;
pub mod train;
