//! Default endpoints: an operator registers one for a user (every request of the user that names
//! no URL of its own) or for one of its API keys (that key's requests). Each has its own signing
//! secret, shown when it is registered. An endpoint that answers 410 Gone, or whose every attempt
//! failed for `client_webhooks.disable_after_ms`, is disabled, with the reason kept for its owner.

use serde::Serialize;
use sqlx::PgExecutor;
use time::OffsetDateTime;
use uuid::Uuid;

use super::secrets::{self, Owner, SecretRow};
use super::{Event, address};
use crate::config::ClientWebhookSettings;
use crate::db::Tx;
use crate::generation::callback_token::CallbackKeys;
use crate::ids::{ApiKeyId, UserId};
use crate::validation::{FieldError, Text};

/// A default endpoint as its owner and operators see it.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Endpoint {
    /// Its id.
    pub id: Uuid,
    /// Its owner.
    pub user_id: UserId,
    /// The API key whose requests it receives; `None`: every request of its user.
    pub api_key_id: Option<ApiKeyId>,
    /// Where deliveries go.
    pub url: String,
    /// The events it receives; `None`: all but the opt-in ones (`Event::OPT_IN`).
    pub events: Option<Vec<String>>,
    /// The operator's note.
    pub description: Option<String>,
    /// When it was registered.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// Since when every attempt to it failed (`None` after a success).
    #[serde(with = "time::serde::rfc3339::option")]
    pub failing_since: Option<OffsetDateTime>,
    /// When it was disabled.
    #[serde(with = "time::serde::rfc3339::option")]
    pub disabled_at: Option<OffsetDateTime>,
    /// Why.
    pub disabled_reason: Option<String>,
}

const COLUMNS: &str =
    "id, user_id, api_key_id, url, events, description, created_at, failing_since,
    disabled_at, disabled_reason";

/// What a new endpoint is.
#[derive(Debug, Clone)]
pub struct NewEndpoint {
    /// Its owner.
    pub user_id: UserId,
    /// Only this key's requests (the key must be the user's).
    pub api_key_id: Option<ApiKeyId>,
    /// Where deliveries go (checked by [`super::address::check_url`]).
    pub url: String,
    /// The events it receives; `None`: all but the opt-in ones (`Event::OPT_IN`).
    pub events: Option<Vec<Event>>,
    /// The operator's note.
    pub description: Option<String>,
}

impl NewEndpoint {
    /// An endpoint as an operator asks for it, checked: the URL by the address rules (stored in
    /// normal form, as a request's `webhook_url`), the events (none listed: all; an empty list is
    /// refused), the description's characters. Every problem at once, by field (`url`,
    /// `events[i]`, `description`).
    pub fn checked(
        user_id: UserId,
        api_key_id: Option<ApiKeyId>,
        url: &str,
        events: Option<&[String]>,
        description: Option<String>,
        settings: &ClientWebhookSettings,
    ) -> Result<Self, Vec<FieldError>> {
        let mut errors = Vec::new();
        let url = match address::check_url(url, settings) {
            Ok(url) => url.to_string(),
            Err(why) => {
                errors.push(FieldError::new("url", why));
                String::new()
            }
        };
        let events = events.map(|names| {
            super::parse_events(names.iter().map(|n| Some(n.as_str())), "events", &mut errors)
        });
        if events.as_ref().is_some_and(Vec::is_empty) && errors.is_empty() {
            errors.push(FieldError::new(
                "events",
                "must list at least one event (leave it out for all)",
            ));
        }
        errors
            .extend(description.as_deref().and_then(|d| Text::Free.field_error("description", d)));
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(Self { user_id, api_key_id, url, events, description })
    }
}

