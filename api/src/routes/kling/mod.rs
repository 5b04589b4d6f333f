//! Kling's own video API, served by gengate (`/kling/v1/videos/…`), so that a client written for
//! Kling only changes its base URL and credentials.
//!
//! Requests and answers are Kling's (see `docs/api.md`, "Kling-compatible API"); behind them
//! everything is gengate's: a create is translated ([`translate`]) into the body of
//! `POST /v1/generations` and goes through the same validation, pricing, reservation, queue and
//! settlement; a task is a generation, and its `task_id` is the generation's id.
//!
//! Credentials: a gengate API key, or a JWT signed as Kling requires with a Kling key pair
//! issued with an API key ([`gengate_shared::kling_compat`]). Errors are Kling's envelope with
//! Kling's codes and HTTP statuses.

mod translate;

use std::collections::BTreeMap;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{FromRequestParts, State};
use axum::http::header::{AUTHORIZATION, RETRY_AFTER};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use gengate_shared::accounts::{self, Caller};
use gengate_shared::client_webhooks;
use gengate_shared::generation::Mode;
use gengate_shared::generation::store::{self, GenerationView};
use gengate_shared::generation::submit::{SubmitError, SubmitOutcome, SubmitRequest};
use gengate_shared::ids::GenerationId;
use gengate_shared::kling_compat::{self, JwtError};
use gengate_shared::kling_task;
use gengate_shared::ledger::LedgerError;
use serde_json::{Value, json};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use self::translate::Refusal;
use crate::auth::{ApiUser, ClientAddress};
use crate::error::ApiError;
use crate::state::ApiContext;

/// The Kling-compatible routes (each documented by its handler's `#[utoipa::path]`).
pub(crate) fn routes() -> OpenApiRouter<ApiContext> {
    OpenApiRouter::new().routes(routes!(create_task, list_tasks)).routes(routes!(query_task))
}

/// A Kling error answer: `{code, message, request_id}` with Kling's HTTP status.
#[derive(Debug)]
pub(crate) struct KlingError {
    status: StatusCode,
    code: u32,
    message: String,
    request_id: String,
    retry_after: Option<Duration>,
}

impl KlingError {
    fn new(status: StatusCode, code: u32, message: impl Into<String>, request_id: &str) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            request_id: request_id.to_owned(),
            retry_after: None,
        }
    }

    fn retry_after(mut self, wait: Duration) -> Self {
        self.retry_after = Some(wait);
        self
    }

    fn unauthorized(code: u32, request_id: &str) -> Self {
        let message = match code {
            1001 => "Authorization is empty",
            1003 => "Authorization is not yet valid",
            1004 => "Authorization has expired",
            _ => "Authorization is invalid",
        };
        Self::new(StatusCode::UNAUTHORIZED, code, message, request_id)
    }

    fn invalid(message: impl Into<String>, request_id: &str) -> Self {
        Self::new(StatusCode::BAD_REQUEST, 1201, message, request_id)
    }

    fn not_found(message: impl Into<String>, request_id: &str) -> Self {
        Self::new(StatusCode::NOT_FOUND, 1203, message, request_id)
    }

    fn rate_limited(wait: Duration, request_id: &str) -> Self {
        Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            1302,
            "API request too fast; retry later",
            request_id,
        )
        .retry_after(wait)
    }

    fn internal(err: impl std::fmt::Display, transient: bool, request_id: &str) -> Self {
        tracing::error!(error = %err, "Kling-compatible request failed");
        if transient {
            Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                5001,
                "service temporarily unavailable; retry later",
                request_id,
            )
        } else {
            Self::new(StatusCode::INTERNAL_SERVER_ERROR, 5000, "internal server error", request_id)
        }
    }

    fn database(err: sqlx::Error, request_id: &str) -> Self {
        let transient = matches!(err, sqlx::Error::PoolTimedOut);
        Self::internal(err, transient, request_id)
    }
}

impl IntoResponse for KlingError {
    fn into_response(self) -> Response {
        let body =
            json!({"code": self.code, "message": self.message, "request_id": self.request_id});
        let mut response = (self.status, axum::Json(body)).into_response();
        if let Some(wait) = self.retry_after {
            let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            response.headers_mut().insert(RETRY_AFTER, HeaderValue::from(seconds.max(1)));
        }
        response
    }
}

fn request_id(headers: &HeaderMap) -> String {
    headers.get("x-request-id").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned()
}

