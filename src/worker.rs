//! Worker mode: one work item of a run spec, as a pod of a Kubernetes Indexed Job runs it
//! (`promptad train --spec SPEC --index N`, `promptad score --spec SPEC --index N`).
//!
//! What a cluster needs besides the work itself:
//!
//! - **Exit codes** that tell a retryable failure from a permanent one ([`exit`]), so that the
//!   Jobs' `podFailurePolicy` can fail an index at once (`FailIndex`) when retrying cannot help,
//!   retry it when it can (counted against `backoffLimitPerIndex`), and retry a preempted pod
//!   without counting (`Ignore`). [`exit_code`] classifies an error by the types in its chain.
//! - **SIGTERM** (preemption, node drain, `kubectl delete`): [`handle_sigterm`] turns it into a
//!   flag. Scoring checks it between batches ([`check_stop`]) and abandons the unit in progress,
//!   which was never visible (a unit counts only once its commit record exists); training
//!   abandons the model it is learning (its artifact is written only after the last step, manifest
//!   last). Either way the worker exits with [`exit::STOPPED`] and a rerun of the index continues
//!   from what was committed. A second SIGTERM exits at once.
//! - **Idempotence**: a finished model is not trained again (unless asked), committed units are
//!   not scored again, so a retried or duplicated pod does no harm.
//! - **Weights from a URL**: [`fetch_weights`] copies the backbone checkpoint to a local cache
//!   (`PROMPTAD_CACHE_DIR`), once per pod.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Result;
use futures::TryStreamExt;
use object_store::{ObjectStore, ObjectStoreExt};

use crate::artifact::{Artifact, Manifest, Weights};
use crate::data::dataset::Dataset;
use crate::data::DataError;
use crate::pipeline::score::{score_category, ScoreOptions, ScoreSummary};
use crate::prompt::train::Head;
use crate::prompt::PromptError;
use crate::runtime::RuntimeError;
use crate::spec::plan::{model_run_id, resolve_run_id, ScoreItem, TrainItem, JOB_NAME_ENV};
use crate::spec::{ModelRef, Spec, SpecError};
use crate::store::{block_on, Location, StoreError};

/// The exit codes of a worker. The manifests' `podFailurePolicy` lists [`PERMANENT`] under
/// `FailIndex` and [`NOT_COUNTED`] under `Ignore`; every other non-zero code (1, 75, and 137 for
/// a pod killed for memory) is retried up to `backoffLimitPerIndex`.
pub mod exit {
    /// The work item is done (or was already done).
    pub const OK: u8 = 0;
    /// An unexpected failure: retried, in case it was the node.
    pub const FAILED: u8 = 1;
    /// The command line is wrong (clap's code): permanent.
    pub const USAGE: u8 = 2;
    /// The run spec is invalid, or the index is not one of its work items: permanent.
    pub const BAD_SPEC: u8 = 64;
    /// The input is there but unusable (undecodable images, too few shots, a checkpoint that does
    /// not fit the model config): permanent.
    pub const BAD_INPUT: u8 = 65;
    /// The input is missing or not accessible (dataset, category, weights, model artifact, bucket,
    /// credentials): permanent until someone fixes it.
    pub const MISSING_INPUT: u8 = 66;
    /// A store could not be reached or asked to slow down: retryable.
    pub const TEMPORARY: u8 = 75;
    /// Stopped by SIGTERM before finishing (128 + 15): retried without counting.
    pub const STOPPED: u8 = 143;
}

/// Exit codes after which retrying the same index cannot help (`FailIndex`).
pub const PERMANENT: [u8; 4] = [exit::USAGE, exit::BAD_SPEC, exit::BAD_INPUT, exit::MISSING_INPUT];
/// Exit codes of a pod that was stopped, not broken (`Ignore`: retried, not counted).
pub const NOT_COUNTED: [u8; 1] = [exit::STOPPED];

