//! API keys as this process checks them: from memory once a key has been read, so a busy client
//! costs no database round trip per request, yet a revocation takes effect at once in every API
//! process.
//!
//! - A key read from the database is kept for `api.key_cache_ttl_ms`. A revocation is announced
//!   with PostgreSQL `NOTIFY` ([`accounts::API_KEYS_CHANNEL`]) in the revoking transaction, and
//!   every process's listener drops the key when it arrives. While the listener is not
//!   connected (a notification could be missed) nothing is served from memory, and the memory is
//!   cleared whenever it connects again.
//! - Unknown prefixes are not remembered, so a flood of made-up keys cannot fill memory (the
//!   failed-authentication limit in [`crate::auth`] keeps it off the database).
//! - Each use is noted in memory and written to `api_keys.last_used_at` every
//!   `api.key_usage_flush_ms`, one statement for all keys used since.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use gengate_shared::accounts::{self, Caller, KeyRejection, StoredKey};
use gengate_shared::ids::ApiKeyId;
use sqlx::PgPool;
use sqlx::postgres::PgListener;
use time::OffsetDateTime;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Keys this process has read, by prefix, and when each was last used.
#[derive(Debug)]
pub struct KeyCache {
    ttl: Duration,
    /// True while the revocation listener is connected: only then is memory trusted.
    listening: AtomicBool,
    /// The keys read, and a count of the revocations heard (and listener changes): a key read
    /// from the database before a revocation arrived must not be remembered after it.
    keys: Mutex<Keys>,
    used: Mutex<HashMap<ApiKeyId, OffsetDateTime>>,
}

#[derive(Debug, Default)]
struct Keys {
    by_prefix: HashMap<String, (StoredKey, Instant)>,
    revocations: u64,
}

/// Most keys kept in memory; past it the memory starts afresh (the next request of each key reads
/// it again).
const MAX_CACHED_KEYS: usize = 100_000;

impl KeyCache {
    /// An empty cache whose entries live `ttl`.
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            listening: AtomicBool::new(false),
            keys: Mutex::new(Keys::default()),
            used: Mutex::new(HashMap::new()),
        }
    }

    /// Checks a presented key: from memory when it may, else from the database (and remembers
    /// it). A key accepted is noted as used.
    pub async fn authenticate(
        &self,
        pool: &PgPool,
        presented: &str,
    ) -> Result<Result<Caller, KeyRejection>, sqlx::Error> {
        let Some(prefix) = accounts::parse_prefix(presented) else {
            return Ok(Err(KeyRejection::Malformed));
        };
        let verdict = match self.cached(prefix) {
            Some(stored) => stored.check(presented),
            None => {
                let revocations = self.revocations();
                match accounts::find_key(pool, prefix).await? {
                    Some(stored) => {
                        let verdict = stored.check(presented);
                        self.remember(prefix, stored, revocations);
                        verdict
                    }
                    None => Err(KeyRejection::Unknown),
                }
            }
        };
        if let Ok(caller) = &verdict {
            self.note_use(caller.api_key_id);
        }
        Ok(verdict)
    }

    /// Checks a presented key against memory only: `None` when memory cannot tell (the key was
    /// not read recently, or revocations may be missed now). For callers that must not touch
    /// the database.
    pub fn authenticate_from_memory(
        &self,
        presented: &str,
    ) -> Option<Result<Caller, KeyRejection>> {
        let prefix = accounts::parse_prefix(presented)?;
        let verdict = self.cached(prefix)?.check(presented);
        if let Ok(caller) = &verdict {
            self.note_use(caller.api_key_id);
        }
        Some(verdict)
    }

    fn cached(&self, prefix: &str) -> Option<StoredKey> {
        if !self.listening.load(Ordering::Acquire) {
            return None;
        }
        let keys = self.keys.lock().unwrap_or_else(|p| p.into_inner());
        let (stored, read_at) = keys.by_prefix.get(prefix)?;
        (read_at.elapsed() < self.ttl).then(|| stored.clone())
    }

    /// How many revocations (and listener changes) this process has heard of: taken before a
    /// key is read from the database, so that [`KeyCache::remember`] can tell whether one came
    /// in while it was being read.
    fn revocations(&self) -> u64 {
        self.keys.lock().unwrap_or_else(|p| p.into_inner()).revocations
    }

    /// Keeps a key read from the database while nothing was revoked since `revocations` (a row
    /// read just before a revocation committed would otherwise outlive it by the TTL).
    fn remember(&self, prefix: &str, stored: StoredKey, revocations: u64) {
        if !self.listening.load(Ordering::Acquire) {
            return;
        }
        let mut keys = self.keys.lock().unwrap_or_else(|p| p.into_inner());
        if keys.revocations != revocations {
            return;
        }
        if keys.by_prefix.len() >= MAX_CACHED_KEYS {
            keys.by_prefix.clear();
        }
        keys.by_prefix.insert(prefix.to_owned(), (stored, Instant::now()));
    }

    /// Drops a key from memory (its revocation was committed; other processes hear of it by
    /// `NOTIFY`).
    pub fn forget(&self, prefix: &str) {
        let mut keys = self.keys.lock().unwrap_or_else(|p| p.into_inner());
        keys.revocations += 1;
        keys.by_prefix.remove(prefix);
    }

    /// Trusts memory again (`true`, after clearing it) or stops trusting it (`false`).
    fn set_listening(&self, listening: bool) {
        let mut keys = self.keys.lock().unwrap_or_else(|p| p.into_inner());
        keys.revocations += 1;
        keys.by_prefix.clear();
        self.listening.store(listening, Ordering::Release);
    }

    /// Notes a use of `key` (written with the next flush).
    pub(crate) fn note_use(&self, key: ApiKeyId) {
        let mut used = self.used.lock().unwrap_or_else(|p| p.into_inner());
        used.insert(key, OffsetDateTime::now_utc());
    }

    /// Writes the uses noted since the last flush; on failure they are kept for the next one.
    pub async fn flush_usage(&self, pool: &PgPool) {
        let used: Vec<(ApiKeyId, OffsetDateTime)> =
            std::mem::take(&mut *self.used.lock().unwrap_or_else(|p| p.into_inner()))
                .into_iter()
                .collect();
        if used.is_empty() {
            return;
        }
        let (keys, times): (Vec<ApiKeyId>, Vec<OffsetDateTime>) = used.iter().copied().unzip();
        if let Err(err) = accounts::record_key_usage(pool, &keys, &times).await {
            tracing::warn!(error = %err, keys = keys.len(), "recording API key use failed; retrying later");
            let mut pending = self.used.lock().unwrap_or_else(|p| p.into_inner());
            for (key, at) in used {
                let entry = pending.entry(key).or_insert(at);
                *entry = (*entry).max(at);
            }
        }
    }
}

