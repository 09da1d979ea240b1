//! Where data lives: every input and output is a URL (`s3://bucket/prefix`, `file:///path` or a
//! plain path) read and written through `object_store` (DESIGN §4).
//!
//! S3 settings come from the environment only (`AmazonS3Builder::from_env`: `AWS_ENDPOINT`,
//! `AWS_REGION`, `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`, `AWS_ALLOW_HTTP`, web identity via
//! `AWS_WEB_IDENTITY_TOKEN_FILE` + `AWS_ROLE_ARN` in a cluster), so a test against a local S3
//! server and a production run differ only in their environment.
//!
//! Writes are atomic on every store: an object appears whole or not at all (a PUT or a completed
//! multipart upload on S3; a staged file renamed into place on a local disk). Large files are
//! staged on local disk first ([`Location::upload_file`]), so memory does not grow with them.
//!
//! The pipeline is synchronous (libtorch work); [`block_on`] runs this module's async calls on a
//! runtime of its own, or on the caller's when called from inside one.

mod error;

pub use error::StoreAction;

use std::future::Future;
use std::ops::Range;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::path::Path as StorePath;
use object_store::{
    ObjectMeta, ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload, RetryConfig, WriteMultipart,
};

use crate::runtime::thread_cpu::{register_host_thread, unregister_host_thread, HostRole, HOST_THREAD_PREFIX};
pub use error::StoreError;

/// Files larger than this go up as multipart uploads, in parts of this size.
pub const MULTIPART_PART_SIZE: usize = 8 << 20;

/// Runs `future` to completion from synchronous code.
pub fn block_on<F: Future>(future: F) -> F::Output {
    match tokio::runtime::Handle::try_current() {
        // Inside a multi-threaded runtime (the SQL commands): park this worker, not the runtime.
        Ok(handle) if handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(|| handle.block_on(future))
        }
        _ => runtime().block_on(future),
    }
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name(format!("{HOST_THREAD_PREFIX}io"))
            .on_thread_start(|| register_host_thread(HostRole::Io))
            .on_thread_stop(unregister_host_thread)
            .enable_all()
            .build()
            .expect("cannot start the I/O runtime")
    })
}

/// A folder on a store: the store and the prefix within it, plus the URL it was named by.
#[derive(Clone)]
pub struct Location {
    store: Arc<dyn ObjectStore>,
    /// The URL of the store itself: `s3://bucket` or `file://`.
    store_url: String,
    prefix: StorePath,
    /// `store_url` and `prefix`, without a trailing slash: `s3://bucket/a/b` or `file:///abs/a/b`.
    url: String,
}

impl std::fmt::Debug for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.url)
    }
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.url)
    }
}

/// The retry policy for S3: object_store's default retries a refused connection for minutes;
/// `PROMPTAD_S3_MAX_RETRIES` / `PROMPTAD_S3_RETRY_TIMEOUT_S` tune it (a test sets 0).
fn retry_config() -> RetryConfig {
    let env = |key: &str| std::env::var(key).ok().and_then(|v| v.parse::<u64>().ok());
    RetryConfig {
        max_retries: env("PROMPTAD_S3_MAX_RETRIES").unwrap_or(5) as usize,
        retry_timeout: Duration::from_secs(env("PROMPTAD_S3_RETRY_TIMEOUT_S").unwrap_or(60)),
        ..RetryConfig::default()
    }
}

impl Location {
    /// Parses `s3://bucket/prefix`, `s3a://...`, `file:///abs/path` or a plain (relative or
    /// absolute) path. Nothing is contacted yet.
    pub fn parse(text: &str) -> Result<Self, StoreError> {
        let text = text.trim();
        if text.is_empty() {
            return Err(StoreError::BadUrl { url: text.into(), reason: "empty location".into() });
        }
        match text.split_once("://") {
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("s3") || scheme.eq_ignore_ascii_case("s3a") => {
                let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
                if bucket.is_empty() {
                    return Err(StoreError::BadUrl {
                        url: text.into(),
                        reason: "no bucket name (expected s3://bucket/prefix)".into(),
                    });
                }
                let store =
                    AmazonS3Builder::from_env().with_bucket_name(bucket).with_retry(retry_config()).build().map_err(
                        |e| StoreError::BadUrl {
                            url: text.into(),
                            reason: format!("{e} (check the AWS_* environment)"),
                        },
                    )?;
                let prefix = StorePath::parse(key.trim_end_matches('/'))
                    .map_err(|e| StoreError::BadUrl { url: text.into(), reason: e.to_string() })?;
                Ok(Self::at(Arc::new(store), format!("s3://{bucket}"), prefix))
            }
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("file") => {
                let decoded = url_decode(rest);
                if !decoded.starts_with('/') {
                    return Err(StoreError::BadUrl {
                        url: text.into(),
                        reason: "file:// URLs must be absolute (file:///path)".into(),
                    });
                }
                Self::local(std::path::Path::new(&decoded), text)
            }
            Some((scheme, _)) if is_scheme(scheme) => Err(StoreError::BadUrl {
                url: text.into(),
                reason: format!(
                    "unsupported scheme `{scheme}://`; use s3://bucket/prefix, file:///path or a plain path"
                ),
            }),
            _ => Self::local(std::path::Path::new(text), text),
        }
    }