fn success(request_id: &str, data: Value) -> Response {
    let body = json!({"code": 0, "message": "SUCCEED", "request_id": request_id, "data": data});
    (StatusCode::OK, axum::Json(body)).into_response()
}

/// A caller of the Kling-compatible API: by gengate API key or by Kling JWT.
#[derive(Debug, Clone, Copy)]
pub(crate) struct KlingCaller(Caller);

impl FromRequestParts<ApiContext> for KlingCaller {
    type Rejection = KlingError;

    async fn from_request_parts(
        parts: &mut Parts,
        ctx: &ApiContext,
    ) -> Result<Self, Self::Rejection> {
        let rid = request_id(&parts.headers);
        let address = match ClientAddress::from_request_parts(parts, ctx).await {
            Ok(address) => address,
            Err(never) => match never {},
        };
        let token = parts
            .headers
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token.trim().to_owned());
        let Some(token) = token.filter(|t| !t.is_empty()) else {
            if let Some(wait) = address.blocked(ctx) {
                return Err(KlingError::rate_limited(wait, &rid));
            }
            address.failed(ctx, "kling_jwt");
            return Err(KlingError::unauthorized(1001, &rid));
        };
        if accounts::parse_prefix(&token).is_some() {
            // A gengate API key: checked as on every other route.
            return match ApiUser::from_request_parts(parts, ctx).await {
                Ok(ApiUser(caller)) => Ok(KlingCaller(caller)),
                Err(ApiError::RateLimited(wait) | ApiError::AuthThrottled(wait)) => {
                    Err(KlingError::rate_limited(wait, &rid))
                }
                Err(ApiError::Database(err)) => Err(KlingError::database(err, &rid)),
                Err(_) => Err(KlingError::unauthorized(1002, &rid)),
            };
        }
        if let Some(wait) = address.blocked(ctx) {
            return Err(KlingError::rate_limited(wait, &rid));
        }
        let refuse = |why: &'static str| {
            tracing::info!(why, "Kling JWT refused");
            address.failed(ctx, "kling_jwt");
            KlingError::unauthorized(1002, &rid)
        };
        let jwt = kling_compat::parse(&token).map_err(|_| refuse("malformed"))?;
        let row = kling_compat::find(&ctx.pool, &jwt.issuer)
            .await
            .map_err(|err| KlingError::database(err, &rid))?
            .ok_or_else(|| refuse("unknown access key"))?;
        let secret = kling_compat::secret_key(
            &ctx.callback_keys,
            row.kling_key_version,
            row.id,
            &jwt.issuer,
        )
        .ok_or_else(|| refuse("server key of the pair no longer configured"))?;
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        match jwt.verify(&secret, now) {
            Ok(()) => {}
            Err(JwtError::Expired) => return Err(KlingError::unauthorized(1004, &rid)),
            Err(JwtError::NotYetValid) => return Err(KlingError::unauthorized(1003, &rid)),
            Err(JwtError::Forged | JwtError::Malformed) => return Err(refuse("bad signature")),
        }
        if row.revoked_at.is_some() {
            return Err(refuse("revoked key"));
        }
        if let Err(wait) = ctx.rate_limiter.check(&row.id) {
            return Err(KlingError::rate_limited(wait, &rid));
        }
        ctx.keys.note_use(row.id);
        Ok(KlingCaller(Caller { user_id: row.user_id, api_key_id: row.id }))
    }
}

fn path_mode(endpoint: &str, rid: &str) -> Result<Mode, KlingError> {
    translate::video_mode(endpoint).ok_or_else(|| {
        KlingError::new(
            StatusCode::NOT_FOUND,
            1202,
            format!("no such endpoint /v1/videos/{endpoint}; one of text2video, image2video, multi-image2video, omni-video"),
            rid,
        )
    })
}