/// Starts the revocation listener and the usage flusher; both stop with `shutdown` (the flusher
/// writes once more first).
pub fn spawn(
    cache: Arc<KeyCache>,
    pool: PgPool,
    flush_every: Duration,
    shutdown: CancellationToken,
) -> JoinHandle<()> {
    tokio::spawn(listen_for_revocations(cache.clone(), pool.clone(), shutdown.clone()));
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(flush_every) => cache.flush_usage(&pool).await,
            }
        }
        cache.flush_usage(&pool).await;
    })
}

async fn listen_for_revocations(cache: Arc<KeyCache>, pool: PgPool, shutdown: CancellationToken) {
    loop {
        let connected = async {
            let mut listener = PgListener::connect_with(&pool).await?;
            listener.listen(accounts::API_KEYS_CHANNEL).await?;
            Ok::<_, sqlx::Error>(listener)
        };
        let mut listener = tokio::select! {
            _ = shutdown.cancelled() => return,
            connected = connected => match connected {
                Ok(listener) => listener,
                Err(err) => {
                    tracing::debug!(error = %err, "API key listener not connected; checking keys in the database");
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                    }
                }
            },
        };
        cache.set_listening(true);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                notification = listener.try_recv() => match notification {
                    Ok(Some(notification)) => cache.forget(notification.payload()),
                    // `None`: the connection was lost, and notifications with it; `Err`: the same.
                    Ok(None) | Err(_) => {
                        cache.set_listening(false);
                        tracing::debug!("API key listener lost; checking keys in the database until it is back");
                        break;
                    }
                },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use gengate_shared::ids::UserId;

    use super::*;

    fn key_row(revoked: bool) -> (String, StoredKey) {
        let prefix = "A".repeat(12);
        let key = format!("gg_{prefix}_{}", "b".repeat(40));
        let hash = accounts::digest(&key);
        let stored = StoredKey {
            id: ApiKeyId::new(),
            user_id: UserId::new(),
            key_hash: hash.to_vec(),
            revoked_at: revoked.then(OffsetDateTime::now_utc),
        };
        (key, stored)
    }

    #[test]
    fn memory_is_trusted_only_while_revocations_are_heard() {
        let cache = KeyCache::new(Duration::from_secs(60));
        let (key, stored) = key_row(false);
        let prefix = accounts::parse_prefix(&key).unwrap().to_owned();
        cache.remember(&prefix, stored.clone(), cache.revocations());
        assert!(cache.authenticate_from_memory(&key).is_none(), "not listening: nothing kept");

        cache.set_listening(true);
        cache.remember(&prefix, stored.clone(), cache.revocations());
        assert!(matches!(cache.authenticate_from_memory(&key), Some(Ok(_))));
        assert!(matches!(
            cache.authenticate_from_memory(&key.replace('b', "c")),
            None | Some(Err(_))
        ));
        cache.forget(&prefix);
        assert!(cache.authenticate_from_memory(&key).is_none(), "a revocation drops it");

        // A row read before a revocation arrived is not kept after it.
        let before = cache.revocations();
        cache.forget("someone-else");
        cache.remember(&prefix, stored, before);
        assert!(cache.authenticate_from_memory(&key).is_none(), "read before the revocation");

        let (key, revoked) = key_row(true);
        cache.remember(&prefix, revoked, cache.revocations());
        assert_eq!(
            cache.authenticate_from_memory(&key).unwrap().err(),
            Some(KeyRejection::Revoked)
        );
        cache.set_listening(false);
        assert!(
            cache.authenticate_from_memory(&key).is_none(),
            "the listener lost: memory cleared"
        );
    }

    #[test]
    fn entries_expire() {
        let cache = KeyCache::new(Duration::ZERO);
        cache.set_listening(true);
        let (key, stored) = key_row(false);
        cache.remember(accounts::parse_prefix(&key).unwrap(), stored, cache.revocations());
        assert!(cache.authenticate_from_memory(&key).is_none());
    }
}
