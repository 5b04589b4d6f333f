//! The admin API (`Authorization: Bearer <admin token>`): users, API keys, grants, balances.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use gengate_shared::accounts::{self, NewUser};
use gengate_shared::db;
use gengate_shared::generation::store;
use gengate_shared::ids::{ApiKeyId, GenerationId, GrantId, UserId};
use gengate_shared::kling_compat;
use gengate_shared::ledger::{self, GrantSource, GrantView, MAX_GRANT, NewGrant};
use gengate_shared::validation::Text;
use serde::{Deserialize, Serialize};
use serde_json::json;
use time::OffsetDateTime;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::Admin;
use crate::error::{ApiError, FieldError, Result};
use crate::extract::{Json, Path};
use crate::openapi::{problems, schemas};
use crate::state::ApiContext;

/// The admin routes (each documented by its handler's `#[utoipa::path]`).
pub(crate) fn routes() -> OpenApiRouter<ApiContext> {
    OpenApiRouter::new()
        .routes(routes!(create_user))
        .routes(routes!(create_api_key, list_api_keys))
        .routes(routes!(revoke_api_key))
        .routes(routes!(create_grant))
        .routes(routes!(user_credits))
        .routes(routes!(generation))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateUser {
    email: Option<String>,
    name: Option<String>,
    max_in_flight: Option<i32>,
}

/// Create a user.
///
/// The user gets the configured `new_user` grant (`accounts.new_user_credits`, expiring after
/// `accounts.new_user_credits_days`), if any.
#[utoipa::path(
    post,
    path = "/admin/users",
    operation_id = "createUser",
    tag = "admin",
    security(("admin_token" = [])),
    request_body = schemas::CreateUserRequest,
    responses(
        (status = CREATED, description = "The user.", body = schemas::User),
        problems::CreateUser,
    ),
)]
async fn create_user(
    _: Admin,
    State(ctx): State<ApiContext>,
    Json(body): Json<CreateUser>,
) -> Result<Response> {
    let mut errors = Vec::new();
    if let Some(email) = &body.email
        && (email.len() > 320 || !email.contains('@'))
    {
        errors.push(FieldError::new("email", "must be an email address"));
    }
    if body.max_in_flight.is_some_and(|n| n < 1) {
        errors.push(FieldError::new("max_in_flight", "must be at least 1"));
    }
    errors.extend(body.email.as_deref().and_then(|e| Text::Token.field_error("email", e)));
    errors.extend(body.name.as_deref().and_then(|n| Text::Free.field_error("name", n)));
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    let new = NewUser { email: body.email, name: body.name, max_in_flight: body.max_in_flight };
    let settings = &ctx.settings.accounts;
    let user = db::transaction!(&ctx.pool, ApiError, |tx| {
        accounts::create_user(tx, &new, settings).await?
    })
    .await?;
    tracing::info!(user_id = %user.id, "user created");
    Ok((StatusCode::CREATED, axum::Json(user)).into_response())
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateApiKey {
    name: Option<String>,
    #[serde(default)]
    kling: bool,
}

/// Create an API key.
///
/// The key is shown once, in this answer; gengate stores only its SHA-256. The body is
/// optional.
#[utoipa::path(
    post,
    path = "/admin/users/{id}/api-keys",
    operation_id = "createApiKey",
    tag = "admin",
    security(("admin_token" = [])),
    params(("id" = uuid::Uuid, Path, description = "The user's id.")),
    request_body(content = Option<schemas::CreateApiKeyRequest>),
    responses(
        (status = CREATED, description = "The key.", body = schemas::NewApiKey),
        problems::CreateApiKey,
    ),
)]
async fn create_api_key(
    _: Admin,
    State(ctx): State<ApiContext>,
    Path(user): Path<UserId>,
    body: axum::body::Bytes,
) -> Result<Response> {
    // The body is optional: `{"name": …}` or nothing at all.
    let body: CreateApiKey = if body.is_empty() {
        CreateApiKey::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|err| ApiError::Validation(vec![FieldError::new("body", err.to_string())]))?
    };
    if accounts::find_user(&ctx.pool, user).await?.is_none() {
        return Err(ApiError::NotFound);
    }
    let name = body.name;
    if let Some(error) = name.as_deref().and_then(|n| Text::Free.field_error("name", n)) {
        return Err(ApiError::Validation(vec![error]));
    }
    if !body.kling {
        let key = accounts::create_api_key(&ctx.pool, user, name.as_deref()).await?;
        tracing::info!(user_id = %user, prefix = %key.prefix, "API key created");
        return Ok((StatusCode::CREATED, axum::Json(key)).into_response());
    }
    // The key and its Kling pair together, or neither.
    let keys = ctx.callback_keys.clone();
    let (key, pair) = db::transaction!(&ctx.pool, ApiError, |tx| {
        let key = accounts::create_api_key(&mut **tx, user, name.as_deref()).await?;
        let pair = kling_compat::issue(&mut **tx, &keys, key.id).await?;
        (key, pair)
    })
    .await?;
    tracing::info!(user_id = %user, prefix = %key.prefix, kling_access_key = %pair.access_key, "API key with a Kling key pair created");
    let mut answer = serde_json::to_value(&key).map_err(anyhow::Error::from)?;
    answer["kling_access_key"] = json!(pair.access_key);
    answer["kling_secret_key"] = json!(pair.secret_key);
    Ok((StatusCode::CREATED, axum::Json(answer)).into_response())
}

