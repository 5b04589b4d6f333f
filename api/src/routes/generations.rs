//! Generations (`Authorization: Bearer <api key>`): submit, read, list, cancel.

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use gengate_shared::client_webhooks;
use gengate_shared::db;
use gengate_shared::generation::GenerationStatus;
use gengate_shared::generation::cancel::{self, CancelError};
use gengate_shared::generation::store;
use gengate_shared::generation::submit::{SubmitOutcome, SubmitRequest};
use gengate_shared::ids::GenerationId;
use gengate_shared::pagination::Cursor;
use serde::Deserialize;
use serde_json::Value;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::ApiUser;
use crate::error::{ApiError, FieldError, Result};
use crate::extract::{Json, Path, Query};
use crate::openapi::{IdempotencyKey, problems, schemas};
use crate::state::ApiContext;

/// The generation routes (each documented by its handler's `#[utoipa::path]`).
pub(crate) fn routes() -> OpenApiRouter<ApiContext> {
    OpenApiRouter::new()
        .routes(routes!(create, list))
        .routes(routes!(show))
        .routes(routes!(cancel_generation))
}

const IDEMPOTENCY_KEY: &str = "idempotency-key";

fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>> {
    let Some(value) = headers.get(IDEMPOTENCY_KEY) else { return Ok(None) };
    match value.to_str() {
        Ok(key)
            if (1..=255).contains(&key.len()) && key.bytes().all(|b| (0x20..0x7f).contains(&b)) =>
        {
            Ok(Some(key.to_owned()))
        }
        _ => Err(ApiError::Validation(vec![FieldError::new(
            "Idempotency-Key",
            "must be 1 to 255 printable ASCII characters",
        )])),
    }
}

