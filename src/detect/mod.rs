//! Detection: the visual memory, the prompt-guided probabilities, their fusion and the anomaly
//! maps (reference `promptad-official-behaviour.md` §7). Batched over images; everything runs on
//! the backbone's device.

pub mod fusion;
pub mod maps;
pub mod memory;
pub mod stored;

use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use crate::clip::vision::ImageFeatures;
use crate::clip::{Clip, ClipError};
use fusion::{anomaly_probability, harmonic_fusion};
use maps::{smooth_map, upsample_bilinear};
use memory::VisualMemory;

#[derive(Debug, thiserror::Error)]
pub enum DetectError {
    #[error(
        "the detection config taps vision blocks {requested:?}, but the model's visual memory was built from blocks \
         {memory:?} ({banks} bank(s)); score with the model's own taps (its manifest's detect.taps) or retrain with \
         --taps {}",
        requested.iter().map(ToString::to_string).collect::<Vec<_>>().join(",")
    )]
    TapMismatch { memory: Vec<usize>, banks: usize, requested: Vec<usize> },
    #[error(transparent)]
    Clip(#[from] ClipError),
}

/// Which evidence is used: PromptAD fuses both; the other two are the Table 3 ablations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Guidance {
    #[default]
    Fused,
    VisionOnly,
    PromptOnly,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DetectConfig {
    /// Side of the anomaly maps (the evaluation size of the reference protocol: 400).
    pub map_size: i64,
    /// σ of the Gaussian on the pixel maps (scipy `gaussian_filter`, truncate 4).
    pub sigma: f64,
    pub guidance: Guidance,
    /// Vision blocks whose original-path tokens form the memory (PromptAD: 3 and 8).
    pub taps: Vec<usize>,
}

impl Default for DetectConfig {
    fn default() -> Self {
        Self { map_size: 400, sigma: 4.0, guidance: Guidance::Fused, taps: vec![3, 8] }
    }
}

/// Scores of a batch of images.
pub struct Detection {
    /// Image anomaly score, `[B]`.
    pub image_score: Tensor,
    /// Pixel anomaly map, `[B, map_size, map_size]`, scores in [0, 1]: [`smooth_map`] of `grid_map`.
    pub map: Tensor,
    /// The patch-level evidence the map is made of, `[B, g, g]` (fused, visual or textual by
    /// the guidance): what compact maps store.
    pub grid_map: Tensor,
    /// The prompt-guided image probability, `[B]`.
    pub text_score: Tensor,
    /// The maximum of the up-sampled visual distance map, `[B]`.
    pub visual_max: Tensor,
}

/// A trained PromptAD model ready to score: memory plus the two prototype pairs.
pub struct Detector<'a> {
    pub clip: &'a Clip,
    pub memory: VisualMemory,
    /// `[2, E]` from the image-level prompts (`train_cls.py`).
    pub image_prototypes: Tensor,
    /// `[2, E]` from the pixel-level prompts (`train_seg.py`).
    pub pixel_prototypes: Tensor,
    pub config: DetectConfig,
}

impl<'a> Detector<'a> {
    /// Scores preprocessed images `[B, 3, S, S]`. Taps other than the memory's are an error.
    pub fn detect(&self, images: &Tensor) -> Result<Detection, DetectError> {
        let features = self.features(images)?;
        Ok(tch::no_grad(|| self.detect_features(&features.global, &features.patch_tokens, &features.taps)))
    }

    /// The backbone's part: the normalised V-V features of preprocessed images `[B, 3, S, S]` at
    /// the configured taps.
    pub fn features(&self, images: &Tensor) -> Result<ImageFeatures, DetectError> {
        self.memory.check_taps(&self.config.taps)?;
        tch::no_grad(|| {
            Ok(self.clip.visual.forward_vv(&images.to_device(self.clip.device), &self.config.taps)?.normalized())
        })
    }

    /// Scores from normalised features: `global [B, E]`, `patch_tokens [B, P, E]`, taps `[B, P, W]`.
    pub fn detect_features(&self, global: &Tensor, patch_tokens: &Tensor, taps: &[Tensor]) -> Detection {
        let t = self.clip.logit_scale_raw();
        let (b, p) = (patch_tokens.size()[0], patch_tokens.size()[1]);
        let grid = (p as f64).sqrt() as i64;
        let to_grid = |x: Tensor| x.view([b, grid, grid]);
        let visual = to_grid(self.memory.distance(taps));
        let text_score = anomaly_probability(&global.to_kind(Kind::Float), &self.image_prototypes, t);
        let visual_map = upsample_bilinear(&visual, self.config.map_size);
        let visual_max = visual_map.amax([1, 2], false);
        let patch_probability =
            || to_grid(anomaly_probability(&patch_tokens.to_kind(Kind::Float), &self.pixel_prototypes, t));
        let (image_score, grid_map) = match self.config.guidance {
            // §7.3: image score from the visual map's max and the global text score; §7.4: the
            // pixel map fuses at grid resolution, then up-samples and smooths.
            Guidance::Fused => {
                (harmonic_fusion(&visual_max, &text_score), harmonic_fusion(&patch_probability(), &visual))
            }
            Guidance::VisionOnly => (visual_max.shallow_clone(), visual),
            Guidance::PromptOnly => (text_score.shallow_clone(), patch_probability()),
        };
        let map = smooth_map(&grid_map, self.config.map_size, self.config.sigma);
        Detection { image_score, map, grid_map, text_score, visual_max }
    }
}
