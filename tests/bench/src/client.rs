//! The HTTP side of the bench: timed requests to the API and the admin calls of setup.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE};
use serde::de::DeserializeOwned;
use serde_json::Value;

/// One answer, timed from just before the request was sent to the last byte of its body.
#[derive(Debug, Clone)]
pub struct Answer {
    /// HTTP status.
    pub status: u16,
    /// Request to complete body.
    pub latency: Duration,
    /// The body.
    pub body: Bytes,
}

impl Answer {
    /// The problem+json `code`, when the body is a problem.
    pub fn problem_code(&self) -> Option<String> {
        problem_code(&self.body)
    }

    /// The body as JSON.
    pub fn json<T: DeserializeOwned>(&self) -> anyhow::Result<T> {
        serde_json::from_slice(&self.body).with_context(|| {
            format!("unexpected body ({}): {}", self.status, String::from_utf8_lossy(&self.body))
        })
    }
}

/// The `code` field of a problem+json body.
pub fn problem_code(body: &[u8]) -> Option<String> {
    let value: Value = serde_json::from_slice(body).ok()?;
    value.get("code")?.as_str().map(str::to_owned)
}

/// A client of one gengate API, shared by every simulated client (connections are pooled).
#[derive(Debug, Clone)]
pub struct Api {
    http: reqwest::Client,
    base: Arc<str>,
}

impl Api {
    /// A client for `base` keeping up to `concurrency` idle connections.
    pub fn new(base: &str, concurrency: usize) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(concurrency.max(1))
            .tcp_nodelay(true)
            .timeout(Duration::from_secs(30))
            .build()
            .context("building the HTTP client")?;
        Ok(Self { http, base: base.trim_end_matches('/').into() })
    }

    /// The underlying client, for calls to other services (the simulator).
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// The API's base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    async fn timed(&self, request: reqwest::RequestBuilder) -> Result<Answer, reqwest::Error> {
        let start = Instant::now();
        let response = request.send().await?;
        let status = response.status().as_u16();
        let body = response.bytes().await?;
        Ok(Answer { status, latency: start.elapsed(), body })
    }

    /// `POST /v1/generations` with an already serialized body.
    pub async fn submit(&self, key: &str, body: Bytes) -> Result<Answer, reqwest::Error> {
        self.timed(
            self.http
                .post(format!("{}/v1/generations", self.base))
                .header(AUTHORIZATION, format!("Bearer {key}"))
                .header(CONTENT_TYPE, "application/json")
                .body(body),
        )
        .await
    }

    /// `GET {path}` as the holder of `key`.
    pub async fn get(&self, key: &str, path: &str) -> Result<Answer, reqwest::Error> {
        self.timed(
            self.http
                .get(format!("{}{path}", self.base))
                .header(AUTHORIZATION, format!("Bearer {key}")),
        )
        .await
    }

    /// `POST {path}` without a body as the holder of `key`.
    pub async fn post_empty(&self, key: &str, path: &str) -> Result<Answer, reqwest::Error> {
        self.timed(
            self.http
                .post(format!("{}{path}", self.base))
                .header(AUTHORIZATION, format!("Bearer {key}")),
        )
        .await
    }

    /// An admin `POST` that must succeed (2xx); the JSON answer.
    pub async fn admin_post(&self, token: &str, path: &str, body: &Value) -> anyhow::Result<Value> {
        let answer = self
            .timed(
                self.http
                    .post(format!("{}{path}", self.base))
                    .header(AUTHORIZATION, format!("Bearer {token}"))
                    .json(body),
            )
            .await
            .with_context(|| format!("POST {path}: no answer from {}", self.base))?;
        if !(200..300).contains(&answer.status) {
            anyhow::bail!(
                "POST {path} answered {}: {}",
                answer.status,
                String::from_utf8_lossy(&answer.body)
            );
        }
        answer.json()
    }
}
