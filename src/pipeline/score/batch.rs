//! How many images go through the model at once: a number, or `auto`, sized by the memory the
//! device has free ([`crate::runtime::memory`]) and what one image of a batch holds there.

use std::fmt;
use std::str::FromStr;

use tch::Device;

use crate::artifact::Artifact;
use crate::clip::vision::forward_vv_peak_elements;
use crate::clip::{Clip, Precision};
use crate::detect::memory::MEMORY_CHUNK;
use crate::runtime::memory::device_memory;
use crate::runtime::RuntimeError;

/// `--batch-size`: images per forward pass, or `auto`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchSize {
    Images(usize),
    /// The largest power of two whose estimated memory ([`bytes_per_image`]) fits in
    /// [`AUTO_SHARE`] of the device's free memory, at most [`auto_cap`].
    Auto,
}

/// The share of the free memory an `auto` batch may take: the estimate leaves out libtorch's
/// workspaces and the encoded images in flight, and other processes may need memory too.
pub const AUTO_SHARE: f64 = 0.5;

/// The largest `auto` batch on `device`. On a CPU a larger batch than this mostly adds memory
/// (docs/scale.md, 2026-12-07: the demo backbone's compact pass made 19.9 images/s at 16, 20.1
/// at 32 and 20.8 at 64, medians within the VM's noise, at 0.9, 1.2 and 1.6 GiB); a GPU needs
/// large batches to be busy, up to the 256 a unit of the default size holds.
pub fn auto_cap(device: Device) -> usize {
    match device {
        Device::Cpu => 32,
        _ => 256,
    }
}

impl Default for BatchSize {
    fn default() -> Self {
        BatchSize::Images(16)
    }
}

impl FromStr for BatchSize {
    type Err = String;

    /// ```
    /// use promptad::pipeline::score::BatchSize;
    /// assert_eq!("auto".parse::<BatchSize>(), Ok(BatchSize::Auto));
    /// assert_eq!("64".parse::<BatchSize>(), Ok(BatchSize::Images(64)));
    /// assert!("0".parse::<BatchSize>().unwrap_err().contains("at least 1"));
    /// ```
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text.trim() {
            "auto" => Ok(BatchSize::Auto),
            number => match number.parse::<usize>() {
                Ok(0) => Err("a batch holds at least 1 image".into()),
                Ok(n) => Ok(BatchSize::Images(n)),
                Err(_) => Err(format!("{text:?} is neither a number of images nor auto")),
            },
        }
    }
}

impl fmt::Display for BatchSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BatchSize::Images(n) => write!(f, "{n}"),
            BatchSize::Auto => f.write_str("auto"),
        }
    }
}

impl serde::Serialize for BatchSize {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            BatchSize::Images(n) => serializer.serialize_u64(*n as u64),
            BatchSize::Auto => serializer.serialize_str("auto"),
        }
    }
}

impl<'de> serde::Deserialize<'de> for BatchSize {
    /// A number of images, or the string `"auto"`.
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(serde::Deserialize)]
        #[serde(untagged)]
        enum Written {
            Images(u64),
            Text(String),
        }
        match Written::deserialize(deserializer)? {
            Written::Images(n) => n.to_string().parse(),
            Written::Text(text) => text.parse(),
        }
        .map_err(serde::de::Error::custom)
    }
}

/// What one image of a batch holds on the scoring device, in bytes: the backbone's activations
/// at their peak ([`forward_vv_peak_elements`], at the backbone's precision), the visual memory
/// search's similarities (its patches against a chunk of at most [`MEMORY_CHUNK`] bank rows, fp32), the
/// map's fp64 operator, its fp32 map and quantised copy (four `map_size²` fp64 buffers), and
/// the model input, of which the reader, its queue and the model hold four batches.
pub fn bytes_per_image(clip: &Clip, bank_rows: usize, map_size: u32) -> u64 {
    let element = match clip.precision {
        Precision::Fp32 => 4.0,
        Precision::Fp16 | Precision::Bf16 => 2.0,
    };
    let patches = (clip.config.grid_size() * clip.config.grid_size()) as f64;
    let input = 3.0 * (clip.config.vision_cfg.image_size as f64).powi(2) * 4.0;
    let activations = forward_vv_peak_elements(&clip.config) * element;
    let memory_search = patches * bank_rows.min(MEMORY_CHUNK as usize) as f64 * 4.0;
    let maps = 4.0 * f64::from(map_size).powi(2) * 8.0;
    (activations + memory_search + maps + 4.0 * input).ceil() as u64
}

/// The `auto` batch for `free` bytes at `per_image` bytes each: the largest power of two that
/// fits in [`AUTO_SHARE`] of them, between 1 and `cap`.
///
/// ```
/// use promptad::pipeline::score::batch::auto_batch;
/// // 1 GiB free, 16 MiB per image: half of it holds 32 images.
/// assert_eq!(auto_batch(1 << 30, 16 << 20, 256), 32);
/// assert_eq!(auto_batch(1 << 30, 15 << 20, 256), 32);
/// assert_eq!(auto_batch(1 << 40, 16 << 20, 256), 256);
/// assert_eq!(auto_batch(1 << 20, 16 << 20, 256), 1);
/// ```
pub fn auto_batch(free: u64, per_image: u64, cap: usize) -> usize {
    let fits = (free as f64 * AUTO_SHARE / per_image.max(1) as f64).floor() as usize;
    let power = match fits {
        0 => 1,
        n => 1 << n.ilog2(),
    };
    power.min(cap.max(1))
}

impl BatchSize {
    /// The number of images, sizing `auto` for `artifact` on `clip`'s device with maps of
    /// `map_size`².
    pub fn resolve(self, artifact: &Artifact, clip: &Clip, map_size: u32) -> Result<usize, RuntimeError> {
        match self {
            BatchSize::Images(n) => Ok(n.max(1)),
            BatchSize::Auto => {
                let bank_rows = artifact.memory_banks().iter().map(|b| b.size()[0] as usize).max().unwrap_or(0);
                let per_image = bytes_per_image(clip, bank_rows, map_size);
                let memory = device_memory(clip.device)?;
                let images = auto_batch(memory.free, per_image, auto_cap(clip.device));
                let mib = |bytes: u64| bytes / (1 << 20);
                tracing::info!(device = ?clip.device, images, free_mib = mib(memory.free), total_mib = mib(memory.total),
                    per_image_mib = per_image as f64 / (1 << 20) as f64, "batch size chosen by free memory");
                Ok(images)
            }
        }
    }
}
