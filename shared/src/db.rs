//! PostgreSQL: the connection pool, migrations and the readiness probe.

use std::time::Duration;

use secrecy::ExposeSecret;
use sqlx::PgPool;
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use crate::config::DatabaseSettings;

/// The schema, embedded from `migrations/` at build time.
pub static MIGRATOR: Migrator = sqlx::migrate!("../migrations");

/// A pool that connects on first use, so a process starts (and reports not-ready) while
/// PostgreSQL is still coming up instead of crashing.
pub fn lazy_pool(
    settings: &DatabaseSettings,
    application_name: &str,
) -> Result<PgPool, sqlx::Error> {
    let options: PgConnectOptions = settings.url.expose_secret().parse()?;
    Ok(PgPoolOptions::new()
        .max_connections(settings.max_connections)
        .acquire_timeout(settings.acquire_timeout())
        .idle_timeout(Duration::from_secs(300))
        // A connection is pinged before use only after it idled a while: one in use a moment ago
        // is alive, and the ping is a round trip of its own, which a lone request's latency pays
        // in full. A connection that died in that moment fails its statement like one that dies
        // during it (the transaction is not applied; callers retry as for any failed statement).
        .test_before_acquire(false)
        .before_acquire(|conn, meta| {
            Box::pin(async move {
                if meta.idle_for >= PING_AFTER_IDLE {
                    use sqlx::Connection;
                    conn.ping().await?;
                }
                Ok(true)
            })
        })
        .connect_lazy_with(options.application_name(application_name)))
}

/// How long a pooled connection idles before it is pinged on its next use (see [`lazy_pool`]).
const PING_AFTER_IDLE: Duration = Duration::from_secs(1);

/// A pool with one connection made up front, so that a command-line tool reports the real reason
/// (refused, authentication, unknown database) when PostgreSQL cannot be reached.
pub async fn connect(
    settings: &DatabaseSettings,
    application_name: &str,
) -> Result<PgPool, sqlx::Error> {
    use sqlx::Connection;
    let options: PgConnectOptions = settings.url.expose_secret().parse()?;
    let options = options.application_name(application_name);
    // The pool would only say "timed out"; one direct connection says why.
    let probe = tokio::time::timeout(
        settings.acquire_timeout(),
        sqlx::PgConnection::connect_with(&options),
    )
    .await
    .map_err(|_| sqlx::Error::PoolTimedOut)??;
    probe.close().await?;
    Ok(PgPoolOptions::new()
        .max_connections(settings.max_connections.min(4))
        .acquire_timeout(settings.acquire_timeout())
        .connect_lazy_with(options))
}

/// Applies pending migrations. sqlx serializes concurrent runners with an advisory lock, so several
/// processes starting at once are safe.
pub async fn migrate(pool: &PgPool) -> Result<(), sqlx::migrate::MigrateError> {
    MIGRATOR.run(pool).await
}

/// Readiness: one round trip within `timeout`.
pub async fn ping(pool: &PgPool, timeout: Duration) -> Result<(), String> {
    match tokio::time::timeout(timeout, sqlx::query("SELECT 1").execute(pool)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(err)) => Err(err.to_string()),
        Err(_) => Err(format!("no answer within {} ms", timeout.as_millis())),
    }
}

/// A PostgreSQL transaction, as every state-changing function of `shared` takes it.
pub type Tx = sqlx::Transaction<'static, sqlx::Postgres>;

/// Errors that say "run the whole transaction again": serialization failures and deadlocks.
pub trait Transient {
    /// Whether retrying the transaction from the start may succeed.
    fn is_transient(&self) -> bool;
}

impl Transient for sqlx::Error {
    fn is_transient(&self) -> bool {
        match self {
            sqlx::Error::Database(err) => {
                matches!(err.code().as_deref(), Some("40001") | Some("40P01"))
            }
            _ => false,
        }
    }
}

/// How many times [`retry_transient`] runs a body that keeps failing transiently.
const TRANSACTION_ATTEMPTS: u32 = 8;

/// Runs `attempt` (which begins, uses and commits its own transaction) again from the start, after a
/// short jittered pause, while it fails with a serialization failure or a deadlock, so those never
/// reach callers. Each run must only touch the database through its own transaction.
///
/// ```ignore
/// let outcome = db::retry_transient(|| async {
///     let mut tx = pool.begin().await?;
///     let outcome = ledger::refund(&mut tx, &generation, "provider_failed").await?;
///     tx.commit().await?;
///     Ok(outcome)
/// })
/// .await?;
/// ```
///
/// (A closure that is handed the transaction would read better, but the compiler cannot yet prove
/// such futures `Send` for spawned tasks and axum handlers.)
pub async fn retry_transient<T, E, F, Fut>(mut attempt: F) -> Result<T, E>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
    E: Transient,
{
    let mut tries = 0;
    loop {
        tries += 1;
        match attempt().await {
            Err(err) if err.is_transient() && tries < TRANSACTION_ATTEMPTS => {
                metrics::counter!("gengate_db_transaction_retries_total").increment(1);
                let pause = 5 * u64::from(tries) + rand::random_range(0..10);
                tokio::time::sleep(Duration::from_millis(pause)).await;
            }
            other => return other,
        }
    }
}

/// `transaction!(pool, ErrorType, |tx| body)`: runs `body` (an expression that may use `.await`
/// and `?`, with `tx: &mut Tx`) in a transaction, commits, and retries the whole transaction on
/// serialization failures and deadlocks (see [`retry_transient`]). Evaluates to a future of
/// `Result<T, ErrorType>`; `ErrorType: From<sqlx::Error> + Transient`.
///
/// ```ignore
/// let returned = db::transaction!(pool, LedgerError, |tx| {
///     ledger::refund(tx, &generation, "canceled").await?
/// })
/// .await?;
/// ```
#[macro_export]
macro_rules! transaction {
    ($pool:expr, $err:ty, |$tx:ident| $body:expr) => {
        $crate::db::retry_transient(|| async {
            let mut transaction = $pool.begin().await?;
            let output = {
                let $tx: &mut $crate::db::Tx = &mut transaction;
                $body
            };
            transaction.commit().await?;
            Ok::<_, $err>(output)
        })
    };
}
pub use transaction;
