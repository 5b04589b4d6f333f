//! Who is calling: an API key user, the admin, or a trusted server. Each is an extractor, so a
//! handler cannot forget to check. Every refusal is the same `401 unauthorized` (the reason is
//! logged, not told).

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use gengate_shared::accounts::{self, Caller};
use secrecy::ExposeSecret;

use crate::error::ApiError;
use crate::state::ApiContext;

fn bearer(parts: &Parts) -> Option<&str> {
    let value = parts.headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then_some(token.trim())
}

/// A request authenticated with a user's API key.
#[derive(Debug, Clone, Copy)]
pub struct ApiUser(pub Caller);

impl FromRequestParts<ApiContext> for ApiUser {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        ctx: &ApiContext,
    ) -> Result<Self, Self::Rejection> {
        let Some(token) = bearer(parts) else {
            return Err(ApiError::Unauthorized("missing bearer API key"));
        };
        match accounts::authenticate(&ctx.pool, token).await? {
            Ok(caller) => {
                if let Err(wait) = ctx.rate_limiter.check(caller.api_key_id) {
                    return Err(ApiError::RateLimited(wait));
                }
                Ok(ApiUser(caller))
            }
            Err(rejection) => {
                tracing::info!(?rejection, "API key refused");
                Err(ApiError::Unauthorized("invalid API key"))
            }
        }
    }
}

/// A request carrying the admin token.
#[derive(Debug, Clone, Copy)]
pub struct Admin;

impl FromRequestParts<ApiContext> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        ctx: &ApiContext,
    ) -> Result<Self, Self::Rejection> {
        check_token(parts, ctx.settings.api.admin_token.as_ref(), "admin").map(|()| Admin)
    }
}

/// A request carrying the internal (server-to-server) token.
#[derive(Debug, Clone, Copy)]
pub struct Internal;

impl FromRequestParts<ApiContext> for Internal {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        ctx: &ApiContext,
    ) -> Result<Self, Self::Rejection> {
        check_token(parts, ctx.settings.api.internal_token.as_ref(), "internal").map(|()| Internal)
    }
}

fn check_token(
    parts: &Parts,
    expected: Option<&secrecy::SecretString>,
    which: &str,
) -> Result<(), ApiError> {
    let Some(expected) = expected else {
        tracing::warn!("{which} token not configured; refusing the request");
        return Err(ApiError::Unauthorized("token not accepted"));
    };
    match bearer(parts) {
        Some(token) if accounts::token_matches(token, expected.expose_secret()) => Ok(()),
        _ => Err(ApiError::Unauthorized("token not accepted")),
    }
}