fn submit_error(err: SubmitError, rid: &str) -> KlingError {
    match err {
        SubmitError::IdempotencyConflict => {
            KlingError::invalid("external_task_id is already used by another task", rid)
        }
        SubmitError::TooManyInFlight { limit, .. } => KlingError::new(
            StatusCode::TOO_MANY_REQUESTS,
            1303,
            format!("at most {limit} tasks may be submitted or processing at once"),
            rid,
        ),
        SubmitError::Ledger(LedgerError::InsufficientCredits { balance, held, cost }) => {
            KlingError::new(
                StatusCode::TOO_MANY_REQUESTS,
                1102,
                format!(
                    "insufficient credits: the task costs {cost}, {} available",
                    balance - held
                ),
                rid,
            )
        }
        SubmitError::Ledger(LedgerError::OutstandingDebt { debt }) => KlingError::new(
            StatusCode::TOO_MANY_REQUESTS,
            1101,
            format!("the account owes {debt} credits"),
            rid,
        ),
        SubmitError::Database(err) => KlingError::database(err, rid),
        other => {
            let transient = gengate_shared::db::Transient::is_transient(&ApiError::from(other));
            KlingError::internal("submit failed", transient, rid)
        }
    }
}

/// A Kling task request (`text2video`, `image2video`, `multi-image2video`, `omni-video`), as Kling
/// documents it. Which fields an endpoint takes depends on it; unknown fields are refused.
#[derive(Debug, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code, reason = "documentation only: the body is read as JSON and translated")]
#[schema(example = json!({"model_name": "kling-v1-6", "mode": "pro", "prompt": "a cat on a lawn",
    "negative_prompt": "blur", "cfg_scale": 0.5, "aspect_ratio": "16:9", "duration": "5",
    "external_task_id": "order-42", "callback_url": "https://hooks.example.com/kling"}))]
struct KlingTaskRequest {
    /// Kling's model name (default per endpoint: `kling-v1`; `kling-v1-6` for
    /// multi-image2video; `kling-video-o1` for omni-video); with `mode` it names a catalogue
    /// model (`kling_compat.models`).
    model_name: Option<String>,
    /// The prompt (required except for image2video).
    prompt: Option<String>,
    /// What to avoid.
    negative_prompt: Option<String>,
    /// 0–1; accepted and checked, but the catalogue model's own setting applies.
    cfg_scale: Option<f64>,
    /// `std` (default) or `pro`.
    mode: Option<String>,
    /// `16:9`, `9:16`, `1:1` (as the model offers).
    aspect_ratio: Option<String>,
    /// Seconds, as a string (`"5"`, `"10"`; as the model offers).
    duration: Option<String>,
    /// image2video: the input image's URL (base64 is not supported).
    image: Option<String>,
    /// image2video: the last frame's URL, for models that take one (`end_frame` in
    /// `GET /v1/models`; Kling's pro modes of 1.0, 1.5, 1.6 and 2.1).
    image_tail: Option<String>,
    /// text2video and image2video, for models that take one (`camera_control` in
    /// `GET /v1/models`): `{"type": "simple", "config": {"horizontal"|"vertical"|"pan"|"tilt"|
    /// "roll"|"zoom": -10…10}}` (exactly one axis not zero), or a preset `type` (`down_back`,
    /// `forward_up`, `right_turn_forward`, `left_turn_forward`) without `config`.
    camera_control: Option<Value>,
    /// multi-image2video: `[{"image": url}]`; omni-video: `[{"image_url": url}]`.
    image_list: Option<Vec<Value>>,
    /// Where to be told when the task starts `processing` and when it ends (`succeed` or
    /// `failed`): gengate POSTs the task object there, as a query answers its `data`, retried
    /// like any client webhook (and signed
    /// with the Standard Webhooks headers, which a Kling client may ignore). The URL must pass the
    /// client webhook address rules (`https`, public hosts); empty or absent: no callback.
    callback_url: Option<String>,
    /// Your own id of the task, unique among yours; the task can be queried by it. Sending the
    /// same request with the same id again answers the same task, not a new one.
    external_task_id: Option<String>,
}

/// A Kling task as a query answers it.
#[derive(Debug, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code, reason = "documentation only")]
struct KlingTask {
    /// gengate's generation id.
    task_id: String,
    /// `submitted`, `processing`, `succeed` or `failed`.
    task_status: String,
    /// Why it failed (empty otherwise).
    task_status_msg: Option<String>,
    /// What the task costs you now, in credits, as a string: taken at submit for a prepaid
    /// model (and given back if it fails), `0` for a postpaid one until it succeeds.
    final_unit_deduction: Option<String>,
    /// `{"external_task_id": …}` when the request gave one.
    task_info: Value,
    /// `{"videos": [{"id", "url", "duration"}]}` (empty until `succeed`).
    task_result: Option<Value>,
    /// Milliseconds since the epoch.
    created_at: i64,
    /// Milliseconds since the epoch.
    updated_at: i64,
}

