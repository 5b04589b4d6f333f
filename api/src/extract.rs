//! Request extractors whose failures answer in problem+json like everything else: a JSON body
//! (415 without the JSON content type, 400 for malformed JSON, 422 naming the field for data that
//! does not fit, 413 past the body limit) and a query string (422 naming the parameter).

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use gengate_http::problem::Problem;
use serde::de::DeserializeOwned;

use crate::error::{ApiError, FieldError};

/// A JSON request body.
#[derive(Debug, Clone, Copy, Default)]
pub struct Json<T>(pub T);

impl<T, S> FromRequest<S> for Json<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(request, state).await {
            Ok(axum::Json(value)) => Ok(Json(value)),
            Err(JsonRejection::MissingJsonContentType(_)) => Err(Problem::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "Unsupported media type",
                "send the body as JSON with `Content-Type: application/json`",
            )
            .into()),
            Err(JsonRejection::JsonSyntaxError(err)) => Err(Problem::new(
                StatusCode::BAD_REQUEST,
                "malformed_json",
                "Malformed JSON",
                detail_after_colon(&err.body_text()),
            )
            .into()),
            Err(JsonRejection::JsonDataError(err)) => {
                Err(ApiError::Validation(vec![field_error(&detail_after_colon(&err.body_text()))]))
            }
            Err(JsonRejection::BytesRejection(err))
                if err.status() == StatusCode::PAYLOAD_TOO_LARGE =>
            {
                Err(Problem::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "payload_too_large",
                    "Payload too large",
                    "the request body exceeds the size limit",
                )
                .into())
            }
            Err(other) => {
                Err(Problem::new(other.status(), "bad_request", "Bad request", other.body_text())
                    .into())
            }
        }
    }
}

/// A query string.
#[derive(Debug, Clone, Copy, Default)]
pub struct Query<T>(pub T);

impl<T, S> FromRequestParts<S> for Query<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(value)) => Ok(Query(value)),
            Err(QueryRejection::FailedToDeserializeQueryString(err)) => {
                Err(ApiError::Validation(vec![field_error(&detail_after_colon(&err.body_text()))]))
            }
            Err(other) => {
                Err(Problem::new(other.status(), "bad_request", "Bad request", other.body_text())
                    .into())
            }
        }
    }
}

/// axum's messages read "Failed to …: <serde's message>"; keep serde's part.
fn detail_after_colon(text: &str) -> String {
    text.split_once(": ").map_or(text, |(_, rest)| rest).to_owned()
}

/// serde's message is "<path>: <what>" when it knows the path.
fn field_error(message: &str) -> FieldError {
    match message.split_once(": ") {
        Some((path, what)) if !path.contains(' ') => FieldError::new(path, what),
        _ => FieldError::new("body", message),
    }
}

/// A path parameter. One that does not parse (e.g. a malformed id) names no resource: 404.
#[derive(Debug, Clone, Copy, Default)]
pub struct Path<T>(pub T);

impl<T, S> FromRequestParts<S> for Path<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(value)| Path(value))
            .map_err(|_| ApiError::NotFound)
    }
}