/// Submit a generation.
///
/// Validates the request (every failing field at once), prices it, reserves its cost (prepaid
/// models) or holds it (postpaid models), and queues the job, in one transaction. The answer is
/// the generation in status `queued` with its `cost`. Unknown members are refused, not ignored.
/// A user may have a limited number of jobs queued or running at once (`429
/// too_many_in_flight`), and each API key a limited rate of requests (`429 rate_limited`).
#[utoipa::path(
    post,
    path = "/v1/generations",
    operation_id = "createGeneration",
    tag = "generations",
    security(("api_key" = [])),
    params(IdempotencyKey),
    request_body = schemas::CreateGenerationRequest,
    responses(
        (status = ACCEPTED, description = "Accepted and queued: the generation, in status \
            `queued` (or, for a replayed `Idempotency-Key`, as it was first answered).",
         body = schemas::Generation,
         headers(("Idempotent-Replayed" = String, description = "`true` when this is the \
            original answer to an earlier request with the same `Idempotency-Key`; nothing was \
            charged again. Absent otherwise.")),
         example = schemas::queued_generation_example),
        problems::CreateGeneration,
    ),
)]
async fn create(
    ApiUser(caller): ApiUser,
    State(ctx): State<ApiContext>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Result<Response> {
    let key = idempotency_key(&headers);
    let submission = ctx.catalogue.validate(&body);
    let webhook = client_webhooks::subscription(&body, &ctx.settings.client_webhooks);
    let (key, mut submission, webhook) = match (key, submission, webhook) {
        (Ok(key), Ok(submission), Ok(webhook)) => (key, submission, webhook),
        (key, submission, webhook) => {
            let mut errors = submission.err().unwrap_or_default();
            errors.extend(webhook.err().unwrap_or_default());
            if let Err(ApiError::Validation(key_errors)) = key {
                errors.extend(key_errors);
            }
            return Err(ApiError::Validation(errors));
        }
    };
    // The same key with another webhook is another request.
    submission.request_hash =
        client_webhooks::request_hash(submission.request_hash, webhook.as_ref());
    let request = SubmitRequest {
        user_id: caller.user_id,
        api_key_id: Some(caller.api_key_id),
        submission,
        idempotency_key: key,
        default_max_in_flight: ctx.settings.limits.default_max_in_flight,
        webhook,
    };
    let outcome = ctx.submits.submit(request).await?;
    let (view, replayed) = match outcome {
        SubmitOutcome::Created(view) => {
            ctx.relay.wake();
            tracing::info!(generation_id = %view.id, model = %view.model, cost = view.cost, "generation accepted");
            (view, false)
        }
        SubmitOutcome::Replayed(view) => (view, true),
    };
    let mut response = (StatusCode::ACCEPTED, axum::Json(view)).into_response();
    if replayed {
        response.headers_mut().insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    Ok(response)
}

/// Read a generation.
///
/// Links to stored result files are made now, and expire. Another user's generation is `404`.
#[utoipa::path(
    get,
    path = "/v1/generations/{id}",
    operation_id = "getGeneration",
    tag = "generations",
    security(("api_key" = [])),
    params(("id" = uuid::Uuid, Path, description = "The generation's id.")),
    responses(
        (status = OK, description = "The generation.", body = schemas::Generation),
        problems::ClientRead,
    ),
)]
async fn show(
    ApiUser(caller): ApiUser,
    State(ctx): State<ApiContext>,
    Path(id): Path<GenerationId>,
) -> Result<Response> {
    let view = store::view(&ctx.pool, id, Some(caller.user_id)).await?.ok_or(ApiError::NotFound)?;
    Ok(axum::Json(ctx.present(view).await?).into_response())
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct ListParams {
    /// Only generations in this status.
    #[param(value_type = Option<schemas::GenerationStatus>)]
    status: Option<String>,
    /// How many, 1–100 (default 20).
    #[param(minimum = 1, maximum = 100)]
    limit: Option<i64>,
    /// The `next_cursor` of the previous page.
    cursor: Option<String>,
}

/// List generations.
///
/// The caller's generations, newest first, a page at a time. A cursor the API did not hand out
/// is `422` (field `cursor`).
#[utoipa::path(
    get,
    path = "/v1/generations",
    operation_id = "listGenerations",
    tag = "generations",
    security(("api_key" = [])),
    params(ListParams),
    responses(
        (status = OK, description = "A page of generations.", body = schemas::GenerationPage),
        problems::ClientList,
    ),
)]
async fn list(
    ApiUser(caller): ApiUser,
    State(ctx): State<ApiContext>,
    Query(params): Query<ListParams>,
) -> Result<Response> {
    let mut errors = Vec::new();
    let status = params.status.as_deref().and_then(|s| {
        let status = s.parse::<GenerationStatus>().ok();
        if status.is_none() {
            errors.push(FieldError::new(
                "status",
                "one of queued, submitted, completed, failed, canceled",
            ));
        }
        status
    });
    let limit = params.limit.unwrap_or(20);
    if !(1..=100).contains(&limit) {
        errors.push(FieldError::new("limit", "must be between 1 and 100"));
    }
    let cursor = params.cursor.as_deref().and_then(|c| {
        let cursor = Cursor::decode(c);
        if cursor.is_none() {
            errors.push(FieldError::new("cursor", "is not a cursor this API handed out"));
        }
        cursor
    });
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    let mut page = store::list(&ctx.pool, caller.user_id, status, cursor, limit).await?;
    let mut presented = Vec::with_capacity(page.data.len());
    for view in page.data {
        presented.push(ctx.present(view).await?);
    }
    page.data = presented;
    Ok(axum::Json(page).into_response())
}

/// Cancel a generation.
///
/// A `queued` or `submitted` generation becomes `canceled`, and its credits come back at once.
/// One that already ended is `409 not_cancelable`.
#[utoipa::path(
    post,
    path = "/v1/generations/{id}/cancel",
    operation_id = "cancelGeneration",
    tag = "generations",
    security(("api_key" = [])),
    params(("id" = uuid::Uuid, Path, description = "The generation's id.")),
    responses(
        (status = OK, description = "Canceled: the generation, in status `canceled`.",
         body = schemas::Generation),
        problems::CancelGeneration,
    ),
)]
async fn cancel_generation(
    ApiUser(caller): ApiUser,
    State(ctx): State<ApiContext>,
    Path(id): Path<GenerationId>,
) -> Result<Response> {
    let owner = caller.user_id;
    let view =
        db::transaction!(&ctx.pool, CancelError, |tx| cancel::cancel(tx, id, owner).await?).await?;
    ctx.relay.wake();
    tracing::info!(generation_id = %id, "generation canceled by its owner");
    Ok(axum::Json(ctx.present(view).await?).into_response())
}
