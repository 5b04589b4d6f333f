//! Provider ingress: webhooks and the server-to-server failure report.
//!
//! A webhook is accepted only when its token matches the generation's (compared in constant time;
//! an unknown generation and a wrong token get the same 401) and its job has not ended more than
//! the late-success window ago (401 as well), when it carries kie.ai's signature where a signing
//! key is configured (401), when its body parses with the generation's provider adapter (400),
//! and when every result URL is allowlisted and in normal form (400). An address past its
//! failed-authentication limit is answered 429 unless its token is right. A webhook that reports
//! a task still running changes only the job's progress (for the job's own task), here, with no
//! message: nothing moves on it. One that reports an ending changes nothing at ingress: it is
//! published to `gengate.events` with publisher confirms, and only then answered 200; a worker
//! then asks the provider itself before anything moves. If the broker does not confirm, the
//! answer is 503 and the provider retries later.

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use gengate_http::problem::Problem;
use gengate_shared::generation::{callback_token, failure, polling, report};
use gengate_shared::ids::GenerationId;
use gengate_shared::providers::{self, ProviderKind, TaskState, kie};
use gengate_shared::queue::payloads::{self, FailureCause, UpdateSource};
use gengate_shared::queue::{Envelope, Route};
use gengate_shared::validation::Text;
use secrecy::ExposeSecret;
use serde::Deserialize;
use serde_json::json;
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::{ClientAddress, Internal};
use crate::error::{ApiError, FieldError, Result};
use crate::extract::{Json, Path, Query};
use crate::openapi::{problems, schemas};
use crate::state::ApiContext;

/// The provider ingress routes (each documented by its handler's `#[utoipa::path]`).
pub(crate) fn routes(max_body_bytes: usize) -> OpenApiRouter<ApiContext> {
    OpenApiRouter::new()
        .routes(routes!(unified_webhook))
        .routes(routes!(kling_callback))
        .layer(DefaultBodyLimit::max(max_body_bytes))
}

/// The server-to-server routes (`Authorization: Bearer <internal token>`).
pub(crate) fn internal_routes() -> OpenApiRouter<ApiContext> {
    OpenApiRouter::new().routes(routes!(handle_failure))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct WebhookQuery {
    /// The generation the callback is about.
    #[param(required = true, value_type = Option<uuid::Uuid>)]
    generation_id: Option<String>,
    /// The generation's callback token.
    #[param(required = true)]
    token: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct TokenQuery {
    /// The generation's callback token.
    #[param(required = true)]
    token: Option<String>,
}

/// Receive a provider's callback.
///
/// kie.ai's callbacks (`{code, msg, data}`), and any provider's, taken as they are. `200
/// {"ok": true}` once the update is durably queued: a worker then asks the provider itself
/// before anything moves (a callback is a hint, never evidence). An unknown generation, a wrong
/// token, a token of a job that ended more than `worker.reconcile_window_ms` ago, or a kie.ai
/// callback without a valid `X-Webhook-Signature` (when `providers.kie.webhook_hmac_key` is set)
/// all get the same `401`. A body the generation's provider adapter cannot parse, or a result
/// URL off the allowlist or not in normal form, is `400`; nothing changes in either case. If the
/// update cannot be queued, `503 broker_unavailable`, and the provider retries.
#[utoipa::path(
    post,
    path = callback_token::WEBHOOK_PATH,
    operation_id = "receiveProviderCallback",
    tag = "provider-ingress",
    security(("webhook_token" = [])),
    params(WebhookQuery),
    request_body(content = serde_json::Value, description = "The provider's callback body, as \
        it sends it.", content_type = "application/json",
        example = json!({"code": 200, "msg": "success", "data": {
            "taskId": "task_0192f0c46a8e", "state": "success",
            "resultJson": "{\"resultUrls\":[\"https://files.provider.example/video.mp4\"]}"}})),
    responses(
        (status = OK, description = "Taken in.", body = schemas::CallbackAccepted),
        problems::ProviderCallback,
    ),
)]
async fn unified_webhook(
    State(ctx): State<ApiContext>,
    address: ClientAddress,
    Query(query): Query<WebhookQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response> {
    let id = query.generation_id.as_deref().and_then(|id| id.parse::<GenerationId>().ok());
    let caller = Caller { address, token: query.token.as_deref(), headers: &headers };
    ingest(&ctx, id, caller, &body).await
}

/// Receive a Kling callback.
///
/// Kling's callbacks (its bare task object, or its `{code, message, data}` wrapper), with the
/// generation in the path; otherwise as `POST /api/generation/webhook`.
#[utoipa::path(
    post,
    path = callback_token::KLING_CALLBACK_ROUTE,
    operation_id = "receiveKlingCallback",
    tag = "provider-ingress",
    security(("webhook_token" = [])),
    params(
        ("generation_id" = uuid::Uuid, Path, description = "The generation the callback is \
            about (the contract's `{task_id}`: the id gengate gave Kling in the callback URL)."),
        TokenQuery,
    ),
    request_body(content = serde_json::Value, description = "Kling's callback body, as it \
        sends it.", content_type = "application/json",
        example = json!({"task_id": "867283741759111202", "task_status": "succeed",
            "task_info": {"external_task_id": "0192f0c4-6a8e-7cc1-9d4e-1f2a3b4c5d6e"},
            "task_result": {"videos": [{"id": "v1", "duration": "5",
                "url": "https://files.provider.example/video.mp4"}]}})),
    responses(
        (status = OK, description = "Taken in.", body = schemas::CallbackAccepted),
        problems::ProviderCallback,
    ),
)]
async fn kling_callback(
    State(ctx): State<ApiContext>,
    address: ClientAddress,
    Path(generation_id): Path<String>,
    Query(query): Query<TokenQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response> {
    let caller = Caller { address, token: query.token.as_deref(), headers: &headers };
    ingest(&ctx, generation_id.parse().ok(), caller, &body).await
}

/// Who sent a webhook: from where, with which token, with which headers (kie's signature).
struct Caller<'a> {
    address: ClientAddress,
    token: Option<&'a str>,
    headers: &'a HeaderMap,
}

