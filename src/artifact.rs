//! The model artifact of one training run (DESIGN §4): everything needed to score, nothing that
//! needs the training data again.
//!
//! ```text
//! <dir>/tensors.safetensors   memory.bank0, memory.bank1 ([k·P, width] each), image.prototypes and
//!                             pixel.prototypes ([2, E], [normal, anomaly]), and the learned context
//!                             image|pixel.normal_ctx ([N, E_N, width]), image|pixel.anomaly_ctx
//! <dir>/prompts.parquet       the same tensors as a table (schemas/prompt_artifact.json)
//! <dir>/manifest.json         written last: backbone (config, weights checksum or random seed),
//!                             category, shots and their ids, seed, configs, losses, versions
//! <dir>/calibration.json      optional, added later by `promptad calibrate`: the thresholds that
//!                             turn scores into decisions ([`ModelCalibration`])
//! ```
//! The artifact lives at any URL. The manifest is written last and names the content version
//! (SHA-256) of the tensors, so a reader sees a complete, matching artifact or an error; an
//! existing artifact is replaced only with `overwrite`.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use crate::store::Location;

use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

use crate::clip::{Clip, ModelConfig, Precision};
use crate::detect::DetectConfig;
use crate::metrics::{Calibration, CalibrationError};
use crate::prompt::categories::Category;
use crate::prompt::learner::PromptConfig;
use crate::prompt::train::{Head, TrainConfig, TrainReport};
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{url} is not a complete model artifact (no {MANIFEST}); was training interrupted, or is the URL wrong? Train it again")]
    Incomplete { url: String },
    #[error("cannot parse {url}: {source}")]
    BadManifest {
        url: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("{url} has artifact format {found}, this promptad reads {expected}")]
    FormatVersion { url: String, found: u32, expected: u32 },
    #[error("{url} does not match its manifest (content {content}, manifest {manifest}); the artifact is damaged or being replaced")]
    Damaged { url: String, content: String, manifest: String },
    #[error("{url} lacks the tensor {key}")]
    MissingTensor { url: String, key: String },
    #[error("{url}: tensor {key} is {dtype}, artifacts hold F32")]
    TensorType { url: String, key: String, dtype: String },
    #[error("{url} is not a safetensors file: {source}")]
    Safetensors {
        url: String,
        #[source]
        source: safetensors::SafeTensorError,
    },
    #[error("{url} already holds a model artifact; overwrite it to replace it")]
    Exists { url: String },
    #[error(
        "backbone weights {path} have SHA-256 {actual}, but the model was trained on weights with {expected}; use the \
         checkpoint it was trained with"
    )]
    WeightsMismatch { path: PathBuf, actual: String, expected: String },
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Clip(#[from] crate::clip::ClipError),
    #[error("cannot convert the artifact's tensors: {0}")]
    Torch(#[from] tch::TchError),
    #[error(transparent)]
    Sink(#[from] crate::sink::SinkError),
    #[error("{url}: {source}")]
    BadCalibration {
        url: String,
        #[source]
        source: CalibrationError,
    },
    #[error(
        "{url} was fitted for model version {found}, but the model beside it is version {expected} (it was \
         retrained); calibrate it again"
    )]
    StaleCalibration { url: String, found: String, expected: String },
    #[error("{url} already holds a different calibration (version {existing}); overwrite it to replace it")]
    CalibrationExists { url: String, existing: String },
}

type Result<T, E = ArtifactError> = std::result::Result<T, E>;

/// The names of an artifact's tensors, in `tensors.safetensors` and `prompts.parquet`.
pub mod tensor_names {
    use crate::prompt::train::Head;

    /// The visual memory of tap `i`: `[k·P, width]`.
    ///
    /// ```
    /// assert_eq!(promptad::artifact::tensor_names::memory_bank(1), "memory.bank1");
    /// ```
    pub fn memory_bank(i: usize) -> String {
        format!("memory.bank{i}")
    }

