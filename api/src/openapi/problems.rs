//! Error answers in the document: the RFC 9457 problem body (`application/problem+json`, see
//! `gengate_http::problem`), every stable `code` the API answers with, and the error responses of
//! each operation, listed next to its handler as `responses(…, problems::SomeSet)`.
//!
//! A response documents its status, the codes it may carry (`code` is an enum in its schema and
//! the description says when each is answered), the extension members a code always carries
//! (`required`), and one example per code. [`Code::ALWAYS`] (timeouts, internal errors, load
//! shedding) is added to every operation: the middleware can answer them anywhere.

use std::collections::BTreeMap;

use serde_json::{Value, json};
use utoipa::openapi::example::ExampleBuilder;
use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::response::ResponseBuilder;
use utoipa::openapi::schema::{AllOfBuilder, ObjectBuilder, Schema, Type};
use utoipa::openapi::{ContentBuilder, Ref, RefOr, Response};
use utoipa::{IntoResponses, ToSchema};

use super::schemas::{FieldError, GenerationStatus};

/// The content type of every error answer.
pub const PROBLEM_CONTENT_TYPE: &str = gengate_http::problem::CONTENT_TYPE;

/// An error answer (RFC 9457 problem details). `status` is always the HTTP status; `code` is
/// stable, and what clients match on. Problem-specific members never reuse the standard names;
/// each is present only with the codes its description names.
#[derive(Debug, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({
    "type": "https://gengate.dev/problems/insufficient_credits", "title": "Insufficient credits",
    "status": 402, "code": "insufficient_credits",
    "detail": "this needs 42 credits; the balance is 10",
    "balance": 10, "held": 0, "available": 10, "cost": 42
}))]
pub struct Problem {
    /// A URI naming the problem type: `https://gengate.dev/problems/{code}`.
    #[serde(rename = "type")]
    #[schema(format = Uri)]
    pub type_uri: String,
    /// A short summary of the problem type.
    pub title: String,
    /// The HTTP status.
    #[schema(minimum = 400, maximum = 599)]
    pub status: u16,
    /// The stable code clients match on.
    #[schema(schema_with = every_code)]
    pub code: String,
    /// What went wrong this time, for people.
    pub detail: String,
    /// `validation_failed`: every failing field at once (never empty).
    #[schema(nullable = false, min_items = 1)]
    pub errors: Option<Vec<FieldError>>,
    /// `insufficient_credits`: credits in usable grants.
    #[schema(nullable = false)]
    pub balance: Option<i64>,
    /// `insufficient_credits`: credits held by running postpaid jobs.
    #[schema(nullable = false)]
    pub held: Option<i64>,
    /// `insufficient_credits`: `balance − held`.
    #[schema(nullable = false)]
    pub available: Option<i64>,
    /// `insufficient_credits`: the price of the request.
    #[schema(nullable = false)]
    pub cost: Option<i64>,
    /// `outstanding_debt`: credits owed.
    #[schema(nullable = false)]
    pub debt: Option<i64>,
    /// `too_many_in_flight`: the user's limit of jobs queued or running.
    #[schema(nullable = false)]
    pub limit: Option<i32>,
    /// `too_many_in_flight`: the user's jobs queued or running now.
    #[schema(nullable = false)]
    pub in_flight: Option<i64>,
    /// `not_cancelable`: the status the generation already has.
    #[schema(nullable = false)]
    pub generation_status: Option<GenerationStatus>,
    /// `order_conflict` (the same user, another amount): the credits the order was granted.
    #[schema(nullable = false)]
    pub granted: Option<i64>,
    /// `rate_limited`: seconds to wait (as the `Retry-After` header).
    #[schema(nullable = false, minimum = 1)]
    pub retry_after: Option<u64>,
    /// `not_ready`: the dependencies that do not answer (`postgres`, `rabbitmq`).
    #[schema(nullable = false)]
    pub failing: Option<Vec<String>>,
    /// `not_ready`: each dependency, `ok` or why it does not answer.
    #[schema(nullable = false)]
    pub checks: Option<BTreeMap<String, String>>,
}

