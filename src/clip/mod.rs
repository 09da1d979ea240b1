//! OpenCLIP vision and text towers (ViT family), checkpoint loading, tokenizer and preprocessing.
//!
//! Mirrors `open_clip` 3.3.0 (`src/open_clip/model.py`, `transformer.py`) and adds the V-V
//! (CLIP Surgery) path that PromptAD uses (`../shared/reference/promptad-official-behaviour.md` §2).
//! Key names follow the OpenCLIP state dict, so a checkpoint loads without renaming.

pub mod checkpoint;
pub mod config;
pub mod embed;
pub mod jpeg;
pub mod png;
pub mod preprocess;
pub mod text;
pub mod tokenizer;
pub mod transformer;
pub mod vision;

use std::path::Path;
use std::str::FromStr;

use tch::{nn, Device, Kind, Tensor};

pub use checkpoint::{CheckpointError, LoadedCheckpoint};
pub use config::ModelConfig;
pub use text::TextTransformer;
pub use vision::{l2_normalize, ImageFeatures, VisionTransformer};

#[derive(Debug, thiserror::Error)]
pub enum ClipError {
    #[error("model config {source_name}: {message}")]
    Config { source_name: String, message: String },
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error("{what} has shape {got:?}, expected {expected}")]
    Shape { what: String, expected: String, got: Vec<i64> },
    #[error("{name}: {message}")]
    Option { name: String, message: String },
    #[error("image {source_name}: {message}")]
    Image { source_name: String, message: String },
}

/// The dtype of the matmul weights and activations. LayerNorm parameters, embeddings and the
/// logit scale stay fp32 and LayerNorm runs in fp32, as open_clip's `convert_weights_to_lp` +
/// `LayerNormFp32` do (reference `openclip-vit-b-16-plus-240.md` §3.5). fp32 is the reference.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    #[default]
    Fp32,
    Fp16,
    Bf16,
}

impl Precision {
    pub fn kind(self) -> Kind {
        match self {
            Precision::Fp32 => Kind::Float,
            Precision::Fp16 => Kind::Half,
            Precision::Bf16 => Kind::BFloat16,
        }
    }
}

impl FromStr for Precision {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "fp32" => Ok(Precision::Fp32),
            "fp16" => Ok(Precision::Fp16),
            "bf16" => Ok(Precision::Bf16),
            other => Err(format!("unknown precision {other:?}; choose fp32, fp16 or bf16")),
        }
    }
}

impl std::fmt::Display for Precision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Precision::Fp32 => "fp32",
            Precision::Fp16 => "fp16",
            Precision::Bf16 => "bf16",
        })
    }
}

/// Parameters that stay fp32 at every precision (open_clip `convert_weights_to_lp` leaves them).
fn stays_fp32(name: &str) -> bool {
    let leaf = name.rsplit('.').nth(1).unwrap_or("");
    leaf.starts_with("ln_")
        || name.ends_with("embedding")
        || name.ends_with("embedding.weight")
        || name == "logit_scale"
}

/// A CLIP model: the frozen backbone PromptAD learns prompts on.
pub struct Clip {
    pub config: ModelConfig,
    pub visual: VisionTransformer,
    pub text: TextTransformer,
    /// The stored `logit_scale` parameter, a 0-dim fp32 tensor. open_clip multiplies logits by
    /// its `exp()`; PromptAD uses the raw value (reference `promptad-official-behaviour.md` §9.4).
    pub logit_scale: Tensor,
    pub device: Device,
    pub precision: Precision,
    pub checkpoint: LoadedCheckpoint,
    // Owns the parameters the towers hold shallow clones of.
    _vs: nn::VarStore,
}

impl Clip {
    /// Builds the model for `config` on `device` and loads `weights` (OpenCLIP safetensors) strictly.
    pub fn load(config: ModelConfig, weights: &Path, device: Device, precision: Precision) -> Result<Self, ClipError> {
        let mut vs = nn::VarStore::new(device);
        let root = vs.root();
        let visual = VisionTransformer::new(&root / "visual", &config);
        let text = TextTransformer::new(root.clone(), &config);
        let logit_scale = root.var("logit_scale", &[], nn::Init::Const(0.0));
        let checkpoint = checkpoint::load_safetensors(&vs, weights)?;
        vs.freeze();
        let clip = Self { config, visual, text, logit_scale, device, precision: Precision::Fp32, checkpoint, _vs: vs };
        Ok(clip.at_precision(precision))
    }

    /// The model with its weights in `precision` (open_clip `convert_weights_to_lp`: LayerNorms,
    /// embeddings and `logit_scale` stay fp32). The towers hold shallow clones of the variables,
    /// so converting the variables converts them.
    pub fn at_precision(mut self, precision: Precision) -> Self {
        if precision != self.precision {
            tch::no_grad(|| {
                for (name, mut var) in self._vs.variables() {
                    if !stays_fp32(&name) {
                        var.set_data(&var.to_kind(precision.kind()));
                    }
                }
            });
            self.precision = precision;
        }
        self
    }

