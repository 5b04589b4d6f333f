//! Webhooks to clients (see `gengate_shared::client_webhooks`): a client reads and rotates its
//! signing secret, sees its default endpoints and each generation's delivery log; operators
//! register default endpoints, and inspect and redeliver deliveries.

use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use gengate_http::problem::Problem;
use gengate_shared::client_webhooks::deliveries::{self, DeliveryStatus, Filter};
use gengate_shared::client_webhooks::endpoints::{self, EndpointError, NewEndpoint};
use gengate_shared::client_webhooks::secrets::{self, Owner, SecretRow};
use gengate_shared::client_webhooks::{Event, address};
use gengate_shared::db;
use gengate_shared::ids::{ApiKeyId, GenerationId, UserId};
use gengate_shared::validation::Text;
use serde::{Deserialize, Serialize};
use serde_json::json;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::auth::{Admin, ApiUser};
use crate::error::{ApiError, FieldError, Result};
use crate::extract::{Json, Path, Query};
use crate::state::ApiContext;

/// The client routes.
pub(crate) fn routes() -> Router<ApiContext> {
    Router::new()
        .route("/v1/webhooks/secret", get(show_secret))
        .route("/v1/webhooks/secret/rotate", post(rotate_secret))
        .route("/v1/webhooks/endpoints", get(own_endpoints))
        .route("/v1/generations/{id}/deliveries", get(generation_deliveries))
}

/// The operator routes.
pub(crate) fn admin_routes() -> Router<ApiContext> {
    Router::new()
        .route("/admin/users/{id}/webhook-endpoints", post(create_endpoint).get(user_endpoints))
        .route("/admin/webhook-endpoints/{id}/disable", post(disable_endpoint))
        .route("/admin/webhook-endpoints/{id}/rotate-secret", post(rotate_endpoint_secret))
        .route("/admin/webhook-deliveries", get(list_deliveries))
        .route("/admin/webhook-deliveries/{id}", get(show_delivery))
        .route("/admin/webhook-deliveries/{id}/redeliver", post(redeliver))
}

/// A signing secret as its owner is shown it.
#[derive(Debug, Serialize)]
struct SecretView {
    /// `whsec_…`: what a Standard Webhooks verifier takes.
    secret: String,
    #[serde(with = "time::serde::rfc3339")]
    created_at: OffsetDateTime,
    /// Until when the secret it replaced still signs (after a rotation).
    #[serde(with = "time::serde::rfc3339::option")]
    previous_retires_at: Option<OffsetDateTime>,
}

fn secret_view(
    ctx: &ApiContext,
    row: &SecretRow,
    previous_retires_at: Option<OffsetDateTime>,
) -> Result<SecretView> {
    let secret = row.secret(&ctx.callback_keys).ok_or_else(|| {
        ApiError::Internal(anyhow::anyhow!(
            "webhook secret {} is derived from key version {}, which is not configured",
            row.id,
            row.key_version
        ))
    })?;
    Ok(SecretView { secret: secret.reveal(), created_at: row.created_at, previous_retires_at })
}

/// When the secret a rotation replaced retires (the latest still signing besides the current).
async fn retiring(ctx: &ApiContext, owner: Owner) -> Result<Option<OffsetDateTime>> {
    let rows = secrets::signing(&ctx.pool, owner).await?;
    Ok(rows.iter().filter_map(|row| row.retires_at).max())
}

/// `GET /v1/webhooks/secret`: the caller's signing secret (made on first read).
async fn show_secret(ApiUser(caller): ApiUser, State(ctx): State<ApiContext>) -> Result<Response> {
    let owner = Owner::User(caller.user_id);
    let keys = ctx.callback_keys.clone();
    let row = db::transaction!(&ctx.pool, ApiError, |tx| secrets::current(tx, owner, &keys)
        .await?)
    .await?;
    let previous = retiring(&ctx, owner).await?;
    Ok(axum::Json(secret_view(&ctx, &row, previous)?).into_response())
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Rotate {
    /// How long the current secret keeps signing (default `client_webhooks.secret_grace_ms`).
    grace_seconds: Option<u64>,
}

/// Reads an optional JSON body (a rotation needs none).
fn optional_body<T: Default + serde::de::DeserializeOwned>(body: &[u8]) -> Result<T> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(body)
        .map_err(|err| ApiError::Validation(vec![FieldError::new("body", err.to_string())]))
}

/// The grace period a rotation asks for, at most 30 days.
fn grace(ctx: &ApiContext, body: &Rotate) -> Result<Duration> {
    match body.grace_seconds {
        None => Ok(Duration::from_millis(ctx.settings.client_webhooks.secret_grace_ms)),
        Some(secs) if secs <= 30 * 86_400 => Ok(Duration::from_secs(secs)),
        Some(_) => Err(ApiError::Validation(vec![FieldError::new(
            "grace_seconds",
            "must be at most 2592000 (30 days)",
        )])),
    }
}

