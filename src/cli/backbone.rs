//! The backbone flags every model command shares.

use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::Args;

use crate::artifact::{checkpoint_backbone, random_backbone, Backbone};
use crate::clip::{Clip, Precision};
use crate::runtime::checked_device;

/// Where the model runs: the flags every command that runs a model shares.
#[derive(Debug, Clone, Args)]
pub struct DeviceArgs {
    /// cpu, cuda, cuda:N, or auto (the first GPU if any).
    #[arg(long, default_value = "auto", env = "PROMPTAD_DEVICE")]
    pub device: String,
    /// Weight and activation precision; fp32 is the reference.
    #[arg(long, default_value = "fp32", env = "PROMPTAD_PRECISION")]
    pub precision: Precision,
}

#[derive(Debug, Clone, Args)]
pub struct BackboneArgs {
    /// OpenCLIP weights (safetensors, e.g. open_clip_model.safetensors; convert .pt/.bin
    /// releases with scripts/convert_checkpoint.py).
    #[arg(long, env = "PROMPTAD_WEIGHTS", value_name = "FILE")]
    pub weights: Option<PathBuf>,
    /// Built-in model name (ViT-B-16-plus-240, ViT-B-16, demo-vit-240) or path of an open_clip
    /// model config JSON.
    #[arg(long, default_value = "ViT-B-16-plus-240", env = "PROMPTAD_MODEL_CONFIG", value_name = "NAME|FILE")]
    pub model_config: String,
    /// No checkpoint: a randomly initialised demo-vit-240 with this seed (for trying the
    /// pipeline where no weights exist; detection is then far from PromptAD's).
    #[arg(long, value_name = "SEED", conflicts_with = "weights")]
    pub random_init: Option<u64>,
    #[command(flatten)]
    pub runtime: DeviceArgs,
}

impl BackboneArgs {
    /// Checks libtorch and the device, then loads the backbone the flags name. `checksum` records
    /// the SHA-256 of a checkpoint (what an artifact must name; a few seconds for 833 MB).
    pub fn load(&self, checksum: bool) -> Result<(Clip, Backbone)> {
        let device = checked_device(&self.runtime.device)?;
        match (&self.weights, self.random_init) {
            (Some(weights), _) => {
                Ok(checkpoint_backbone(&self.model_config, weights, device, self.runtime.precision, checksum)?)
            }
            (None, Some(seed)) => {
                let (clip, backbone) = random_backbone(seed, device)?;
                Ok((clip.at_precision(self.runtime.precision), backbone))
            }
            (None, None) => {
                bail!("no backbone: pass --weights FILE (an OpenCLIP safetensors checkpoint) or --random-init SEED")
            }
        }
    }
}