fn every_code() -> Schema {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .description(Some("The stable code clients match on."))
        .enum_values(Some(Code::ALL.iter().map(|c| c.about().code)))
        .into()
}

/// Every `code` an answer of the API carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    /// 400 `malformed_json`.
    MalformedJson,
    /// 400 `unparsable_callback`.
    UnparsableCallback,
    /// 400 `result_url_rejected`.
    ResultUrlRejected,
    /// 401 `unauthorized`.
    Unauthorized,
    /// 402 `insufficient_credits`.
    InsufficientCredits,
    /// 402 `outstanding_debt`.
    OutstandingDebt,
    /// 403 `link_invalid`.
    LinkInvalid,
    /// 403 `link_expired`.
    LinkExpired,
    /// 404 `not_found`.
    NotFound,
    /// 405 `method_not_allowed`.
    MethodNotAllowed,
    /// 408 `timeout`.
    Timeout,
    /// 409 `idempotency_conflict`.
    IdempotencyConflict,
    /// 409 `not_cancelable`.
    NotCancelable,
    /// 409 `order_conflict`.
    OrderConflict,
    /// 409 `email_taken`.
    EmailTaken,
    /// 409 `endpoint_exists`.
    EndpointExists,
    /// 409 `endpoint_disabled`.
    EndpointDisabled,
    /// 413 `payload_too_large`.
    PayloadTooLarge,
    /// 415 `unsupported_media_type`.
    UnsupportedMediaType,
    /// 416 `range_not_satisfiable`.
    RangeNotSatisfiable,
    /// 422 `validation_failed`.
    ValidationFailed,
    /// 429 `too_many_in_flight`.
    TooManyInFlight,
    /// 429 `rate_limited`.
    RateLimited,
    /// 500 `internal`.
    Internal,
    /// 503 `overloaded`.
    Overloaded,
    /// 503 `not_ready`.
    NotReady,
    /// 503 `broker_unavailable`.
    BrokerUnavailable,
}

/// What the document says of a [`Code`].
#[derive(Debug)]
pub struct About {
    /// The HTTP status.
    pub status: u16,
    /// The code.
    pub code: &'static str,
    /// The problem's title.
    pub title: &'static str,
    /// When it is answered.
    pub when: &'static str,
    /// The extension members it always carries.
    pub carries: &'static [&'static str],
}

impl Code {
    /// Every code.
    pub const ALL: [Code; 27] = [
        Code::MalformedJson,
        Code::UnparsableCallback,
        Code::ResultUrlRejected,
        Code::Unauthorized,
        Code::InsufficientCredits,
        Code::OutstandingDebt,
        Code::LinkInvalid,
        Code::LinkExpired,
        Code::NotFound,
        Code::MethodNotAllowed,
        Code::Timeout,
        Code::IdempotencyConflict,
        Code::NotCancelable,
        Code::OrderConflict,
        Code::EmailTaken,
        Code::EndpointExists,
        Code::EndpointDisabled,
        Code::PayloadTooLarge,
        Code::UnsupportedMediaType,
        Code::RangeNotSatisfiable,
        Code::ValidationFailed,
        Code::TooManyInFlight,
        Code::RateLimited,
        Code::Internal,
        Code::Overloaded,
        Code::NotReady,
        Code::BrokerUnavailable,
    ];

    /// What any operation may answer: the middleware's timeout and load shedding, and an
    /// internal error.
    pub const ALWAYS: [Code; 3] = [Code::Timeout, Code::Internal, Code::Overloaded];