    /// A head's text prototypes `[2, E]` (normal, anomaly).
    ///
    /// ```
    /// use promptad::prompt::train::Head;
    /// assert_eq!(promptad::artifact::tensor_names::prototypes(Head::Pixel), "pixel.prototypes");
    /// ```
    pub fn prototypes(head: Head) -> String {
        format!("{}.prototypes", head.name())
    }

    /// A head's learned normal context `[N, E_N, width]`.
    pub fn normal_ctx(head: Head) -> String {
        format!("{}.normal_ctx", head.name())
    }

    /// A head's learned anomaly context `[N·L, E_A, width]`.
    pub fn anomaly_ctx(head: Head) -> String {
        format!("{}.anomaly_ctx", head.name())
    }
}

pub const FORMAT_VERSION: u32 = 1;
const TENSORS: &str = "tensors.safetensors";
const MANIFEST: &str = "manifest.json";
/// The model's calibration ([`ModelCalibration`]), beside its manifest.
pub const CALIBRATION: &str = "calibration.json";
/// The same tensors as a Parquet table (`schemas/prompt_artifact.json`), for SQL and other tools.
pub const PROMPTS: &str = "prompts.parquet";

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
            Weights::RandomInit { seed } => {
                Ok(Clip::random(self.config.clone(), *seed, device).at_precision(precision))
            }
            Weights::Checkpoint { path, sha256 } => {
                let path = weights_override.unwrap_or(path);
                let actual = sha256_file(path)?;
                if &actual != sha256 {
                    return Err(ArtifactError::WeightsMismatch {
                        path: path.to_path_buf(),
                        actual,
                        expected: sha256.clone(),
                    });
                }
                Ok(Clip::load(self.config.clone(), path, device, precision)?)
            }
        }
    }
}

/// The demo's default backbone when no weights are given: the small demo ViT, random, seeded.
pub fn random_backbone(seed: u64, device: tch::Device) -> Result<(Clip, Backbone), ArtifactError> {
    let config = crate::clip::ModelConfig::resolve("demo-vit-240")?;
    let clip = Clip::random(config.clone(), seed, device);
    let backbone = Backbone {
        config_name: "demo-vit-240".into(),
        config,
        weights: Weights::RandomInit { seed },
        logit_scale: clip.logit_scale_raw(),
    };
    Ok((clip, backbone))
}

/// A checkpoint backbone, recorded with its checksum (left empty without `checksum`).
pub fn checkpoint_backbone(
    config_name: &str,
    weights: &Path,
    device: tch::Device,
    precision: crate::clip::Precision,
    checksum: bool,
) -> Result<(Clip, Backbone), ArtifactError> {
    let config = crate::clip::ModelConfig::resolve(config_name)?;
    let sha256 = if checksum { sha256_file(weights)? } else { String::new() };
    let clip = Clip::load(config.clone(), weights, device, precision)?;
    let backbone = Backbone {
        config_name: config_name.into(),
        config,
        weights: Weights::Checkpoint { path: weights.to_path_buf(), sha256 },
        logit_scale: clip.logit_scale_raw(),
    };
    Ok((clip, backbone))
}

/// Where a warm start came from, as recorded in the manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InitPromptsRecord {
    /// The file path or artifact URL as given.
    pub source: String,
    /// `file` (a safetensors file) or `artifact` (a model directory).
    pub kind: String,
    /// SHA-256 (hex) of the file, or of the artifact's `tensors.safetensors`.
    pub sha256: String,
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
    /// Where the prompt contexts started from when not from the seeded draw (`train --init-prompts`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init_prompts: Option<InitPromptsRecord>,
}

impl Manifest {
    /// The manifest of the artifact at `location` alone (its tensors are not read or checked).
    pub fn read(location: &Location) -> Result<Manifest> {
        let Some(manifest) = location.get_if_exists(MANIFEST)? else {
            return Err(ArtifactError::Incomplete { url: location.url().into() });
        };
        let manifest: Manifest = serde_json::from_slice(&manifest)
            .map_err(|source| ArtifactError::BadManifest { url: location.url_of(MANIFEST), source })?;
        if manifest.format_version != FORMAT_VERSION {
            return Err(ArtifactError::FormatVersion {
                url: location.url_of(MANIFEST),
                found: manifest.format_version,
                expected: FORMAT_VERSION,
            });
        }
        Ok(manifest)
    }
}