/// `GET /admin/users/{id}/api-keys`: the user's keys (never the keys themselves), newest first.
#[utoipa::path(
    get,
    path = "/admin/users/{id}/api-keys",
    operation_id = "listApiKeys",
    tag = "admin",
    summary = "List a user's API keys.",
    description = "The user's keys (never the keys themselves), newest first. `last_used_at` is \
        written every `api.key_usage_flush_ms`, not on every request.",
    security(("admin_token" = [])),
    params(("id" = uuid::Uuid, Path, description = "The user's id.")),
    responses(
        (status = OK, description = "The keys.", body = schemas::ApiKeyList),
        problems::AdminRead,
    ),
)]
async fn list_api_keys(
    _: Admin,
    State(ctx): State<ApiContext>,
    Path(user): Path<UserId>,
) -> Result<Response> {
    if accounts::find_user(&ctx.pool, user).await?.is_none() {
        return Err(ApiError::NotFound);
    }
    let keys = accounts::list_api_keys(&ctx.pool, user).await?;
    Ok(axum::Json(json!({"data": keys})).into_response())
}

/// `DELETE /admin/users/{id}/api-keys/{key_id}`: revokes the key in every API process at once
/// (see `crate::keys`). Revoking it again answers the same.
#[utoipa::path(
    delete,
    path = "/admin/users/{id}/api-keys/{key_id}",
    operation_id = "revokeApiKey",
    tag = "admin",
    summary = "Revoke an API key.",
    description = "Every API process refuses the key from then on (at once in the one that \
        revoked it, within a second in the others). Revoking it again answers the same; an \
        unknown key, or another user's, is `404`.",
    security(("admin_token" = [])),
    params(
        ("id" = uuid::Uuid, Path, description = "The user's id."),
        ("key_id" = uuid::Uuid, Path, description = "The key's id."),
    ),
    responses(
        (status = OK, description = "The key, with its `revoked_at`.", body = schemas::ApiKey),
        problems::AdminRead,
    ),
)]
async fn revoke_api_key(
    _: Admin,
    State(ctx): State<ApiContext>,
    Path((user, key)): Path<(UserId, ApiKeyId)>,
) -> Result<Response> {
    let revoked = db::transaction!(&ctx.pool, ApiError, |tx| {
        accounts::revoke_api_key(tx, Some(user), key).await?
    })
    .await?
    .ok_or(ApiError::NotFound)?;
    // This process at once; the others when the notification reaches them.
    ctx.keys.forget(&revoked.prefix);
    tracing::info!(user_id = %user, prefix = %revoked.prefix, "API key revoked");
    Ok(axum::Json(revoked).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateGrant {
    source: Option<String>,
    amount: Option<i64>,
    #[serde(default, with = "time::serde::rfc3339::option")]
    expires_at: Option<OffsetDateTime>,
    #[serde(default, with = "time::serde::rfc3339::option")]
    effective_at: Option<OffsetDateTime>,
    priority: Option<i32>,
    order_no: Option<String>,
}

/// The answer to a grant: the grant as it stands, and the debt it paid off.
#[derive(Debug, Serialize)]
struct GrantCreated {
    #[serde(flatten)]
    grant: GrantShown,
    debt_settled: i64,
}

#[derive(Debug, Serialize)]
#[serde(untagged)]
enum GrantShown {
    /// Still holding credits.
    Holding(GrantView),
    /// Spent in full at once (on debt).
    Spent { id: GrantId },
}

/// Grant credits.
///
/// Outstanding debt is paid from the grant at once (`debt_settled`). An `order_no` seen before
/// returns its grant with `200` when the amount is the same (a retried request), and is `409
/// order_conflict` when it is not.
#[utoipa::path(
    post,
    path = "/admin/users/{id}/grants",
    operation_id = "createGrant",
    tag = "admin",
    security(("admin_token" = [])),
    params(("id" = uuid::Uuid, Path, description = "The user's id.")),
    request_body = schemas::CreateGrantRequest,
    responses(
        (status = CREATED, description = "Granted.", body = schemas::GrantCreated),
        (status = OK, description = "The order was granted before, for the same amount: its \
            grant.", body = schemas::GrantCreated),
        problems::CreateGrant,
    ),
)]
async fn create_grant(
    _: Admin,
    State(ctx): State<ApiContext>,
    Path(user): Path<UserId>,
    Json(body): Json<CreateGrant>,
) -> Result<Response> {
    let new = validate_grant(user, body)?;
    let outcome =
        db::transaction!(&ctx.pool, ApiError, |tx| ledger::grant(tx, &new).await?).await?;
    let grant = ledger::balance(&ctx.pool, user)
        .await?
        .and_then(|b| b.grants.into_iter().find(|g| g.id == outcome.grant_id));
    let body = GrantCreated {
        grant: match grant {
            Some(grant) => GrantShown::Holding(grant),
            // Fully spent already (e.g. on debt): still say what was granted.
            None => GrantShown::Spent { id: outcome.grant_id },
        },
        debt_settled: outcome.debt_settled,
    };
    let status = if outcome.created {
        tracing::info!(user_id = %user, grant_id = %outcome.grant_id, amount = new.amount, "grant created");
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, axum::Json(body)).into_response())
}

