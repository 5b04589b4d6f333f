//! The HTTP surface: one module per area, assembled here with the shared middleware.

mod admin;
mod credits;
mod files;
mod generations;
mod kling;
mod models;
mod notifications;
mod webhooks;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{HeaderName, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use gengate_http::ops::{self, Readiness};
use gengate_http::problem::Problem;
use tokio::sync::Semaphore;
use tower::ServiceBuilder;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;

use crate::error::ApiError;
use crate::openapi;
use crate::state::ApiContext;

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The public listener: clients, provider webhooks, `/healthz` and `/readyz`, and the admin and
/// internal routes unless `api.admin_on_ops_listener` moves them to the operations listener.
/// Requests past `api.max_in_flight_requests` are answered 503 at once.
pub fn router(ctx: ApiContext) -> Router {
    let readiness = Readiness { pool: ctx.pool.clone(), broker: ctx.broker.clone() };
    let probes = ops::probes(readiness, ctx.metrics.clone());
    let in_flight = Arc::new(Semaphore::new(ctx.settings.api.max_in_flight_requests));
    // One registration makes both the routes and the OpenAPI document that describes them (see
    // `crate::openapi`): every route is added with `routes!` on an `OpenApiRouter`.
    let document = openapi::Document::default();
    let mut app = OpenApiRouter::<ApiContext>::with_openapi(openapi::ApiDoc::openapi())
        .merge(credits::routes())
        .merge(files::routes())
        .merge(generations::routes())
        .merge(kling::routes())
        .merge(models::routes())
        .merge(notifications::routes())
        .merge(webhooks::routes(ctx.settings.webhook.max_body_bytes))
        .merge(openapi::routes(document.clone()));
    if !ctx.settings.api.admin_on_ops_listener {
        app = app.merge(operator_routes());
    }
    let (app, api) = app.split_for_parts();
    // The document also lists the probes merged below (`openapi::Document::publish`).
    document.publish(api);
    let app = app.fallback(|| async { ApiError::NotFound }).with_state(ctx.clone()).merge(probes);
    with_middleware(&ctx, app)
        .layer(middleware::from_fn_with_state(in_flight, shed_load))
        .layer(middleware::from_fn(record_duration))
}

/// The operations listener (`api.ops_listen`, loopback by default): `/metrics`, `/healthz`,
/// `/readyz`, and the admin and internal routes when `api.admin_on_ops_listener` is set.
pub fn ops_router(ctx: ApiContext) -> Router {
    let readiness = Readiness { pool: ctx.pool.clone(), broker: ctx.broker.clone() };
    let ops = ops::router(readiness, ctx.metrics.clone());
    let mut app = Router::<ApiContext>::new();
    if ctx.settings.api.admin_on_ops_listener {
        app = app.merge(Router::from(operator_routes()));
    }
    let app = app.fallback(|| async { ApiError::NotFound }).with_state(ctx.clone()).merge(ops);
    with_middleware(&ctx, app).layer(middleware::from_fn(record_duration))
}

/// What only operators and trusted servers call: the admin API and the failure report.
fn operator_routes() -> OpenApiRouter<ApiContext> {
    OpenApiRouter::new()
        .merge(admin::routes())
        .merge(notifications::admin_routes())
        .merge(webhooks::internal_routes())
}

fn with_middleware(ctx: &ApiContext, app: Router) -> Router {
    let timeout = Duration::from_millis(ctx.settings.api.request_timeout_ms);
    app.layer(middleware::from_fn(problem_for_bare_errors))
        .layer(DefaultBodyLimit::max(ctx.settings.api.body_limit_bytes))
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

/// Records `gengate_http_request_duration_seconds{method, route, status}`: the time to the
/// response's head (a streamed body is not waited for), outermost so that timeouts and shed
/// requests count too. `route` is the matched template (`/v1/generations/{id}`), `unmatched` when
/// no route matched: never the raw path, so the number of series stays bounded whatever clients
/// send.
async fn record_duration(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = method_label(request.method());
    let route = request.extensions().get::<MatchedPath>().map(|path| path.as_str().to_owned());
    let response = next.run(request).await;
    metrics::histogram!(
        "gengate_http_request_duration_seconds",
        "method" => method,
        "route" => route.unwrap_or_else(|| "unmatched".to_owned()),
        "status" => response.status().as_str().to_owned()
    )
    .record(started.elapsed().as_secs_f64());
    response
}

/// The standard methods by name; any other (a client may send any token) as `other`.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

/// Answers 503 `overloaded` at once when the public listener already handles as many requests as
/// it may, rather than queueing without bound (and letting every request time out).
async fn shed_load(
    State(in_flight): State<Arc<Semaphore>>,
    request: Request,
    next: Next,
) -> Response {
    let Ok(_permit) = in_flight.try_acquire_owned() else {
        metrics::counter!("gengate_requests_shed_total").increment(1);
        let mut response = Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "overloaded",
            "Overloaded",
            "the service is handling as many requests as it can; retry shortly",
        )
        .into_response();
        response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(1));
        return response;
    };
    next.run(request).await
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