/// A loaded artifact: manifest and tensors (on the CPU), and its calibration if it has one.
pub struct Artifact {
    pub manifest: Manifest,
    pub tensors: HashMap<String, Tensor>,
    /// `calibration.json`, checked to belong to this model version.
    pub calibration: Option<ModelCalibration>,
}

/// Where a calibration was fitted: the labelled images of one category of a scored run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CalibrationSource {
    /// The output location of the run.
    pub out: String,
    pub run: String,
    pub category: String,
}

/// `<model>/calibration.json`: thresholds fitted after training, for one model version (the
/// model itself is unchanged, so a model can be recalibrated without retraining).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelCalibration {
    /// The [`Manifest::version`] it was fitted for; reading it beside another version fails.
    pub model_version: String,
    pub fitted_on: CalibrationSource,
    /// Thresholds, normalisation ranges and their own content version.
    pub calibration: Calibration,
}

impl ModelCalibration {
    /// Reads `calibration.json` of the model at `location`, if there is one, checking its own
    /// version and that it belongs to `model_version`.
    pub fn read(location: &Location, model_version: &str) -> Result<Option<ModelCalibration>> {
        let url = location.url_of(CALIBRATION);
        let Some(bytes) = location.get_if_exists(CALIBRATION)? else { return Ok(None) };
        let bad = |source| ArtifactError::BadCalibration { url: url.clone(), source };
        let value: serde_json::Value =
            serde_json::from_slice(&bytes).map_err(|source| bad(CalibrationError::Json { source }))?;
        // The thresholds go through `Calibration::from_json`, which checks their digest.
        let calibration = value.get("calibration").map(serde_json::Value::to_string).unwrap_or_default();
        Calibration::from_json(&calibration).map_err(bad)?;
        let file: ModelCalibration =
            serde_json::from_value(value).map_err(|source| bad(CalibrationError::Json { source }))?;
        if file.model_version != model_version {
            return Err(ArtifactError::StaleCalibration {
                url,
                found: file.model_version,
                expected: model_version.to_string(),
            });
        }
        Ok(Some(file))
    }

    /// Writes it beside the model at `location` (one atomic put). The same calibration again is
    /// a no-op; a different one replaces the file only with `overwrite`.
    pub fn write(&self, location: &Location, overwrite: bool) -> Result<()> {
        if let Some(bytes) = location.get_if_exists(CALIBRATION)? {
            let existing: Option<ModelCalibration> = serde_json::from_slice(&bytes).ok();
            if existing.as_ref() == Some(self) {
                return Ok(());
            }
            if !overwrite {
                let existing = existing.map(|e| e.calibration.version).unwrap_or_else(|| "unreadable".into());
                return Err(ArtifactError::CalibrationExists { url: location.url_of(CALIBRATION), existing });
            }
        }
        let mut text = serde_json::to_string_pretty(self).expect("a calibration serialises");
        text.push('\n');
        Ok(location.put(CALIBRATION, bytes::Bytes::from(text))?)
    }
}

impl Artifact {
    /// The visual memory, one bank per tap of `manifest.detect.taps` (checked by [`Artifact::read`]).
    pub fn memory_banks(&self) -> Vec<Tensor> {
        (0..self.manifest.detect.taps.len())
            .map(|i| self.tensors[&tensor_names::memory_bank(i)].shallow_clone())
            .collect()
    }

    /// A head's text prototypes `[2, E]` (checked by [`Artifact::read`]).
    pub fn prototypes(&self, head: Head) -> &Tensor {
        &self.tensors[&tensor_names::prototypes(head)]
    }

    /// A head's learned contexts `(normal, anomaly)`, if the artifact holds them.
    pub fn contexts(&self, head: Head) -> Option<(&Tensor, &Tensor)> {
        Some((self.tensors.get(&tensor_names::normal_ctx(head))?, self.tensors.get(&tensor_names::anomaly_ctx(head))?))
    }

