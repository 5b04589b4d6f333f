//! A client's webhook endpoint: a real HTTP server on 127.0.0.1 that records every delivery it
//! receives and answers as the test scripts it (a status, a delay past the sender's timeout, a
//! request held open until the test lets it go), then 204 to everything else.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::Value;
use tokio::sync::Notify;

/// How the receiver answers one delivery.
#[derive(Debug, Clone)]
pub enum Reply {
    /// This status, at once.
    Status(u16),
    /// 204, after this long (past the sender's timeout, it never sees it).
    After(Duration),
    /// Nothing until [`Receiver::release`] (or the sender gives up or dies).
    Hold,
    /// `302 Found` to this URL.
    Redirect(String),
}

/// A delivery as it arrived.
#[derive(Debug, Clone)]
pub struct Received {
    /// The path it was sent to.
    pub path: String,
    /// Every header.
    pub headers: HeaderMap,
    /// The exact body.
    pub body: Bytes,
}

impl Received {
    /// A header's value.
    pub fn header(&self, name: &str) -> &str {
        self.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default()
    }

    /// `webhook-id`.
    pub fn id(&self) -> &str {
        self.header("webhook-id")
    }

    /// The body as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("a JSON delivery")
    }
}

#[derive(Debug, Default)]
struct Inner {
    script: Vec<Reply>,
    received: Vec<Received>,
}

/// The running receiver; stops when dropped.
#[derive(Debug, Clone)]
pub struct Receiver {
    url: String,
    inner: Arc<Mutex<Inner>>,
    release: Arc<Notify>,
    stop: Arc<Notify>,
}

impl Receiver {
    /// Starts a receiver answering 204 to everything.
    pub async fn start() -> Self {
        Self::scripted(Vec::new()).await
    }

    /// Starts a receiver that answers the first deliveries as `script` says, in order.
    pub async fn scripted(script: Vec<Reply>) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("an address"));
        let receiver = Self {
            url,
            inner: Arc::new(Mutex::new(Inner { script, received: Vec::new() })),
            release: Arc::new(Notify::new()),
            stop: Arc::new(Notify::new()),
        };
        let app = Router::new().route("/{*path}", post(receive)).with_state(receiver.clone());
        let stop = receiver.stop.clone();
        tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move { stop.notified().await })
                .await
                .ok();
        });
        receiver
    }

    /// `http://127.0.0.1:PORT{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.url)
    }

    /// Everything received so far, in order of arrival.
    pub fn received(&self) -> Vec<Received> {
        self.inner.lock().expect("receiver lock").received.clone()
    }

    /// Lets held requests answer (204).
    pub fn release(&self) {
        self.release.notify_waiters();
    }

    /// Stops the server.
    pub fn stop(&self) {
        self.stop.notify_waiters();
    }

    /// Waits until at least `n` deliveries arrived (panics after `timeout`); returns them.
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> Vec<Received> {
        super::eventually(&format!("{n} webhook deliveries"), timeout, || async {
            let received = self.received();
            (received.len() >= n).then_some(received)
        })
        .await
    }
}

async fn receive(
    State(receiver): State<Receiver>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let reply = {
        let mut inner = receiver.inner.lock().expect("receiver lock");
        inner.received.push(Received { path: uri.path().to_owned(), headers, body });
        if inner.script.is_empty() { None } else { Some(inner.script.remove(0)) }
    };
    match reply {
        None => StatusCode::NO_CONTENT.into_response(),
        Some(Reply::Status(code)) => {
            StatusCode::from_u16(code).expect("a status code").into_response()
        }
        Some(Reply::After(delay)) => {
            tokio::time::sleep(delay).await;
            StatusCode::NO_CONTENT.into_response()
        }
        Some(Reply::Hold) => {
            receiver.release.notified().await;
            StatusCode::NO_CONTENT.into_response()
        }
        Some(Reply::Redirect(to)) => {
            (StatusCode::FOUND, [(axum::http::header::LOCATION, to)]).into_response()
        }
    }
}