fn rejected(reason: &'static str) {
    metrics::counter!("gengate_webhooks_rejected_total", "reason" => reason).increment(1);
}

fn unauthorized(ctx: &ApiContext, address: ClientAddress) -> ApiError {
    rejected("unauthorized");
    address.refuse(ctx, "webhook_token", "webhook token")
}

async fn ingest(
    ctx: &ApiContext,
    id: Option<GenerationId>,
    caller: Caller<'_>,
    body: &[u8],
) -> Result<Response> {
    let address = caller.address;
    let (Some(id), Some(token)) = (id, caller.token) else {
        return Err(unauthorized(ctx, address));
    };
    // Past its failed-authentication limit, an address reaches the database only with a token
    // that is right (derived tokens can be checked in memory).
    if let Some(wait) = address.blocked(ctx)
        && !ctx.callback_keys.is_token_of(token, id)
    {
        rejected("throttled");
        return Err(ApiError::AuthThrottled(wait));
    }
    let target = ctx.webhook_targets.get(id).await.map_err(anyhow::Error::from)?;
    // Compare against something even when the generation is unknown, so both cases take as long.
    let stored = target.as_ref().map_or(&[0u8; 32][..], |t| &t.webhook_token_hash[..]);
    let matches = callback_token::token_matches(token, stored);
    let Some(target) = target.filter(|_| matches) else {
        return Err(unauthorized(ctx, address));
    };
    // A token outlives its job only by the late-success window; after that it opens nothing.
    let window = Duration::from_millis(ctx.settings.worker.reconcile_window_ms);
    if !target.token_alive(OffsetDateTime::now_utc(), window) {
        rejected("token_expired");
        tracing::info!(generation_id = %id, "webhook for a job that ended long ago refused");
        address.failed(ctx, "webhook_token");
        return Err(ApiError::Unauthorized("expired webhook token"));
    }
    let kind = target.provider;
    let update = providers::parse_callback(kind, body).map_err(|err| {
        rejected("unparsable");
        tracing::info!(generation_id = %id, error = %err, "webhook body not understood");
        ApiError::from(Problem::new(
            StatusCode::BAD_REQUEST,
            "unparsable_callback",
            "Unparsable callback",
            err.to_string(),
        ))
    })?;
    if kind == ProviderKind::Kie
        && let Some(key) = &ctx.settings.providers.kie.webhook_hmac_key
        && !kie_signature_valid(ctx, key.expose_secret(), &update.remote_task_id, caller.headers)
    {
        rejected("signature");
        tracing::info!(generation_id = %id, "kie webhook without a valid signature refused");
        address.failed(ctx, "webhook_signature");
        return Err(ApiError::Unauthorized("webhook signature"));
    }
    if let TaskState::Succeeded { files, .. } = &update.state
        && let Err((url, why)) = ctx.allowlist.check_all(files.iter().map(|f| f.url.as_str()))
    {
        rejected("result_url");
        let url = failure::outside_text(&url);
        tracing::warn!(generation_id = %id, url, %why, "webhook result URL refused");
        return Err(Problem::new(
            StatusCode::BAD_REQUEST,
            "result_url_rejected",
            "Result URL rejected",
            format!("result URL {why}"),
        )
        .into());
    }

    // A task still running ends nothing and moves no money: its progress is recorded here, and
    // the workers hear only of an ending (two messages fewer per job).
    match &update.state {
        TaskState::Queued | TaskState::Running { progress: None } => return Ok(accepted(kind)),
        TaskState::Running { progress: Some(progress) } => {
            polling::record_progress(&ctx.pool, id, &update.remote_task_id, *progress).await?;
            return Ok(accepted(kind));
        }
        TaskState::Unknown { status } => {
            tracing::warn!(generation_id = %id, status, "undocumented provider status in a webhook; treated as still running");
            metrics::counter!("gengate_provider_unknown_status_total", "provider" => kind.as_str(), "status" => status.clone()).increment(1);
            return Ok(accepted(kind));
        }
        TaskState::Failed { .. } | TaskState::Succeeded { .. } => {}
    }
    let event = payloads::ProviderUpdate {
        source: UpdateSource::Webhook,
        update,
        payload_digest: Some(hex::encode(Sha256::digest(body))),
    };
    match ctx.broker.send(&Envelope::of(id, &event), Route::Now).await {
        Ok(()) => Ok(accepted(kind)),
        Err(err) => {
            rejected("broker_unavailable");
            tracing::warn!(generation_id = %id, error = %err, "webhook not queued; asking the provider to retry");
            Err(Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "broker_unavailable",
                "Try again later",
                "the callback could not be queued; please retry",
            )
            .into())
        }
    }
}