    /// Reads the artifact at `location` (any store), checking that its tensors are the ones its
    /// manifest was written for.
    pub fn read(location: &Location) -> Result<Self> {
        let manifest = Manifest::read(location)?;
        let tensor_url = location.url_of(TENSORS);
        let bytes = location.get(TENSORS)?;
        let version = content_version(&bytes);
        if version != manifest.version {
            return Err(ArtifactError::Damaged { url: tensor_url, content: version, manifest: manifest.version });
        }
        let tensors = tensors_from_safetensors(&bytes, &tensor_url)?;
        let required = (0..manifest.detect.taps.len())
            .map(tensor_names::memory_bank)
            .chain(Head::BOTH.into_iter().map(tensor_names::prototypes));
        for key in required {
            if !tensors.contains_key(&key) {
                return Err(ArtifactError::MissingTensor { url: tensor_url, key });
            }
        }
        let calibration = ModelCalibration::read(location, &manifest.version)?;
        Ok(Self { manifest, tensors, calibration })
    }

    /// Writes `tensors` and `manifest` (its `version` filled in here) to `location`. The manifest
    /// goes last and marks the artifact complete; when replacing (`overwrite`), the old manifest
    /// is removed first, so a reader never pairs it with new tensors.
    pub fn write(
        location: &Location,
        mut manifest: Manifest,
        tensors: &[(String, Tensor)],
        overwrite: bool,
    ) -> Result<Manifest> {
        if location.exists(MANIFEST)? || location.exists(TENSORS)? {
            if !overwrite {
                return Err(ArtifactError::Exists { url: location.url().into() });
            }
            location.delete(MANIFEST)?;
            // A calibration belongs to the model it was fitted for.
            location.delete(CALIBRATION)?;
        }
        let staging_error = |source| ArtifactError::Io { path: std::env::temp_dir(), source };
        let staging = tempfile::Builder::new().prefix(".promptad-artifact-").tempdir().map_err(staging_error)?;
        let staged = staging.path().join(TENSORS);
        let cpu: Vec<(String, Tensor)> = tensors
            .iter()
            .map(|(k, t)| (k.clone(), t.to_device(Device::Cpu).to_kind(Kind::Float).contiguous()))
            .collect();
        Tensor::write_safetensors(&cpu, &staged)?;
        let bytes = std::fs::read(&staged).map_err(|source| ArtifactError::Io { path: staged.clone(), source })?;
        manifest.version = content_version(&bytes);
        location.upload_file(TENSORS, &staged)?;
        let table = prompts_table(&manifest, &cpu)?;
        let mut writer = crate::sink::AtomicParquetWriter::create(location, PROMPTS, table.schema())?;
        writer.write(&table)?;
        writer.finish()?;
        location
            .put(MANIFEST, bytes::Bytes::from(serde_json::to_vec_pretty(&manifest).expect("a manifest serialises")))?;
        Ok(manifest)
    }
}

/// The SHA-256 (hex) of the `tensors.safetensors` of the artifact at `location`.
pub fn tensors_sha256(location: &Location) -> Result<String> {
    use sha2::Digest;
    Ok(format!("{:x}", sha2::Sha256::digest(&location.get(TENSORS)?)))
}

pub fn sha256_file(path: &Path) -> Result<String> {
    use sha2::Digest;
    let io = |source| ArtifactError::Io { path: path.to_path_buf(), source };
    let mut file = std::fs::File::open(path).map_err(io)?;
    let mut hasher = sha2::Sha256::new();
    let mut buffer = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buffer).map_err(io)?;
        if n == 0 {
            break;
        }
        hasher.update(&buffer[..n]);
    }
    Ok(format!("{:x}", hasher.finalize()))
}