/// What an exit code means, for logs and `promptad run`.
pub fn describe(code: u8) -> &'static str {
    match code {
        exit::OK => "done",
        exit::USAGE => "permanent: bad command line",
        exit::BAD_SPEC => "permanent: bad run spec or index",
        exit::BAD_INPUT => "permanent: bad input data",
        exit::MISSING_INPUT => "permanent: input missing or not accessible",
        exit::TEMPORARY => "retryable: store unreachable or throttled",
        exit::STOPPED => "stopped by SIGTERM: retried without counting",
        137 => "killed (SIGKILL, e.g. out of memory): retried",
        _ => "unexpected failure: retried",
    }
}

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("stopped by SIGTERM: the work in progress was abandoned before it was committed (nothing partial is visible); rerunning this index continues from the last committed unit")]
    Stopped,
    #[error("model artifact {url} does not exist: run training work item {train_index} first (the training Job), then this index")]
    MissingModel { url: String, train_index: usize },
    #[error("{url} holds a model of {found}, not of {expected}: another spec writes to the same train.artifacts; give each spec its own")]
    ForeignArtifact { url: String, found: String, expected: String },
    #[error(
        "category {category:?} is not in {data} (it has: {available}); fix the spec's categories or the archive's URL"
    )]
    MissingCategory { category: String, data: String, available: String },
    #[error("{count} image(s) could not be read or decoded; they are recorded in the scores table with their error (column error); fix or remove them, then rerun with --overwrite")]
    BadImages { count: usize },
}

/// The exit code for `error`: the first error in its chain whose type tells; [`exit::FAILED`]
/// when none does.
pub fn exit_code(error: &anyhow::Error) -> u8 {
    error.chain().find_map(classify).unwrap_or(exit::FAILED)
}

fn classify(error: &(dyn std::error::Error + 'static)) -> Option<u8> {
    if let Some(e) = error.downcast_ref::<WorkerError>() {
        return Some(match e {
            WorkerError::Stopped => exit::STOPPED,
            WorkerError::MissingModel { .. } | WorkerError::MissingCategory { .. } => exit::MISSING_INPUT,
            WorkerError::ForeignArtifact { .. } => exit::BAD_SPEC,
            WorkerError::BadImages { .. } => exit::BAD_INPUT,
        });
    }
    if error.downcast_ref::<SpecError>().is_some() {
        return Some(exit::BAD_SPEC);
    }
    if let Some(e) = error.downcast_ref::<StoreError>() {
        return store_class(e);
    }
    if let Some(e) = error.downcast_ref::<DataError>() {
        return match e {
            DataError::Store(e) => store_class(e),
            DataError::UnknownCategory { .. } | DataError::NoDataset { .. } => Some(exit::MISSING_INPUT),
            DataError::NotEnoughShots { .. }
            | DataError::UnknownShot { .. }
            | DataError::MissingMask { .. }
            | DataError::Image { .. } => Some(exit::BAD_INPUT),
            DataError::Io { .. } => None,
        };
    }
    if let Some(e) = error.downcast_ref::<PromptError>() {
        return match e {
            PromptError::UnknownCategory { .. } | PromptError::BadState { .. } | PromptError::Config(_) => {
                Some(exit::BAD_SPEC)
            }
            PromptError::Clip(crate::clip::ClipError::Checkpoint(_)) => Some(exit::BAD_INPUT),
            _ => None,
        };
    }
    if error.downcast_ref::<crate::clip::CheckpointError>().is_some() {
        return Some(exit::BAD_INPUT);
    }
    if let Some(crate::clip::ClipError::Checkpoint(_)) = error.downcast_ref::<crate::clip::ClipError>() {
        return Some(exit::BAD_INPUT);
    }
    if let Some(RuntimeError::UnknownDevice(_)) = error.downcast_ref::<RuntimeError>() {
        return Some(exit::BAD_SPEC);
    }
    None
}

fn store_class(error: &StoreError) -> Option<u8> {
    match error {
        StoreError::BadUrl { .. } => Some(exit::BAD_SPEC),
        StoreError::NotFound { .. } | StoreError::NoBucket { .. } | StoreError::Denied { .. } => {
            Some(exit::MISSING_INPUT)
        }
        e if e.is_transient() => Some(exit::TEMPORARY),
        _ => None,
    }
}

static STOP: AtomicBool = AtomicBool::new(false);

/// Turns SIGTERM into the stop flag (a second SIGTERM exits at once with [`exit::STOPPED`]).
/// Returns once the handler is in place.
pub fn handle_sigterm() -> Result<()> {
    let (ready, installed) = std::sync::mpsc::channel();
    std::thread::Builder::new().name("promptad-sigterm".into()).spawn(move || {
        let runtime = match tokio::runtime::Builder::new_current_thread().enable_io().build() {
            Ok(runtime) => runtime,
            Err(e) => return drop(ready.send(Err(e.to_string()))),
        };
        runtime.block_on(async move {
            let mut terms = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(e) => return drop(ready.send(Err(e.to_string()))),
            };
            let _ = ready.send(Ok(()));
            while terms.recv().await.is_some() {
                if STOP.swap(true, Ordering::SeqCst) {
                    tracing::warn!("second SIGTERM: exiting now");
                    std::process::exit(i32::from(exit::STOPPED));
                }
                tracing::warn!("SIGTERM: stopping at the next safe point (nothing partial will be visible)");
            }
        });
    })?;
    installed
        .recv()
        .map_err(|_| anyhow::anyhow!("the SIGTERM handler thread died"))?
        .map_err(|e| anyhow::anyhow!("cannot handle SIGTERM: {e}"))
}

