//! One HTTP exchange with a provider: the client every adapter builds, sending a request and
//! reading its answer, and network failures turned into retryable errors.

use std::time::Duration;

use gengate_shared::config::ProviderLimits;
use gengate_shared::providers::ProviderError;

/// An answer, whatever its status: the adapter's wire module reads it.
#[derive(Debug)]
pub(super) struct Answer {
    pub(super) status: u16,
    pub(super) body: Vec<u8>,
    /// `Retry-After` in seconds, when the provider sent one.
    pub(super) retry_after: Option<Duration>,
}

impl Answer {
    /// Adds the provider's `Retry-After` to a retryable error that has none.
    pub(super) fn with_retry_after(&self, error: ProviderError) -> ProviderError {
        match error {
            ProviderError::Retryable { code, message, retry_after: None } => {
                ProviderError::Retryable { code, message, retry_after: self.retry_after }
            }
            other => other,
        }
    }
}

/// The HTTP side of one provider: a client with its timeout and no redirects (provider APIs do
/// not redirect, and following one could carry credentials somewhere unexpected), and the
/// largest answer it reads.
#[derive(Debug, Clone)]
pub(super) struct Transport {
    pub(super) http: reqwest::Client,
    max_response_bytes: usize,
}

impl Transport {
    pub(super) fn new(limits: &ProviderLimits) -> reqwest::Result<Self> {
        // reqwest panics when building a client without a TLS crypto provider; installing it
        // here (a no-op once done) keeps a forgotten start-up step from crashing the worker.
        gengate_shared::install_crypto_provider();
        let http = reqwest::Client::builder()
            .timeout(Duration::from_millis(limits.timeout_ms))
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("gengate/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self { http, max_response_bytes: limits.max_response_bytes })
    }

    /// Sends `request` and reads the answer, which may not be larger than the limit: a provider
    /// (or something posing as one) cannot make a worker buffer without bound.
    pub(super) async fn exchange(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<Answer, ProviderError> {
        let mut response = request.send().await.map_err(network_error)?;
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let limit = self.max_response_bytes;
        if response.content_length().is_some_and(|length| length > limit as u64) {
            return Err(too_large(limit));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(network_error)? {
            if body.len() + chunk.len() > limit {
                return Err(too_large(limit));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(Answer { status, body, retry_after })
    }
}

/// An answer past the size limit: not read further. Retryable, as other unreadable answers are
/// (a create can be found again by the generation id where the provider supports it).
fn too_large(limit: usize) -> ProviderError {
    ProviderError::Retryable {
        code: "response_too_large".to_owned(),
        message: format!("the provider's answer exceeds {limit} bytes; not read"),
        retry_after: None,
    }
}

/// Timeouts, refused connections and broken bodies: the request may or may not have arrived, and
/// trying again later is the only sensible answer.
fn network_error(error: reqwest::Error) -> ProviderError {
    let code = if error.is_timeout() {
        "timeout"
    } else if error.is_connect() {
        "connect"
    } else {
        "network"
    };
    // The URL holds nothing secret, but the request's own error is enough; its causes say why.
    let message = error_chain(&error.without_url());
    ProviderError::Retryable { code: code.to_owned(), message, retry_after: None }
}

/// An error and its causes, `: `-separated (`error sending request: connection refused`).
pub(crate) fn error_chain(error: &dyn std::error::Error) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}
