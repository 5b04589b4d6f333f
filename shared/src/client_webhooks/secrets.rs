//! Signing secrets. A user has one (it signs deliveries to the URLs its requests name); a default
//! endpoint has its own. Each is a row whose id, with the server key of its version, derives the
//! secret ([`CallbackKeys::derive`]): the database never holds a secret, and a stolen backup
//! cannot forge a delivery. Rotating retires the current secret at the end of a grace period,
//! while both sign, so a client can switch its verifier without losing a delivery.

use std::time::Duration;

use sqlx::PgExecutor;
use time::OffsetDateTime;
use uuid::Uuid;

use super::signing::SigningSecret;
use crate::db::Tx;
use crate::generation::callback_token::CallbackKeys;
use crate::ids::UserId;

/// What a secret's derivation is for (domain separation from callback tokens).
const PURPOSE: &str = "client webhook signing secret";

/// Whose secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner {
    /// A user's (for URLs named by its requests).
    User(UserId),
    /// A default endpoint's.
    Endpoint(Uuid),
}

impl Owner {
    fn ids(self) -> (Option<UserId>, Option<Uuid>) {
        match self {
            Owner::User(user) => (Some(user), None),
            Owner::Endpoint(endpoint) => (None, Some(endpoint)),
        }
    }
}

/// A stored secret: its id and key version, which derive it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SecretRow {
    /// Its id.
    pub id: Uuid,
    /// The server key it is derived from.
    pub key_version: i16,
    /// When it was made.
    pub created_at: OffsetDateTime,
    /// When it stops signing (`None`: it is the current one).
    pub retires_at: Option<OffsetDateTime>,
}

impl SecretRow {
    /// The secret; `None` when its server key is no longer configured.
    pub fn secret(&self, keys: &CallbackKeys) -> Option<SigningSecret> {
        keys.derive(self.key_version, PURPOSE, self.id.as_bytes()).map(SigningSecret::new)
    }
}

/// The owner's current secret, made now if it has none.
pub async fn current(
    tx: &mut Tx,
    owner: Owner,
    keys: &CallbackKeys,
) -> Result<SecretRow, sqlx::Error> {
    let (user, endpoint) = owner.ids();
    // A concurrent first read makes one secret: the unique index on the current one decides.
    sqlx::query(
        "INSERT INTO webhook_secrets (id, user_id, endpoint_id, key_version)
         VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
    )
    .bind(Uuid::now_v7())
    .bind(user)
    .bind(endpoint)
    .bind(keys.current_version())
    .execute(&mut **tx)
    .await?;
    sqlx::query_as(
        "SELECT id, key_version, created_at, retires_at FROM webhook_secrets
         WHERE retires_at IS NULL AND (user_id = $1 OR endpoint_id = $2)",
    )
    .bind(user)
    .bind(endpoint)
    .fetch_one(&mut **tx)
    .await
}

/// Rotates the owner's secret: the current one keeps signing for `grace` (and an older one still
/// in its grace period, no longer than that), a new one signs from now on. Returns the new one
/// and when the last old one retires.
pub async fn rotate(
    tx: &mut Tx,
    owner: Owner,
    keys: &CallbackKeys,
    grace: Duration,
) -> Result<(SecretRow, Option<OffsetDateTime>), sqlx::Error> {
    let (user, endpoint) = owner.ids();
    // Every secret that still signs stops by the end of this grace period at the latest: a
    // rotation with no grace leaves only the new secret signing.
    let retired: Option<OffsetDateTime> = sqlx::query_scalar(
        "WITH retired AS (
             UPDATE webhook_secrets
             SET retires_at = LEAST(COALESCE(retires_at, 'infinity'), now() + make_interval(secs => $3))
             WHERE (retires_at IS NULL OR retires_at > now()) AND (user_id = $1 OR endpoint_id = $2)
             RETURNING retires_at)
         SELECT max(retires_at) FROM retired",
    )
    .bind(user)
    .bind(endpoint)
    .bind(grace.as_secs_f64())
    .fetch_one(&mut **tx)
    .await?;
    let new = current(tx, owner, keys).await?;
    Ok((new, retired))
}

/// The secrets that sign a delivery now: the current one and those still in their grace period,
/// newest first. Empty when the owner never had one (the caller makes it).
pub async fn signing(
    executor: impl PgExecutor<'_>,
    owner: Owner,
) -> Result<Vec<SecretRow>, sqlx::Error> {
    let (user, endpoint) = owner.ids();
    sqlx::query_as(
        "SELECT id, key_version, created_at, retires_at FROM webhook_secrets
         WHERE (user_id = $1 OR endpoint_id = $2) AND (retires_at IS NULL OR retires_at > now())
         ORDER BY created_at DESC, id DESC",
    )
    .bind(user)
    .bind(endpoint)
    .fetch_all(executor)
    .await
}