/// Kling's answer envelope with one task.
#[derive(Debug, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code, reason = "documentation only")]
#[schema(example = json!({"code": 0, "message": "SUCCEED", "request_id": "5f0c…",
    "data": {"task_id": "0192f0c4-0000-7000-8000-000000000001", "task_status": "succeed",
        "task_status_msg": "", "final_unit_deduction": "42",
        "task_info": {"external_task_id": "order-42"}, "task_result": {"videos": [{"id": "0192f0c4-0000-7000-8000-000000000001-0",
            "url": "https://gengate.example/files/…", "duration": "5"}]},
        "created_at": 1_764_950_000_000_i64, "updated_at": 1_764_950_030_000_i64}}))]
struct KlingTaskAnswer {
    /// 0.
    code: i64,
    /// `SUCCEED`.
    message: String,
    /// The request's id (`X-Request-Id`).
    request_id: String,
    /// The task.
    data: KlingTask,
}

/// Kling's answer envelope with a page of tasks.
#[derive(Debug, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code, reason = "documentation only")]
#[schema(example = json!({"code": 0, "message": "SUCCEED", "request_id": "5f0c…",
    "data": [{"task_id": "0192f0c4-0000-7000-8000-000000000001", "task_status": "processing",
        "task_status_msg": "", "final_unit_deduction": "42", "task_info": {},
        "task_result": {"videos": []},
        "created_at": 1_764_950_000_000_i64, "updated_at": 1_764_950_010_000_i64}]}))]
struct KlingTaskListAnswer {
    /// 0.
    code: i64,
    /// `SUCCEED`.
    message: String,
    /// The request's id (`X-Request-Id`).
    request_id: String,
    /// The tasks, newest first.
    data: Vec<KlingTask>,
}

/// A Kling error answer (see `docs/api.md`, "Kling-compatible API", for the codes).
#[derive(Debug, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code, reason = "documentation only")]
#[schema(example = json!({"code": 1004, "message": "Authorization has expired", "request_id": "5f0c…"}))]
struct KlingErrorAnswer {
    /// Kling's error code.
    code: i64,
    /// What is wrong.
    message: String,
    /// The request's id (`X-Request-Id`).
    request_id: String,
}

