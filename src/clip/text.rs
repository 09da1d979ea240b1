//! The text tower: `encode_text` for token ids and `encode_text_embeddings` for injected prompt
//! embeddings (PromptAD's learnable context).
//!
//! Mirrors open_clip 3.3.0 `src/open_clip/model.py` `CLIP.encode_text` and `text_global_pool`
//! (reference `openclip-vit-b-16-plus-240.md` §3.2), and PromptAD's `CLIPAD/model.py`
//! `CLIP.encode_text_embeddings` (reference `promptad-official-behaviour.md` §3.5).

use tch::{nn, Kind, Tensor};

use super::config::ModelConfig;
use super::transformer::{Activation, LayerNorm, ResidualAttentionBlock};
use super::ClipError;

#[derive(Debug)]
pub struct TextTransformer {
    token_embedding: Tensor,
    positional_embedding: Tensor,
    resblocks: Vec<ResidualAttentionBlock>,
    ln_final: LayerNorm,
    /// `[width, embed_dim]`, applied as `x @ text_projection` (not transposed).
    text_projection: Tensor,
    context_length: i64,
    vocab_size: i64,
    width: i64,
}

impl TextTransformer {
    /// The text tower's keys sit at the top level of an OpenCLIP state dict.
    pub fn new(p: nn::Path, config: &ModelConfig) -> Self {
        let t = &config.text_cfg;
        let activation = if config.quick_gelu { Activation::QuickGelu } else { Activation::Gelu };
        let blocks = &p / "transformer" / "resblocks";
        Self {
            token_embedding: (&p / "token_embedding").var("weight", &[t.vocab_size, t.width], nn::Init::Const(0.0)),
            positional_embedding: p.var("positional_embedding", &[t.context_length, t.width], nn::Init::Const(0.0)),
            resblocks: (0..t.layers)
                .map(|i| {
                    ResidualAttentionBlock::new(&blocks / i, t.width, t.heads, config.text_mlp_width(), activation)
                })
                .collect(),
            ln_final: LayerNorm::new(&p / "ln_final", t.width),
            text_projection: p.var("text_projection", &[t.width, config.embed_dim], nn::Init::Const(0.0)),
            context_length: t.context_length,
            vocab_size: t.vocab_size,
            width: t.width,
        }
    }

    pub fn context_length(&self) -> i64 {
        self.context_length
    }

    pub fn width(&self) -> i64 {
        self.width
    }

    fn check_tokens(&self, tokens: &Tensor) -> Result<(), ClipError> {
        let size = tokens.size();
        if size.len() != 2 || size[1] != self.context_length || size[0] == 0 {
            return Err(ClipError::Shape {
                what: "token ids".into(),
                expected: format!("[B >= 1, {}]", self.context_length),
                got: size,
            });
        }
        if tokens.kind() != Kind::Int64 {
            return Err(ClipError::Option {
                name: "token ids".into(),
                message: format!("must be int64, got {:?}", tokens.kind()),
            });
        }
        let (min, max) = (i64::try_from(tokens.min()).unwrap_or(-1), i64::try_from(tokens.max()).unwrap_or(i64::MAX));
        if min < 0 || max >= self.vocab_size {
            return Err(ClipError::Option {
                name: "token ids".into(),
                message: format!(
                    "ids must lie in [0, {}), got [{min}, {max}]; was the text tokenized for this model?",
                    self.vocab_size
                ),
            });
        }
        Ok(())
    }

    /// `token_embedding(tokens)`, `[B, L, width]`: the fixed SOS/suffix embeddings PromptAD splices
    /// its learnable context between.
    pub fn token_embeddings(&self, tokens: &Tensor) -> Result<Tensor, ClipError> {
        self.check_tokens(tokens)?;
        Ok(Tensor::embedding(&self.token_embedding, tokens, -1, false, false))
    }

    /// `encode_text(tokens)`, `[B, embed_dim]`, not normalised.
    pub fn encode_text(&self, tokens: &Tensor) -> Result<Tensor, ClipError> {
        let embeddings = self.token_embeddings(tokens)?;
        self.encode_text_embeddings(&embeddings, tokens)
    }

    /// `encode_text_embeddings(E, tokens)`, `[B, embed_dim]`, not normalised. `tokens` only
    /// locate each row's EOT (the position of its largest id).
    ///
    /// Speed without changing the result (DESIGN §5): attention is causal and the output is
    /// read at EOT, so positions after the last EOT of the batch are never computed.
    pub fn encode_text_embeddings(&self, embeddings: &Tensor, tokens: &Tensor) -> Result<Tensor, ClipError> {
        self.check_tokens(tokens)?;
        let (b, l) = (tokens.size()[0], self.context_length);
        let esize = embeddings.size();
        if esize != [b, l, self.width] {
            return Err(ClipError::Shape {
                what: "prompt embeddings".into(),
                expected: format!("[{b}, {l}, {}]", self.width),
                got: esize,
            });
        }
        let kind = self.text_projection.kind();
        let eot = tokens.argmax(-1, false).to_device(embeddings.device());
        let prefix = i64::try_from(eot.max()).expect("argmax of a non-empty row") + 1;
        let xs = embeddings.narrow(1, 0, prefix).to_kind(kind)
            + self.positional_embedding.narrow(0, 0, prefix).to_kind(kind);
        let mask = causal_mask(prefix, kind, embeddings.device());
        let xs = self.resblocks.iter().fold(xs, |xs, block| block.forward(&xs, Some(&mask)));
        let xs = self.ln_final.forward(&xs);
        let rows = Tensor::arange(b, (Kind::Int64, embeddings.device()));
        let pooled = xs.index(&[Some(rows), Some(eot)]);
        Ok(pooled.matmul(&self.text_projection))
    }
}

/// Additive causal mask `[L, L]`: 0 on and below the diagonal, `-inf` above
/// (`TextTransformer.build_causal_mask`).
fn causal_mask(len: i64, kind: Kind, device: tch::Device) -> Tensor {
    Tensor::full([len, len], f64::NEG_INFINITY, (kind, device)).triu(1)
}