/// Why an endpoint was not registered.
#[derive(Debug, thiserror::Error)]
pub enum EndpointError {
    /// The user (or the key, for that user) does not exist.
    #[error("no such user or API key")]
    NotFound,
    /// The user (or key) already has a live endpoint (its id, unless a concurrent registration
    /// just made it).
    #[error("a live endpoint is registered for this user or key already")]
    Exists(Option<Uuid>),
    /// PostgreSQL.
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

impl crate::db::Transient for EndpointError {
    fn is_transient(&self) -> bool {
        matches!(self, EndpointError::Database(err) if err.is_transient())
    }
}

/// Registers an endpoint.
pub async fn create(tx: &mut Tx, new: &NewEndpoint) -> Result<Endpoint, EndpointError> {
    let owner_ok: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM users WHERE id = $1)
            AND ($2::uuid IS NULL OR EXISTS (SELECT 1 FROM api_keys WHERE id = $2 AND user_id = $1))",
    )
    .bind(new.user_id)
    .bind(new.api_key_id)
    .fetch_one(&mut **tx)
    .await?;
    if !owner_ok {
        return Err(EndpointError::NotFound);
    }
    let existing: Option<Uuid> = sqlx::query_scalar(
        "SELECT id FROM webhook_endpoints
         WHERE user_id = $1 AND api_key_id IS NOT DISTINCT FROM $2 AND disabled_at IS NULL",
    )
    .bind(new.user_id)
    .bind(new.api_key_id)
    .fetch_optional(&mut **tx)
    .await?;
    if let Some(existing) = existing {
        return Err(EndpointError::Exists(Some(existing)));
    }
    let events: Option<Vec<&str>> =
        new.events.as_ref().map(|events| events.iter().map(|e| e.as_str()).collect());
    let sql = format!(
        "INSERT INTO webhook_endpoints (id, user_id, api_key_id, url, events, description)
         VALUES ($1, $2, $3, $4, $5, $6) RETURNING {COLUMNS}"
    );
    let inserted = sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(Uuid::now_v7())
        .bind(new.user_id)
        .bind(new.api_key_id)
        .bind(&new.url)
        .bind(events)
        .bind(&new.description)
        .fetch_one(&mut **tx)
        .await;
    match inserted {
        Ok(endpoint) => Ok(endpoint),
        // A concurrent registration for the same user or key won.
        Err(sqlx::Error::Database(err)) if err.is_unique_violation() => {
            Err(EndpointError::Exists(None))
        }
        Err(err) => Err(err.into()),
    }
}

/// Registers an endpoint with its signing secret (shown to the operator once).
pub async fn register(
    tx: &mut Tx,
    new: &NewEndpoint,
    keys: &CallbackKeys,
) -> Result<(Endpoint, SecretRow), EndpointError> {
    let endpoint = create(tx, new).await?;
    let secret = secrets::current(tx, Owner::Endpoint(endpoint.id), keys).await?;
    Ok((endpoint, secret))
}

/// A user's endpoints, live and disabled, oldest first.
pub async fn of_user(
    executor: impl PgExecutor<'_>,
    user: UserId,
) -> Result<Vec<Endpoint>, sqlx::Error> {
    let sql = format!(
        "SELECT {COLUMNS} FROM webhook_endpoints WHERE user_id = $1 ORDER BY created_at, id"
    );
    sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(user).fetch_all(executor).await
}

/// One endpoint.
pub async fn get(executor: impl PgExecutor<'_>, id: Uuid) -> Result<Option<Endpoint>, sqlx::Error> {
    let sql = format!("SELECT {COLUMNS} FROM webhook_endpoints WHERE id = $1");
    sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(id).fetch_optional(executor).await
}

/// Disables a live endpoint (an operator's decision), saying why, and ends its pending deliveries;
/// `None` if it does not exist or was disabled already.
pub async fn disable(
    pool: &sqlx::PgPool,
    id: Uuid,
    reason: &str,
) -> Result<Option<Endpoint>, sqlx::Error> {
    let sql = format!(
        "UPDATE webhook_endpoints SET disabled_at = now(), disabled_reason = $2
         WHERE id = $1 AND disabled_at IS NULL RETURNING {COLUMNS}"
    );
    let mut tx = pool.begin().await?;
    let disabled: Option<Endpoint> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(id)
        .bind(reason)
        .fetch_optional(&mut *tx)
        .await?;
    if disabled.is_some() {
        super::deliveries::abandon_endpoint(&mut *tx, id, reason).await?;
    }
    tx.commit().await?;
    if disabled.is_some() {
        metrics::counter!("gengate_webhook_endpoints_disabled_total", "reason" => "operator")
            .increment(1);
    }
    Ok(disabled)
}
