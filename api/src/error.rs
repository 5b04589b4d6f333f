//! The API's error type: every failure a handler can return, mapped to a problem+json answer.
//! Internal causes are logged, never sent to the client.

use std::sync::Arc;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use gengate_http::problem::Problem;
use gengate_shared::accounts::AccountError;
use gengate_shared::generation::cancel::CancelError;
use gengate_shared::generation::submit::SubmitError;
use gengate_shared::ledger::{self, LedgerError};

/// Result of a handler.
pub type Result<T, E = ApiError> = std::result::Result<T, E>;

pub use gengate_shared::validation::FieldError;

/// What can go wrong while answering a request.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Nothing at this path, or an object the caller may not see.
    #[error("not found")]
    NotFound,
    /// Missing or wrong credentials (the reason is for logs only).
    #[error("unauthorized: {0}")]
    Unauthorized(&'static str),
    /// The API key sent requests faster than its limit; retry after this long.
    #[error("rate limited")]
    RateLimited(std::time::Duration),
    /// The client's address failed to authenticate too often; retry after this long.
    #[error("too many failed authentications")]
    AuthThrottled(std::time::Duration),
    /// The request names every field that is wrong.
    #[error("validation failed")]
    Validation(Vec<FieldError>),
    /// An answer already shaped for the client.
    #[error("{}", .0.detail)]
    Problem(Box<Problem>),
    /// The ledger refused.
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    /// A database failure.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// Anything else unexpected.
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl gengate_shared::db::Transient for ApiError {
    fn is_transient(&self) -> bool {
        match self {
            ApiError::Ledger(err) => err.is_transient(),
            ApiError::Database(err) => err.is_transient(),
            _ => false,
        }
    }
}

impl From<Problem> for ApiError {
    fn from(problem: Problem) -> Self {
        ApiError::Problem(Box::new(problem))
    }
}

impl From<AccountError> for ApiError {
    fn from(err: AccountError) -> Self {
        match err {
            AccountError::EmailTaken(email) => Problem::new(
                StatusCode::CONFLICT,
                "email_taken",
                "Email taken",
                format!("a user with email {email} already exists"),
            )
            .into(),
            AccountError::Ledger(err) => err.into(),
            AccountError::Database(err) => err.into(),
        }
    }
}

impl From<SubmitError> for ApiError {
    fn from(err: SubmitError) -> Self {
        match err {
            SubmitError::IdempotencyConflict => Problem::new(
                StatusCode::CONFLICT,
                "idempotency_conflict",
                "Idempotency key reused",
                "this Idempotency-Key was already used with a different request",
            )
            .into(),
            SubmitError::TooManyInFlight { limit, in_flight } => Problem::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_in_flight",
                "Too many jobs in flight",
                format!("at most {limit} jobs may be queued or running at once"),
            )
            .with("limit", limit)
            .with("in_flight", in_flight)
            .into(),
            SubmitError::Ledger(err) => err.into(),
            SubmitError::Database(err) => err.into(),
            // The transaction the submit shared failed as a whole; nothing was written.
            SubmitError::Batch(err) => match Arc::try_unwrap(err) {
                Ok(err) => err.into(),
                Err(shared) if matches!(*shared, sqlx::Error::PoolTimedOut) => {
                    sqlx::Error::PoolTimedOut.into()
                }
                Err(shared) => ApiError::Internal(anyhow::anyhow!(
                    "the transaction of a batch of submits failed: {shared}"
                )),
            },
            SubmitError::IdempotencyRace => {
                ApiError::Internal(anyhow::anyhow!("idempotency race did not settle after retries"))
            }
        }
    }
}

impl From<CancelError> for ApiError {
    fn from(err: CancelError) -> Self {
        match err {
            CancelError::NotFound => ApiError::NotFound,
            CancelError::NotCancelable(status) => Problem::new(
                StatusCode::CONFLICT,
                "not_cancelable",
                "Not cancelable",
                format!("the generation is already {status}"),
            )
            .with("generation_status", status.as_str())
            .into(),
            CancelError::Ledger(err) => err.into(),
            CancelError::Database(err) => err.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match self {
            ApiError::NotFound => {
                Problem::new(StatusCode::NOT_FOUND, "not_found", "Not found", "no such resource")
                    .into_response()
            }
            ApiError::Unauthorized(_) => Problem::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "Unauthorized",
                "a valid `Authorization: Bearer` credential is required",
            )
            .into_response(),
            ApiError::RateLimited(wait) => rate_limited(wait, "too many requests for this API key"),
            ApiError::AuthThrottled(wait) => {
                rate_limited(wait, "too many failed authentications from this address")
            }
            ApiError::Validation(mut errors) => {
                // A refusal always says which field to fix.
                if errors.is_empty() {
                    errors.push(FieldError::new("body", "is not a valid request"));
                }
                let detail = errors.iter().map(|e| e.field.as_str()).collect::<Vec<_>>().join(", ");
                Problem::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "validation_failed",
                    "Validation failed",
                    format!("invalid fields: {detail}"),
                )
                .with("errors", serde_json::to_value(errors).expect("field errors serialize"))
                .into_response()
            }
            ApiError::Problem(problem) => problem.into_response(),
            ApiError::Ledger(err) => ledger_problem(err),
            ApiError::Database(sqlx::Error::PoolTimedOut) => {
                // Every connection is busy: the request was not started, and a retry may succeed.
                tracing::warn!("no database connection became free in time; answering 503");
                let mut response = Problem::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "overloaded",
                    "Overloaded",
                    "the service is busy; retry shortly",
                )
                .into_response();
                response
                    .headers_mut()
                    .insert(axum::http::header::RETRY_AFTER, axum::http::HeaderValue::from(1));
                response
            }
            ApiError::Database(sqlx::Error::Database(err))
                if err.code().is_some_and(|code| code.starts_with("22")) =>
            {
                // Class 22 (data exception): the request carried a value PostgreSQL cannot
                // store (a date out of range, a character it refuses). The client's to fix, and
                // a retry would fail the same way: never "safe to retry".
                tracing::info!(error = %err, "request refused by a data exception");
                ApiError::Validation(vec![FieldError::new(
                    "body",
                    "holds a value that cannot be stored (out of range or malformed)",
                )])
                .into_response()
            }
            ApiError::Database(err) => {
                tracing::error!(error = %err, "database error");
                internal()
            }
            ApiError::Internal(err) => {
                tracing::error!(error = format!("{err:#}"), "internal error");
                internal()
            }
        }
    }
}

