//! Store errors that name the URL and say what to check.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{url}: not a usable location: {reason}")]
    BadUrl { url: String, reason: String },
    #[error("{url} does not exist (check the URL; on S3 also the bucket name)")]
    NotFound { url: String },
    #[error("access to {url} was denied ({detail}); check the credentials (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, or the service account's role) and the bucket policy")]
    Denied { url: String, detail: String },
    #[error("cannot reach the store of {url} ({detail}); check AWS_ENDPOINT / AWS_REGION and the network (for a plain-HTTP endpoint also AWS_ALLOW_HTTP=true)")]
    Unreachable { url: String, detail: String },
    #[error("the bucket of {url} does not exist ({detail}); create it or fix the URL")]
    NoBucket { url: String, detail: String },
    #[error("cannot {action} {url}: {detail}")]
    Other { url: String, action: StoreAction, detail: String },
    #[error("cannot use the local file {path}: {source}")]
    Local {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// What was being done when a store error happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreAction {
    Read,
    Inspect,
    List,
    Write,
    Delete,
}

impl std::fmt::Display for StoreAction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            StoreAction::Read => "read",
            StoreAction::Inspect => "inspect",
            StoreAction::List => "list",
            StoreAction::Write => "write",
            StoreAction::Delete => "delete",
        })
    }
}

impl StoreError {
    /// Classifies an `object_store` error by its kind, and for HTTP stores by the kind of the
    /// HTTP failure under it (never by its text).
    ///
    /// On S3 a listing answers 200 for a prefix that does not exist, so a listing that is *not
    /// found* means the bucket is missing (`NoSuchBucket`).
    pub fn from_object_store(error: object_store::Error, url: &str, action: StoreAction) -> Self {
        use object_store::client::HttpErrorKind;
        let url = url.to_string();
        let detail = short(&chain(&error));
        match &error {
            object_store::Error::NotFound { .. } if action == StoreAction::List => Self::NoBucket { url, detail },
            object_store::Error::NotFound { .. } => Self::NotFound { url },
            object_store::Error::PermissionDenied { .. } | object_store::Error::Unauthenticated { .. } => {
                Self::Denied { url, detail }
            }
            // object_store's S3 listing reports HTTP errors as `Generic` with the status only in its
            // message (its `RetryError` is private): S3's own error codes are the only signal left.
            object_store::Error::Generic { .. } if S3_DENIED.iter().any(|code| detail.contains(code)) => {
                Self::Denied { url, detail }
            }
            object_store::Error::Generic { .. } if detail.contains("NoSuchBucket") => Self::NoBucket { url, detail },
            _ => match http_error_kind(&error) {
                Some(
                    HttpErrorKind::Connect
                    | HttpErrorKind::Request
                    | HttpErrorKind::Timeout
                    | HttpErrorKind::Interrupted,
                ) => Self::Unreachable { url, detail },
                _ => Self::Other { url, action, detail },
            },
        }
    }

    /// Whether trying again later may succeed (network) rather than needing a fix.
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Unreachable { .. })
    }
}

/// S3 error codes (and the status line) of a request refused for its credentials or policy.
const S3_DENIED: [&str; 4] = ["AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "403 Forbidden"];

/// The kind of the HTTP failure in an error's source chain, if any.
fn http_error_kind(error: &(dyn std::error::Error + 'static)) -> Option<object_store::client::HttpErrorKind> {
    let mut current = Some(error);
    while let Some(e) = current {
        if let Some(http) = e.downcast_ref::<object_store::client::HttpError>() {
            return Some(http.kind());
        }
        current = e.source();
    }
    None
}

/// The error with its sources, one line.
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(s) = source {
        let s_text = s.to_string();
        if !text.contains(&s_text) {
            text.push_str(": ");
            text.push_str(&s_text);
        }
        source = s.source();
    }
    text
}

fn short(text: &str) -> String {
    const MAX: usize = 300;
    if text.len() <= MAX {
        return text.to_string();
    }
    let cut = (0..=MAX).rev().find(|&i| text.is_char_boundary(i)).unwrap_or(0);
    format!("{}…", &text[..cut])
}
