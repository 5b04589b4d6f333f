//! Accounts: users and their API keys.
//!
//! An API key is `gg_<prefix>_<secret>`: the prefix (not secret) finds the key's row, and only a
//! SHA-256 of the whole key is stored, compared in constant time. Keys are 238 bits of randomness,
//! so a fast hash is the right tool (a slow password hash only protects guessable secrets). The key
//! is shown once, when it is created.

use rand::Rng;
use rand::distr::Alphanumeric;
use serde::Serialize;
use sha2::{Digest, Sha256};
use sqlx::PgExecutor;
use subtle::ConstantTimeEq;
use time::OffsetDateTime;

use crate::config::AccountSettings;
use crate::db::Tx;
use crate::ids::{ApiKeyId, UserId};
use crate::ledger::{self, GrantSource, LedgerError, NewGrant};

const KEY_TAG: &str = "gg";
const PREFIX_LEN: usize = 12;
const SECRET_LEN: usize = 40;

/// A user as the admin API shows it.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct User {
    /// The user.
    pub id: UserId,
    /// Contact address, unique when set.
    pub email: Option<String>,
    /// Display name.
    pub name: Option<String>,
    /// Jobs this user may have in flight at once (none: the configured default).
    pub max_in_flight: Option<i32>,
    /// Credits owed.
    pub debt: i64,
    /// When the account was created.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

/// A user to create.
#[derive(Debug, Clone, Default)]
pub struct NewUser {
    /// Contact address.
    pub email: Option<String>,
    /// Display name.
    pub name: Option<String>,
    /// Per-user in-flight limit.
    pub max_in_flight: Option<i32>,
}

/// Why an account operation failed.
#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    /// Another user has this email.
    #[error("email {0} is already taken")]
    EmailTaken(String),
    /// The welcome grant failed.
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    /// A database failure.
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

impl crate::db::Transient for AccountError {
    fn is_transient(&self) -> bool {
        match self {
            AccountError::Ledger(err) => err.is_transient(),
            AccountError::Database(err) => err.is_transient(),
            AccountError::EmailTaken(_) => false,
        }
    }
}

/// Creates a user and gives them the configured `new_user` grant, if any.
pub async fn create_user(
    tx: &mut Tx,
    new: &NewUser,
    settings: &AccountSettings,
) -> Result<User, AccountError> {
    let user: User = sqlx::query_as(
        "INSERT INTO users (id, email, name, max_in_flight) VALUES ($1, $2, $3, $4)
         RETURNING id, email, name, max_in_flight, debt, created_at",
    )
    .bind(UserId::new())
    .bind(&new.email)
    .bind(&new.name)
    .bind(new.max_in_flight)
    .fetch_one(&mut **tx)
    .await
    .map_err(|err| match &err {
        sqlx::Error::Database(db) if db.constraint() == Some("users_email_key") => {
            AccountError::EmailTaken(new.email.clone().unwrap_or_default())
        }
        _ => AccountError::Database(err),
    })?;
    if settings.new_user_credits > 0 {
        let expires_at = (settings.new_user_credits_days > 0).then(|| {
            OffsetDateTime::now_utc() + time::Duration::days(settings.new_user_credits_days)
        });
        ledger::grant(
            tx,
            &NewGrant {
                user_id: user.id,
                source: GrantSource::NewUser,
                amount: settings.new_user_credits,
                expires_at,
                priority: 0,
                effective_at: None,
                order_no: None,
            },
        )
        .await?;
    }
    Ok(user)
}

/// A user by id.
pub async fn find_user(
    executor: impl PgExecutor<'_>,
    id: UserId,
) -> Result<Option<User>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, email, name, max_in_flight, debt, created_at FROM users WHERE id = $1",
    )
    .bind(id)
    .fetch_optional(executor)
    .await
}

/// A freshly created API key: the only time the whole key exists outside the client.
#[derive(Debug, Clone, Serialize)]
pub struct NewApiKey {
    /// The key's id.
    pub id: ApiKeyId,
    /// The non-secret part that identifies it (shown in listings and logs).
    pub prefix: String,
    /// The whole key. Not stored; show it once.
    pub key: String,
}

