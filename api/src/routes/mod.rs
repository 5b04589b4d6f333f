//! The HTTP surface: one module per area, assembled here with the shared middleware.

mod admin;
mod credits;
mod generations;
mod models;
mod webhooks;

use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Request};
use axum::http::{HeaderName, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use gengate_shared::ops::{self, Readiness};
use gengate_shared::problem::Problem;
use tower::ServiceBuilder;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

use crate::error::ApiError;
use crate::state::ApiContext;

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The whole application with its middleware.
pub fn router(ctx: ApiContext) -> Router {
    let readiness = Readiness { pool: ctx.pool.clone(), broker: ctx.broker.clone() };
    let timeout = Duration::from_millis(ctx.settings.api.request_timeout_ms);
    let body_limit = ctx.settings.api.body_limit_bytes;
    let metrics = ctx.metrics.clone();
    Router::<ApiContext>::new()
        .merge(admin::routes())
        .merge(credits::routes())
        .merge(generations::routes())
        .merge(models::routes())
        .merge(webhooks::routes(ctx.settings.webhook.max_body_bytes))
        .fallback(|| async { ApiError::NotFound })
        .with_state(ctx)
        .merge(ops::router(readiness, metrics))
        .layer(middleware::from_fn(problem_for_bare_errors))
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(
            ServiceBuilder::new()
                .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
                .layer(TraceLayer::new_for_http().make_span_with(|request: &Request<Body>| {
                    let id = request
                        .headers()
                        .get(REQUEST_ID)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default();
                    // The path only: query strings carry webhook tokens.
                    tracing::info_span!("http", method = %request.method(), path = %request.uri().path(), request_id = %id)
                }))
                .layer(TimeoutLayer::with_status_code(StatusCode::REQUEST_TIMEOUT, timeout))
                .layer(PropagateRequestIdLayer::new(REQUEST_ID)),
        )
}

/// Middleware and extractors outside our handlers (timeouts, method mismatches, body limits)
/// answer with an empty or plain-text body; give those the same problem+json shape as everything
/// else.
async fn problem_for_bare_errors(request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    let status = response.status();
    let is_json =
        response.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(
            |v| v.starts_with("application/json") || v.starts_with("application/problem+json"),
        );
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let (code, title) = match status {
        StatusCode::METHOD_NOT_ALLOWED => ("method_not_allowed", "Method not allowed"),
        StatusCode::REQUEST_TIMEOUT => ("timeout", "Request timeout"),
        StatusCode::PAYLOAD_TOO_LARGE => ("payload_too_large", "Payload too large"),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => ("unsupported_media_type", "Unsupported media type"),
        _ => ("error", "Error"),
    };
    let (mut parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, 2048).await.unwrap_or_default();
    let detail = match std::str::from_utf8(&text) {
        Ok(text) if !text.trim().is_empty() => text.trim().to_owned(),
        _ => status.canonical_reason().unwrap_or("error").to_owned(),
    };
    let problem = Problem::new(status, code, title, detail).into_response();
    parts.headers.remove(header::CONTENT_LENGTH);
    for (name, value) in problem.headers() {
        parts.headers.insert(name, value.clone());
    }
    Response::from_parts(parts, problem.into_body())
}
