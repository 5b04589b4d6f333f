//! Webhooks to clients (see `gengate_shared::client_webhooks`): a client reads and rotates its
//! signing secret, sees its default endpoints and each generation's delivery log; operators
//! register default endpoints, and inspect and redeliver deliveries.

use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use gengate_http::problem::Problem;
use gengate_shared::accounts;
use gengate_shared::client_webhooks::deliveries::{self, DeliveryStatus, Filter};
use gengate_shared::client_webhooks::endpoints::{self, EndpointError, NewEndpoint};
use gengate_shared::client_webhooks::secrets::{self, Owner, SecretRow};
use gengate_shared::db;
use gengate_shared::ids::{ApiKeyId, GenerationId, UserId};
use gengate_shared::validation::Text;
use serde::{Deserialize, Serialize};
use serde_json::json;
use time::OffsetDateTime;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::auth::{Admin, ApiUser};
use crate::error::{ApiError, FieldError, Result};
use crate::extract::{Json, Path, Query};
use crate::openapi::{problems, schemas};
use crate::state::ApiContext;

/// The client routes (each documented by its handler's `#[utoipa::path]`).
pub(crate) fn routes() -> OpenApiRouter<ApiContext> {
    OpenApiRouter::new()
        .routes(routes!(show_secret))
        .routes(routes!(rotate_secret))
        .routes(routes!(own_endpoints))
        .routes(routes!(generation_deliveries))
}

/// The operator routes (each documented by its handler's `#[utoipa::path]`).
pub(crate) fn admin_routes() -> OpenApiRouter<ApiContext> {
    OpenApiRouter::new()
        .routes(routes!(create_endpoint, user_endpoints))
        .routes(routes!(disable_endpoint))
        .routes(routes!(rotate_endpoint_secret))
        .routes(routes!(list_deliveries))
        .routes(routes!(show_delivery))
        .routes(routes!(redeliver))
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

/// Read the caller's webhook signing secret.
///
/// The secret that signs the deliveries to the URLs the caller's requests name (`webhook_url`),
/// made on the first read; the same on every read until it is rotated. After a rotation,
/// `previous_retires_at` says until when the secret it replaced still signs beside it. A default
/// endpoint has a secret of its own.
#[utoipa::path(
    get,
    path = "/v1/webhooks/secret",
    operation_id = "getWebhookSecret",
    tag = "webhooks",
    security(("api_key" = [])),
    responses(
        (status = OK, description = "The secret.", body = schemas::WebhookSecret),
        problems::ClientOwn,
    ),
)]
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

/// Rotate the caller's webhook signing secret.
///
/// Makes a new secret, which signs every delivery from now on; the one it replaces keeps signing
/// beside it (deliveries carry both signatures) until `previous_retires_at`: `grace_seconds`
/// after now (default `client_webhooks.secret_grace_ms`, 24 hours; at most 30 days; `0` retires
/// it at once). The body is optional.
#[utoipa::path(
    post,
    path = "/v1/webhooks/secret/rotate",
    operation_id = "rotateWebhookSecret",
    tag = "webhooks",
    security(("api_key" = [])),
    request_body(content = Option<schemas::RotateSecretRequest>),
    responses(
        (status = OK, description = "The new secret.", body = schemas::WebhookSecret),
        problems::RotateWebhookSecret,
    ),
)]
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

/// List the caller's default webhook endpoints.
///
/// The default endpoints an operator registered for the caller (for the user, or for one of its
/// API keys), live and disabled, oldest first. A disabled one says when and why
/// (`disabled_reason`): it answered 410 Gone, or every attempt failed for
/// `client_webhooks.disable_after_ms`, or an operator disabled it.
#[utoipa::path(
    get,
    path = "/v1/webhooks/endpoints",
    operation_id = "listWebhookEndpoints",
    tag = "webhooks",
    security(("api_key" = [])),
    responses(
        (status = OK, description = "The endpoints.", body = schemas::WebhookEndpointList),
        problems::ClientOwn,
    ),
)]
async fn own_endpoints(
    ApiUser(caller): ApiUser,
    State(ctx): State<ApiContext>,
) -> Result<Response> {
    let data = endpoints::of_user(&ctx.pool, caller.user_id).await?;
    Ok(axum::Json(json!({"data": data})).into_response())
}

