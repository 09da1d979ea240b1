//! Feature extraction for `promptad embed`: images and texts in, every backbone output PromptAD
//! uses written to one safetensors file.
//!
//! File layout (all tensors fp32, row-major, raw, i.e. not L2-normalised unless the header's
//! `normalized` says so):
//!
//! | key | shape | what |
//! |---|---|---|
//! | `image_global` | `[I, embed_dim]` | `g`, the CLIP image embedding |
//! | `image_patch_tokens` | `[I, grid², embed_dim]` | `T`, V-V patch tokens after `ln_post` and `proj` |
//! | `image_tap_<k>` | `[I, grid², width]` | original-path tokens inside block `k` (0-based), after attention, before the MLP; PromptAD's `M1`, `M2` are `k` = 3, 8 |
//! | `text_features` | `[T, embed_dim]` | `encode_text` of each text |
//! | `text_tokens` | `[T, context_length]` (int64) | the token ids that were encoded |
//!
//! The safetensors `__metadata__` holds `images` and `texts` (JSON lists, in row order),
//! `model_config`, `precision`, `normalized`, `taps`, `logit_scale` (the raw stored value) and
//! `preprocess` (`official`: OpenCV to 1024×1024 then Pillow bicubic, as train/score; `direct`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use safetensors::tensor::{Dtype, TensorView};
use tch::{Kind, Tensor};

use super::preprocess::{read_rgb, to_normalized_tensor};
use super::tokenizer::Tokenizer;
use super::{Clip, ClipError};

#[derive(Debug, thiserror::Error)]
pub enum EmbedError {
    #[error(transparent)]
    Clip(#[from] ClipError),
    #[error("the text tower failed: {0}")]
    Torch(#[from] tch::TchError),
    #[error("cannot encode the embeddings as safetensors: {0}")]
    Encode(#[from] safetensors::SafeTensorError),
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

type Result<T, E = EmbedError> = std::result::Result<T, E>;

#[derive(Debug, Clone)]
pub struct EmbedRequest {
    pub images: Vec<PathBuf>,
    pub texts: Vec<String>,
    pub taps: Vec<usize>,
    pub batch_size: usize,
    pub normalize: bool,
    /// How images reach the model size (default: the official 1024×1024 step, as train/score).
    pub preprocess: crate::data::prepare::Preprocess,
}

/// Features, each fp32 on the CPU, in request order.
pub struct Embeddings {
    pub image_global: Option<Tensor>,
    pub image_patch_tokens: Option<Tensor>,
    pub image_taps: Vec<(usize, Tensor)>,
    pub text_features: Option<Tensor>,
    pub text_tokens: Option<Tensor>,
}

/// Runs the towers over the request in batches; `on_batch` is told how many images are done.
pub fn embed(clip: &Clip, request: &EmbedRequest, mut on_batch: impl FnMut(usize)) -> Result<Embeddings> {
    let size = clip.visual.image_size() as u32;
    let mut globals = Vec::new();
    let mut patches = Vec::new();
    let mut taps: Vec<Vec<Tensor>> = request.taps.iter().map(|_| Vec::new()).collect();
    for chunk in request.images.chunks(request.batch_size.max(1)) {
        let images = chunk
            .iter()
            .map(|p| Ok(crate::data::prepare::prepare_rgb(&read_rgb(p)?, size, request.preprocess)))
            .collect::<Result<Vec<_>>>()?;
        let pixels = to_normalized_tensor(&images, size).to_device(clip.device);
        let features = tch::no_grad(|| clip.visual.forward_vv(&pixels, &request.taps))?;
        let features = if request.normalize { features.normalized() } else { features };
        let features = features.to_kind(Kind::Float);
        globals.push(features.global.to_device(tch::Device::Cpu));
        patches.push(features.patch_tokens.to_device(tch::Device::Cpu));
        for (slot, tap) in features.taps.into_iter().enumerate() {
            taps[slot].push(tap.to_device(tch::Device::Cpu));
        }
        on_batch(chunk.len());
    }
    let (text_features, text_tokens) = if request.texts.is_empty() {
        (None, None)
    } else {
        let context = clip.text.context_length();
        let ids: Vec<i64> = Tokenizer::global().tokenize_batch(&request.texts, context as usize).concat();
        let tokens = Tensor::from_slice(&ids).view([request.texts.len() as i64, context]);
        let features = tch::no_grad(|| clip.text.encode_text(&tokens.to_device(clip.device)))?;
        let features = if request.normalize { super::l2_normalize(&features) } else { features };
        (Some(features.to_kind(Kind::Float).to_device(tch::Device::Cpu)), Some(tokens))
    };
    let cat = |parts: Vec<Tensor>| (!parts.is_empty()).then(|| Tensor::cat(&parts, 0));
    Ok(Embeddings {
        image_global: cat(globals),
        image_patch_tokens: cat(patches),
        image_taps: request
            .taps
            .iter()
            .copied()
            .zip(taps)
            .filter_map(|(k, parts)| cat(parts).map(|t| (k, t)))
            .collect(),
        text_features,
        text_tokens,
    })
}

fn tensor_bytes(tensor: &Tensor) -> (Dtype, Vec<usize>, Vec<u8>) {
    let tensor = tensor.contiguous();
    let shape: Vec<usize> = tensor.size().iter().map(|&d| d as usize).collect();
    match tensor.kind() {
        Kind::Int64 => {
            let values: Vec<i64> = Vec::try_from(tensor.flatten(0, -1)).expect("int64 tensor");
            (Dtype::I64, shape, values.iter().flat_map(|v| v.to_le_bytes()).collect())
        }
        _ => {
            let values: Vec<f32> = Vec::try_from(tensor.to_kind(Kind::Float).flatten(0, -1)).expect("float tensor");
            (Dtype::F32, shape, values.iter().flat_map(|v| v.to_le_bytes()).collect())
        }
    }
}

/// Writes the embeddings to `path` atomically (a temporary file in the same folder, then rename).
pub fn write_safetensors(embeddings: &Embeddings, metadata: HashMap<String, String>, path: &Path) -> Result<()> {
    let mut named: Vec<(String, &Tensor)> = Vec::new();
    if let Some(t) = &embeddings.image_global {
        named.push(("image_global".into(), t));
    }
    if let Some(t) = &embeddings.image_patch_tokens {
        named.push(("image_patch_tokens".into(), t));
    }
    for (k, t) in &embeddings.image_taps {
        named.push((format!("image_tap_{k}"), t));
    }
    if let Some(t) = &embeddings.text_features {
        named.push(("text_features".into(), t));
    }
    if let Some(t) = &embeddings.text_tokens {
        named.push(("text_tokens".into(), t));
    }
    let buffers: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = named
        .into_iter()
        .map(|(name, t)| {
            let (dtype, shape, bytes) = tensor_bytes(t);
            (name, dtype, shape, bytes)
        })
        .collect();
    let views = buffers
        .iter()
        .map(|(name, dtype, shape, bytes)| Ok((name.clone(), TensorView::new(*dtype, shape.clone(), bytes)?)))
        .collect::<Result<Vec<_>, safetensors::SafeTensorError>>()?;
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let write = |source| EmbedError::Write { path: path.to_path_buf(), source };
    std::fs::create_dir_all(dir).map_err(write)?;
    let tmp = tempfile::NamedTempFile::new_in(dir).map_err(write)?;
    safetensors::serialize_to_file(views, Some(metadata), tmp.path())?;
    tmp.persist(path).map_err(|e| write(e.error))?;
    Ok(())
}