    fn local(path: &std::path::Path, text: &str) -> Result<Self, StoreError> {
        let absolute =
            std::path::absolute(path).map_err(|e| StoreError::BadUrl { url: text.into(), reason: e.to_string() })?;
        let absolute = normalize(&absolute);
        let prefix = StorePath::from_absolute_path(&absolute)
            .map_err(|e| StoreError::BadUrl { url: text.into(), reason: e.to_string() })?;
        Ok(Self::at(Arc::new(LocalFileSystem::new()), "file://".into(), prefix))
    }

    fn at(store: Arc<dyn ObjectStore>, store_url: String, prefix: StorePath) -> Self {
        let url = format!("{store_url}/{prefix}").trim_end_matches('/').to_string();
        Self { store, store_url, prefix, url }
    }

    /// The folder `rel` (slash-separated) below this one.
    pub fn join(&self, rel: &str) -> Self {
        Self::at(self.store.clone(), self.store_url.clone(), self.path(rel))
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// The URL of the store this folder is on (`s3://bucket`, `file://`), under which a query
    /// engine registers [`Location::store`].
    pub fn store_url(&self) -> &str {
        &self.store_url
    }

    /// The URL of the object `rel` below this folder.
    pub fn url_of(&self, rel: &str) -> String {
        if rel.is_empty() {
            self.url.clone()
        } else {
            format!("{}/{}", self.url, rel.trim_matches('/'))
        }
    }

    pub fn is_local(&self) -> bool {
        self.store_url == "file://"
    }

    /// The local folder of a `file://` location.
    pub fn local_path(&self) -> Option<std::path::PathBuf> {
        self.is_local().then(|| std::path::PathBuf::from(format!("/{}", self.prefix)))
    }

    pub fn store(&self) -> Arc<dyn ObjectStore> {
        self.store.clone()
    }

    /// The store path of `rel` below this folder.
    pub fn path(&self, rel: &str) -> StorePath {
        rel.split('/').filter(|p| !p.is_empty()).fold(self.prefix.clone(), |p, part| p.clone().join(part))
    }

    /// The path of `full` relative to this folder (`a/b.parquet`).
    pub fn relative(&self, full: &StorePath) -> String {
        full.prefix_match(&self.prefix)
            .map(|parts| parts.map(|p| p.as_ref().to_string()).collect::<Vec<_>>().join("/"))
            .unwrap_or_else(|| full.to_string())
    }

    /// The bytes of the object `rel`.
    pub fn get(&self, rel: &str) -> Result<Bytes, StoreError> {
        let url = self.url_of(rel);
        block_on(async { self.store.get(&self.path(rel)).await?.bytes().await })
            .map_err(|e| StoreError::from_object_store(e, &url, StoreAction::Read))
    }

    /// The bytes of the object `rel`, or `None` if there is none (one request, not a HEAD and a
    /// GET).
    pub fn get_if_exists(&self, rel: &str) -> Result<Option<Bytes>, StoreError> {
        match self.get(rel) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(StoreError::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub fn get_range(&self, rel: &str, range: Range<u64>) -> Result<Bytes, StoreError> {
        let url = self.url_of(rel);
        block_on(self.store.get_range(&self.path(rel), range))
            .map_err(|e| StoreError::from_object_store(e, &url, StoreAction::Read))
    }

    /// Size and time of `rel`, or `None` if there is no such object.
    pub fn head(&self, rel: &str) -> Result<Option<ObjectMeta>, StoreError> {
        match block_on(self.store.head(&self.path(rel))) {
            Ok(meta) => Ok(Some(meta)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(StoreError::from_object_store(e, &self.url_of(rel), StoreAction::Inspect)),
        }
    }

    pub fn exists(&self, rel: &str) -> Result<bool, StoreError> {
        Ok(self.head(rel)?.is_some())
    }

    /// Every object below `rel` (recursively), sorted by path. A missing folder lists as empty
    /// on S3 and on disk alike.
    pub fn list(&self, rel: &str) -> Result<Vec<ObjectMeta>, StoreError> {
        let prefix = self.path(rel);
        let url = self.url_of(rel);
        let mut objects: Vec<ObjectMeta> =
            block_on(self.store.list(Some(&prefix)).try_collect::<Vec<_>>()).or_else(|e| match e {
                // A missing folder on disk; on S3 a missing prefix lists as empty and not-found
                // means a missing bucket.
                object_store::Error::NotFound { .. } if self.is_local() => Ok(Vec::new()),
                e => Err(StoreError::from_object_store(e, &url, StoreAction::List)),
            })?;
        objects.sort_by(|a, b| a.location.cmp(&b.location));
        Ok(objects)
    }

    /// The names of the folders directly below `rel`, sorted.
    pub fn list_dirs(&self, rel: &str) -> Result<Vec<String>, StoreError> {
        let prefix = self.path(rel);
        let url = self.url_of(rel);
        let listing = match block_on(self.store.list_with_delimiter(Some(&prefix))) {
            Ok(listing) => listing,
            Err(object_store::Error::NotFound { .. }) if self.is_local() => return Ok(Vec::new()),
            Err(e) => return Err(StoreError::from_object_store(e, &url, StoreAction::List)),
        };
        let mut names: Vec<String> =
            listing.common_prefixes.iter().filter_map(|p| p.filename().map(str::to_string)).collect();
        names.sort();
        Ok(names)
    }

    /// Writes `bytes` to `rel`, replacing what is there; atomic.
    pub fn put(&self, rel: &str, bytes: Bytes) -> Result<(), StoreError> {
        let url = self.url_of(rel);
        block_on(self.store.put(&self.path(rel), PutPayload::from(bytes)))
            .map(|_| ())
            .map_err(|e| StoreError::from_object_store(e, &url, StoreAction::Write))
    }

    /// Writes `bytes` to `rel` only if nothing is there; `Ok(false)` if something was.
    pub fn put_if_absent(&self, rel: &str, bytes: Bytes) -> Result<bool, StoreError> {
        let url = self.url_of(rel);
        let options = PutOptions { mode: PutMode::Create, ..PutOptions::default() };
        match block_on(self.store.put_opts(&self.path(rel), PutPayload::from(bytes), options)) {
            Ok(_) => Ok(true),
            Err(object_store::Error::AlreadyExists { .. }) | Err(object_store::Error::Precondition { .. }) => Ok(false),
            Err(e) => Err(StoreError::from_object_store(e, &url, StoreAction::Write)),
        }
    }

    /// Uploads the local file `source` to `rel`, atomically: one PUT for a small file, a
    /// multipart upload (parts of [`MULTIPART_PART_SIZE`], read from disk as they go) for a
    /// large one. An interrupted upload leaves no object behind.
    pub fn upload_file(&self, rel: &str, source: &std::path::Path) -> Result<u64, StoreError> {
        use std::io::Read;
        let url = self.url_of(rel);
        let io = |e: std::io::Error| StoreError::Local { path: source.to_path_buf(), source: e };
        let size = std::fs::metadata(source).map_err(io)?.len();
        if size as usize <= MULTIPART_PART_SIZE {
            let bytes = std::fs::read(source).map_err(io)?;
            self.put(rel, Bytes::from(bytes))?;
            return Ok(size);
        }
        let path = self.path(rel);
        let result: Result<(), StoreError> = block_on(async {
            let upload = self
                .store
                .put_multipart(&path)
                .await
                .map_err(|e| StoreError::from_object_store(e, &url, StoreAction::Write))?;
            let mut writer = WriteMultipart::new_with_chunk_size(upload, MULTIPART_PART_SIZE);
            let mut file = std::fs::File::open(source).map_err(io)?;
            let mut buffer = vec![0u8; MULTIPART_PART_SIZE];
            loop {
                let n = file.read(&mut buffer).map_err(io)?;
                if n == 0 {
                    break;
                }
                // At most two parts in flight: memory stays at a few parts whatever the file size.
                if let Err(e) = writer.wait_for_capacity(2).await {
                    return Err(StoreError::from_object_store(e, &url, StoreAction::Write));
                }
                writer.write(&buffer[..n]);
            }
            writer.finish().await.map(|_| ()).map_err(|e| StoreError::from_object_store(e, &url, StoreAction::Write))
        });
        result.map(|_| size)
    }

    pub fn delete(&self, rel: &str) -> Result<(), StoreError> {
        let url = self.url_of(rel);
        match block_on(self.store.delete(&self.path(rel))) {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(StoreError::from_object_store(e, &url, StoreAction::Delete)),
        }
    }

    /// Deletes every object below `rel`.
    pub fn delete_all(&self, rel: &str) -> Result<usize, StoreError> {
        let objects = self.list(rel)?;
        for object in &objects {
            let rel = self.relative(&object.location);
            self.delete(&rel)?;
        }
        Ok(objects.len())
    }

    /// Fails early, naming the URL and what to check, when the store cannot be reached or read
    /// (unreachable endpoint, missing bucket, denied access). A missing folder is fine.
    pub fn check_reachable(&self) -> Result<(), StoreError> {
        let url = self.url.clone();
        block_on(self.store.list_with_delimiter(Some(&self.prefix))).map(|_| ()).or_else(|e| match e {
            object_store::Error::NotFound { .. } if self.is_local() => Ok(()),
            e => Err(StoreError::from_object_store(e, &url, StoreAction::List)),
        })
    }
}

fn is_scheme(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
}

/// `a/./b/../c` → `a/c` without touching the disk (the folder may not exist yet).
fn normalize(path: &std::path::Path) -> std::path::PathBuf {
    use std::path::Component;
    let mut out = std::path::PathBuf::new();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

/// Percent-decoding of a `file://` URL path (invalid UTF-8 becomes U+FFFD).
fn url_decode(text: &str) -> String {
    percent_encoding::percent_decode_str(text).decode_utf8_lossy().into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_three_forms() {
        let dir = tempfile::tempdir().unwrap();
        let plain = Location::parse(dir.path().to_str().unwrap()).unwrap();
        let file = Location::parse(&format!("file://{}", dir.path().display())).unwrap();
        assert_eq!(plain.url(), file.url());
        assert_eq!(plain.local_path().unwrap(), dir.path());
        assert_eq!(plain.join("a/b").url(), format!("{}/a/b", plain.url()));
        let s3 = Location::parse("s3://bucket/some/prefix/").unwrap();
        assert_eq!(s3.url(), "s3://bucket/some/prefix");
        assert_eq!(s3.join("x").url_of("y.parquet"), "s3://bucket/some/prefix/x/y.parquet");
        assert_eq!(Location::parse("file:///tmp/a%20b").unwrap().url(), "file:///tmp/a b");
        for bad in ["gs://x/y", "s3:///nobucket", "file://relative/x", ""] {
            assert!(Location::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn local_round_trip_is_atomic_and_conditional() {
        let dir = tempfile::tempdir().unwrap();
        let location = Location::parse(dir.path().to_str().unwrap()).unwrap().join("out");
        assert!(location.list("").unwrap().is_empty(), "a missing folder lists as empty");
        location.put("a/x.json", Bytes::from_static(b"1")).unwrap();
        assert!(!location.put_if_absent("a/x.json", Bytes::from_static(b"2")).unwrap());
        assert_eq!(location.get("a/x.json").unwrap().as_ref(), b"1");
        let big = dir.path().join("big.bin");
        let content: Vec<u8> = (0..(MULTIPART_PART_SIZE * 2 + 123)).map(|i| (i * 7 % 251) as u8).collect();
        std::fs::write(&big, &content).unwrap();
        location.upload_file("a/big.bin", &big).unwrap();
        assert_eq!(location.get("a/big.bin").unwrap().as_ref(), content.as_slice());
        let names: Vec<String> = location.list("a").unwrap().iter().map(|o| location.relative(&o.location)).collect();
        assert_eq!(names, ["a/big.bin", "a/x.json"]);
        let err = location.get("a/missing").unwrap_err().to_string();
        assert!(err.contains("a/missing") && err.contains("does not exist"), "{err}");
        assert_eq!(location.delete_all("a").unwrap(), 2);
    }
}
