//! The ViT image tower: the standard forward (`encode_image`) and PromptAD's dual path
//! (`forward_vv`) with memory taps.
//!
//! Mirrors open_clip 3.3.0 `src/open_clip/transformer.py` `VisionTransformer` (`_embeds`,
//! `forward`, `_pool`; reference `openclip-vit-b-16-plus-240.md` §3.1) and PromptAD's
//! `CLIPAD/transformer.py` `V2VTransformer.forward` (reference `promptad-official-behaviour.md` §2.2).

use tch::{nn, Kind, Tensor};

use super::config::ModelConfig;
use super::transformer::{Activation, DualOutput, LayerNorm, ResidualAttentionBlock};
use super::ClipError;

#[derive(Debug)]
pub struct VisionTransformer {
    /// Patch embedding, `Conv2d(3, width, patch, stride=patch, bias=False)`.
    conv1: Tensor,
    class_embedding: Tensor,
    positional_embedding: Tensor,
    ln_pre: Option<LayerNorm>,
    resblocks: Vec<ResidualAttentionBlock>,
    ln_post: LayerNorm,
    /// `[width, embed_dim]`, applied as `x @ proj` (not transposed).
    proj: Tensor,
    image_size: i64,
    patch_size: i64,
}

/// The four outputs of PromptAD's image encoder, raw (PromptAD L2-normalises each before use).
#[derive(Debug)]
pub struct ImageFeatures {
    /// `g`: the CLIP image embedding, `[B, embed_dim]` (equal to [`VisionTransformer::encode_image`]).
    pub global: Tensor,
    /// `T`: V-V path patch tokens after `ln_post` and `proj`, `[B, grid², embed_dim]`.
    pub patch_tokens: Tensor,
    /// `M1, M2, …`: original-path patch tokens inside the tapped blocks, after attention and
    /// before the MLP, `[B, grid², width]` each, in the order the blocks were asked for.
    pub taps: Vec<Tensor>,
}

impl VisionTransformer {
    pub fn new(p: nn::Path, config: &ModelConfig) -> Self {
        let v = &config.vision_cfg;
        let activation = if config.quick_gelu { Activation::QuickGelu } else { Activation::Gelu };
        let tokens = config.grid_size() * config.grid_size() + 1;
        let blocks = &p / "transformer" / "resblocks";
        Self {
            conv1: (&p / "conv1").var("weight", &[v.width, 3, v.patch_size, v.patch_size], nn::Init::Const(0.0)),
            class_embedding: p.var("class_embedding", &[v.width], nn::Init::Const(0.0)),
            positional_embedding: p.var("positional_embedding", &[tokens, v.width], nn::Init::Const(0.0)),
            ln_pre: (!v.no_ln_pre).then(|| LayerNorm::new(&p / "ln_pre", v.width)),
            resblocks: (0..v.layers)
                .map(|i| {
                    ResidualAttentionBlock::new(
                        &blocks / i,
                        v.width,
                        config.vision_heads(),
                        config.vision_mlp_width(),
                        activation,
                    )
                })
                .collect(),
            ln_post: LayerNorm::new(&p / "ln_post", v.width),
            proj: p.var("proj", &[v.width, config.embed_dim], nn::Init::Const(0.0)),
            image_size: v.image_size,
            patch_size: v.patch_size,
        }
    }

    pub fn layers(&self) -> usize {
        self.resblocks.len()
    }

    pub fn image_size(&self) -> i64 {
        self.image_size
    }

    fn check_input(&self, images: &Tensor) -> Result<(), ClipError> {
        let size = images.size();
        let s = self.image_size;
        if size.len() != 4 || size[1] != 3 || size[2] != s || size[3] != s {
            return Err(ClipError::Shape { what: "images".into(), expected: format!("[B, 3, {s}, {s}]"), got: size });
        }
        Ok(())
    }