    /// A randomly initialised model, deterministic in `seed`: the backbone of `promptad demo` where
    /// no pretrained weights exist. LayerNorms start at identity, biases at 0, `logit_scale` at
    /// open_clip's `ln(1/0.07)`, every other tensor from N(0, 0.02²).
    pub fn random(config: ModelConfig, seed: u64, device: Device) -> Self {
        let mut vs = nn::VarStore::new(device);
        let root = vs.root();
        let visual = VisionTransformer::new(&root / "visual", &config);
        let text = TextTransformer::new(root.clone(), &config);
        let logit_scale = root.var("logit_scale", &[], nn::Init::Const(0.0));
        tch::manual_seed(seed as i64);
        let mut variables: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
        variables.sort_by(|a, b| a.0.cmp(&b.0));
        let mut parameters = 0;
        tch::no_grad(|| {
            for (name, var) in &variables {
                let mut var = var.shallow_clone();
                parameters += var.numel() as i64;
                let leaf = name.rsplit('.').next().unwrap_or("");
                let layer = name.rsplit('.').nth(1).unwrap_or("");
                if name == "logit_scale" {
                    let _ = var.fill_((1.0f64 / 0.07).ln());
                } else if layer.starts_with("ln_") {
                    let _ = var.fill_(if leaf == "weight" { 1.0 } else { 0.0 });
                } else if leaf == "bias" || leaf == "in_proj_bias" {
                    let _ = var.zero_();
                } else {
                    var.copy_(&(Tensor::randn(var.size(), (Kind::Float, Device::Cpu)) * 0.02));
                }
            }
        });
        vs.freeze();
        let checkpoint = LoadedCheckpoint {
            path: format!("random-init:{seed}").into(),
            tensors: variables.len(),
            parameters,
            stored_dtypes: vec!["F32".into()],
        };
        Self { config, visual, text, logit_scale, device, precision: Precision::Fp32, checkpoint, _vs: vs }
    }

    /// The raw stored logit scale as a number.
    pub fn logit_scale_raw(&self) -> f64 {
        f64::try_from(&self.logit_scale).expect("logit_scale is a scalar")
    }

    /// open_clip's `CLIP.forward` logits: `exp(logit_scale) · norm(image) @ norm(text)ᵀ`.
    pub fn logits_per_image(&self, image_features: &Tensor, text_features: &Tensor) -> Tensor {
        let i = l2_normalize(&image_features.to_kind(Kind::Float));
        let t = l2_normalize(&text_features.to_kind(Kind::Float));
        i.matmul(&t.tr()) * self.logit_scale.exp()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fp32_set_matches_open_clip_convert_weights_to_lp() {
        for kept in [
            "visual.ln_pre.weight",
            "ln_final.bias",
            "visual.transformer.resblocks.0.ln_1.weight",
            "token_embedding.weight",
            "positional_embedding",
            "visual.positional_embedding",
            "visual.class_embedding",
            "logit_scale",
        ] {
            assert!(stays_fp32(kept), "{kept}");
        }
        for cast in [
            "visual.proj",
            "text_projection",
            "visual.conv1.weight",
            "transformer.resblocks.3.attn.in_proj_weight",
            "visual.transformer.resblocks.0.mlp.c_fc.bias",
        ] {
            assert!(!stays_fp32(cast), "{cast}");
        }
    }

    #[test]
    fn a_random_model_takes_the_precision_asked_for() {
        let config = ModelConfig::resolve("demo-vit-240").unwrap();
        let images = Tensor::randn([2, 3, 240, 240], (Kind::Float, Device::Cpu));
        for precision in [Precision::Bf16, Precision::Fp16] {
            // One model, before and after: tests running in parallel share libtorch's generator,
            // so two `random` calls with one seed need not give the same weights here.
            let clip = Clip::random(config.clone(), 3, Device::Cpu);
            let reference = clip.visual.encode_image(&images).unwrap();
            let clip = clip.at_precision(precision);
            assert_eq!(clip.precision, precision);
            let kinds: std::collections::HashMap<String, Kind> =
                clip._vs.variables().into_iter().map(|(n, v)| (n, v.kind())).collect();
            assert_eq!(kinds["visual.conv1.weight"], precision.kind());
            assert_eq!(kinds["visual.ln_pre.weight"], Kind::Float);
            let got = clip.visual.encode_image(&images).unwrap().to_kind(Kind::Float);
            let gap = (&got - &reference).abs().max().double_value(&[]);
            // Lower precision, same model: close to fp32, but not equal to it.
            assert!(gap > 0.0 && gap < 0.1, "{precision:?}: max |Δ| {gap}");
        }
    }
}