fn validate_grant(user: UserId, body: CreateGrant) -> Result<NewGrant> {
    let mut errors = Vec::new();
    let source = match body.source.as_deref().map(str::parse::<GrantSource>) {
        Some(Ok(source)) => Some(source),
        Some(Err(_)) => {
            errors
                .push(FieldError::new("source", "must be one of order_pay, system_add, new_user"));
            None
        }
        None => {
            errors.push(FieldError::new("source", "is required"));
            None
        }
    };
    match body.amount {
        Some(amount) if amount > MAX_GRANT => errors
            .push(FieldError::new("amount", format!("at most {MAX_GRANT} credits in one grant"))),
        Some(amount) if amount > 0 => {}
        Some(_) => errors.push(FieldError::new("amount", "must be a positive number of credits")),
        None => errors.push(FieldError::new("amount", "is required")),
    }
    match (source, &body.order_no) {
        (Some(GrantSource::OrderPay), None) => {
            errors.push(FieldError::new("order_no", "is required for order_pay"))
        }
        (Some(GrantSource::OrderPay), Some(no)) if no.is_empty() || no.len() > 128 => {
            errors.push(FieldError::new("order_no", "must be 1–128 characters"))
        }
        (Some(GrantSource::OrderPay), Some(no)) if Text::Token.check(no).is_some() => {
            errors.extend(Text::Token.field_error("order_no", no))
        }
        (Some(GrantSource::NewUser | GrantSource::SystemAdd), Some(_)) => {
            errors.push(FieldError::new("order_no", "is only for order_pay"))
        }
        _ => {}
    }
    let starts = body.effective_at.unwrap_or_else(OffsetDateTime::now_utc);
    if body.expires_at.is_some_and(|e| e <= starts) {
        errors.push(FieldError::new("expires_at", "must be after the grant takes effect"));
    }
    match (source, body.amount) {
        (Some(source), Some(amount)) if errors.is_empty() => Ok(NewGrant {
            user_id: user,
            source,
            amount,
            expires_at: body.expires_at,
            priority: body.priority.unwrap_or(0),
            effective_at: body.effective_at,
            order_no: body.order_no,
        }),
        _ => Err(ApiError::Validation(errors)),
    }
}

/// Read a user's credits.
///
/// As `GET /v1/credits` answers the user.
#[utoipa::path(
    get,
    path = "/admin/users/{id}/credits",
    operation_id = "getUserCredits",
    tag = "admin",
    security(("admin_token" = [])),
    params(("id" = uuid::Uuid, Path, description = "The user's id.")),
    responses(
        (status = OK, description = "The user's credits.", body = schemas::Balance),
        problems::AdminRead,
    ),
)]
async fn user_credits(
    _: Admin,
    State(ctx): State<ApiContext>,
    Path(user): Path<UserId>,
) -> Result<Response> {
    let balance = ledger::balance(&ctx.pool, user).await?.ok_or(ApiError::NotFound)?;
    Ok(axum::Json(balance).into_response())
}

/// Read a generation, with its ledger and audit log.
///
/// The generation object (its `params` as stored), every ledger entry of it (voided ones
/// included), and its audit log.
#[utoipa::path(
    get,
    path = "/admin/generations/{id}",
    operation_id = "getGenerationDetail",
    tag = "admin",
    security(("admin_token" = [])),
    params(("id" = uuid::Uuid, Path, description = "The generation's id.")),
    responses(
        (status = OK, description = "The generation.", body = schemas::GenerationDetail),
        problems::AdminRead,
    ),
)]
async fn generation(
    _: Admin,
    State(ctx): State<ApiContext>,
    Path(id): Path<GenerationId>,
) -> Result<Response> {
    let mut detail = store::detail(&ctx.pool, id).await?.ok_or(ApiError::NotFound)?;
    detail.generation = ctx.present(detail.generation).await?;
    Ok(axum::Json(detail).into_response())
}
