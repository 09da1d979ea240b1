//! `promptad tokenize`: CLIP token ids of texts.

use std::process::ExitCode;

use anyhow::Result;
use clap::Args;

use crate::clip::tokenizer::Tokenizer;

/// Print the CLIP token ids of texts.
///
/// Prints the CLIP BPE token ids of each TEXT, one JSON array per line, as open_clip's
/// `get_tokenizer('ViT-B-16-plus-240')` produces them: SOT (49406), the tokens, EOT (49407),
/// truncated to the context length with EOT kept.
#[derive(Debug, Args)]
pub struct TokenizeArgs {
    /// The texts to tokenize (quote each one).
    #[arg(required = true)]
    pub texts: Vec<String>,
    /// Context length to truncate and pad to.
    #[arg(long, default_value_t = 77)]
    pub context_length: usize,
    /// Keep the zero padding up to the context length (the model input exactly).
    #[arg(long)]
    pub pad: bool,
}

pub fn run(args: TokenizeArgs) -> Result<ExitCode> {
    anyhow::ensure!(args.context_length >= 2, "--context-length must be at least 2 (room for SOT and EOT)");
    let tokenizer = Tokenizer::global();
    for text in &args.texts {
        let mut ids = tokenizer.tokenize(text, args.context_length);
        if !args.pad {
            let eot = ids.iter().rposition(|&id| id != 0).map_or(0, |i| i + 1);
            ids.truncate(eot);
        }
        println!("{}", serde_json::to_string(&ids)?);
    }
    Ok(ExitCode::SUCCESS)
}