fn random_text(len: usize) -> String {
    rand::rng().sample_iter(Alphanumeric).take(len).map(char::from).collect()
}

/// What is stored of a key (and of a configured token, to compare it): its SHA-256.
pub fn digest(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

/// Creates an API key for `user` and returns it; only its hash is stored.
pub async fn create_api_key(
    executor: impl PgExecutor<'_>,
    user: UserId,
    name: Option<&str>,
) -> Result<NewApiKey, sqlx::Error> {
    let id = ApiKeyId::new();
    let prefix = random_text(PREFIX_LEN);
    let key = format!("{KEY_TAG}_{prefix}_{}", random_text(SECRET_LEN));
    sqlx::query(
        "INSERT INTO api_keys (id, user_id, prefix, key_hash, name) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(id)
    .bind(user)
    .bind(&prefix)
    .bind(digest(&key).as_slice())
    .bind(name)
    .execute(executor)
    .await?;
    Ok(NewApiKey { id, prefix, key })
}

/// Whose key this is.
#[derive(Debug, Clone, Copy)]
pub struct Caller {
    /// The key's owner.
    pub user_id: UserId,
    /// The key used.
    pub api_key_id: ApiKeyId,
}

/// Why a presented key was refused. The client is told only "unauthorized".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyRejection {
    /// Not of the `gg_<prefix>_<secret>` form.
    Malformed,
    /// No live key with this prefix, or the secret does not match.
    Unknown,
    /// The key was revoked.
    Revoked,
}

/// What the database holds of one API key: enough to check a presented key against it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct StoredKey {
    /// The key.
    pub id: ApiKeyId,
    /// Its owner.
    pub user_id: UserId,
    /// SHA-256 of the whole key.
    pub key_hash: Vec<u8>,
    /// When it was revoked, if it was.
    pub revoked_at: Option<OffsetDateTime>,
}

impl StoredKey {
    /// Checks `presented` (whose prefix found this row) against it, in constant time.
    pub fn check(&self, presented: &str) -> Result<Caller, KeyRejection> {
        if !bool::from(digest(presented).as_slice().ct_eq(&self.key_hash)) {
            return Err(KeyRejection::Unknown);
        }
        if self.revoked_at.is_some() {
            return Err(KeyRejection::Revoked);
        }
        Ok(Caller { user_id: self.user_id, api_key_id: self.id })
    }
}

/// The key whose prefix is `prefix`, if any.
pub async fn find_key(
    executor: impl PgExecutor<'_>,
    prefix: &str,
) -> Result<Option<StoredKey>, sqlx::Error> {
    sqlx::query_as("SELECT id, user_id, key_hash, revoked_at FROM api_keys WHERE prefix = $1")
        .bind(prefix)
        .fetch_optional(executor)
        .await
}

/// Checks a presented API key against the database.
pub async fn authenticate(
    executor: impl PgExecutor<'_>,
    presented: &str,
) -> Result<Result<Caller, KeyRejection>, sqlx::Error> {
    let Some(prefix) = parse_prefix(presented) else {
        return Ok(Err(KeyRejection::Malformed));
    };
    Ok(match find_key(executor, prefix).await? {
        Some(stored) => stored.check(presented),
        None => Err(KeyRejection::Unknown),
    })
}

/// The prefix of a well-formed `gg_<prefix>_<secret>` key (what finds its row).
pub fn parse_prefix(key: &str) -> Option<&str> {
    let rest = key.strip_prefix(KEY_TAG)?.strip_prefix('_')?;
    let (prefix, secret) = rest.split_once('_')?;
    let well_formed = prefix.len() == PREFIX_LEN
        && secret.len() == SECRET_LEN
        && prefix.bytes().chain(secret.bytes()).all(|b| b.is_ascii_alphanumeric());
    well_formed.then_some(prefix)
}

