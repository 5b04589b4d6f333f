//! Downloading a result file from where the provider serves it: only from URLs that pass the
//! result allowlist (redirects included), never more than `archive.max_file_bytes`, with connect
//! and read timeouts, streamed to a file so that memory stays flat whatever the file's size.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use gengate_shared::allowlist::ResultAllowlist;
use gengate_shared::config::ArchiveSettings;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use super::CopyError;
use crate::providers::error_chain;

/// A file on disk, with what was learnt while downloading it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched {
    /// Bytes written.
    pub size_bytes: u64,
    /// SHA-256 of them.
    pub sha256: [u8; 32],
    /// The `Content-Type` the source gave, if any.
    pub content_type: Option<String>,
}

/// The HTTP client downloads go through.
#[derive(Debug, Clone)]
pub struct Fetcher {
    http: reqwest::Client,
    allowlist: Arc<ResultAllowlist>,
    max_bytes: u64,
}

/// Redirects followed at most (each to an allowlisted URL).
const MAX_REDIRECTS: usize = 5;

impl Fetcher {
    /// A fetcher with the archive settings' limits, fetching only what `allowlist` allows.
    pub fn new(
        settings: &ArchiveSettings,
        allowlist: Arc<ResultAllowlist>,
    ) -> reqwest::Result<Self> {
        gengate_shared::install_crypto_provider();
        let hops = allowlist.clone();
        let redirects = reqwest::redirect::Policy::custom(move |attempt| {
            if attempt.previous().len() >= MAX_REDIRECTS {
                attempt.error("too many redirects")
            } else if let Err(why) = hops.check(attempt.url().as_str()) {
                attempt.error(format!("a redirect to a URL that {why}"))
            } else {
                attempt.follow()
            }
        });
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_millis(settings.connect_timeout_ms))
            .read_timeout(Duration::from_millis(settings.read_timeout_ms))
            .redirect(redirects)
            .user_agent(concat!("gengate/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self { http, allowlist, max_bytes: settings.max_file_bytes })
    }

    /// Downloads `url` into `dest` (created or truncated).
    pub async fn fetch(&self, url: &str, dest: &Path) -> Result<Fetched, CopyError> {
        if let Err(why) = self.allowlist.check(url) {
            return Err(CopyError::Permanent {
                reason: "source_refused",
                detail: format!("the source URL {why}"),
            });
        }
        let mut response = self.http.get(url).send().await.map_err(send_error)?;
        let status = response.status();
        if !status.is_success() {
            return Err(status_error(status));
        }
        if response.content_length().is_some_and(|length| length > self.max_bytes) {
            return Err(self.too_large());
        }
        let content_type = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let io = |err: std::io::Error| CopyError::Retryable(format!("writing the file: {err}"));
        let mut file = tokio::fs::File::create(dest).await.map_err(io)?;
        let mut hasher = Sha256::new();
        let mut size = 0u64;
        while let Some(chunk) = response.chunk().await.map_err(send_error)? {
            size += chunk.len() as u64;
            if size > self.max_bytes {
                return Err(self.too_large());
            }
            hasher.update(&chunk);
            file.write_all(&chunk).await.map_err(io)?;
        }
        file.flush().await.map_err(io)?;
        Ok(Fetched { size_bytes: size, sha256: hasher.finalize().into(), content_type })
    }

    fn too_large(&self) -> CopyError {
        CopyError::Permanent {
            reason: "too_large",
            detail: format!("larger than archive.max_file_bytes ({} bytes)", self.max_bytes),
        }
    }
}

fn status_error(status: reqwest::StatusCode) -> CopyError {
    let detail = format!("the source answered HTTP {}", status.as_u16());
    match status.as_u16() {
        404 | 410 => CopyError::Permanent { reason: "source_gone", detail },
        408 | 425 | 429 | 500..=599 => CopyError::Retryable(detail),
        _ => CopyError::Permanent { reason: "source_refused", detail },
    }
}

fn send_error(err: reqwest::Error) -> CopyError {
    if err.is_redirect() {
        return CopyError::Permanent {
            reason: "redirect_refused",
            detail: error_chain(&err.without_url()),
        };
    }
    let what = if err.is_timeout() { "timed out" } else { "could not be read" };
    CopyError::Retryable(format!("the source {what}: {}", error_chain(&err.without_url())))
}