/// The answer to a webhook that was taken in.
fn accepted(kind: ProviderKind) -> Response {
    metrics::counter!("gengate_webhooks_accepted_total", "provider" => kind.as_str()).increment(1);
    axum::Json(json!({"ok": true})).into_response()
}

/// Whether a kie webhook carries a signature of its task id by `key`, made within the configured
/// tolerance of now (kie signs `taskId.timestamp`, not the body: the token and the confirming
/// query still do the rest).
fn kie_signature_valid(ctx: &ApiContext, key: &str, task_id: &str, headers: &HeaderMap) -> bool {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let (Some(timestamp), Some(signature)) =
        (header(kie::TIMESTAMP_HEADER), header(kie::SIGNATURE_HEADER))
    else {
        return false;
    };
    let now = OffsetDateTime::now_utc().unix_timestamp();
    let tolerance = ctx.settings.webhook.signature_tolerance_secs;
    kie::webhook_timestamp_is_fresh(timestamp, now, tolerance)
        && kie::verify_webhook_signature(key, task_id, timestamp, signature)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FailureReport {
    generation_id: Option<String>,
    reason: Option<String>,
}

/// `POST /api/generation/handle-failure`: a trusted server (e.g. a polling job elsewhere) reports
/// that a generation failed. Queued through the outbox, so it is accepted even while the broker is
/// away, and applied by a worker like every other failure: idempotent, refunded once, and
/// overridden by a later success.
#[utoipa::path(
    post,
    path = "/api/generation/handle-failure",
    operation_id = "reportGenerationFailure",
    tag = "provider-ingress",
    summary = "Report a generation failed.",
    description = "A trusted server reports that a generation failed. The report is queued and \
        applied by a worker like every other failure: idempotent, refunded once; a success that \
        arrives later still completes the job (and charges it again). Unknown generation: `404`.",
    security(("internal_token" = [])),
    request_body = schemas::FailureReport,
    responses(
        (status = ACCEPTED, description = "Queued.", body = schemas::FailureReported),
        problems::ReportFailure,
    ),
)]
async fn handle_failure(
    _: Internal,
    State(ctx): State<ApiContext>,
    Json(report): Json<FailureReport>,
) -> Result<Response> {
    let mut errors = Vec::new();
    let id = match report.generation_id.as_deref().map(str::parse::<GenerationId>) {
        Some(Ok(id)) => Some(id),
        Some(Err(_)) => {
            errors.push(FieldError::new("generation_id", "must be a generation id"));
            None
        }
        None => {
            errors.push(FieldError::new("generation_id", "is required"));
            None
        }
    };
    let reason = report.reason.unwrap_or_default();
    if reason.trim().is_empty() || reason.len() > 1000 {
        errors.push(FieldError::new("reason", "is required (at most 1000 characters)"));
    }
    errors.extend(Text::Free.field_error("reason", &reason));
    let Some(id) = id.filter(|_| errors.is_empty()) else {
        return Err(ApiError::Validation(errors));
    };
    let failure = payloads::Failure {
        cause: FailureCause::HandleFailure,
        code: "polling_failed".into(),
        reason,
    };
    if !report::failure(&ctx.pool, id, &failure).await? {
        return Err(ApiError::NotFound);
    }
    ctx.relay.wake();
    tracing::info!(generation_id = %id, "failure reported; queued");
    Ok((StatusCode::ACCEPTED, axum::Json(json!({"ok": true, "generation_id": id}))).into_response())
}