/// The `NOTIFY` channel a revocation is announced on (payload: the key's prefix), so that every
/// API process drops the key from its memory at once.
pub const API_KEYS_CHANNEL: &str = "gengate_api_keys";

/// An API key as operators see it (never the key itself).
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct ApiKeyView {
    /// The key.
    pub id: ApiKeyId,
    /// Its owner.
    pub user_id: UserId,
    /// The non-secret part that identifies it.
    pub prefix: String,
    /// Its name, if it was given one.
    pub name: Option<String>,
    /// When it was created.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// When it was revoked.
    #[serde(with = "time::serde::rfc3339::option")]
    pub revoked_at: Option<OffsetDateTime>,
    /// When it was last used (written every `api.key_usage_flush_ms`, so up to that much behind).
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_used_at: Option<OffsetDateTime>,
}

const KEY_VIEW_COLUMNS: &str = "id, user_id, prefix, name, created_at, revoked_at, last_used_at";

/// A user's keys, newest first.
pub async fn list_api_keys(
    executor: impl PgExecutor<'_>,
    user: UserId,
) -> Result<Vec<ApiKeyView>, sqlx::Error> {
    let sql = format!(
        "SELECT {KEY_VIEW_COLUMNS} FROM api_keys WHERE user_id = $1 ORDER BY created_at DESC, id"
    );
    sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(user).fetch_all(executor).await
}

/// Revokes key `id` (of `user`, when given) and announces it on [`API_KEYS_CHANNEL`], in the
/// caller's transaction: the API processes drop it when the transaction commits. Revoking a
/// revoked key changes nothing. `None`: no such key (of that user).
pub async fn revoke_api_key(
    tx: &mut Tx,
    user: Option<UserId>,
    id: ApiKeyId,
) -> Result<Option<ApiKeyView>, sqlx::Error> {
    let sql = format!(
        "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, now())
         WHERE id = $1 AND ($2::uuid IS NULL OR user_id = $2)
         RETURNING {KEY_VIEW_COLUMNS}"
    );
    let revoked: Option<ApiKeyView> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(id)
        .bind(user)
        .fetch_optional(&mut **tx)
        .await?;
    if let Some(key) = &revoked {
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(API_KEYS_CHANNEL)
            .bind(&key.prefix)
            .execute(&mut **tx)
            .await?;
    }
    Ok(revoked)
}

/// Records when keys were last used: `uses[i]` is the latest use of `keys[i]`. One statement for
/// all of them; a time older than the one stored is ignored.
pub async fn record_key_usage(
    executor: impl PgExecutor<'_>,
    keys: &[ApiKeyId],
    uses: &[OffsetDateTime],
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE api_keys k SET last_used_at = GREATEST(k.last_used_at, u.used_at)
         FROM UNNEST($1::uuid[], $2::timestamptz[]) AS u(id, used_at)
         WHERE k.id = u.id",
    )
    .bind(keys)
    .bind(uses)
    .execute(executor)
    .await?;
    Ok(())
}

/// Compares a presented bearer token with the configured one in constant time.
pub fn token_matches(presented: &str, expected: &str) -> bool {
    // Hashing first makes the comparison length-independent too.
    bool::from(digest(presented).ct_eq(&digest(expected)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_have_a_findable_prefix_and_malformed_ones_are_recognised() {
        let key = format!("gg_{}_{}", "A".repeat(12), "b".repeat(40));
        assert_eq!(parse_prefix(&key), Some("AAAAAAAAAAAA"));
        assert_eq!(parse_prefix("gg_short_x"), None);
        assert_eq!(parse_prefix(&key.replace("gg_", "xx_")), None);
        assert_eq!(parse_prefix(&format!("{key}!")), None);
        assert_eq!(parse_prefix(""), None);
    }

    #[test]
    fn token_comparison_is_exact() {
        assert!(token_matches("secret-token", "secret-token"));
        assert!(!token_matches("secret-token ", "secret-token"));
        assert!(!token_matches("", "secret-token"));
    }
}
