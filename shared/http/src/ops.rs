//! The operations endpoints both processes serve: `/healthz`, `/readyz` and `/metrics`.

use std::time::Duration;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use gengate_shared::db;
use gengate_shared::queue::Broker;
use gengate_shared::telemetry::PrometheusHandle;
use serde_json::json;
use sqlx::PgPool;

use crate::problem::Problem;

/// What `/readyz` checks.
#[derive(Clone, Debug)]
pub struct Readiness {
    /// PostgreSQL.
    pub pool: PgPool,
    /// RabbitMQ.
    pub broker: Broker,
}

impl Readiness {
    /// Checks every dependency; `Err` lists the failing ones with the reason.
    pub async fn check(&self) -> Result<(), Vec<(&'static str, String)>> {
        let mut failing = Vec::new();
        if let Err(reason) = db::ping(&self.pool, Duration::from_secs(2)).await {
            failing.push(("postgres", reason));
        }
        if !self.broker.is_connected() {
            failing.push(("rabbitmq", "not connected".to_owned()));
        }
        if failing.is_empty() { Ok(()) } else { Err(failing) }
    }
}

#[derive(Clone)]
struct OpsState {
    readiness: Readiness,
    metrics: PrometheusHandle,
}

/// `/healthz` (the process is alive), `/readyz` (its dependencies answer; 503 naming the failing
/// ones otherwise) and `/metrics` (Prometheus text).
pub fn router(readiness: Readiness, metrics: PrometheusHandle) -> Router {
    Router::new()
        .route("/metrics", get(render_metrics))
        .merge(probe_routes())
        .with_state(OpsState { readiness, metrics })
}

/// `/healthz` and `/readyz` alone, for a listener that must not show metrics (the API's public
/// one, which load balancers probe).
pub fn probes(readiness: Readiness, metrics: PrometheusHandle) -> Router {
    probe_routes().with_state(OpsState { readiness, metrics })
}

fn probe_routes() -> Router<OpsState> {
    Router::new()
        .route("/healthz", get(|| async { Json(json!({"status": "ok"})) }))
        .route("/readyz", get(readyz))
}

async fn readyz(State(state): State<OpsState>) -> Response {
    match state.readiness.check().await {
        Ok(()) => Json(json!({"status": "ready", "checks": {"postgres": "ok", "rabbitmq": "ok"}}))
            .into_response(),
        Err(failing) => {
            let names: Vec<&str> = failing.iter().map(|(name, _)| *name).collect();
            let checks: serde_json::Map<String, serde_json::Value> = ["postgres", "rabbitmq"]
                .into_iter()
                .map(|name| {
                    let state = failing
                        .iter()
                        .find(|(n, _)| *n == name)
                        .map_or_else(|| "ok".to_owned(), |(_, reason)| reason.clone());
                    (name.to_owned(), state.into())
                })
                .collect();
            Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "not_ready",
                "Not ready",
                format!("unavailable: {}", names.join(", ")),
            )
            .with("failing", names)
            .with("checks", checks)
            .into_response()
        }
    }
}

async fn render_metrics(State(state): State<OpsState>) -> Response {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], state.metrics.render()).into_response()
}