/// List a generation's webhook deliveries.
///
/// The delivery log of one of the caller's generations, oldest first: each event sent (or being
/// sent), where, how it stands, and every attempt. Another user's generation is `404`.
#[utoipa::path(
    get,
    path = "/v1/generations/{id}/deliveries",
    operation_id = "listGenerationDeliveries",
    tag = "webhooks",
    security(("api_key" = [])),
    params(("id" = uuid::Uuid, Path, description = "The generation's id.")),
    responses(
        (status = OK, description = "The deliveries.", body = schemas::WebhookDeliveryList),
        problems::ClientRead,
    ),
)]
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

/// Register a default webhook endpoint.
///
/// A default endpoint receives the events of the user's requests that name no `webhook_url`
/// (with `api_key_id`, only that key's requests; a key's endpoint comes before its user's). The
/// answer carries the endpoint's own signing secret, shown once, here (`rotate-secret` makes a
/// new one). A user, or a key, has at most one live endpoint: another is `409 endpoint_exists`
/// (disable the first). An unknown user, or a key that is not the user's, is `404`.
#[utoipa::path(
    post,
    path = "/admin/users/{id}/webhook-endpoints",
    operation_id = "createWebhookEndpoint",
    tag = "admin",
    security(("admin_token" = [])),
    params(("id" = uuid::Uuid, Path, description = "The user's id.")),
    request_body = schemas::CreateWebhookEndpointRequest,
    responses(
        (status = CREATED, description = "The endpoint, with its secret.",
         body = schemas::WebhookEndpointCreated),
        problems::CreateWebhookEndpoint,
    ),
)]
async fn create_endpoint(
    _: Admin,
    State(ctx): State<ApiContext>,
    Path(user): Path<UserId>,
    Json(body): Json<CreateEndpoint>,
) -> Result<Response> {
    let new = NewEndpoint::checked(
        user,
        body.api_key_id,
        &body.url,
        body.events.as_deref(),
        body.description,
        &ctx.settings.client_webhooks,
    )
    .map_err(ApiError::Validation)?;
    let keys = ctx.callback_keys.clone();
    let made =
        db::transaction!(&ctx.pool, EndpointError, |tx| endpoints::register(tx, &new, &keys)
            .await?)
        .await;
    let (endpoint, secret) = match made {
        Ok(made) => made,
        Err(EndpointError::NotFound) => return Err(ApiError::NotFound),
        Err(EndpointError::Exists(existing)) => {
            let which = existing.map(|id| format!(" ({id})")).unwrap_or_default();
            return Err(Problem::new(
                StatusCode::CONFLICT,
                "endpoint_exists",
                "Endpoint exists",
                format!(
                    "a live endpoint is registered for this user or key already{which}; disable it first"
                ),
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

/// List a user's default webhook endpoints.
///
/// As `GET /v1/webhooks/endpoints` answers the user: live and disabled, oldest first. An unknown
/// user is `404`, as for its API keys.
#[utoipa::path(
    get,
    path = "/admin/users/{id}/webhook-endpoints",
    operation_id = "listUserWebhookEndpoints",
    tag = "admin",
    security(("admin_token" = [])),
    params(("id" = uuid::Uuid, Path, description = "The user's id.")),
    responses(
        (status = OK, description = "The endpoints.", body = schemas::WebhookEndpointList),
        problems::AdminRead,
    ),
)]
async fn user_endpoints(
    _: Admin,
    State(ctx): State<ApiContext>,
    Path(user): Path<UserId>,
) -> Result<Response> {
    if accounts::find_user(&ctx.pool, user).await?.is_none() {
        return Err(ApiError::NotFound);
    }
    let data = endpoints::of_user(&ctx.pool, user).await?;
    Ok(axum::Json(json!({"data": data})).into_response())
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Disable {
    reason: Option<String>,
}

/// Disable a default webhook endpoint.
///
/// Nothing more is sent to it: its pending deliveries end `failed`, with the reason (default
/// `disabled by an operator`), which its owner sees. Disabling it again answers the same, and
/// keeps the first reason. The body is optional.
#[utoipa::path(
    post,
    path = "/admin/webhook-endpoints/{id}/disable",
    operation_id = "disableWebhookEndpoint",
    tag = "admin",
    security(("admin_token" = [])),
    params(("id" = uuid::Uuid, Path, description = "The endpoint's id.")),
    request_body(content = Option<schemas::DisableWebhookEndpointRequest>),
    responses(
        (status = OK, description = "The endpoint, disabled.", body = schemas::WebhookEndpoint),
        problems::ChangeWebhookEndpoint,
    ),
)]
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

/// Rotate a default webhook endpoint's signing secret.
///
/// As the client's rotation (`POST /v1/webhooks/secret/rotate`), for the endpoint's own secret:
/// the answer is the new secret, and the one it replaces keeps signing beside it until
/// `previous_retires_at`. The body is optional.
#[utoipa::path(
    post,
    path = "/admin/webhook-endpoints/{id}/rotate-secret",
    operation_id = "rotateWebhookEndpointSecret",
    tag = "admin",
    security(("admin_token" = [])),
    params(("id" = uuid::Uuid, Path, description = "The endpoint's id.")),
    request_body(content = Option<schemas::RotateSecretRequest>),
    responses(
        (status = OK, description = "The endpoint's new secret.", body = schemas::WebhookSecret),
        problems::ChangeWebhookEndpoint,
    ),
)]
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

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct DeliveryQuery {
    /// Only deliveries in this status.
    #[param(value_type = Option<schemas::WebhookDeliveryStatus>)]
    status: Option<String>,
    /// Only this user's deliveries.
    #[param(value_type = Option<uuid::Uuid>)]
    user_id: Option<UserId>,
    /// Only this generation's deliveries.
    #[param(value_type = Option<uuid::Uuid>)]
    generation_id: Option<GenerationId>,
    /// How many, 1–1000 (default 50).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<i64>,
}