    /// Its status, title, meaning and members.
    pub fn about(self) -> About {
        let (status, code, title, when, carries): (u16, _, _, _, &'static [&'static str]) =
            match self {
                Code::MalformedJson => {
                    (400, "malformed_json", "Malformed JSON", "the body is not JSON", &[])
                }
                Code::UnparsableCallback => (
                    400,
                    "unparsable_callback",
                    "Unparsable callback",
                    "the generation's provider adapter cannot parse the body; nothing changed",
                    &[],
                ),
                Code::ResultUrlRejected => (
                    400,
                    "result_url_rejected",
                    "Result URL rejected",
                    "a result URL is off the allowlist or not in normal form; nothing changed",
                    &[],
                ),
                Code::Unauthorized => (
                    401,
                    "unauthorized",
                    "Unauthorized",
                    "a missing, malformed, unknown or revoked credential (always the same answer)",
                    &[],
                ),
                Code::InsufficientCredits => (
                    402,
                    "insufficient_credits",
                    "Insufficient credits",
                    "what is available (`available` = `balance` − `held`) does not cover the \
                     price (`cost`)",
                    &["balance", "held", "available", "cost"],
                ),
                Code::OutstandingDebt => (
                    402,
                    "outstanding_debt",
                    "Outstanding debt",
                    "the account owes credits (`debt`); they are paid from the next grant",
                    &["debt"],
                ),
                Code::LinkInvalid => (
                    403,
                    "link_invalid",
                    "Invalid link",
                    "the link's signature does not match (altered, or not made by gengate)",
                    &[],
                ),
                Code::LinkExpired => (
                    403,
                    "link_expired",
                    "Link expired",
                    "the link expired; read the generation again for a fresh one",
                    &[],
                ),
                Code::NotFound => {
                    (404, "not_found", "Not found", "no such resource, or not yours", &[])
                }
                Code::MethodNotAllowed => (
                    405,
                    "method_not_allowed",
                    "Method not allowed",
                    "the path does not take this method",
                    &[],
                ),
                Code::Timeout => (
                    408,
                    "timeout",
                    "Request timeout",
                    "the request took longer than `api.request_timeout_ms`",
                    &[],
                ),
                Code::IdempotencyConflict => (
                    409,
                    "idempotency_conflict",
                    "Idempotency key reused",
                    "the `Idempotency-Key` was already used with a different request",
                    &[],
                ),
                Code::NotCancelable => (
                    409,
                    "not_cancelable",
                    "Not cancelable",
                    "the generation already ended (`generation_status`)",
                    &["generation_status"],
                ),
                Code::OrderConflict => (
                    409,
                    "order_conflict",
                    "Order already used",
                    "the order number was granted to another user, or to this one for another \
                     amount (`granted`)",
                    &[],
                ),
                Code::EmailTaken => {
                    (409, "email_taken", "Email taken", "a user with this email exists", &[])
                }
                Code::EndpointExists => (
                    409,
                    "endpoint_exists",
                    "Endpoint exists",
                    "a live default webhook endpoint is registered for this user (or this API \
                     key) already; disable it first",
                    &[],
                ),
                Code::EndpointDisabled => (
                    409,
                    "endpoint_disabled",
                    "Endpoint disabled",
                    "the delivery's default endpoint is disabled, so it would not be sent",
                    &[],
                ),
                Code::PayloadTooLarge => (
                    413,
                    "payload_too_large",
                    "Payload too large",
                    "the body exceeds the size limit (`api.body_limit_bytes`; \
                     `webhook.max_body_bytes` for provider callbacks)",
                    &[],
                ),
                Code::UnsupportedMediaType => (
                    415,
                    "unsupported_media_type",
                    "Unsupported media type",
                    "the body is not sent as `Content-Type: application/json`",
                    &[],
                ),
                Code::RangeNotSatisfiable => (
                    416,
                    "range_not_satisfiable",
                    "Range not satisfiable",
                    "the `Range` header is not one byte range within the file",
                    &[],
                ),
                Code::ValidationFailed => (
                    422,
                    "validation_failed",
                    "Validation failed",
                    "`errors` lists every failing field at once; also a value PostgreSQL cannot \
                     store",
                    &["errors"],
                ),
                Code::TooManyInFlight => (
                    429,
                    "too_many_in_flight",
                    "Too many jobs in flight",
                    "the user has `limit` jobs queued or running",
                    &["limit", "in_flight"],
                ),
                Code::RateLimited => (
                    429,
                    "rate_limited",
                    "Rate limited",
                    "the API key sent too many requests, or the client's address failed to \
                     authenticate too often; `Retry-After` says when to come back",
                    &["retry_after"],
                ),
                Code::Internal => (
                    500,
                    "internal",
                    "Internal error",
                    "the request could not be completed; it is safe to retry",
                    &[],
                ),
                Code::Overloaded => (
                    503,
                    "overloaded",
                    "Overloaded",
                    "the API is handling as many requests as it may, or every database \
                     connection stayed busy; nothing was done, retry after `Retry-After`",
                    &[],
                ),
                Code::NotReady => (
                    503,
                    "not_ready",
                    "Not ready",
                    "a dependency does not answer (`failing`)",
                    &["failing", "checks"],
                ),
                Code::BrokerUnavailable => (
                    503,
                    "broker_unavailable",
                    "Try again later",
                    "the callback could not be queued; the provider retries",
                    &[],
                ),
            };
        About { status, code, title, when, carries }
    }

    /// A body of this code, as the API would send it.
    pub fn example(self) -> Value {
        let about = self.about();
        let (detail, extra) = match self {
            Code::MalformedJson => ("expected value at line 1 column 1", json!({})),
            Code::UnparsableCallback => {
                ("the callback body is not a task this provider sends", json!({}))
            }
            Code::ResultUrlRejected => ("result URL host is not allowlisted", json!({})),
            Code::Unauthorized => {
                ("a valid `Authorization: Bearer` credential is required", json!({}))
            }
            Code::InsufficientCredits => (
                "this needs 42 credits; the balance is 10",
                json!({"balance": 10, "held": 0, "available": 10, "cost": 42}),
            ),
            Code::OutstandingDebt => {
                ("12 credits are owed; they are paid from the next grant", json!({"debt": 12}))
            }
            Code::LinkInvalid => {
                ("invalid link; read the generation again for a fresh link", json!({}))
            }
            Code::LinkExpired => {
                ("link expired; read the generation again for a fresh link", json!({}))
            }
            Code::NotFound => ("no such resource", json!({})),
            Code::MethodNotAllowed => ("Method Not Allowed", json!({})),
            Code::Timeout => ("Request Timeout", json!({})),
            Code::IdempotencyConflict => {
                ("this Idempotency-Key was already used with a different request", json!({}))
            }
            Code::NotCancelable => {
                ("the generation is already completed", json!({"generation_status": "completed"}))
            }
            Code::OrderConflict => (
                "order ORD-2026-0001 was already granted for 1000 credits; a replay must repeat \
                 the original amount",
                json!({"granted": 1000}),
            ),
            Code::EmailTaken => ("a user with email ada@example.com already exists", json!({})),
            Code::EndpointExists => (
                "a live endpoint is registered for this user or key already \
                 (0192f0c4-0000-7000-8000-0000000000e1); disable it first",
                json!({}),
            ),
            Code::EndpointDisabled => (
                "its endpoint 0192f0c4-0000-7000-8000-0000000000e1 is disabled (the endpoint \
                 answered 410 Gone), so it would not be sent",
                json!({}),
            ),
            Code::PayloadTooLarge => ("the request body exceeds the size limit", json!({})),
            Code::UnsupportedMediaType => {
                ("send the body as JSON with `Content-Type: application/json`", json!({}))
            }
            Code::RangeNotSatisfiable => {
                ("one byte range within the file, e.g. `Range: bytes=0-1023`", json!({}))
            }
            Code::ValidationFailed => (
                "invalid fields: duration, image_urls[0]",
                json!({"errors": [
                    {"field": "duration", "message": "7 is not offered; one of: 5, 10"},
                    {"field": "image_urls[0]", "message": "must be an https URL"}
                ]}),
            ),
            Code::TooManyInFlight => (
                "at most 5 jobs may be queued or running at once",
                json!({"limit": 5, "in_flight": 5}),
            ),
            Code::RateLimited => {
                ("too many requests for this API key; retry in 1 s", json!({"retry_after": 1}))
            }
            Code::Internal => {
                ("the request could not be completed; it is safe to retry", json!({}))
            }
            Code::Overloaded => ("the service is busy; retry shortly", json!({})),
            Code::NotReady => (
                "unavailable: rabbitmq",
                json!({"failing": ["rabbitmq"],
                       "checks": {"postgres": "ok", "rabbitmq": "not connected"}}),
            ),
            Code::BrokerUnavailable => {
                ("the callback could not be queued; please retry", json!({}))
            }
        };
        let mut body = json!({
            "type": format!("https://gengate.dev/problems/{}", about.code),
            "title": about.title,
            "status": about.status,
            "code": about.code,
            "detail": detail,
        });
        if let (Some(body), Value::Object(extra)) = (body.as_object_mut(), extra) {
            body.extend(extra);
        }
        body
    }
}

