//! RFC 9457 problem details: the one error body shape of every gengate HTTP endpoint.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::{Map, Value};

/// `application/problem+json`.
pub const CONTENT_TYPE: &str = "application/problem+json";

/// An error answer: a stable machine-readable `code`, a human `detail`, and extra fields.
#[derive(Debug, Clone, Serialize)]
pub struct Problem {
    /// A URI naming the problem type (`https://gengate.dev/problems/{code}`).
    #[serde(rename = "type")]
    pub type_uri: String,
    /// A short summary of the problem type.
    pub title: String,
    /// The HTTP status, repeated in the body.
    pub status: u16,
    /// The stable code clients match on, e.g. `insufficient_credits`.
    pub code: String,
    /// What went wrong this time.
    pub detail: String,
    /// Problem-specific fields (`balance`, `cost`, `errors`, …).
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl Problem {
    /// A problem with no extra fields.
    pub fn new(status: StatusCode, code: &str, title: &str, detail: impl Into<String>) -> Self {
        Self {
            type_uri: format!("https://gengate.dev/problems/{code}"),
            title: title.to_owned(),
            status: status.as_u16(),
            code: code.to_owned(),
            detail: detail.into(),
            extra: Map::new(),
        }
    }

    /// The members RFC 9457 defines (and gengate's `code`): an extension may not reuse them, or
    /// the body would carry two members of one name.
    pub const RESERVED: [&str; 5] = ["type", "title", "status", "code", "detail"];

    /// Adds a field next to the standard ones. Panics in debug builds when `key` is one of
    /// [`Problem::RESERVED`]; release builds drop such a field rather than send it twice.
    pub fn with(mut self, key: &str, value: impl Into<Value>) -> Self {
        let reserved = Self::RESERVED.contains(&key);
        debug_assert!(!reserved, "problem extension {key:?} would shadow a standard member");
        if !reserved {
            self.extra.insert(key.to_owned(), value.into());
        }
        self
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut response = (status, axum::Json(self)).into_response();
        response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
        response
    }
}