/// The `prompt_artifact` table: one row per tensor (`schemas/prompt_artifact.json`).
pub fn prompts_schema() -> arrow::datatypes::SchemaRef {
    use arrow::datatypes::{DataType, Field, Schema};
    let list = |item: DataType| DataType::List(std::sync::Arc::new(Field::new_list_field(item, false)));
    std::sync::Arc::new(Schema::new(vec![
        Field::new("model_version", DataType::Utf8, false),
        Field::new("category", DataType::Utf8, false),
        Field::new("k", DataType::Int64, false),
        Field::new("seed", DataType::Int64, false),
        Field::new("tensor", DataType::Utf8, false),
        Field::new("shape", list(DataType::Int64), false),
        Field::new("values", list(DataType::Float32), false),
    ]))
}

fn prompts_table(manifest: &Manifest, tensors: &[(String, Tensor)]) -> Result<arrow::array::RecordBatch> {
    use arrow::array::{ArrayRef, Float32Array, Int64Array, ListArray, StringArray};
    use arrow::buffer::OffsetBuffer;
    use std::sync::Arc;
    let n = tensors.len();
    let schema = prompts_schema();
    let list_field = |i: usize| match schema.field(i).data_type() {
        arrow::datatypes::DataType::List(item) => item.clone(),
        _ => unreachable!("list column"),
    };
    let shapes: Vec<Vec<i64>> = tensors.iter().map(|(_, t)| t.size()).collect();
    let values: Vec<Vec<f32>> =
        tensors.iter().map(|(_, t)| Vec::<f32>::try_from(t.flatten(0, -1))).collect::<Result<_, _>>()?;
    let shape = ListArray::new(
        list_field(5),
        OffsetBuffer::from_lengths(shapes.iter().map(Vec::len)),
        Arc::new(Int64Array::from_iter_values(shapes.concat())),
        None,
    );
    let value = ListArray::new(
        list_field(6),
        OffsetBuffer::from_lengths(values.iter().map(Vec::len)),
        Arc::new(Float32Array::from_iter_values(values.concat())),
        None,
    );
    let repeat = |v: &str| Arc::new(StringArray::from_iter_values(std::iter::repeat_n(v, n))) as ArrayRef;
    arrow::array::RecordBatch::try_new(
        schema.clone(),
        vec![
            repeat(&manifest.version),
            repeat(&manifest.category.key),
            Arc::new(Int64Array::from_value(manifest.k as i64, n)),
            Arc::new(Int64Array::from_value(manifest.seed as i64, n)),
            Arc::new(StringArray::from_iter_values(tensors.iter().map(|(k, _)| k.as_str()))),
            Arc::new(shape),
            Arc::new(value),
        ],
    )
    .map_err(|source| crate::sink::SinkError::Batch { table: "prompt_artifact", source }.into())
}

/// The f32 tensors of a safetensors buffer (what [`Artifact::write`] stores); `url` names it in errors.
pub fn tensors_from_safetensors(bytes: &[u8], url: &str) -> Result<HashMap<String, Tensor>> {
    let file = safetensors::SafeTensors::deserialize(bytes)
        .map_err(|source| ArtifactError::Safetensors { url: url.into(), source })?;
    file.tensors()
        .into_iter()
        .map(|(name, view)| {
            if view.dtype() != safetensors::Dtype::F32 {
                return Err(ArtifactError::TensorType {
                    url: url.into(),
                    key: name,
                    dtype: format!("{:?}", view.dtype()),
                });
            }
            let shape: Vec<i64> = view.shape().iter().map(|&d| d as i64).collect();
            Ok((name, Tensor::from_data_size(view.data(), &shape, Kind::Float)))
        })
        .collect()
}

fn content_version(bytes: &[u8]) -> String {
    crate::runtime::sha256_prefix(bytes, 16)
}

/// The conventional artifact location (DESIGN §4): `<root>/<dataset>/<category>/k<k>/seed<seed>`.
///
/// ```
/// let p = promptad::artifact::default_rel("mvtec", "bottle", 4, 111);
/// assert_eq!(p, "mvtec/bottle/k4/seed111");
/// ```
pub fn default_rel(dataset: &str, category: &str, k: usize, seed: u64) -> String {
    format!("{dataset}/{category}/k{k}/seed{seed}")
}
