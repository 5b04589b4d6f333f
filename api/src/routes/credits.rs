//! A user's credits (`Authorization: Bearer <api key>`): balance, timeline, summary.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use gengate_shared::ledger::{self, TimelineQuery};
use gengate_shared::pagination::Cursor;
use serde::Deserialize;
use serde_json::json;
use time::OffsetDateTime;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::ApiUser;
use crate::error::{ApiError, FieldError, Result};
use crate::extract::Query;
use crate::openapi::{problems, schemas};
use crate::state::ApiContext;

/// The credits routes (each documented by its handler's `#[utoipa::path]`).
pub(crate) fn routes() -> OpenApiRouter<ApiContext> {
    OpenApiRouter::new().routes(routes!(balance)).routes(routes!(timeline)).routes(routes!(summary))
}

/// Read the caller's credits.
///
/// `balance` counts usable grants only (effective, unexpired); `held` is what running postpaid
/// jobs hold; `available` (`balance − held`) is what a new job may use; `grants` lists every
/// grant that still holds credits, in the order they are drawn (priority, soonest expiry,
/// oldest).
#[utoipa::path(
    get,
    path = "/v1/credits",
    operation_id = "getCredits",
    tag = "credits",
    security(("api_key" = [])),
    responses(
        (status = OK, description = "The caller's credits.", body = schemas::Balance),
        problems::ClientRead,
    ),
)]
async fn balance(ApiUser(caller): ApiUser, State(ctx): State<ApiContext>) -> Result<Response> {
    let balance = ledger::balance(&ctx.pool, caller.user_id).await?.ok_or(ApiError::NotFound)?;
    Ok(axum::Json(balance).into_response())
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct TimelineParams {
    /// How many, 1–200 (default 50).
    #[param(minimum = 1, maximum = 200)]
    limit: Option<i64>,
    /// The `next_cursor` of the previous page.
    cursor: Option<String>,
    /// Include the entries refunds voided.
    #[serde(default)]
    include_voided: bool,
}

/// Read the caller's ledger.
///
/// Ledger entries, newest first, a page at a time. Entries voided by refunds are left out unless
/// `include_voided=true`. A cursor the API did not hand out is `422`.
#[utoipa::path(
    get,
    path = "/v1/credits/timeline",
    operation_id = "getCreditTimeline",
    tag = "credits",
    security(("api_key" = [])),
    params(TimelineParams),
    responses(
        (status = OK, description = "A page of ledger entries.", body = schemas::TimelinePage),
        problems::ClientList,
    ),
)]
async fn timeline(
    ApiUser(caller): ApiUser,
    State(ctx): State<ApiContext>,
    Query(params): Query<TimelineParams>,
) -> Result<Response> {
    let mut errors = Vec::new();
    let limit = params.limit.unwrap_or(50);
    if !(1..=200).contains(&limit) {
        errors.push(FieldError::new("limit", "must be between 1 and 200"));
    }
    let cursor = match params.cursor.as_deref() {
        None => None,
        Some(text) => {
            let cursor = Cursor::decode(text);
            if cursor.is_none() {
                errors.push(FieldError::new("cursor", "is not a cursor this API handed out"));
            }
            cursor
        }
    };
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    let query = TimelineQuery { limit, cursor, include_voided: params.include_voided };
    let page = ledger::timeline(&ctx.pool, caller.user_id, query).await?;
    Ok(axum::Json(page).into_response())
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct SummaryParams {
    /// From this time on (RFC 3339, e.g. `2026-11-01T00:00:00Z`).
    #[param(value_type = Option<time::OffsetDateTime>)]
    from: Option<String>,
    /// Before this time (RFC 3339); after `from`.
    #[param(value_type = Option<time::OffsetDateTime>)]
    to: Option<String>,
}

/// Sum the caller's ledger.
///
/// Totals per transaction type over live (not voided) entries, between `from` and `to` when
/// given.
#[utoipa::path(
    get,
    path = "/v1/credits/summary",
    operation_id = "getCreditSummary",
    tag = "credits",
    security(("api_key" = [])),
    params(SummaryParams),
    responses(
        (status = OK, description = "The totals.", body = schemas::CreditSummary),
        problems::ClientList,
    ),
)]
async fn summary(
    ApiUser(caller): ApiUser,
    State(ctx): State<ApiContext>,
    Query(params): Query<SummaryParams>,
) -> Result<Response> {
    let mut errors = Vec::new();
    let mut parse = |field: &str, value: Option<String>| {
        value.and_then(|text| {
            let parsed =
                OffsetDateTime::parse(&text, &time::format_description::well_known::Rfc3339);
            if parsed.is_err() {
                errors.push(FieldError::new(
                    field,
                    "must be an RFC 3339 timestamp, e.g. 2026-11-01T00:00:00Z",
                ));
            }
            parsed.ok()
        })
    };
    let from = parse("from", params.from);
    let to = parse("to", params.to);
    if let (Some(from), Some(to)) = (from, to)
        && from >= to
    {
        errors.push(FieldError::new("to", "must be after from"));
    }
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    let lines = ledger::summary(&ctx.pool, caller.user_id, from, to).await?;
    let rfc3339 = |t: Option<OffsetDateTime>| {
        t.and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
    };
    Ok(axum::Json(json!({"from": rfc3339(from), "to": rfc3339(to), "data": lines})).into_response())
}
