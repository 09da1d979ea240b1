//! The model artifact of one training run (DESIGN §4): everything needed to score, nothing that
//! needs the training data again.
//!
//! ```text
//! <dir>/tensors.safetensors   memory.bank0, memory.bank1 ([k·P, width] each), image.prototypes and
//!                             pixel.prototypes ([2, E], [normal, anomaly]), and the learned context
//!                             image|pixel.normal_ctx ([N, E_N, width]), image|pixel.anomaly_ctx
//! <dir>/manifest.json         written last: backbone (config, weights checksum or random seed),
//!                             category, shots and their ids, seed, configs, losses, versions
//! ```
//! The directory appears atomically: it is written under a temporary name beside its final place
//! and renamed; an existing artifact is replaced only with `overwrite`.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

use crate::clip::{Clip, ModelConfig, Precision};
use crate::detect::DetectConfig;
use crate::prompt::categories::Category;
use crate::prompt::learner::PromptConfig;
use crate::prompt::train::{TrainConfig, TrainReport};

pub const FORMAT_VERSION: u32 = 1;
const TENSORS: &str = "tensors.safetensors";
const MANIFEST: &str = "manifest.json";

/// Where the backbone weights came from; scoring must use the same ones.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Weights {
    /// An OpenCLIP safetensors checkpoint, identified by its SHA-256.
    Checkpoint { path: PathBuf, sha256: String },
    /// Random initialisation (`Clip::random`), reproducible from the seed.
    RandomInit { seed: u64 },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Backbone {
    /// Built-in name or config path as given.
    pub config_name: String,
    pub config: ModelConfig,
    pub weights: Weights,
    /// The raw stored logit scale (PromptAD uses it without `exp`).
    pub logit_scale: f64,
}

impl Backbone {
    /// Loads the backbone this describes, checking a checkpoint's checksum. `weights_override`
    /// points at the same file in another place (a different mount, a local copy).
    pub fn load(&self, weights_override: Option<&Path>, device: Device, precision: Precision) -> Result<Clip> {
        match &self.weights {
            Weights::RandomInit { seed } => Ok(Clip::random(self.config.clone(), *seed, device)),
            Weights::Checkpoint { path, sha256 } => {
                let path = weights_override.unwrap_or(path);
                let actual = sha256_file(path)?;
                if &actual != sha256 {
                    bail!(
                        "backbone weights {} have SHA-256 {actual}, but the model was trained on weights with {sha256}; \
                         pass the checkpoint it was trained with (--weights)",
                        path.display()
                    );
                }
                Ok(Clip::load(self.config.clone(), path, device, precision)?)
            }
        }
    }
}

/// Per-head training record.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HeadRecord {
    pub prompts: PromptConfig,
    pub prompt_strings: usize,
    pub report: TrainReport,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    pub format_version: u32,
    pub promptad_version: String,
    pub libtorch: String,
    pub created_unix: u64,
    pub backbone: Backbone,
    pub category: Category,
    pub dataset_root: String,
    pub k: usize,
    pub seed: u64,
    /// Ids of the shot images (`<category>/train/good/<stem>`), in memory-bank order.
    pub shots: Vec<String>,
    pub image_head: HeadRecord,
    pub pixel_head: HeadRecord,
    pub train: TrainConfig,
    pub detect: DetectConfig,
    /// A content id: the first 16 hex digits of the SHA-256 of `tensors.safetensors`.
    pub version: String,
}

/// A loaded artifact: manifest and tensors (on the CPU).
pub struct Artifact {
    pub manifest: Manifest,
    pub tensors: HashMap<String, Tensor>,
}

impl Artifact {
    pub fn memory_banks(&self) -> Vec<Tensor> {
        (0..self.manifest.detect.taps.len()).map(|i| self.tensors[&format!("memory.bank{i}")].shallow_clone()).collect()
    }