/// Whether SIGTERM arrived (always false unless [`handle_sigterm`] was called).
pub fn stop_requested() -> bool {
    STOP.load(Ordering::SeqCst)
}

/// `Err(Stopped)` once SIGTERM arrived: the check scoring makes between batches.
pub fn check_stop() -> Result<(), WorkerError> {
    if stop_requested() {
        return Err(WorkerError::Stopped);
    }
    Ok(())
}

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
pub fn fetch_weights(url: &str) -> Result<PathBuf> {
    let (folder, name) = url.trim_end_matches('/').rsplit_once('/').unwrap_or((".", url));
    let folder = Location::parse(if folder.is_empty() { "/" } else { folder })?;
    if let Some(local) = folder.local_path() {
        let path = local.join(name);
        if !path.is_file() {
            return Err(StoreError::NotFound { url: url.into() }.into());
        }
        return Ok(path);
    }
    let meta = folder.head(name)?.ok_or_else(|| StoreError::NotFound { url: url.into() })?;
    let digest = {
        use sha2::Digest;
        format!("{:x}", sha2::Sha256::digest(url.as_bytes()))[..16].to_string()
    };
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
    let mut stream = store.get(path).await.map_err(|e| StoreError::from_object_store(e, url, "read"))?.into_stream();
    while let Some(chunk) = stream.try_next().await.map_err(|e| StoreError::from_object_store(e, url, "read"))? {
        file.write_all(&chunk).map_err(local)?;
    }
    file.sync_all().map_err(local)
}

/// The end of a worker command: on error, the whole error chain and what its exit code means on
/// stderr, and that code.
pub fn finish(result: Result<()>) -> std::process::ExitCode {
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            let code = exit_code(&error);
            tracing::error!(code, meaning = describe(code), error = format!("{error:#}"), "work item failed");
            eprintln!("error: {error:#}");
            eprintln!("exit code {code} ({})", describe(code));
            std::process::ExitCode::from(code)
        }
    }
}