/// `POST /v1/webhooks/secret/rotate`: a new secret; the old one signs beside it until its grace
/// period ends.
async fn rotate_secret(
    ApiUser(caller): ApiUser,
    State(ctx): State<ApiContext>,
    body: axum::body::Bytes,
) -> Result<Response> {
    let body: Rotate = optional_body(&body)?;
    let grace = grace(&ctx, &body)?;
    let owner = Owner::User(caller.user_id);
    let keys = ctx.callback_keys.clone();
    let (row, retires) =
        db::transaction!(&ctx.pool, ApiError, |tx| secrets::rotate(tx, owner, &keys, grace)
            .await?)
        .await?;
    tracing::info!(user_id = %caller.user_id, "webhook signing secret rotated");
    Ok(axum::Json(secret_view(&ctx, &row, retires)?).into_response())
}

/// `GET /v1/webhooks/endpoints`: the caller's default endpoints, live and disabled (with why).
async fn own_endpoints(
    ApiUser(caller): ApiUser,
    State(ctx): State<ApiContext>,
) -> Result<Response> {
    let data = endpoints::of_user(&ctx.pool, caller.user_id).await?;
    Ok(axum::Json(json!({"data": data})).into_response())
}

/// `GET /v1/generations/{id}/deliveries`: the delivery log of one of the caller's generations.
async fn generation_deliveries(
    ApiUser(caller): ApiUser,
    State(ctx): State<ApiContext>,
    Path(id): Path<GenerationId>,
) -> Result<Response> {
    let data = deliveries::of_generation(&ctx.pool, id, Some(caller.user_id))
        .await?
        .ok_or(ApiError::NotFound)?;
    Ok(axum::Json(json!({"data": data})).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateEndpoint {
    url: String,
    events: Option<Vec<String>>,
    api_key_id: Option<ApiKeyId>,
    description: Option<String>,
}

/// `POST /admin/users/{id}/webhook-endpoints`: a default endpoint, with its signing secret
/// (shown once here; `rotate-secret` makes a new one).
async fn create_endpoint(
    _: Admin,
    State(ctx): State<ApiContext>,
    Path(user): Path<UserId>,
    Json(body): Json<CreateEndpoint>,
) -> Result<Response> {
    let mut errors = Vec::new();
    // Stored in normal form, as a request's `webhook_url` is.
    let url = match address::check_url(&body.url, &ctx.settings.client_webhooks) {
        Ok(url) => url.to_string(),
        Err(why) => {
            errors.push(FieldError::new("url", why));
            body.url.clone()
        }
    };
    let events = body.events.as_ref().map(|names| {
        let mut events = Vec::new();
        for (i, name) in names.iter().enumerate() {
            match name.parse::<Event>() {
                Ok(event) if !events.contains(&event) => events.push(event),
                Ok(_) => errors.push(FieldError::new(format!("events[{i}]"), "is listed twice")),
                Err(_) => errors.push(FieldError::new(
                    format!("events[{i}]"),
                    format!(
                        "one of {}",
                        Event::ALL.iter().map(|e| e.as_str()).collect::<Vec<_>>().join(", ")
                    ),
                )),
            }
        }
        events
    });
    if events.as_ref().is_some_and(Vec::is_empty) {
        errors
            .push(FieldError::new("events", "must list at least one event (leave it out for all)"));
    }
    errors
        .extend(body.description.as_deref().and_then(|d| Text::Free.field_error("description", d)));
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    let new = NewEndpoint {
        user_id: user,
        api_key_id: body.api_key_id,
        url,
        events,
        description: body.description,
    };
    let keys = ctx.callback_keys.clone();
    let made = db::transaction!(&ctx.pool, EndpointError, |tx| {
        let endpoint = endpoints::create(tx, &new).await?;
        let secret = secrets::current(tx, Owner::Endpoint(endpoint.id), &keys).await?;
        (endpoint, secret)
    })
    .await;
    let (endpoint, secret) = match made {
        Ok(made) => made,
        Err(EndpointError::NotFound) => return Err(ApiError::NotFound),
        Err(EndpointError::Exists(existing)) => {
            return Err(Problem::new(
                StatusCode::CONFLICT,
                "endpoint_exists",
                "Endpoint exists",
                format!("a live endpoint is registered for this user or key already ({existing}); disable it first"),
            )
            .into());
        }
        Err(EndpointError::Database(err)) => return Err(err.into()),
    };
    let secret = secret_view(&ctx, &secret, None)?;
    tracing::info!(user_id = %user, endpoint_id = %endpoint.id, "webhook endpoint registered");
    let mut body = serde_json::to_value(&endpoint).map_err(|e| ApiError::Internal(e.into()))?;
    body["secret"] = json!(secret.secret);
    Ok((StatusCode::CREATED, axum::Json(body)).into_response())
}

/// `GET /admin/users/{id}/webhook-endpoints`.
async fn user_endpoints(
    _: Admin,
    State(ctx): State<ApiContext>,
    Path(user): Path<UserId>,
) -> Result<Response> {
    let data = endpoints::of_user(&ctx.pool, user).await?;
    Ok(axum::Json(json!({"data": data})).into_response())
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Disable {
    reason: Option<String>,
}

/// `POST /admin/webhook-endpoints/{id}/disable`: nothing more is sent to it (its pending
/// deliveries end `failed`, with the reason).
async fn disable_endpoint(
    _: Admin,
    State(ctx): State<ApiContext>,
    Path(id): Path<Uuid>,
    body: axum::body::Bytes,
) -> Result<Response> {
    let body: Disable = optional_body(&body)?;
    if let Some(error) = body.reason.as_deref().and_then(|r| Text::Free.field_error("reason", r)) {
        return Err(ApiError::Validation(vec![error]));
    }
    let reason = body.reason.unwrap_or_else(|| "disabled by an operator".to_owned());
    match endpoints::disable(&ctx.pool, id, &reason).await? {
        Some(endpoint) => {
            tracing::info!(endpoint_id = %id, "webhook endpoint disabled by an operator");
            Ok(axum::Json(endpoint).into_response())
        }
        None => match endpoints::get(&ctx.pool, id).await? {
            // Disabled already: the same answer again.
            Some(endpoint) => Ok(axum::Json(endpoint).into_response()),
            None => Err(ApiError::NotFound),
        },
    }
}

/// `POST /admin/webhook-endpoints/{id}/rotate-secret`.
async fn rotate_endpoint_secret(
    _: Admin,
    State(ctx): State<ApiContext>,
    Path(id): Path<Uuid>,
    body: axum::body::Bytes,
) -> Result<Response> {
    let body: Rotate = optional_body(&body)?;
    let grace = grace(&ctx, &body)?;
    if endpoints::get(&ctx.pool, id).await?.is_none() {
        return Err(ApiError::NotFound);
    }
    let owner = Owner::Endpoint(id);
    let keys = ctx.callback_keys.clone();
    let (row, retires) =
        db::transaction!(&ctx.pool, ApiError, |tx| secrets::rotate(tx, owner, &keys, grace)
            .await?)
        .await?;
    Ok(axum::Json(secret_view(&ctx, &row, retires)?).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DeliveryQuery {
    status: Option<String>,
    user_id: Option<UserId>,
    generation_id: Option<GenerationId>,
    limit: Option<i64>,
}

/// `GET /admin/webhook-deliveries?status=&user_id=&generation_id=&limit=`: newest first.
async fn list_deliveries(
    _: Admin,
    State(ctx): State<ApiContext>,
    Query(query): Query<DeliveryQuery>,
) -> Result<Response> {
    let mut errors = Vec::new();
    let status = match query.status.as_deref() {
        None => None,
        Some("pending") => Some(DeliveryStatus::Pending),
        Some("delivered") => Some(DeliveryStatus::Delivered),
        Some("failed") => Some(DeliveryStatus::Failed),
        Some(_) => {
            errors.push(FieldError::new("status", "one of pending, delivered, failed"));
            None
        }
    };
    let limit = query.limit.unwrap_or(50);
    if !(1..=1000).contains(&limit) {
        errors.push(FieldError::new("limit", "must be between 1 and 1000"));
    }
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    let filter = Filter { status, user: query.user_id, generation: query.generation_id, limit };
    let data = deliveries::list(&ctx.pool, &filter).await?;
    Ok(axum::Json(json!({"data": data})).into_response())
}

/// A delivery id from the path: `msg_…` or a UUID.
fn delivery_id(text: &str) -> Result<Uuid> {
    deliveries::parse_id(text).ok_or(ApiError::NotFound)
}

/// `GET /admin/webhook-deliveries/{id}` (`msg_…` or its UUID): with every attempt.
async fn show_delivery(
    _: Admin,
    State(ctx): State<ApiContext>,
    Path(id): Path<String>,
) -> Result<Response> {
    let view = deliveries::get(&ctx.pool, delivery_id(&id)?).await?.ok_or(ApiError::NotFound)?;
    Ok(axum::Json(view).into_response())
}

/// `POST /admin/webhook-deliveries/{id}/redeliver`: sent again now (same `webhook-id`, same
/// body), whatever became of it; answered 202 as it is queued.
async fn redeliver(
    _: Admin,
    State(ctx): State<ApiContext>,
    Path(id): Path<String>,
) -> Result<Response> {
    let id = delivery_id(&id)?;
    let current = deliveries::get(&ctx.pool, id).await?.ok_or(ApiError::NotFound)?;
    // A worker ends a delivery to a disabled endpoint without sending it: refused, as
    // `gengatectl webhooks redeliver` refuses it.
    if let Some(endpoint) = current.endpoint_id
        && let Some(reason) =
            endpoints::get(&ctx.pool, endpoint).await?.and_then(|e| e.disabled_reason)
    {
        return Err(Problem::new(
            StatusCode::CONFLICT,
            "endpoint_disabled",
            "Endpoint disabled",
            format!("its endpoint {endpoint} is disabled ({reason}), so it would not be sent"),
        )
        .into());
    }
    let view = deliveries::redeliver(&ctx.pool, id).await?.ok_or(ApiError::NotFound)?;
    tracing::info!(webhook_id = view.id, "webhook redelivery asked by an operator");
    Ok((StatusCode::ACCEPTED, axum::Json(view)).into_response())
}
