//! What the sweeper asks of the database: one sweep at a time across all workers (an advisory
//! lock), and the queued jobs past their deadline that no worker will ever submit. (Polls that are
//! due are [`polling::take_due`](super::polling::take_due).)

use std::time::Duration;

use sqlx::pool::PoolConnection;
use sqlx::{PgExecutor, PgPool, Postgres};

use super::GenerationStatus;
use crate::ids::GenerationId;

/// Arbitrary, fixed: the advisory lock that makes one sweeper run at a time.
const SWEEP_LOCK: i64 = 0x67_656e_6761_7465;

/// The sweep lock, held on its own connection until [`SweepLock::release`].
#[derive(Debug)]
pub struct SweepLock {
    conn: PoolConnection<Postgres>,
}

impl SweepLock {
    /// Takes the lock if no other sweeper holds it (`None` if one does).
    pub async fn try_acquire(pool: &PgPool) -> Result<Option<Self>, sqlx::Error> {
        let mut conn = pool.acquire().await?;
        let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
            .bind(SWEEP_LOCK)
            .fetch_one(&mut *conn)
            .await?;
        Ok(locked.then_some(Self { conn }))
    }

    /// Lets the next sweeper in. (Dropped without this, the lock goes when its connection
    /// closes.)
    pub async fn release(mut self) -> Result<(), sqlx::Error> {
        sqlx::query("SELECT pg_advisory_unlock($1)")
            .bind(SWEEP_LOCK)
            .execute(&mut *self.conn)
            .await?;
        Ok(())
    }
}

/// Queued jobs past their deadline (their job message was lost or dead-lettered), at most
/// `limit`, whose failure was not sent in the last `resend_after`: each is marked as sent now, so
/// that workers behind on `gengate.events` get one failure per job, not one per sweep.
pub async fn take_queued_past_deadline(
    executor: impl PgExecutor<'_>,
    resend_after: Duration,
    limit: i64,
) -> Result<Vec<GenerationId>, sqlx::Error> {
    sqlx::query_scalar(
        "UPDATE generations SET swept_at = now()
         WHERE id IN (SELECT id FROM generations
                      WHERE status = $1 AND deadline_at < now()
                        AND (swept_at IS NULL OR swept_at < now() - make_interval(secs => $3))
                      ORDER BY deadline_at LIMIT $2)
         RETURNING id",
    )
    .bind(GenerationStatus::Queued)
    .bind(limit)
    .bind(resend_after.as_secs_f64())
    .fetch_all(executor)
    .await
}
