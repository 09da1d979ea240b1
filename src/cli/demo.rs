//! `promptad demo`: synth, train and score every category, then a metrics table.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::Args;

use super::backbone::BackboneArgs;
use super::values::ReportFormat;
use crate::data::synth::SynthConfig;
use crate::detect::DetectConfig;
use crate::pipeline::demo::{mean, run_demo, table, DemoOptions, CHANCE};
use crate::prompt::train::TrainConfig;

/// Run the whole pipeline on generated data and print a metrics table.
///
/// Writes a defect dataset (`promptad synth`), trains
/// PromptAD on k normal images of each category, scores each test split, calibrates each model on
/// it (`promptad calibrate`; the data has no validation split, so the thresholds are fitted on the
/// split they are shown on, as anomalib does for MVTec AD by default), scores it again with the
/// decisions, and prints image AUROC, pixel AUROC and AUPRO per category, their mean, and chance.
/// Ends by writing the HTML report of the decided run (`promptad report`) to DIR/report/index.html.
///
/// Without --weights it runs on a small randomly initialised ViT (no pretrained CLIP weights
/// exist here) and says so; with --weights (and --model-config) it uses an OpenCLIP checkpoint.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Working directory for the data, models and scores.
    #[arg(long, default_value = "promptad-demo", value_name = "DIR")]
    pub out: PathBuf,
    /// Normal shots per category.
    #[arg(short, long, default_value_t = 2)]
    pub k: usize,
    /// Seed of the data, the shot draw and the prompt initialisation.
    #[arg(long, default_value_t = 111)]
    pub seed: u64,
    /// SGD steps per prompt set.
    #[arg(long, default_value_t = 100)]
    pub steps: usize,
    /// Generated categories, comma-separated [default: all].
    #[arg(long, value_delimiter = ',')]
    pub categories: Vec<String>,
    /// Side of the generated images.
    #[arg(long, default_value_t = 256)]
    pub image_size: u32,
    /// Defective test images per defect type.
    #[arg(long, default_value_t = 3)]
    pub test_defective: usize,
    /// Regenerate the data and replace earlier results.
    #[arg(long)]
    pub overwrite: bool,
    #[command(flatten)]
    pub backbone: BackboneArgs,
    /// table (for reading) or json (the results as one JSON object).
    #[arg(long, value_enum, default_value_t = ReportFormat::Table)]
    pub format: ReportFormat,
    /// Same as --format json (kept for one release).
    #[arg(long, hide = true)]
    pub json: bool,
}

pub fn run(mut args: DemoArgs, stop: &crate::stop::StopToken) -> Result<ExitCode> {
    if args.backbone.weights.is_none() && args.backbone.random_init.is_none() {
        args.backbone.random_init = Some(args.seed);
    }
    let (clip, backbone) = args.backbone.load(true)?;
    let mut synth = SynthConfig {
        seed: args.seed,
        image_size: args.image_size,
        test_defective_per_type: args.test_defective,
        ..SynthConfig::default()
    };
    if !args.categories.is_empty() {
        synth.categories = args.categories.clone();
    }
    let options = DemoOptions {
        out_dir: args.out.clone(),
        synth,
        k: args.k,
        seed: args.seed,
        train: TrainConfig { steps: args.steps, ..TrainConfig::default() },
        detect: DetectConfig::default(),
        batch_size: 16,
        overwrite: args.overwrite,
    };
    let bar = super::progress_bar(0, "demo");
    let outcome = run_demo(&options, &clip, &backbone, stop, |step| {
        bar.set_message(step.to_string());
        bar.tick();
        tracing::info!(step, "demo");
    })?;
    bar.finish_and_clear();
    let results = outcome.results;
    if args.format.or_json(args.json) == ReportFormat::Json {
        println!(
            "{}",
            serde_json::to_string_pretty(
                &serde_json::json!({"backbone": backbone, "categories": results, "mean": mean(&results), "chance": CHANCE,
                    "report": outcome.report})
            )?
        );
    } else {
        print!("{}", table(&results, &backbone));
        println!("\nmodels, scores and data are under {}", args.out.display());
        println!("report (open it in a browser): {}", outcome.report.display());
    }
    Ok(ExitCode::SUCCESS)
}