/// The error responses of an operation: `codes` and [`Code::ALWAYS`], one response per status.
pub fn responses(codes: &[Code]) -> BTreeMap<String, RefOr<Response>> {
    let mut by_status: BTreeMap<u16, Vec<Code>> = BTreeMap::new();
    for code in codes.iter().chain(Code::ALWAYS.iter()) {
        let entry = by_status.entry(code.about().status).or_default();
        if !entry.contains(code) {
            entry.push(*code);
        }
    }
    by_status
        .into_iter()
        .map(|(status, codes)| (status.to_string(), RefOr::T(response(status, &codes))))
        .collect()
}

fn response(status: u16, codes: &[Code]) -> Response {
    let abouts: Vec<About> = codes.iter().map(|c| c.about()).collect();
    let description = abouts
        .iter()
        .map(|a| format!("`{}`: {}.", a.code, a.when))
        .collect::<Vec<_>>()
        .join("\n\n");
    // Members every code of this response carries are required; the others stay optional.
    let required: Vec<&str> = abouts[0]
        .carries
        .iter()
        .copied()
        .filter(|member| abouts.iter().all(|a| a.carries.contains(member)))
        .collect();
    let mut narrowed = ObjectBuilder::new()
        .schema_type(Type::Object)
        .property(
            "status",
            ObjectBuilder::new().schema_type(Type::Integer).enum_values(Some([status])),
        )
        .property(
            "code",
            ObjectBuilder::new()
                .schema_type(Type::String)
                .enum_values(Some(abouts.iter().map(|a| a.code))),
        )
        .required("status")
        .required("code");
    for member in required {
        narrowed = narrowed.required(member);
    }
    let schema: Schema =
        AllOfBuilder::new().item(Ref::from_schema_name("Problem")).item(narrowed).into();
    let mut content = ContentBuilder::new().schema(Some(schema));
    content = content.examples_from_iter(codes.iter().map(|code| {
        let about = code.about();
        (about.code, ExampleBuilder::new().summary(about.title).value(Some(code.example())))
    }));
    let mut response = ResponseBuilder::new()
        .description(description)
        .content(PROBLEM_CONTENT_TYPE, content.build());
    if codes.iter().any(|c| matches!(c, Code::RateLimited | Code::Overloaded)) {
        let which = if status == 429 { "`rate_limited`" } else { "`overloaded`" };
        response = response.header(
            "Retry-After",
            HeaderBuilder::new()
                .schema(ObjectBuilder::new().schema_type(Type::Integer).minimum(Some(1)))
                .description(Some(format!("With {which}: seconds to wait before retrying.")))
                .build(),
        );
    }
    response.build()
}