/// libtorch version check, device parsing and the start-up self-test.
fn checked_device(name: &str) -> Result<tch::Device> {
    crate::runtime::check_libtorch()?;
    let device = crate::runtime::parse_device(name)?;
    crate::runtime::self_test(device)?;
    Ok(device)
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
    mut on_step: impl FnMut(Head, usize, f64),
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
    let device = checked_device(&spec.run.runtime.device)?;
    let backbone = &spec.run.backbone;
    let (clip, record) = match (&backbone.weights, backbone.random_init) {
        (Some(url), _) => {
            let path = fetch_weights(url)?;
            crate::pipeline::demo::checkpoint_backbone(
                backbone.config.as_deref().unwrap_or("ViT-B-16-plus-240"),
                &path,
                device,
                spec.run.runtime.precision,
                true,
            )?
        }
        (None, Some(seed)) => crate::pipeline::demo::random_backbone(seed, device)?,
        (None, None) => unreachable!("validated: a spec has weights or random_init"),
    };
    let job = spec.train_job(&item.category, item.k, item.seed);
    // No manifest: anything there is the leftover of a stopped run, replaced.
    let manifest = crate::pipeline::train::train_category(&job, &clip, record, &out, true, |head, step, loss| {
        if stop_requested() {
            // Nothing of this model has been written yet (the artifact goes out after the last step).
            tracing::warn!(index, head = ?head, step, "SIGTERM during training: abandoning this model; a rerun of the index trains it again");
            std::process::exit(i32::from(exit::STOPPED));
        }
        on_step(head, step, loss);
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
        return Err(WorkerError::MissingModel { url: item.model.clone(), train_index: item.train_index }.into());
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
        }
        .into());
    }
    let device = checked_device(&spec.run.runtime.device)?;
    let weights = match (&artifact.manifest.backbone.weights, &spec.run.backbone.weights) {
        (Weights::Checkpoint { .. }, Some(url)) => Some(fetch_weights(url)?),
        _ => None,
    };
    let clip = artifact.manifest.backbone.load(weights.as_deref(), device, spec.run.runtime.precision)?;
    let score = &spec.run.score;
    let options = ScoreOptions {
        batch_size: score.batch_size,
        skip_bad: score.skip_bad,
        overwrite,
        rows_per_unit: score.rows_per_unit,
        shard: (item.worker, item.workers),
        run_id: Some(run_id),
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
        on_images,
    )?;
    Ok((item, summary))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_map_to_their_exit_codes_through_context() {
        use anyhow::Context;
        let cases: Vec<(anyhow::Error, u8)> = vec![
            (anyhow::Error::from(WorkerError::Stopped).context("scoring unit test-00001 of bottle"), exit::STOPPED),
            (StoreError::Unreachable { url: "s3://b/x".into(), detail: "connect".into() }.into(), exit::TEMPORARY),
            (
                anyhow::Error::from(StoreError::NotFound { url: "s3://b/x".into() }).context("reading the dataset"),
                exit::MISSING_INPUT,
            ),
            (
                DataError::Store(StoreError::Unreachable { url: "s3://b/x".into(), detail: "timed out".into() }).into(),
                exit::TEMPORARY,
            ),
            (DataError::NotEnoughShots { category: "bottle".into(), k: 8, available: 4 }.into(), exit::BAD_INPUT),
            (
                SpecError::IndexOutOfRange { path: "x.toml".into(), job: "training", index: 9, completions: 3 }.into(),
                exit::BAD_SPEC,
            ),
            (WorkerError::MissingModel { url: "s3://m".into(), train_index: 0 }.into(), exit::MISSING_INPUT),
            (WorkerError::BadImages { count: 2 }.into(), exit::BAD_INPUT),
            (anyhow::anyhow!("something else"), exit::FAILED),
            (Err::<(), _>(std::io::Error::other("disk")).context("writing").unwrap_err(), exit::FAILED),
        ];
        for (error, code) in cases {
            assert_eq!(exit_code(&error), code, "{error:#}");
        }
    }

    #[test]
    fn permanent_and_retried_codes_do_not_overlap() {
        for code in PERMANENT {
            assert!(
                !NOT_COUNTED.contains(&code) && code != exit::OK && code != exit::FAILED && code != exit::TEMPORARY
            );
            assert!(describe(code).starts_with("permanent"));
        }
        assert!(describe(exit::TEMPORARY).starts_with("retryable"));
    }

    #[test]
    fn local_weights_are_used_in_place_and_a_missing_file_is_missing_input() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("w.safetensors");
        std::fs::write(&file, b"x").unwrap();
        assert_eq!(fetch_weights(file.to_str().unwrap()).unwrap(), file);
        assert_eq!(fetch_weights(&format!("file://{}", file.display())).unwrap(), file);
        let missing = fetch_weights(dir.path().join("nope.safetensors").to_str().unwrap()).unwrap_err();
        assert_eq!(exit_code(&missing), exit::MISSING_INPUT, "{missing:#}");
    }
}