    pub fn read(dir: &Path) -> Result<Self> {
        let manifest_path = dir.join(MANIFEST);
        if !manifest_path.is_file() {
            bail!("{} is not a complete model artifact (no {MANIFEST}); was training interrupted? Re-run `promptad train`", dir.display());
        }
        let manifest: Manifest = serde_json::from_str(&std::fs::read_to_string(&manifest_path)?)
            .with_context(|| format!("cannot parse {}", manifest_path.display()))?;
        if manifest.format_version != FORMAT_VERSION {
            bail!("{} has artifact format {}, this promptad reads {FORMAT_VERSION}", manifest_path.display(), manifest.format_version);
        }
        let tensor_path = dir.join(TENSORS);
        let version = content_version(&tensor_path)?;
        if version != manifest.version {
            bail!("{} does not match its manifest (content {version}, manifest {}); the artifact is damaged", tensor_path.display(), manifest.version);
        }
        let tensors = Tensor::read_safetensors(&tensor_path)
            .with_context(|| format!("cannot read {}", tensor_path.display()))?
            .into_iter()
            .collect::<HashMap<_, _>>();
        for i in 0..manifest.detect.taps.len() {
            let key = format!("memory.bank{i}");
            if !tensors.contains_key(&key) {
                bail!("{} lacks {key}", tensor_path.display());
            }
        }
        for key in ["image.prototypes", "pixel.prototypes"] {
            if !tensors.contains_key(key) {
                bail!("{} lacks {key}", tensor_path.display());
            }
        }
        Ok(Self { manifest, tensors })
    }

    /// Writes `tensors` and `manifest` (its `version` filled in here) to `dir` atomically.
    pub fn write(dir: &Path, mut manifest: Manifest, tensors: &[(String, Tensor)], overwrite: bool) -> Result<Manifest> {
        if dir.exists() && !overwrite {
            bail!("{} already exists; pass --overwrite to replace it", dir.display());
        }
        let parent = dir.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        std::fs::create_dir_all(parent).with_context(|| format!("cannot create {}", parent.display()))?;
        let staging = tempfile::Builder::new().prefix(".partial-").tempdir_in(parent)?;
        let cpu: Vec<(String, Tensor)> = tensors.iter().map(|(k, t)| (k.clone(), t.to_device(Device::Cpu).to_kind(Kind::Float).contiguous())).collect();
        Tensor::write_safetensors(&cpu, staging.path().join(TENSORS))?;
        manifest.version = content_version(&staging.path().join(TENSORS))?;
        std::fs::write(staging.path().join(MANIFEST), serde_json::to_string_pretty(&manifest)?)?;
        let staged = staging.keep();
        if dir.exists() {
            std::fs::remove_dir_all(dir).with_context(|| format!("cannot replace {}", dir.display()))?;
        }
        std::fs::rename(&staged, dir).with_context(|| format!("cannot move the artifact into {}", dir.display()))?;
        Ok(manifest)
    }
}

pub fn sha256_file(path: &Path) -> Result<String> {
    use sha2::Digest;
    let mut file = std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut hasher = sha2::Sha256::new();
    let mut buffer = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buffer)?;
        if n == 0 {
            break;
        }
        hasher.update(&buffer[..n]);
    }
    Ok(format!("{:x}", hasher.finalize()))
}

fn content_version(path: &Path) -> Result<String> {
    Ok(sha256_file(path)?[..16].to_string())
}

/// The conventional artifact location (DESIGN §4): `<root>/<dataset>/<category>/k<k>/seed<seed>`.
///
/// ```
/// let p = promptad::artifact::default_dir(std::path::Path::new("models"), "mvtec", "bottle", 4, 111);
/// assert_eq!(p, std::path::Path::new("models/mvtec/bottle/k4/seed111"));
/// ```
pub fn default_dir(root: &Path, dataset: &str, category: &str, k: usize, seed: u64) -> PathBuf {
    root.join(dataset).join(category).join(format!("k{k}")).join(format!("seed{seed}"))
}