/// Declares named sets of error answers, for `#[utoipa::path(responses(…))]`.
macro_rules! problem_sets {
    ($( $(#[$doc:meta])* $name:ident = [$($code:ident),* $(,)?]; )*) => {
        $(
            $(#[$doc])*
            #[derive(Debug)]
            pub struct $name;

            impl IntoResponses for $name {
                fn responses() -> BTreeMap<String, RefOr<Response>> {
                    responses(&[$(Code::$code),*])
                }
            }
        )*
    };
}

problem_sets! {
    /// What any operation may answer, and nothing else.
    Common = [];
    /// `POST /v1/generations`.
    CreateGeneration = [
        MalformedJson, Unauthorized, InsufficientCredits, OutstandingDebt, IdempotencyConflict,
        PayloadTooLarge, UnsupportedMediaType, ValidationFailed, TooManyInFlight, RateLimited,
    ];
    /// A listing with query parameters, by an API key.
    ClientList = [Unauthorized, ValidationFailed, RateLimited];
    /// Reading one resource by an API key.
    ClientRead = [Unauthorized, NotFound, RateLimited];
    /// `POST /v1/generations/{id}/cancel`.
    CancelGeneration = [Unauthorized, NotFound, NotCancelable, RateLimited];
    /// `GET /files/{key}`.
    DownloadFile = [LinkInvalid, LinkExpired, NotFound, RangeNotSatisfiable];
    /// A provider callback.
    ProviderCallback = [
        UnparsableCallback, ResultUrlRejected, Unauthorized, PayloadTooLarge, RateLimited,
        BrokerUnavailable,
    ];
    /// `POST /api/generation/handle-failure`.
    ReportFailure = [
        MalformedJson, Unauthorized, NotFound, PayloadTooLarge, UnsupportedMediaType,
        ValidationFailed, RateLimited,
    ];
    /// `POST /admin/users`.
    CreateUser = [
        MalformedJson, Unauthorized, EmailTaken, PayloadTooLarge, UnsupportedMediaType,
        ValidationFailed, RateLimited,
    ];
    /// `POST /admin/users/{id}/api-keys` (the body is optional, so its content type is not
    /// checked).
    CreateApiKey = [Unauthorized, NotFound, PayloadTooLarge, ValidationFailed, RateLimited];
    /// `POST /admin/users/{id}/grants`.
    CreateGrant = [
        MalformedJson, Unauthorized, NotFound, OrderConflict, PayloadTooLarge,
        UnsupportedMediaType, ValidationFailed, RateLimited,
    ];
    /// Reading or revoking by the admin token.
    AdminRead = [Unauthorized, NotFound, RateLimited];
    /// Reading the caller's own settings by an API key (nothing there can be missing).
    ClientOwn = [Unauthorized, RateLimited];
    /// `POST /v1/webhooks/secret/rotate` (the body is optional, so its content type is not
    /// checked).
    RotateWebhookSecret = [Unauthorized, PayloadTooLarge, ValidationFailed, RateLimited];
    /// `POST /admin/users/{id}/webhook-endpoints`.
    CreateWebhookEndpoint = [
        MalformedJson, Unauthorized, NotFound, EndpointExists, PayloadTooLarge,
        UnsupportedMediaType, ValidationFailed, RateLimited,
    ];
    /// Changing a default webhook endpoint by the admin token: disabling it, rotating its
    /// secret (the body is optional, so its content type is not checked).
    ChangeWebhookEndpoint = [Unauthorized, NotFound, PayloadTooLarge, ValidationFailed, RateLimited];
    /// A listing with query parameters, by the admin token.
    AdminList = [Unauthorized, ValidationFailed, RateLimited];
    /// `POST /admin/webhook-deliveries/{id}/redeliver`.
    Redeliver = [Unauthorized, NotFound, EndpointDisabled, RateLimited];
    /// `GET /readyz`.
    Readiness = [NotReady];
    /// A static file of the API reference.
    Asset = [NotFound];
}
