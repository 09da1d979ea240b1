//! Strict loading of OpenCLIP safetensors checkpoints into a `VarStore`.
//!
//! `VarStore::load` ignores unexpected keys and broadcasts on copy (tch-rs `src/nn/var_store.rs`),
//! so a checkpoint for the wrong model could load "successfully". Here the file's header is
//! diffed against the store first and every missing key, unexpected key and shape mismatch is
//! reported in one error; only then is data copied. The file is memory-mapped, so peak memory is
//! the model plus one tensor, not the model plus the file.

use std::fmt;
use std::path::{Path, PathBuf};

use safetensors::{Dtype, SafeTensors};
use tch::{nn::VarStore, Kind, Tensor};

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("cannot read checkpoint {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "checkpoint {path} is not a readable safetensors file ({message}); it may be truncated or in another format: \
         convert torch .pt/.bin releases with scripts/convert_checkpoint.py"
    )]
    Format { path: PathBuf, message: String },
    #[error("checkpoint {path} does not fit the model config:\n{mismatch}check that --model-config names the architecture these weights were trained with")]
    Mismatch { path: PathBuf, mismatch: KeyMismatch },
    #[error("checkpoint {path}: tensor {key} has dtype {dtype}, expected a float type (F32, F16, BF16 or F64)")]
    Dtype { path: PathBuf, key: String, dtype: String },
}

/// Every difference between the keys and shapes a model expects and those a file holds.
#[derive(Debug, Default)]
pub struct KeyMismatch {
    pub missing: Vec<(String, Vec<i64>)>,
    pub unexpected: Vec<(String, Vec<i64>)>,
    /// `(key, expected by the model, found in the file)`.
    pub wrong_shape: Vec<(String, Vec<i64>, Vec<i64>)>,
}

impl KeyMismatch {
    pub fn is_empty(&self) -> bool {
        self.missing.is_empty() && self.unexpected.is_empty() && self.wrong_shape.is_empty()
    }
}

impl fmt::Display for KeyMismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const SHOWN: usize = 12;
        let section = |f: &mut fmt::Formatter<'_>, title: &str, lines: Vec<String>| -> fmt::Result {
            if lines.is_empty() {
                return Ok(());
            }
            writeln!(f, "  {} {title}:", lines.len())?;
            for line in lines.iter().take(SHOWN) {
                writeln!(f, "    {line}")?;
            }
            if lines.len() > SHOWN {
                writeln!(f, "    ... and {} more", lines.len() - SHOWN)?;
            }
            Ok(())
        };
        section(
            f,
            "missing keys (expected by the model, absent from the file)",
            self.missing.iter().map(|(k, s)| format!("{k} {s:?}")).collect(),
        )?;
        section(
            f,
            "unexpected keys (in the file, unknown to the model)",
            self.unexpected.iter().map(|(k, s)| format!("{k} {s:?}")).collect(),
        )?;
        section(
            f,
            "shape mismatches",
            self.wrong_shape
                .iter()
                .map(|(k, want, got)| format!("{k}: model expects {want:?}, file has {got:?}"))
                .collect(),
        )
    }
}

/// What was loaded, for logs and manifests.
#[derive(Debug, Clone)]
pub struct LoadedCheckpoint {
    pub path: PathBuf,
    pub tensors: usize,
    pub parameters: i64,
    /// The dtypes stored in the file (a checkpoint saved in fp16 is widened to the store's dtype).
    pub stored_dtypes: Vec<String>,
}

fn kind_of(dtype: Dtype) -> Option<Kind> {
    match dtype {
        Dtype::F32 => Some(Kind::Float),
        Dtype::F16 => Some(Kind::Half),
        Dtype::BF16 => Some(Kind::BFloat16),
        Dtype::F64 => Some(Kind::Double),
        _ => None,
    }
}

/// Loads `path` into `vs`, which must already hold every variable of the model.
pub fn load_safetensors(vs: &VarStore, path: &Path) -> Result<LoadedCheckpoint, CheckpointError> {
    let io_error = |source| CheckpointError::Io { path: path.to_path_buf(), source };
    let file = std::fs::File::open(path).map_err(io_error)?;
    // SAFETY: the mapping is read-only and dropped before this function returns; a file
    // truncated underneath us is the one hazard, as for any mmap reader.
    let bytes = unsafe { memmap2::Mmap::map(&file) }.map_err(io_error)?;
    let tensors = SafeTensors::deserialize(&bytes)
        .map_err(|e| CheckpointError::Format { path: path.to_path_buf(), message: e.to_string() })?;

    let mut variables: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
    variables.sort_by(|a, b| a.0.cmp(&b.0));
    let mut mismatch = KeyMismatch::default();
    for (name, var) in &variables {
        match tensors.tensor(name) {
            Err(_) => mismatch.missing.push((name.clone(), var.size())),
            Ok(view) => {
                let got: Vec<i64> = view.shape().iter().map(|&d| d as i64).collect();
                if got != var.size() {
                    mismatch.wrong_shape.push((name.clone(), var.size(), got));
                }
            }
        }
    }
    let mut file_names: Vec<&str> = tensors.names();
    file_names.sort_unstable();
    for name in file_names {
        if !variables.iter().any(|(v, _)| v == name) {
            let shape = tensors.tensor(name).map(|t| t.shape().iter().map(|&d| d as i64).collect()).unwrap_or_default();
            mismatch.unexpected.push((name.to_string(), shape));
        }
    }
    if !mismatch.is_empty() {
        return Err(CheckpointError::Mismatch { path: path.to_path_buf(), mismatch });
    }

    let mut stored_dtypes = Vec::new();
    let mut parameters = 0;
    tch::no_grad(|| -> Result<(), CheckpointError> {
        for (name, var) in &variables {
            let view = tensors.tensor(name).expect("presence was checked above");
            let dtype_name = format!("{:?}", view.dtype());
            let kind = kind_of(view.dtype()).ok_or_else(|| CheckpointError::Dtype {
                path: path.to_path_buf(),
                key: name.clone(),
                dtype: dtype_name.clone(),
            })?;
            if !stored_dtypes.contains(&dtype_name) {
                stored_dtypes.push(dtype_name);
            }
            let source = Tensor::from_data_size(view.data(), &var.size(), kind);
            let mut target = var.shallow_clone();
            target.copy_(&source);
            parameters += var.numel() as i64;
        }
        Ok(())
    })?;
    Ok(LoadedCheckpoint { path: path.to_path_buf(), tensors: variables.len(), parameters, stored_dtypes })
}
