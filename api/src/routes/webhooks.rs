//! Provider ingress: webhooks and the server-to-server failure report.
//!
//! A webhook is accepted only when its token matches the generation's (compared in constant time;
//! an unknown generation and a wrong token get the same 401), its body parses with the
//! generation's provider adapter (400 otherwise), and every result URL is allowlisted (400
//! otherwise). Nothing changes at ingress: an accepted webhook is published to `gengate.events`
//! with publisher confirms, and only then answered 200. If the broker does not confirm, the answer
//! is 503 and the provider retries later.

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use gengate_shared::db;
use gengate_shared::generation::callback_token;
use gengate_shared::ids::GenerationId;
use gengate_shared::outbox;
use gengate_shared::problem::Problem;
use gengate_shared::providers::{self, ProviderKind, TaskState};
use gengate_shared::queue::envelope::payloads;
use gengate_shared::queue::{Envelope, MessageKind, Outgoing};
use serde::Deserialize;
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::auth::Internal;
use crate::error::{ApiError, FieldError, Result};
use crate::extract::{Json, Path, Query};
use crate::state::ApiContext;

/// The ingress routes.
pub fn routes(max_body_bytes: usize) -> Router<ApiContext> {
    Router::new()
        .route("/api/generation/webhook", post(unified_webhook))
        .route("/kling/callback/{generation_id}", post(kling_callback))
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .route("/api/generation/handle-failure", post(handle_failure))
}

#[derive(Debug, Deserialize)]
struct WebhookQuery {
    generation_id: Option<String>,
    token: Option<String>,
}

#[derive(Debug, Deserialize)]
struct TokenQuery {
    token: Option<String>,
}

async fn unified_webhook(
    State(ctx): State<ApiContext>,
    Query(query): Query<WebhookQuery>,
    body: Bytes,
) -> Result<Response> {
    let id = query.generation_id.as_deref().and_then(|id| id.parse::<GenerationId>().ok());
    ingest(&ctx, id, query.token.as_deref(), &body).await
}

async fn kling_callback(
    State(ctx): State<ApiContext>,
    Path(generation_id): Path<String>,
    Query(query): Query<TokenQuery>,
    body: Bytes,
) -> Result<Response> {
    ingest(&ctx, generation_id.parse().ok(), query.token.as_deref(), &body).await
}

fn rejected(reason: &'static str) {
    metrics::counter!("gengate_webhooks_rejected_total", "reason" => reason).increment(1);
}

fn unauthorized() -> ApiError {
    rejected("unauthorized");
    ApiError::Unauthorized("webhook token")
}

async fn ingest(
    ctx: &ApiContext,
    id: Option<GenerationId>,
    token: Option<&str>,
    body: &[u8],
) -> Result<Response> {
    let (Some(id), Some(token)) = (id, token) else { return Err(unauthorized()) };
    let row: Option<(String, Vec<u8>)> =
        sqlx::query_as("SELECT provider, webhook_token_hash FROM generations WHERE id = $1")
            .bind(id)
            .fetch_optional(&ctx.pool)
            .await?;
    // Compare against something even when the generation is unknown, so both cases take as long.
    let (provider, stored) = row.unwrap_or_else(|| (String::new(), vec![0u8; 32]));
    if !callback_token::token_matches(token, &stored) || provider.is_empty() {
        return Err(unauthorized());
    }
    let kind = ProviderKind::parse(&provider)
        .ok_or_else(|| anyhow::anyhow!("unknown provider {provider}"))?;
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
    if let TaskState::Succeeded { files, .. } = &update.state
        && let Err((url, why)) = ctx.allowlist.check_all(files.iter().map(|f| f.url.as_str()))
    {
        rejected("result_url");
        tracing::warn!(generation_id = %id, url, %why, "webhook result URL refused");
        return Err(Problem::new(
            StatusCode::BAD_REQUEST,
            "result_url_rejected",
            "Result URL rejected",
            format!("result URL {why}"),
        )
        .into());
    }

    let event = payloads::ProviderUpdate {
        source: "webhook".into(),
        update,
        payload_digest: Some(hex::encode(Sha256::digest(body))),
    };
    let envelope = Envelope::new(
        MessageKind::ProviderUpdate,
        id,
        serde_json::to_value(&event).expect("serializes"),
    );
    let bytes = envelope.to_bytes();
    let published = ctx
        .broker
        .publish(Outgoing {
            exchange: &ctx.broker.topology().exchange(),
            routing_key: envelope.kind.routing_key(),
            body: &bytes,
            message_id: Some(envelope.message_id.to_string()),
            headers: Default::default(),
        })
        .await;
    match published {
        Ok(()) => {
            metrics::counter!("gengate_webhooks_accepted_total", "provider" => provider)
                .increment(1);
            Ok(axum::Json(json!({"ok": true})).into_response())
        }
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
    let Some(id) = id.filter(|_| errors.is_empty()) else {
        return Err(ApiError::Validation(errors));
    };
    let failure =
        payloads::Failure { cause: "handle_failure".into(), code: "polling_failed".into(), reason };
    let envelope = Envelope::new(
        MessageKind::Failure,
        id,
        serde_json::to_value(&failure).expect("serializes"),
    );
    let queued = db::transaction!(&ctx.pool, ApiError, |tx| {
        let exists: bool =
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM generations WHERE id = $1)")
                .bind(id)
                .fetch_one(&mut **tx)
                .await?;
        if exists {
            outbox::enqueue(tx, &envelope).await?;
        }
        exists
    })
    .await?;
    if !queued {
        return Err(ApiError::NotFound);
    }
    ctx.relay.wake();
    tracing::info!(generation_id = %id, "failure reported; queued");
    Ok((StatusCode::ACCEPTED, axum::Json(json!({"ok": true, "generation_id": id}))).into_response())
}
