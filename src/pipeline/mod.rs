//! The jobs the CLI runs, as library functions: train a category, score a dataset, calibrate a
//! model on a scored run, the demo.

pub mod bench;
pub mod calibrate;
pub mod demo;
pub mod score;
pub mod train;
