//! OpenCLIP model configuration: the JSON of open_clip's `model_configs/*.json`, field by field.
//!
//! Mirrors `CLIPVisionCfg` / `CLIPTextCfg` in open_clip 3.3.0 `src/open_clip/model.py`; a field left
//! out takes the dataclass default. Options this port does not implement are rejected with the field
//! named, never ignored: a config that parses builds exactly the network open_clip would build.

use serde::{Deserialize, Serialize};
use std::path::Path;

use super::ClipError;

/// `ViT-B-16-plus-240.json` from the open-clip-torch 3.3.0 wheel, byte for byte.
const VIT_B_16_PLUS_240: &str = include_str!("../../assets/model_configs/ViT-B-16-plus-240.json");
/// `ViT-B-16.json` from the open-clip-torch 3.3.0 wheel, byte for byte.
const VIT_B_16: &str = include_str!("../../assets/model_configs/ViT-B-16.json");

/// A small ViT of the same family (15×15 grid at 240 px, 9 blocks so that PromptAD's taps 3 and 8
/// exist) for `promptad demo` on random weights, where a full-size random model costs time and
/// brings nothing. Not an open_clip config.
const DEMO_VIT_240: &str = include_str!("../../assets/model_configs/demo-vit-240.json");

/// The names of the configs compiled into the binary, in the order `--help` lists them.
pub const BUILTIN_CONFIGS: &[&str] = &["ViT-B-16-plus-240", "ViT-B-16", "demo-vit-240"];

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    pub embed_dim: i64,
    pub vision_cfg: VisionConfig,
    pub text_cfg: TextConfig,
    /// `QuickGELU` (x·σ(1.702x)) instead of exact GELU; set by the OpenAI-weight configs only.
    #[serde(default)]
    pub quick_gelu: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VisionConfig {
    pub image_size: i64,
    pub layers: i64,
    pub width: i64,
    #[serde(default = "default_head_width")]
    pub head_width: i64,
    #[serde(default = "default_mlp_ratio")]
    pub mlp_ratio: f64,
    pub patch_size: i64,
    #[serde(default)]
    pub ls_init_value: Option<f64>,
    #[serde(default)]
    pub patch_dropout: f64,
    #[serde(default)]
    pub no_ln_pre: bool,
    #[serde(default = "default_vision_pool")]
    pub pool_type: String,
    #[serde(default)]
    pub final_ln_after_pool: bool,
    #[serde(default)]
    pub attentional_pool: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TextConfig {
    pub context_length: i64,
    pub vocab_size: i64,
    pub width: i64,
    pub heads: i64,
    pub layers: i64,
    #[serde(default = "default_mlp_ratio")]
    pub mlp_ratio: f64,
    #[serde(default)]
    pub ls_init_value: Option<f64>,
    #[serde(default = "default_text_pool")]
    pub pool_type: String,
    #[serde(default)]
    pub proj_bias: bool,
    #[serde(default)]
    pub no_causal_mask: bool,
    #[serde(default)]
    pub embed_cls: bool,
    #[serde(default)]
    pub pad_id: i64,
}

fn default_head_width() -> i64 {
    64
}
fn default_mlp_ratio() -> f64 {
    4.0
}
fn default_vision_pool() -> String {
    "tok".into()
}
fn default_text_pool() -> String {
    "argmax".into()
}

/// The HF-hub wrapper `open_clip_config.json`: `{"model_cfg": {...}, "preprocess_cfg": {...}}`.
#[derive(Deserialize)]
struct HubConfig {
    model_cfg: ModelConfig,
}

impl ModelConfig {
    /// The open_clip `ViT-B-16-plus-240` config, the backbone PromptAD uses.
    pub fn vit_b_16_plus_240() -> Self {
        Self::from_json(VIT_B_16_PLUS_240, "ViT-B-16-plus-240").expect("embedded config is valid")
    }

    /// The open_clip `ViT-B-16` config.
    pub fn vit_b_16() -> Self {
        Self::from_json(VIT_B_16, "ViT-B-16").expect("embedded config is valid")
    }

    /// A built-in config by its open_clip name, or a JSON file (a `model_configs/*.json` or an
    /// HF-hub `open_clip_config.json`) by path.
    pub fn resolve(name_or_path: &str) -> Result<Self, ClipError> {
        match name_or_path {
            "ViT-B-16-plus-240" => Ok(Self::vit_b_16_plus_240()),
            "ViT-B-16" => Ok(Self::vit_b_16()),
            "demo-vit-240" => Self::from_json(DEMO_VIT_240, "demo-vit-240"),
            path if Path::new(path).is_file() => Self::from_file(Path::new(path)),
            other => Err(ClipError::Config {
                source_name: other.to_string(),
                message: format!(
                    "not a built-in config ({}) and not a file; pass the path of an open_clip model config JSON",
                    BUILTIN_CONFIGS.join(", ")
                ),
            }),
        }
    }

    pub fn from_file(path: &Path) -> Result<Self, ClipError> {
        let text = std::fs::read_to_string(path).map_err(|e| ClipError::Config {
            source_name: path.display().to_string(),
            message: format!("cannot read: {e}"),
        })?;
        Self::from_json(&text, &path.display().to_string())
    }

    /// Parses either layout and validates it; `source_name` only labels errors.
    pub fn from_json(text: &str, source_name: &str) -> Result<Self, ClipError> {
        let config_error = |message: String| ClipError::Config { source_name: source_name.to_string(), message };
        let value: serde_json::Value = serde_json::from_str(text).map_err(|e| config_error(e.to_string()))?;
        let config = if value.get("model_cfg").is_some() {
            serde_json::from_value::<HubConfig>(value).map(|h| h.model_cfg)
        } else {
            serde_json::from_value::<ModelConfig>(value)
        }
        .map_err(|e| {
            config_error(format!("{e} (only the ViT image tower and the standard text tower are supported)"))
        })?;
        config.validate().map_err(config_error)?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), String> {
        let v = &self.vision_cfg;
        let t = &self.text_cfg;
        let unsupported = |field: &str, value: &dyn std::fmt::Debug| {
            Err(format!("{field} = {value:?} is not supported by this port (open_clip default only)"))
        };
        if v.ls_init_value.is_some() {
            return unsupported("vision_cfg.ls_init_value", &v.ls_init_value);
        }
        if v.pool_type != "tok" {
            return unsupported("vision_cfg.pool_type", &v.pool_type);
        }
        if v.final_ln_after_pool {
            return unsupported("vision_cfg.final_ln_after_pool", &true);
        }
        if v.attentional_pool {
            return unsupported("vision_cfg.attentional_pool", &true);
        }
        if t.ls_init_value.is_some() {
            return unsupported("text_cfg.ls_init_value", &t.ls_init_value);
        }
        if t.pool_type != "argmax" {
            return unsupported("text_cfg.pool_type", &t.pool_type);
        }
        if t.proj_bias {
            return unsupported("text_cfg.proj_bias", &true);
        }
        if t.no_causal_mask {
            return unsupported("text_cfg.no_causal_mask", &true);
        }
        if t.embed_cls {
            return unsupported("text_cfg.embed_cls", &true);
        }
        if v.width % v.head_width != 0 {
            return Err(format!("vision_cfg.width {} is not a multiple of head_width {}", v.width, v.head_width));
        }
        if t.width % t.heads != 0 {
            return Err(format!("text_cfg.width {} is not a multiple of heads {}", t.width, t.heads));
        }
        if v.image_size % v.patch_size != 0 {
            return Err(format!(
                "vision_cfg.image_size {} is not a multiple of patch_size {}",
                v.image_size, v.patch_size
            ));
        }
        for (field, n) in
            [("vision_cfg.layers", v.layers), ("text_cfg.layers", t.layers), ("embed_dim", self.embed_dim)]
        {
            if n <= 0 {
                return Err(format!("{field} must be positive, got {n}"));
            }
        }
        Ok(())
    }

    pub fn vision_heads(&self) -> i64 {
        self.vision_cfg.width / self.vision_cfg.head_width
    }

    /// Patches per side: 240 / 16 = 15 for ViT-B-16-plus-240.
    pub fn grid_size(&self) -> i64 {
        self.vision_cfg.image_size / self.vision_cfg.patch_size
    }

    pub fn vision_mlp_width(&self) -> i64 {
        (self.vision_cfg.width as f64 * self.vision_cfg.mlp_ratio) as i64
    }

    pub fn text_mlp_width(&self) -> i64 {
        (self.text_cfg.width as f64 * self.text_cfg.mlp_ratio) as i64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_b16_plus_has_the_reference_geometry() {
        // Reference §1.2: 14 vision heads, 15×15 grid, MLP 3584, text MLP 2560.
        let c = ModelConfig::vit_b_16_plus_240();
        assert_eq!((c.embed_dim, c.vision_heads(), c.grid_size()), (640, 14, 15));
        assert_eq!((c.vision_mlp_width(), c.text_mlp_width()), (3584, 2560));
        assert!(!c.quick_gelu);
    }

    #[test]
    fn unknown_and_unsupported_fields_are_rejected_by_name() {
        let base = ModelConfig::vit_b_16_plus_240();
        let mut json: serde_json::Value = serde_json::from_str(VIT_B_16_PLUS_240).unwrap();
        json["vision_cfg"]["timm_model_name"] = "vit".into();
        let err = ModelConfig::from_json(&json.to_string(), "x.json").unwrap_err().to_string();
        assert!(err.contains("timm_model_name") && err.contains("x.json"), "{err}");

        let mut json: serde_json::Value = serde_json::from_str(VIT_B_16_PLUS_240).unwrap();
        json["text_cfg"]["no_causal_mask"] = true.into();
        let err = ModelConfig::from_json(&json.to_string(), "y.json").unwrap_err().to_string();
        assert!(err.contains("text_cfg.no_causal_mask"), "{err}");

        let hub =
            serde_json::json!({"model_cfg": serde_json::from_str::<serde_json::Value>(VIT_B_16_PLUS_240).unwrap()});
        assert_eq!(ModelConfig::from_json(&hub.to_string(), "hub").unwrap(), base);
    }
}
