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
            // Not `+=`: tch's `AddAssign` adds in place, and `x_vv` starts as a shallow clone of
            // `x_ori`, whose storage the original path still reads.
            #[allow(clippy::assign_op_pattern)]
            {
                x_vv = x_vv + step.vv_update;
            }
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

/// The floating-point operations of [`VisionTransformer::forward_vv`] for one image: two per
/// multiply-add of its matrix products (patch embedding, q/k/v, both attentions, the shared
/// `out_proj` twice, the MLPs, `ln_post` + `proj` of the CLS and patch tokens); norms,
/// softmax and activations are left out, as FLOP counters of transformers leave them out. The
/// last block's MLP is one row ([`DualOutput::ClsOnly`]). What `promptad bench` divides the
/// backbone's throughput by to place it against the measured matmul roofline.
pub fn forward_vv_flops(config: &ModelConfig) -> f64 {
    let v = &config.vision_cfg;
    let (c, m, e) = (v.width as f64, config.vision_mlp_width() as f64, config.embed_dim as f64);
    let patches = (config.grid_size() * config.grid_size()) as f64;
    let l = patches + 1.0;
    let embed = 2.0 * patches * (3 * v.patch_size * v.patch_size) as f64 * c;
    // q/k/v; softmax(q kᵀ) v and softmax(v vᵀ) v; out_proj of both.
    let attention = 2.0 * l * c * 3.0 * c + 2.0 * (2.0 * 2.0 * l * l * c) + 2.0 * (2.0 * l * c * c);
    let mlp = |rows: f64| 2.0 * 2.0 * rows * c * m;
    let layers = v.layers as f64;
    let blocks = layers * attention + (layers - 1.0).max(0.0) * mlp(l) + if v.layers > 0 { mlp(1.0) } else { 0.0 };
    embed + blocks + 2.0 * l * c * e
}

/// The activations of [`VisionTransformer::forward_vv`] for one image at their peak, in tensor
/// elements: what `--batch-size auto` multiplies by the element size. Inside the block that
/// runs both paths, with L tokens of width C, H heads and an MLP of width M, these are alive
/// at once: the original and the V-V residual streams and the two kept taps (4·L·C), `ln_1`,
/// q/k/v and their head-major copies (7·L·C), one attention's scores and their softmax
/// (2·H·L²), the attention output and its projection (2·L·C), then in the MLP `ln_2`, the
/// hidden layer and its activation (L·C + 2·L·M). An upper bound by construction (libtorch
/// frees a temporary as soon as its last handle drops, so not all of these peak together).
pub fn forward_vv_peak_elements(config: &ModelConfig) -> f64 {
    let v = &config.vision_cfg;
    let (c, m, h) = (v.width as f64, config.vision_mlp_width() as f64, config.vision_heads() as f64);
    let l = (config.grid_size() * config.grid_size() + 1) as f64;
    14.0 * l * c + 2.0 * h * l * l + 2.0 * l * m
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flops_of_the_demo_backbone_by_its_matrix_products() {
        let config = ModelConfig::resolve("demo-vit-240").unwrap();
        // demo-vit-240: 15 × 15 patches of 16² · 3, 226 tokens, width 256, 4 heads of 64, MLP
        // 1024, embed 256, 9 blocks. Each product as (rows, inner, columns), 2 FLOPs per
        // multiply-add.
        let (l, c) = (226, 256);
        let mut products: Vec<(i64, i64, i64)> = vec![(225, 768, c)];
        for block in 0..9 {
            products.push((l, c, 3 * c)); // q, k, v
            for _attention in 0..2 {
                // per head (4 × 64 = 256 columns): scores, then the weighted sum
                products.extend([(l, 64, l), (l, l, 64)].repeat(4));
                products.push((l, c, c)); // out_proj
            }
            let rows = if block == 8 { 1 } else { l };
            products.extend([(rows, c, 1024), (rows, 1024, c)]);
        }
        products.push((l, c, 256)); // proj of the CLS and patch tokens
        let want: i64 = products.iter().map(|(m, k, n)| 2 * m * k * n).sum();
        assert_eq!(want, 4_289_404_928);
        assert_eq!(forward_vv_flops(&config), want as f64);
    }
}