fn ledger_problem(err: LedgerError) -> Response {
    match err {
        LedgerError::InsufficientCredits { balance, held, cost } => {
            let available = balance - held;
            let detail = if held > 0 {
                format!(
                    "this needs {cost} credits; {available} are available (balance {balance}, \
                     {held} held for running postpaid jobs)"
                )
            } else {
                format!("this needs {cost} credits; the balance is {balance}")
            };
            Problem::new(
                StatusCode::PAYMENT_REQUIRED,
                "insufficient_credits",
                "Insufficient credits",
                detail,
            )
            .with("balance", balance)
            .with("held", held)
            .with("available", available)
            .with("cost", cost)
            .into_response()
        }
        LedgerError::OutstandingDebt { debt } => Problem::new(
            StatusCode::PAYMENT_REQUIRED,
            "outstanding_debt",
            "Outstanding debt",
            format!("{debt} credits are owed; they are paid from the next grant"),
        )
        .with("debt", debt)
        .into_response(),
        LedgerError::InvalidAmount(amount) => ApiError::Validation(vec![FieldError::new(
            "amount",
            format!("must be positive (a grant at most {}), got {amount}", ledger::MAX_GRANT),
        )])
        .into_response(),
        LedgerError::OrderNoConflict { order_no } => Problem::new(
            StatusCode::CONFLICT,
            "order_conflict",
            "Order already used",
            format!("order {order_no} was already granted to another user"),
        )
        .into_response(),
        LedgerError::OrderNoReused { order_no, granted } => Problem::new(
            StatusCode::CONFLICT,
            "order_conflict",
            "Order already used",
            format!(
                "order {order_no} was already granted for {granted} credits; a replay must repeat \
                 the original amount"
            ),
        )
        .with("granted", granted)
        .into_response(),
        LedgerError::UnknownUser => ApiError::NotFound.into_response(),
        LedgerError::Inconsistent(what) => {
            tracing::error!(what, "ledger inconsistency");
            internal()
        }
        LedgerError::Database(err) => ApiError::Database(err).into_response(),
    }
}

/// `429 rate_limited` with `Retry-After` (whole seconds, at least 1).
fn rate_limited(wait: std::time::Duration, what: &str) -> Response {
    let seconds = (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1);
    let mut response = Problem::new(
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limited",
        "Rate limited",
        format!("{what}; retry in {seconds} s"),
    )
    .with("retry_after", seconds)
    .into_response();
    response
        .headers_mut()
        .insert(axum::http::header::RETRY_AFTER, axum::http::HeaderValue::from(seconds));
    response
}

fn internal() -> Response {
    Problem::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal",
        "Internal error",
        "the request could not be completed; it is safe to retry",
    )
    .into_response()
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;

    use sqlx::error::{DatabaseError, ErrorKind};

    use super::*;

    /// A PostgreSQL error with a given SQLSTATE.
    #[derive(Debug)]
    struct Sqlstate(&'static str);

    impl std::fmt::Display for Sqlstate {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "SQLSTATE {}", self.0)
        }
    }

    impl std::error::Error for Sqlstate {}

    impl DatabaseError for Sqlstate {
        fn message(&self) -> &str {
            "from the server"
        }
        fn code(&self) -> Option<Cow<'_, str>> {
            Some(Cow::Borrowed(self.0))
        }
        fn as_error(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
            self
        }
        fn as_error_mut(&mut self) -> &mut (dyn std::error::Error + Send + Sync + 'static) {
            self
        }
        fn into_error(self: Box<Self>) -> Box<dyn std::error::Error + Send + Sync + 'static> {
            self
        }
        fn kind(&self) -> ErrorKind {
            ErrorKind::Other
        }
    }

    fn status_of(err: ApiError) -> StatusCode {
        err.into_response().status()
    }

    #[test]
    fn data_exceptions_are_the_clients_to_fix_never_a_500() {
        // 22008 datetime out of range, 22021 a character the encoding refuses (NUL), 22P05 an
        // unsupported escape in jsonb, 22003 a number out of range.
        for code in ["22008", "22021", "22P05", "22003"] {
            let err = sqlx::Error::Database(Box::new(Sqlstate(code)));
            assert_eq!(status_of(ApiError::Database(err)), StatusCode::UNPROCESSABLE_ENTITY);
            let ledger = LedgerError::Database(sqlx::Error::Database(Box::new(Sqlstate(code))));
            assert_eq!(status_of(ApiError::Ledger(ledger)), StatusCode::UNPROCESSABLE_ENTITY);
        }
        let other = sqlx::Error::Database(Box::new(Sqlstate("57P01")));
        assert_eq!(status_of(ApiError::Database(other)), StatusCode::INTERNAL_SERVER_ERROR);
    }

    #[test]
    fn a_validation_refusal_always_names_a_field() {
        let response = ApiError::Validation(Vec::new()).into_response();
        assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
    }
}
