//! The pre-LN residual attention block shared by both towers, with PromptAD's dual (V-V) path.
//!
//! Mirrors open_clip 3.3.0 `src/open_clip/transformer.py` `ResidualAttentionBlock` (packed
//! `in_proj_*`, `out_proj`, `mlp.c_fc`/`mlp.c_proj`) and, for [`ResidualAttentionBlock::forward_dual`],
//! PromptAD's `CLIPAD/transformer.py` `Attention` / `ResidualAttentionBlock.forward`
//! (reference `promptad-official-behaviour.md` §2.1).

use tch::nn::Module;
use tch::{nn, Kind, Tensor};

/// LayerNorm computed in fp32 whatever the activation dtype, like open_clip's `LayerNormFp32`
/// (reference `openclip-vit-b-16-plus-240.md` §3.5). Its parameters always stay fp32.
#[derive(Debug)]
pub struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
    width: i64,
}

impl LayerNorm {
    pub fn new(p: nn::Path, width: i64) -> Self {
        let weight = p.var("weight", &[width], nn::Init::Const(1.0));
        let bias = p.var("bias", &[width], nn::Init::Const(0.0));
        Self { weight, bias, width }
    }

    pub fn forward(&self, xs: &Tensor) -> Tensor {
        let kind = xs.kind();
        xs.to_kind(Kind::Float)
            .layer_norm([self.width], Some(&self.weight), Some(&self.bias), 1e-5, false)
            .to_kind(kind)
    }
}

/// `nn.Linear` (`weight [out, in]`, `bias [out]`, applied as `x @ W.T + b`) as `tch::nn::Linear`,
/// created zero-filled: every value comes from the checkpoint (strict loading checks the keys).
fn linear(p: nn::Path, in_dim: i64, out_dim: i64) -> nn::Linear {
    let zeros = nn::LinearConfig { ws_init: nn::Init::Const(0.0), bs_init: Some(nn::Init::Const(0.0)), bias: true };
    nn::linear(p, in_dim, out_dim, zeros)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// `nn.GELU()` with the erf form: every LAION/OpenCLIP-trained config.
    Gelu,
    /// `QuickGELU`, x·σ(1.702·x): configs with `"quick_gelu": true` (OpenAI weights).
    QuickGelu,
}

impl Activation {
    fn apply(self, xs: &Tensor) -> Tensor {
        match self {
            Activation::Gelu => xs.gelu("none"),
            Activation::QuickGelu => xs * (xs * 1.702).sigmoid(),
        }
    }
}

/// One transformer block: `x += attn(ln_1(x)); x += mlp(ln_2(x))`.
#[derive(Debug)]
pub struct ResidualAttentionBlock {
    ln_1: LayerNorm,
    /// Packed `[W_q; W_k; W_v]`, `[3C, C]`, as `nn.MultiheadAttention` stores it.
    in_proj_weight: Tensor,
    in_proj_bias: Tensor,
    out_proj: nn::Linear,
    ln_2: LayerNorm,
    c_fc: nn::Linear,
    c_proj: nn::Linear,
    heads: i64,
    activation: Activation,
}

/// What one block produces on the dual path (reference §2.2, loop body).
pub struct DualBlockOutput {
    /// Original-path residual stream after attention, before the MLP: where PromptAD's memory
    /// features are tapped (the effect of the in-place aliasing described in reference §2.1).
    pub mid: Tensor,
    /// Original-path block output, the input of the next block: `[B, L, C]`, or `[B, 1, C]` (the
    /// CLS row) when asked for [`DualOutput::ClsOnly`].
    pub out: Tensor,
    /// V-V attention output `proj(softmax(v vᵀ·s) v)`, to be added to the V-V residual stream.
    pub vv_update: Tensor,
}

/// The rows of the original path's output a dual block computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DualOutput {
    /// Every token: the input of a next block.
    AllTokens,
    /// Only the CLS row: after the last block nothing but the CLS token of the original path is
    /// read (the patch tokens come from the V-V path), so its MLP runs on one row instead of
    /// `grid² + 1` (a ninth of the demo backbone's MLP work; the MLP is row-wise, so only the
    /// GEMM's fp32 rounding can differ).
    ClsOnly,
}

impl ResidualAttentionBlock {
    pub fn new(p: nn::Path, width: i64, heads: i64, mlp_width: i64, activation: Activation) -> Self {
        let attn = &p / "attn";
        let mlp = &p / "mlp";
        Self {
            ln_1: LayerNorm::new(&p / "ln_1", width),
            in_proj_weight: attn.var("in_proj_weight", &[3 * width, width], nn::Init::Const(0.0)),
            in_proj_bias: attn.var("in_proj_bias", &[3 * width], nn::Init::Const(0.0)),
            out_proj: linear(&attn / "out_proj", width, width),
            ln_2: LayerNorm::new(&p / "ln_2", width),
            c_fc: linear(&mlp / "c_fc", width, mlp_width),
            c_proj: linear(&mlp / "c_proj", mlp_width, width),
            heads,
            activation,
        }
    }

    /// q, k, v of `ln_1(x)`, each `[B, H, L, D]`; heads own contiguous column blocks.
    fn qkv(&self, xs: &Tensor) -> (Tensor, Tensor, Tensor) {
        let (b, l, c) = xs.size3().expect("block input is [B, L, C]");
        let qkv = self
            .ln_1
            .forward(xs)
            .linear(&self.in_proj_weight, Some(&self.in_proj_bias))
            .view([b, l, 3, self.heads, c / self.heads])
            .permute([2, 0, 3, 1, 4]);
        (qkv.get(0), qkv.get(1), qkv.get(2))
    }

    /// `out_proj(softmax(a bᵀ / √d + mask) v)` with heads merged back to `[B, L, C]`.
    fn attend(&self, a: &Tensor, b: &Tensor, v: &Tensor, mask: Option<&Tensor>) -> Tensor {
        let (batch, heads, len, dim) = a.size4().expect("heads are [B, H, L, D]");
        let attended = Tensor::scaled_dot_product_attention(a, b, v, mask, 0.0, false, None, false);
        self.out_proj.forward(&attended.transpose(1, 2).reshape([batch, len, heads * dim]))
    }

    fn mlp(&self, xs: &Tensor) -> Tensor {
        self.c_proj.forward(&self.activation.apply(&self.c_fc.forward(&self.ln_2.forward(xs))))
    }

    /// The standard block. `mask` is additive (`-inf` above the diagonal for the text tower).
    pub fn forward(&self, xs: &Tensor, mask: Option<&Tensor>) -> Tensor {
        let (q, k, v) = self.qkv(xs);
        let xs = xs + self.attend(&q, &k, &v, mask);
        &xs + self.mlp(&xs)
    }

    /// The block as PromptAD's surgery rewrites it: both attentions read q/k/v of the
    /// *original* path's `ln_1(x)`, share `out_proj`, and the V-V path skips the MLP.
    pub fn forward_dual(&self, xs: &Tensor, rows: DualOutput) -> DualBlockOutput {
        let (q, k, v) = self.qkv(xs);
        let mid = xs + self.attend(&q, &k, &v, None);
        let vv_update = self.attend(&v, &v, &v, None);
        let out = match rows {
            DualOutput::AllTokens => &mid + self.mlp(&mid),
            DualOutput::ClsOnly => {
                let cls = mid.narrow(1, 0, 1);
                &cls + self.mlp(&cls)
            }
        };
        DualBlockOutput { mid, out, vv_update }
    }
}