/// Create a Kling task.
///
/// The body is Kling's for the endpoint; it is translated into a gengate submit (same
/// validation, price, reservation and queue) and answered in Kling's shape, `task_status`
/// `submitted`. Authenticate with a gengate API key or a Kling JWT (HS256, `iss` = access key).
/// A `callback_url` is POSTed the task object (as a query answers its `data`) when the task
/// becomes `processing`, `succeed` or `failed`, delivered and retried as any client webhook.
#[utoipa::path(
    post,
    path = "/kling/v1/videos/{mode}",
    operation_id = "klingCreateVideoTask",
    tag = "kling",
    security(("api_key" = [])),
    params(("mode" = String, Path, description = "`text2video`, `image2video`, \
        `multi-image2video` or `omni-video`.")),
    request_body = KlingTaskRequest,
    responses(
        (status = OK, description = "Accepted: the task, `submitted`.", body = KlingTaskAnswer),
        (status = BAD_REQUEST, description = "1200 not JSON; 1201 a bad field (a `callback_url` the \
            address rules refuse included).", body = KlingErrorAnswer),
        (status = UNAUTHORIZED, description = "1001–1004 credentials.", body = KlingErrorAnswer),
        (status = NOT_FOUND, description = "1202 no such endpoint; 1203 unknown model.", body = KlingErrorAnswer),
        (status = TOO_MANY_REQUESTS, description = "1101 debt; 1102 insufficient credits; \
            1302 rate limit; 1303 too many tasks in flight.", body = KlingErrorAnswer),
        (status = INTERNAL_SERVER_ERROR, description = "5000.", body = KlingErrorAnswer),
        (status = SERVICE_UNAVAILABLE, description = "5001 retry later.", body = KlingErrorAnswer),
    ),
)]
async fn create_task(
    State(ctx): State<ApiContext>,
    headers: HeaderMap,
    axum::extract::Path(endpoint): axum::extract::Path<String>,
    KlingCaller(caller): KlingCaller,
    body: Bytes,
) -> Result<Response, KlingError> {
    let rid = request_id(&headers);
    let mode = path_mode(&endpoint, &rid)?;
    let body: Value = serde_json::from_slice(&body).map_err(|err| {
        KlingError::new(StatusCode::BAD_REQUEST, 1200, format!("the body is not JSON: {err}"), &rid)
    })?;
    let translated = match translate::translate(
        mode,
        &body,
        &ctx.settings.kling_compat,
        &ctx.settings.client_webhooks,
    ) {
        Ok(translated) => translated,
        Err(Refusal::Invalid(errors)) => return Err(KlingError::invalid(errors.join("; "), &rid)),
        Err(Refusal::UnknownModel(why)) => return Err(KlingError::not_found(why, &rid)),
    };
    let model = translated.body["model"].as_str().unwrap_or_default();
    if !ctx.catalogue.model(model).is_some_and(|m| m.modes.contains(&mode)) {
        return Err(KlingError::not_found(
            format!(
                "model_name {} does not offer {mode}",
                body["model_name"].as_str().unwrap_or(model)
            ),
            &rid,
        ));
    }
    let mut submission = ctx.catalogue.validate(&translated.body).map_err(|errors| {
        let errors: Vec<String> = errors
            .iter()
            .map(|e| format!("{}: {}", translate::kling_field(mode, &e.field), e.message))
            .collect();
        KlingError::invalid(errors.join("; "), &rid)
    })?;
    // The same `external_task_id` with another `callback_url` is another request.
    submission.request_hash =
        client_webhooks::request_hash(submission.request_hash, translated.callback.as_ref());
    let request = SubmitRequest {
        user_id: caller.user_id,
        api_key_id: Some(caller.api_key_id),
        submission,
        idempotency_key: translated.external_task_id.map(|id| format!("kling:{id}")),
        default_max_in_flight: ctx.settings.limits.default_max_in_flight,
        webhook: translated.callback,
    };
    let view = match ctx.submits.submit(request).await.map_err(|e| submit_error(e, &rid))? {
        SubmitOutcome::Created(view) => {
            ctx.relay.wake();
            tracing::info!(generation_id = %view.id, model = %view.model, cost = view.cost, "Kling task accepted");
            view
        }
        SubmitOutcome::Replayed(view) => view,
    };
    Ok(success(&rid, kling_task::created_task(&view)))
}

/// Query a Kling task.
///
/// By `task_id` (gengate's generation id) or by the request's `external_task_id`. A task of
/// another endpoint, or of another user, is `404` (1203).
#[utoipa::path(
    get,
    path = "/kling/v1/videos/{mode}/{task_id}",
    operation_id = "klingGetVideoTask",
    tag = "kling",
    security(("api_key" = [])),
    params(
        ("mode" = String, Path, description = "The endpoint the task was created on."),
        ("task_id" = String, Path, description = "The task id, or your `external_task_id`."),
    ),
    responses(
        (status = OK, description = "The task.", body = KlingTaskAnswer),
        (status = UNAUTHORIZED, description = "1001–1004 credentials.", body = KlingErrorAnswer),
        (status = NOT_FOUND, description = "1202 no such endpoint; 1203 no such task.", body = KlingErrorAnswer),
        (status = TOO_MANY_REQUESTS, description = "1302 rate limit.", body = KlingErrorAnswer),
        (status = INTERNAL_SERVER_ERROR, description = "5000.", body = KlingErrorAnswer),
        (status = SERVICE_UNAVAILABLE, description = "5001 retry later.", body = KlingErrorAnswer),
    ),
)]
async fn query_task(
    State(ctx): State<ApiContext>,
    headers: HeaderMap,
    axum::extract::Path((endpoint, task_id)): axum::extract::Path<(String, String)>,
    KlingCaller(caller): KlingCaller,
) -> Result<Response, KlingError> {
    let rid = request_id(&headers);
    let mode = path_mode(&endpoint, &rid)?;
    let id = match task_id.parse::<GenerationId>() {
        Ok(id) => Some(id),
        Err(_) => sqlx::query_scalar(
            "SELECT id FROM generations WHERE user_id = $1 AND idempotency_key = $2",
        )
        .bind(caller.user_id)
        .bind(format!("kling:{task_id}"))
        .fetch_optional(&ctx.pool)
        .await
        .map_err(|err| KlingError::database(err, &rid))?,
    };
    let view = match id {
        Some(id) => store::view(&ctx.pool, id, Some(caller.user_id))
            .await
            .map_err(|err| KlingError::database(err, &rid))?,
        None => None,
    };
    let view = view
        .filter(|view| view.mode == mode)
        .ok_or_else(|| KlingError::not_found(format!("no {mode} task {task_id}"), &rid))?;
    let view = present(&ctx, view, &rid).await?;
    Ok(success(&rid, kling_task::task(&view)))
}

