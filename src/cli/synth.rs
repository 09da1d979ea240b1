//! `promptad synth`: a synthetic anomaly dataset in the MVTec AD layout.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Args;

use crate::data::synth::{self, ImageEncoding, SynthConfig};

/// Generate a defect dataset with pixel masks in the MVTec AD layout.
///
/// Generates a synthetic anomaly-detection dataset with known defects and exact pixel masks, in
/// the MVTec AD layout: OUT_DIR/<category>/train/good/000.png, test/good/, test/<defect_type>/,
/// ground_truth/<defect_type>/000_mask.png (8-bit, 255 = defect), plus OUT_DIR/synth.json
/// describing what was generated (written last).
///
/// Categories (texture): weave (hole, stain, extra_part), marble (crack, scratch, stain, hole),
/// grid (missing_part, extra_part, misplacement). Categories (object): washer (scratch, crack,
/// missing_part, stain), bracket (hole, missing_part, scratch), pcb (missing_part, extra_part,
/// misplacement, scratch).
///
/// Normal images vary in pose, texture phase, lighting and noise; each defect covers 0.2 %–8 %
/// of the image, some faintly. The same options give byte-identical files.
#[derive(Debug, Args)]
pub struct SynthArgs {
    /// Output directory (created if missing; must be empty unless --overwrite).
    #[arg(long, value_name = "DIR", required_unless_present = "out_dir")]
    pub out: Option<PathBuf>,
    /// The output directory as a positional argument (the old spelling, kept for one release).
    #[arg(value_name = "OUT_DIR", hide = true, conflicts_with = "out")]
    pub out_dir: Option<PathBuf>,
    /// Seed of everything random.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Categories to generate, comma-separated [default: all].
    #[arg(long, value_delimiter = ',', value_name = "NAMES")]
    pub categories: Vec<String>,
    /// Width and height of the images, in pixels (64 to 1024).
    #[arg(long, default_value_t = 256, value_name = "N")]
    pub image_size: u32,
    /// Normal training images per category (train/good).
    #[arg(long, default_value_t = 8, value_name = "N")]
    pub train_good: usize,
    /// Normal test images per category (test/good).
    #[arg(long, default_value_t = 6, value_name = "N")]
    pub test_good: usize,
    /// Defective test images per defect type and category (test/<defect_type>).
    #[arg(long = "test-defective", default_value_t = 3, value_name = "N")]
    pub test_defective: usize,
    /// png (lossless, MVTec AD's format) or jpeg (quality 90, VisA's; masks stay PNG).
    #[arg(long, value_enum, default_value_t = ImageEncoding::Png)]
    pub encoding: ImageEncoding,
    /// Write into a non-empty OUT_DIR: synth.json and the directories of the generated categories
    /// are removed first; other entries are left alone.
    #[arg(long)]
    pub overwrite: bool,
}

impl SynthArgs {
    /// The output directory, from --out or the old positional.
    pub fn out(&self) -> &std::path::Path {
        self.out.as_deref().or(self.out_dir.as_deref()).expect("clap requires --out or OUT_DIR")
    }

    /// The library config these flags describe.
    pub fn config(&self) -> SynthConfig {
        let defaults = SynthConfig::default();
        SynthConfig {
            seed: self.seed,
            categories: if self.categories.is_empty() { defaults.categories } else { self.categories.clone() },
            image_size: self.image_size,
            train_good: self.train_good,
            test_good: self.test_good,
            test_defective_per_type: self.test_defective,
            encoding: self.encoding,
            overwrite: self.overwrite,
        }
    }
}

pub fn run(args: SynthArgs) -> Result<ExitCode> {
    let config = args.config();
    let total = synth::planned_images(&config)?;
    let started = std::time::Instant::now();
    let bar = super::progress_bar(total as u64, "generating images");
    let result = synth::generate(&config, args.out(), || bar.inc(1));
    bar.finish_and_clear();
    let summary = result.with_context(|| format!("generating the synthetic dataset in {}", args.out().display()))?;
    for cat in &summary.categories {
        let defects: Vec<String> = cat.defects.iter().map(|d| format!("{} {}", d.defect_type, d.count)).collect();
        let lo = cat.defects.iter().filter_map(|d| d.min_area_fraction).fold(f64::INFINITY, f64::min);
        let hi = cat.defects.iter().filter_map(|d| d.max_area_fraction).fold(0.0, f64::max);
        let area = if lo.is_finite() {
            format!(", defect area {:.2}%–{:.2}%", lo * 100.0, hi * 100.0)
        } else {
            String::new()
        };
        println!(
            "{} ({}): {} train good, {} test good, {} defective [{}]{} -> {}",
            cat.name,
            cat.kind,
            cat.train_good,
            cat.test_good,
            cat.test_defective(),
            defects.join(", "),
            area,
            args.out().join(&cat.name).display()
        );
    }
    tracing::info!(out_dir = %args.out().display(), images = total, categories = summary.categories.len(),
        seconds = started.elapsed().as_secs_f64(), "synthetic dataset written");
    Ok(ExitCode::SUCCESS)
}
