//! Worker mode: one work item of a run spec, as a pod of a Kubernetes Indexed Job runs it
//! (`promptad train --spec SPEC --index N`, `promptad score --spec SPEC --index N`).
//!
//! What a cluster needs besides the work itself:
//!
//! - **Exit codes** that tell a retryable failure from a permanent one: [`crate::exit`], the same
//!   table as in flag mode, chosen from the types of the errors these functions return.
//! - **Stopping** (preemption, node drain, `kubectl delete`): the work takes a [`StopToken`]
//!   (set by `main` on SIGTERM). Scoring checks it between batches and abandons the unit in
//!   progress, which was never visible (a unit counts only once its commit record exists);
//!   training checks it between steps and abandons the model it is learning (its artifact is
//!   written only after the last step, manifest last). A rerun of the index continues from what
//!   was committed.
//! - **Idempotence**: a finished model is not trained again (unless asked), committed units are
//!   not scored again, so a retried or duplicated pod does no harm.
//! - **Weights from a URL**: [`fetch_weights`] copies the backbone checkpoint to a local cache
//!   (`PROMPTAD_CACHE_DIR`), once per pod.

use std::path::{Path, PathBuf};

use futures::TryStreamExt;
use object_store::{ObjectStore, ObjectStoreExt};

use crate::artifact::{checkpoint_backbone, random_backbone, Artifact, ArtifactError, Manifest, Weights};
use crate::data::dataset::Dataset;
use crate::data::DataError;
use crate::pipeline::score::{score_category, ScoreError, ScoreOptions, ScoreSummary};
use crate::pipeline::train::TrainError;
use crate::prompt::train::Head;
use crate::runtime::RuntimeError;
use crate::spec::plan::{model_run_id, resolve_run_id, ScoreItem, TrainItem, JOB_NAME_ENV};
use crate::spec::{ModelRef, Spec, SpecError};
use crate::stop::StopToken;
use crate::store::{block_on, Location, StoreAction, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("model artifact {url} does not exist: run training work item {train_index} first (the training Job), then this index")]
    MissingModel { url: String, train_index: usize },
    #[error("{url} holds a model of {found}, not of {expected}: another spec writes to the same train.artifacts; give each spec its own")]
    ForeignArtifact { url: String, found: String, expected: String },
    #[error(
        "category {category:?} is not in {data} (it has: {available}); fix the spec's categories or the archive's URL"
    )]
    MissingCategory { category: String, data: String, available: String },
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Data(#[from] DataError),
    #[error(transparent)]
    Artifact(#[from] ArtifactError),
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error(transparent)]
    Train(#[from] TrainError),
    #[error(transparent)]
    Score(#[from] ScoreError),
}

type Result<T, E = WorkerError> = std::result::Result<T, E>;

/// The local cache of fetched files: `PROMPTAD_CACHE_DIR`, else `~/.cache/promptad`.
pub fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("PROMPTAD_CACHE_DIR") {
        return PathBuf::from(dir);
    }
    match std::env::var_os("HOME") {
        Some(home) => PathBuf::from(home).join(".cache/promptad"),
        None => std::env::temp_dir().join("promptad-cache"),
    }
}

/// A local path of the checkpoint at `url`: the file itself for a local URL, else a copy in
/// [`cache_dir`]`/weights/<digest of the URL>/<file name>`, fetched unless a copy of the same size
/// is there. The copy appears whole or not at all (written aside, then renamed).
pub fn fetch_weights(url: &str) -> Result<PathBuf, StoreError> {
    let (folder, name) = url.trim_end_matches('/').rsplit_once('/').unwrap_or((".", url));
    let folder = Location::parse(if folder.is_empty() { "/" } else { folder })?;
    if let Some(local) = folder.local_path() {
        let path = local.join(name);
        if !path.is_file() {
            return Err(StoreError::NotFound { url: url.into() });
        }
        return Ok(path);
    }
    let meta = folder.head(name)?.ok_or_else(|| StoreError::NotFound { url: url.into() })?;
    let digest = crate::runtime::sha256_prefix(url.as_bytes(), 16);
    let dir = cache_dir().join("weights").join(digest);
    let target = dir.join(name);
    if std::fs::metadata(&target).is_ok_and(|m| m.len() == meta.size) {
        tracing::info!(url, path = %target.display(), "backbone weights already cached");
        return Ok(target);
    }
    std::fs::create_dir_all(&dir).map_err(|source| StoreError::Local { path: dir.clone(), source })?;
    let started = std::time::Instant::now();
    let staged = tempfile::Builder::new()
        .prefix(".fetch-")
        .tempfile_in(&dir)
        .map_err(|source| StoreError::Local { path: dir.clone(), source })?;
    let store = folder.store();
    let path = folder.path(name);
    block_on(copy_to(store.as_ref(), &path, staged.path(), url))?;
    staged.persist(&target).map_err(|e| StoreError::Local { path: target.clone(), source: e.error })?;
    tracing::info!(url, path = %target.display(), bytes = meta.size, seconds = started.elapsed().as_secs_f64(), "backbone weights fetched");
    Ok(target)
}

async fn copy_to(
    store: &dyn ObjectStore,
    path: &object_store::path::Path,
    target: &Path,
    url: &str,
) -> Result<(), StoreError> {
    use std::io::Write;
    let local = |source| StoreError::Local { path: target.to_path_buf(), source };
    let mut file = std::fs::OpenOptions::new().write(true).truncate(true).open(target).map_err(local)?;
    let mut stream =
        store.get(path).await.map_err(|e| StoreError::from_object_store(e, url, StoreAction::Read))?.into_stream();
    while let Some(chunk) =
        stream.try_next().await.map_err(|e| StoreError::from_object_store(e, url, StoreAction::Read))?
    {
        file.write_all(&chunk).map_err(local)?;
    }
    file.sync_all().map_err(local)
}

/// An existing artifact must be the model this item trains, else two specs share a folder.
fn check_same_model(url: &str, manifest: &Manifest, category: &str, k: usize, seed: u64) -> Result<(), WorkerError> {
    if manifest.category.key != category || manifest.k != k || manifest.seed != seed {
        return Err(WorkerError::ForeignArtifact {
            url: url.into(),
            found: format!("{} k={} seed={}", manifest.category.key, manifest.k, manifest.seed),
            expected: format!("{category} k={k} seed={seed}"),
        });
    }
    Ok(())
}

pub enum TrainOutcome {
    Trained(Manifest),
    /// The artifact existed (a rerun): nothing was done.
    AlreadyTrained(Manifest),
}

/// Trains training work item `index` of `spec`; see the module documentation. `overwrite`
/// retrains a finished model (as `train.overwrite` in the spec does).
pub fn run_train(
    spec: &Spec,
    index: usize,
    overwrite: bool,
    stop: &StopToken,
    on_step: impl FnMut(Head, usize, f64),
) -> Result<(TrainItem, TrainOutcome)> {
    let item = spec.train_item(index)?;
    let out = Location::parse(&item.artifact)?;
    let overwrite = overwrite || spec.run.train.overwrite;
    tracing::info!(index, category = %item.category, k = item.k, seed = item.seed, artifact = %item.artifact, "training work item");
    if !overwrite && out.exists("manifest.json")? {
        let artifact = Artifact::read(&out)?;
        check_same_model(&item.artifact, &artifact.manifest, &item.category, item.k, item.seed)?;
        tracing::info!(index, artifact = %item.artifact, version = %artifact.manifest.version, "already trained: nothing to do");
        return Ok((item, TrainOutcome::AlreadyTrained(artifact.manifest)));
    }
    let device = crate::runtime::checked_device(&spec.run.runtime.device)?;
    let backbone = &spec.run.backbone;
    let (clip, record) = match (&backbone.weights, backbone.random_init) {
        (Some(url), _) => {
            let path = fetch_weights(url)?;
            checkpoint_backbone(
                backbone.config.as_deref().unwrap_or("ViT-B-16-plus-240"),
                &path,
                device,
                spec.run.runtime.precision,
                true,
            )?
        }
        (None, Some(seed)) => random_backbone(seed, device)?,
        (None, None) => unreachable!("validated: a spec has weights or random_init"),
    };
    let job = spec.train_job(&item.category, item.k, item.seed);
    // No manifest: anything there is the leftover of a stopped run, replaced.
    let manifest =
        crate::pipeline::train::train_category(&job, &clip, record, &out, true, stop, on_step).inspect_err(|e| {
            if e.is_stopped() {
                // Nothing of this model has been written (the artifact goes out after the last step).
                tracing::warn!(
                    index,
                    "SIGTERM during training: abandoning this model; a rerun of the index trains it again"
                );
            }
        })?;
    Ok((item, TrainOutcome::Trained(manifest)))
}

/// Scores scoring work item `index` of `spec`. `run_id` replaces the spec's `score.run_id` (it
/// may hold the same placeholders); `overwrite` redoes committed units of the worker's range.
pub fn run_score(
    spec: &Spec,
    index: usize,
    run_id: Option<&str>,
    overwrite: bool,
    stop: &StopToken,
    on_images: impl FnMut(usize),
) -> Result<(ScoreItem, ScoreSummary)> {
    let item = spec.score_item(index)?;
    let base = run_id.unwrap_or(&spec.run.score.run_id);
    let run_id = resolve_run_id(
        &model_run_id(base, ModelRef { k: item.k, seed: item.seed }),
        std::env::var(JOB_NAME_ENV).ok().as_deref(),
    )?;
    tracing::info!(index, archive = %item.archive, category = %item.category, k = item.k, seed = item.seed,
        worker = item.worker, workers = item.workers, run = %run_id, "scoring work item");
    let model = Location::parse(&item.model)?;
    if !model.exists("manifest.json")? {
        return Err(WorkerError::MissingModel { url: item.model.clone(), train_index: item.train_index });
    }
    let artifact = Artifact::read(&model)?;
    check_same_model(&item.model, &artifact.manifest, &item.category, item.k, item.seed)?;
    let dataset = Dataset::open(&item.data)?;
    let available = dataset.categories()?;
    if !available.contains(&item.category) {
        return Err(WorkerError::MissingCategory {
            category: item.category.clone(),
            data: item.data.clone(),
            available: available.join(", "),
        });
    }
    let device = crate::runtime::checked_device(&spec.run.runtime.device)?;
    let weights = match (&artifact.manifest.backbone.weights, &spec.run.backbone.weights) {
        (Weights::Checkpoint { .. }, Some(url)) => Some(fetch_weights(url)?),
        _ => None,
    };
    let clip = artifact.manifest.backbone.load(weights.as_deref(), device, spec.run.runtime.precision)?;
    let score = &spec.run.score;
    let options = ScoreOptions {
        batch_size: score.batch_size.resolve(&artifact, &clip, artifact.manifest.detect.map_size as u32)?,
        skip_bad: score.skip_bad,
        overwrite,
        rows_per_unit: score.rows_per_unit,
        shard: (item.worker, item.workers),
        run_id: Some(run_id),
        // The model's own calibration, when it has one: nightly rows carry decisions.
        calibration: artifact.calibration.as_ref().map(|c| c.calibration.clone()),
        maps: score.maps,
        ..ScoreOptions::default()
    };
    let out = Location::parse(&item.out)?;
    let summary = score_category(
        &artifact,
        &clip,
        artifact.manifest.detect.clone(),
        &dataset,
        &item.category,
        &out,
        &options,
        stop,
        on_images,
    )?;
    Ok((item, summary))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exit;

    #[test]
    fn local_weights_are_used_in_place_and_a_missing_file_is_missing_input() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("w.safetensors");
        std::fs::write(&file, b"x").unwrap();
        assert_eq!(fetch_weights(file.to_str().unwrap()).unwrap(), file);
        assert_eq!(fetch_weights(&format!("file://{}", file.display())).unwrap(), file);
        let missing = fetch_weights(dir.path().join("nope.safetensors").to_str().unwrap()).unwrap_err();
        assert_eq!(exit::code_of_error(&missing), exit::MISSING_INPUT, "{missing}");
    }
}
