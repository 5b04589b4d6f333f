//! Who is calling: an API key user, the admin, or a trusted server. Each is an extractor, so a
//! handler cannot forget to check. Every refusal is the same `401 unauthorized` (the reason is
//! logged, not told).
//!
//! Failed authentications are counted per client address ([`ClientAddress`]): past
//! `limits.auth_failure_burst` (then `auth_failures_per_minute`), an address is answered `429`
//! with `Retry-After` instead of being checked against the database at all. Valid credentials
//! from that address still pass, because they can be checked in memory: the admin and internal
//! tokens are configured, webhook tokens are derived from the server key, and an API key in use
//! is in the key cache. So a provider's webhooks or a busy client behind the same address as an
//! attacker are never slowed by the attacker's failures.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use axum::extract::{ConnectInfo, FromRequestParts};
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

/// The address a request comes from: the TCP peer's, or, when `api.client_address_header` is set
/// (a trusted proxy in front), the last address that header lists. `None` when unknown.
#[derive(Debug, Clone, Copy)]
pub struct ClientAddress(pub Option<IpAddr>);

impl FromRequestParts<ApiContext> for ClientAddress {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        ctx: &ApiContext,
    ) -> Result<Self, Self::Rejection> {
        Ok(ClientAddress(client_address(parts, ctx)))
    }
}

fn client_address(parts: &Parts, ctx: &ApiContext) -> Option<IpAddr> {
    if let Some(header) = &ctx.settings.api.client_address_header {
        return parts
            .headers
            .get_all(header.as_str())
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .next_back()
            .and_then(|last| last.trim().parse().ok());
    }
    parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|ConnectInfo(peer)| peer.ip())
}

impl ClientAddress {
    /// How long this address must wait before its credentials are checked against the database
    /// again; `None` while it has failed attempts left.
    pub fn blocked(self, ctx: &ApiContext) -> Option<Duration> {
        ctx.auth_failures.blocked(&self.0?)
    }

    /// Counts a failed authentication of this address.
    pub fn failed(self, ctx: &ApiContext, what: &'static str) {
        metrics::counter!("gengate_auth_failures_total", "credential" => what).increment(1);
        if let Some(address) = self.0 {
            let _ = ctx.auth_failures.check(&address);
        }
    }

    /// The answer to a refused credential: 429 once the address is past its limit (counted
    /// separately), 401 before, counting the failure.
    pub fn refuse(self, ctx: &ApiContext, what: &'static str, why: &'static str) -> ApiError {
        match self.blocked(ctx) {
            Some(wait) => {
                metrics::counter!("gengate_auth_throttled_total", "credential" => what)
                    .increment(1);
                ApiError::AuthThrottled(wait)
            }
            None => {
                self.failed(ctx, what);
                ApiError::Unauthorized(why)
            }
        }
    }
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
        let address = ClientAddress(client_address(parts, ctx));
        let Some(token) = bearer(parts) else {
            return Err(address.refuse(ctx, "api_key", "missing bearer API key"));
        };
        let verdict = match address.blocked(ctx) {
            // Past its limit, an address gets no database lookups: only a key in memory passes.
            Some(wait) => match ctx.keys.authenticate_from_memory(token) {
                Some(Ok(caller)) => Ok(caller),
                _ => return Err(ApiError::AuthThrottled(wait)),
            },
            None => ctx.keys.authenticate(&ctx.pool, token).await?,
        };
        match verdict {
            Ok(caller) => {
                if let Err(wait) = ctx.rate_limiter.check(&caller.api_key_id) {
                    return Err(ApiError::RateLimited(wait));
                }
                Ok(ApiUser(caller))
            }
            Err(rejection) => {
                tracing::info!(?rejection, "API key refused");
                Err(address.refuse(ctx, "api_key", "invalid API key"))
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
        check_token(parts, ctx, ctx.settings.api.admin_token.as_ref(), "admin").map(|()| Admin)
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
        check_token(parts, ctx, ctx.settings.api.internal_token.as_ref(), "internal")
            .map(|()| Internal)
    }
}

fn check_token(
    parts: &Parts,
    ctx: &ApiContext,
    expected: Option<&secrecy::SecretString>,
    which: &'static str,
) -> Result<(), ApiError> {
    let address = ClientAddress(client_address(parts, ctx));
    let Some(expected) = expected else {
        tracing::warn!("{which} token not configured; refusing the request");
        return Err(address.refuse(ctx, which, "token not accepted"));
    };
    match bearer(parts) {
        // Checked in memory: a right token passes even from an address past its limit.
        Some(token) if accounts::token_matches(token, expected.expose_secret()) => Ok(()),
        _ => Err(address.refuse(ctx, which, "token not accepted")),
    }
}