async fn present(
    ctx: &ApiContext,
    view: GenerationView,
    rid: &str,
) -> Result<GenerationView, KlingError> {
    ctx.present(view).await.map_err(|err| KlingError::internal(err, false, rid))
}

/// The list query.
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code, non_snake_case, reason = "documentation only, in Kling's names")]
struct ListParams {
    /// Page, from 1 (default 1; at most 1000).
    #[param(minimum = 1, maximum = 1000)]
    pageNum: Option<i64>,
    /// Tasks per page, 1–500 (default 30).
    #[param(minimum = 1, maximum = 500)]
    pageSize: Option<i64>,
}

/// List Kling tasks.
///
/// The caller's tasks of this endpoint, newest first, a page at a time (`pageNum`, `pageSize`).
#[utoipa::path(
    get,
    path = "/kling/v1/videos/{mode}",
    operation_id = "klingListVideoTasks",
    tag = "kling",
    security(("api_key" = [])),
    params(("mode" = String, Path, description = "The endpoint."), ListParams),
    responses(
        (status = OK, description = "A page of tasks.", body = KlingTaskListAnswer),
        (status = BAD_REQUEST, description = "1201 a bad query parameter.", body = KlingErrorAnswer),
        (status = UNAUTHORIZED, description = "1001–1004 credentials.", body = KlingErrorAnswer),
        (status = NOT_FOUND, description = "1202 no such endpoint.", body = KlingErrorAnswer),
        (status = TOO_MANY_REQUESTS, description = "1302 rate limit.", body = KlingErrorAnswer),
        (status = INTERNAL_SERVER_ERROR, description = "5000.", body = KlingErrorAnswer),
        (status = SERVICE_UNAVAILABLE, description = "5001 retry later.", body = KlingErrorAnswer),
    ),
)]
async fn list_tasks(
    State(ctx): State<ApiContext>,
    headers: HeaderMap,
    axum::extract::Path(endpoint): axum::extract::Path<String>,
    query: Result<axum::extract::Query<BTreeMap<String, String>>, QueryRejection>,
    KlingCaller(caller): KlingCaller,
) -> Result<Response, KlingError> {
    let rid = request_id(&headers);
    let mode = path_mode(&endpoint, &rid)?;
    let query = query.map_err(|err| KlingError::invalid(err.body_text(), &rid))?.0;
    let mut errors = Vec::new();
    let mut number = |name: &str, default: i64, max: i64| match query.get(name) {
        None => default,
        Some(text) => match text.parse::<i64>() {
            Ok(n) if (1..=max).contains(&n) => n,
            _ => {
                errors.push(format!("{name}: must be a whole number from 1 to {max}"));
                default
            }
        },
    };
    let page = number("pageNum", 1, 1000);
    let size = number("pageSize", 30, 500);
    for name in query.keys().filter(|k| !matches!(k.as_str(), "pageNum" | "pageSize")) {
        errors.push(format!("{name}: unknown query parameter"));
    }
    if !errors.is_empty() {
        return Err(KlingError::invalid(errors.join("; "), &rid));
    }
    let ids: Vec<GenerationId> = sqlx::query_scalar(
        "SELECT id FROM generations WHERE user_id = $1 AND mode = $2
         ORDER BY created_at DESC, id DESC LIMIT $3 OFFSET $4",
    )
    .bind(caller.user_id)
    .bind(mode.as_str())
    .bind(size)
    .bind((page - 1) * size)
    .fetch_all(&ctx.pool)
    .await
    .map_err(|err| KlingError::database(err, &rid))?;
    let mut tasks = Vec::with_capacity(ids.len());
    for id in ids {
        let view = store::view(&ctx.pool, id, Some(caller.user_id))
            .await
            .map_err(|err| KlingError::database(err, &rid))?;
        if let Some(view) = view {
            tasks.push(kling_task::task(&present(&ctx, view, &rid).await?));
        }
    }
    Ok(success(&rid, Value::Array(tasks)))
}
