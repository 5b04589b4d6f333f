//! A user's credits (`Authorization: Bearer <api key>`): balance, timeline, summary.

use axum::Router;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use gengate_shared::ledger::{self, TimelineQuery};
use gengate_shared::pagination::Cursor;
use serde::Deserialize;
use serde_json::json;
use time::OffsetDateTime;

use crate::auth::ApiUser;
use crate::error::{ApiError, FieldError, Result};
use crate::extract::Query;
use crate::state::ApiContext;

/// The credits routes.
pub(crate) fn routes() -> Router<ApiContext> {
    Router::new()
        .route("/v1/credits", get(balance))
        .route("/v1/credits/timeline", get(timeline))
        .route("/v1/credits/summary", get(summary))
}

async fn balance(ApiUser(caller): ApiUser, State(ctx): State<ApiContext>) -> Result<Response> {
    let balance = ledger::balance(&ctx.pool, caller.user_id).await?.ok_or(ApiError::NotFound)?;
    Ok(axum::Json(balance).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TimelineParams {
    limit: Option<i64>,
    cursor: Option<String>,
    #[serde(default)]
    include_voided: bool,
}

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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SummaryParams {
    from: Option<String>,
    to: Option<String>,
}

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