/// List webhook deliveries.
///
/// Client webhook deliveries of every user, newest first, each with its attempts; filtered by
/// status, user and generation.
#[utoipa::path(
    get,
    path = "/admin/webhook-deliveries",
    operation_id = "listWebhookDeliveries",
    tag = "admin",
    security(("admin_token" = [])),
    params(DeliveryQuery),
    responses(
        (status = OK, description = "The deliveries.", body = schemas::WebhookDeliveryList),
        problems::AdminList,
    ),
)]
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

/// Read a webhook delivery.
///
/// One delivery, by its `webhook-id` (`msg_…`) or the UUID it is made of, with every attempt.
#[utoipa::path(
    get,
    path = "/admin/webhook-deliveries/{id}",
    operation_id = "getWebhookDelivery",
    tag = "admin",
    security(("admin_token" = [])),
    params(("id" = String, Path, description = "The delivery's `webhook-id` (`msg_…`), or the \
        UUID it is made of.", example = "msg_0192f0c46a8e7cc19d4e1f2a3b4c5d6f")),
    responses(
        (status = OK, description = "The delivery.", body = schemas::WebhookDelivery),
        problems::AdminRead,
    ),
)]
async fn show_delivery(
    _: Admin,
    State(ctx): State<ApiContext>,
    Path(id): Path<String>,
) -> Result<Response> {
    let view = deliveries::get(&ctx.pool, delivery_id(&id)?).await?.ok_or(ApiError::NotFound)?;
    Ok(axum::Json(view).into_response())
}

/// Redeliver a webhook delivery.
///
/// The delivery is due again now, whatever became of it: it is sent again with the same
/// `webhook-id` and the same body (and the retries its schedule has left, if any). Answered as
/// it is queued, in status `pending`. A delivery whose default endpoint is disabled would not be
/// sent: `409 endpoint_disabled`.
#[utoipa::path(
    post,
    path = "/admin/webhook-deliveries/{id}/redeliver",
    operation_id = "redeliverWebhook",
    tag = "admin",
    security(("admin_token" = [])),
    params(("id" = String, Path, description = "The delivery's `webhook-id` (`msg_…`), or the \
        UUID it is made of.", example = "msg_0192f0c46a8e7cc19d4e1f2a3b4c5d6f")),
    responses(
        (status = ACCEPTED, description = "Queued: the delivery, due again now.",
         body = schemas::WebhookDelivery),
        problems::Redeliver,
    ),
)]
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
