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
    Other { url: String, action: &'static str, detail: String },
    #[error("cannot use the local file {path}: {source}")]
    Local {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl StoreError {
    pub fn from_object_store(error: object_store::Error, url: &str, action: &'static str) -> Self {
        let url = url.to_string();
        let detail = chain(&error);
        match error {
            _ if detail.contains("NoSuchBucket") => Self::NoBucket { url, detail: short(&detail) },
            object_store::Error::NotFound { .. } => Self::NotFound { url },
            object_store::Error::PermissionDenied { .. } | object_store::Error::Unauthenticated { .. } => {
                Self::Denied { url, detail: short(&detail) }
            }
            _ if ["AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "403 Forbidden"]
                .iter()
                .any(|k| detail.contains(k)) =>
            {
                Self::Denied { url, detail: short(&detail) }
            }
            _ if ["error sending request", "connect", "dns error", "timed out", "Connection refused"]
                .iter()
                .any(|k| detail.contains(k)) =>
            {
                Self::Unreachable { url, detail: short(&detail) }
            }
            _ => Self::Other { url, action, detail },
        }
    }

    /// Whether trying again later may succeed (network, throttling) rather than needing a fix.
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Unreachable { .. })
            || matches!(self, Self::Other { detail, .. } if detail.contains("503") || detail.contains("SlowDown"))
    }
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
