//! `promptad embed`: backbone features of images and texts.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::Args;

use super::backbone::BackboneArgs;
use crate::clip::embed::{embed, write_safetensors, EmbedRequest};
use crate::data::prepare::Preprocess;

/// Write backbone features (g, T, M1, M2, text) of images and texts.
///
/// Computes the CLIP features PromptAD uses and writes them to one safetensors file: for each
/// image the global embedding g, the V-V patch tokens T and the memory taps (M1, M2); for each
/// text its encode_text features and token ids. Key names and shapes: see the module docs of
/// `promptad::clip::embed` or docs/embed-format.md.
#[derive(Debug, Args)]
pub struct EmbedArgs {
    #[command(flatten)]
    pub backbone: BackboneArgs,
    /// Image files (PNG, JPEG, BMP, TIFF).
    #[arg(long = "image", value_name = "PATH", num_args = 1..)]
    pub images: Vec<PathBuf>,
    /// Texts to encode (each is tokenized as open_clip does).
    #[arg(long = "text", value_name = "TEXT", num_args = 1..)]
    pub texts: Vec<String>,
    /// Output file (.safetensors).
    #[arg(long, short, alias = "output")]
    pub out: PathBuf,
    /// Vision blocks (0-based) whose original-path tokens are written as memory taps.
    #[arg(long, value_delimiter = ',', default_value = "3,8")]
    pub taps: Vec<usize>,
    /// Images per forward pass.
    #[arg(long, default_value_t = 8)]
    pub batch_size: usize,
    /// L2-normalise every output, as PromptAD does before use.
    #[arg(long)]
    pub normalize: bool,
    /// How images reach the model size. official: OpenCV INTER_LINEAR to 1024×1024, then Pillow
    /// bicubic to the model size (the official data path, and what train and score do);
    /// direct: Pillow bicubic straight to the model size.
    #[arg(long, value_enum, default_value_t = Preprocess::Official)]
    pub preprocess: Preprocess,
}

pub fn run(args: EmbedArgs) -> Result<ExitCode> {
    anyhow::ensure!(!args.images.is_empty() || !args.texts.is_empty(), "nothing to embed: give --image and/or --text");
    anyhow::ensure!(
        args.out.extension().and_then(|e| e.to_str()) == Some("safetensors"),
        "--out {} must end in .safetensors",
        args.out.display()
    );
    let started = std::time::Instant::now();
    let (clip, backbone) = args.backbone.load(false)?;
    let config = &backbone.config;
    tracing::info!(weights = %clip.checkpoint.path.display(), parameters = clip.checkpoint.parameters, device = ?clip.device,
        precision = %clip.precision, seconds = started.elapsed().as_secs_f64(), "backbone loaded");
    let request = EmbedRequest {
        images: args.images.clone(),
        texts: args.texts.clone(),
        taps: args.taps.clone(),
        batch_size: args.batch_size,
        normalize: args.normalize,
        preprocess: args.preprocess,
    };
    let bar = super::progress_bar(request.images.len() as u64, "embedding images");
    let embeddings = embed(&clip, &request, |n| bar.inc(n as u64))?;
    bar.finish_and_clear();
    let metadata = HashMap::from([
        ("images".to_string(), serde_json::to_string(&args.images)?),
        ("texts".to_string(), serde_json::to_string(&args.texts)?),
        (
            "model_config".to_string(),
            serde_json::to_string(&serde_json::json!({
            "name_or_path": backbone.config_name, "embed_dim": config.embed_dim,
            "vision_width": config.vision_cfg.width, "image_size": config.vision_cfg.image_size }))?,
        ),
        ("precision".to_string(), clip.precision.to_string()),
        ("normalized".to_string(), args.normalize.to_string()),
        ("taps".to_string(), serde_json::to_string(&args.taps)?),
        ("preprocess".to_string(), serde_json::to_string(&args.preprocess)?.trim_matches('"').to_string()),
        ("logit_scale".to_string(), clip.logit_scale_raw().to_string()),
    ]);
    write_safetensors(&embeddings, metadata, &args.out)?;
    tracing::info!(output = %args.out.display(), images = args.images.len(), texts = args.texts.len(),
        seconds = started.elapsed().as_secs_f64(), "embeddings written");
    Ok(ExitCode::SUCCESS)
}
