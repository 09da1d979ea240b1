//! `promptad bench`: measured scoring throughput, stage times, host CPU and map sizes.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::Args;

use super::backbone::BackboneArgs;
use super::values::ReportFormat;
use crate::artifact::Artifact;
use crate::data::synth::ImageEncoding;
use crate::pipeline::bench::{run_bench, table, BenchOptions};
use crate::pipeline::score::BatchSize;
use crate::sink::MapsMode;
use crate::store::Location;

/// Measure scoring: images/s, where the time goes, host CPU per image, peak memory and the bytes
/// of maps per image, for each --maps mode on the same data in the same process.
///
/// Without --data it generates --images test images of --image-size² (--encoding, a quarter of them
/// defective) of one textured category and scores them; with --data it scores that dataset's
/// --category. Without --model it trains a 1-step model first (the cost of scoring does not
/// depend on what was learned), with the backbone of --weights, or a randomly initialised
/// demo-vit-240 when no weights are given. Before scoring it times the backbone's forward alone
/// and the decoding and preprocessing of up to 32 images alone, on one thread; a warm-up pass
/// over one batch runs first.
///
/// Columns: read/decode (reader threads, overlapped with the model), model (this thread: the
/// backbone forward, then memory search, prompts, maps, Gaussian and quantisation), backbone (the
/// forward alone, synchronised on CUDA), write (writer thread, overlapped with the model:
/// statistics, Parquet, uploads, commits), wait (the model waiting for decoded images), write
/// wait (the model waiting for the writer to take a batch), core-ms/img (the process's CPU time per image),
/// host core-ms (the same less the CPU time the model threads, the scoring thread and libtorch's
/// workers, spent in the pass's forwards, by each thread's own clock), peak MiB (peak
/// RSS during the pass) and maps B/img (bytes of the maps table per image). A second table splits
/// host core-ms by stage: read (the reader thread), decode (its decoding pool), model (the model's
/// threads outside the forwards), write (the writer thread) and io (the store's threads).
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Dataset URL to score instead of generated data.
    #[arg(long, value_name = "URL")]
    pub data: Option<String>,
    /// Category of --data [default: its first].
    #[arg(long)]
    pub category: Option<String>,
    /// Model artifact to score with [default: train a 1-step model on the data].
    #[arg(long, value_name = "URL")]
    pub model: Option<String>,
    /// Test images to generate (at most 1333: synth names images with three digits, so a
    /// directory holds 1000 good ones; use --data for more).
    #[arg(long, default_value_t = 160)]
    pub images: usize,
    /// Side of the generated images.
    #[arg(long, default_value_t = 1024)]
    pub image_size: u32,
    /// Encoding of the generated images: png or jpeg (quality 90).
    #[arg(long, value_enum, default_value_t = ImageEncoding::Png)]
    pub encoding: ImageEncoding,
    /// Images per forward pass, or auto (as `promptad score --batch-size`).
    #[arg(long, default_value_t = BatchSize::default(), value_name = "N|auto")]
    pub batch_size: BatchSize,
    /// The ways of storing maps to measure, comma-separated, in order.
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [MapsMode::Full, MapsMode::Compact])]
    pub maps: Vec<MapsMode>,
    /// Where the data, model and outputs go [default: a temporary folder, removed afterwards].
    /// Generated data there is reused by a later bench with the same settings.
    #[arg(long, value_name = "DIR")]
    pub work: Option<PathBuf>,
    /// Seed of the generated data and of the 1-step model.
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    #[command(flatten)]
    pub backbone: BackboneArgs,
    /// table (for reading) or json (the measurements as one JSON object).
    #[arg(long, value_enum, default_value_t = ReportFormat::Table)]
    pub format: ReportFormat,
}

pub fn run(mut args: BenchArgs, stop: &crate::stop::StopToken) -> Result<ExitCode> {
    let artifact = match &args.model {
        Some(model) => Some(Artifact::read(&Location::parse(model)?)?),
        None => None,
    };
    let (clip, backbone) = match &artifact {
        Some(a) => {
            let device = crate::runtime::checked_device(&args.backbone.runtime.device)?;
            let clip =
                a.manifest.backbone.load(args.backbone.weights.as_deref(), device, args.backbone.runtime.precision)?;
            (clip, a.manifest.backbone.clone())
        }
        None => {
            if args.backbone.weights.is_none() && args.backbone.random_init.is_none() {
                args.backbone.random_init = Some(args.seed);
            }
            args.backbone.load(true)?
        }
    };
    let temporary = match &args.work {
        Some(_) => None,
        None => Some(tempfile::Builder::new().prefix("promptad-bench-").tempdir()?),
    };
    let work_dir = args.work.clone().unwrap_or_else(|| temporary.as_ref().expect("a temporary folder").path().into());
    let options = BenchOptions {
        work_dir,
        data: args.data.clone(),
        category: args.category.clone(),
        images: args.images,
        image_size: args.image_size,
        encoding: args.encoding,
        batch_size: args.batch_size,
        modes: args.maps.clone(),
        seed: args.seed,
    };
    let bar = super::progress_bar(0, "bench");
    let report = run_bench(&options, &clip, &backbone, artifact, stop, |step| {
        bar.set_message(step.to_string());
        bar.tick();
        tracing::info!(step, "bench");
    })?;
    bar.finish_and_clear();
    match args.format {
        ReportFormat::Json => println!("{}", serde_json::to_string_pretty(&report)?),
        ReportFormat::Table => print!("{}", table(&report)),
    }
    Ok(ExitCode::SUCCESS)
}