    /// Patch tokens with CLS and positions, after `ln_pre`: `[B, grid²+1, width]`.
    fn embed(&self, images: &Tensor) -> Tensor {
        let kind = self.conv1.kind();
        let xs = images.to_kind(kind).conv2d(&self.conv1, None::<&Tensor>, [self.patch_size], [0], [1], 1);
        // [B, W, g, g] -> [B, g², W]: token index = row·g + col.
        let xs = xs.flatten(2, 3).transpose(1, 2);
        let (b, _, w) = xs.size3().expect("patch tokens are [B, P, W]");
        let cls = self.class_embedding.to_kind(kind).view([1, 1, w]).expand([b, 1, w], false);
        let xs = Tensor::cat(&[cls, xs], 1) + self.positional_embedding.to_kind(kind);
        match &self.ln_pre {
            Some(ln) => ln.forward(&xs),
            None => xs,
        }
    }

    /// The standard CLIP image embedding `ln_post(x[:, 0]) @ proj`, `[B, embed_dim]`.
    pub fn encode_image(&self, images: &Tensor) -> Result<Tensor, ClipError> {
        self.check_input(images)?;
        let xs = self.resblocks.iter().fold(self.embed(images), |xs, block| block.forward(&xs, None));
        Ok(self.ln_post.forward(&xs.select(1, 0)).matmul(&self.proj))
    }

    /// PromptAD's image encoder: the V-V path on every block, the original path alongside it
    /// (it supplies the CLS token and the memory taps). `tap_blocks` are 0-based block indices;
    /// PromptAD uses `[3, 8]`.
    pub fn forward_vv(&self, images: &Tensor, tap_blocks: &[usize]) -> Result<ImageFeatures, ClipError> {
        self.check_input(images)?;
        if let Some(&bad) = tap_blocks.iter().find(|&&i| i >= self.resblocks.len()) {
            return Err(ClipError::Option {
                name: "memory tap block".into(),
                message: format!(
                    "block {bad} does not exist; the vision tower has {} blocks (0-based)",
                    self.resblocks.len()
                ),
            });
        }
        let x_in = self.embed(images);
        let mut x_ori = x_in.shallow_clone();
        let mut x_vv = x_in;
        let mut taps: Vec<Option<Tensor>> = tap_blocks.iter().map(|_| None).collect();
        let last = self.resblocks.len().saturating_sub(1);
        for (index, block) in self.resblocks.iter().enumerate() {
            let rows = if index == last { DualOutput::ClsOnly } else { DualOutput::AllTokens };
            let step = block.forward_dual(&x_ori, rows);
            for (slot, _) in tap_blocks.iter().enumerate().filter(|(_, &b)| b == index) {
                taps[slot] = Some(step.mid.narrow(1, 1, step.mid.size()[1] - 1));
            }
            x_vv = x_vv + step.vv_update;
            x_ori = step.out;
        }
        // The V-V path's CLS slot is overwritten with the original path's (reference §2.1), so
        // the global feature is exactly the CLIP embedding.
        let global = self.ln_post.forward(&x_ori.select(1, 0)).matmul(&self.proj);
        let patches = x_vv.narrow(1, 1, x_vv.size()[1] - 1);
        let patch_tokens = self.ln_post.forward(&patches).matmul(&self.proj);
        let taps = taps.into_iter().map(|t| t.expect("every tap block index was checked")).collect();
        Ok(ImageFeatures { global, patch_tokens, taps })
    }
}

impl ImageFeatures {
    /// Each output L2-normalised along its last dimension, as `PromptAD.encode_image` returns them.
    pub fn normalized(&self) -> ImageFeatures {
        ImageFeatures {
            global: l2_normalize(&self.global),
            patch_tokens: l2_normalize(&self.patch_tokens),
            taps: self.taps.iter().map(l2_normalize).collect(),
        }
    }

    pub fn to_kind(&self, kind: Kind) -> ImageFeatures {
        ImageFeatures {
            global: self.global.to_kind(kind),
            patch_tokens: self.patch_tokens.to_kind(kind),
            taps: self.taps.iter().map(|t| t.to_kind(kind)).collect(),
        }
    }
}

/// `F.normalize(x, dim=-1)`: `x / max(‖x‖₂, 1e-12)`.
pub fn l2_normalize(xs: &Tensor) -> Tensor {
    let norm = xs.norm_scalaropt_dim(2, [-1], true).clamp_min(1e-12);
    xs / norm
}
