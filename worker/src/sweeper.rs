//! The sweeper: finds generations the message flow lost track of and puts them back on it. Safe
//! with any number of workers: one sweep runs at a time across all of them (a PostgreSQL advisory
//! lock), and everything it does is idempotent anyway.
//!
//! - A submitted job whose next poll is long overdue (its poll message was lost) gets a poll now.
//! - A queued job past its deadline (its job message was lost or dead-lettered) fails and is
//!   refunded; the failure is sent again only if the job is still queued a minute later.

use std::sync::Arc;
use std::time::Duration;

use gengate_shared::generation::GenerationStatus;
use gengate_shared::ids::GenerationId;
use gengate_shared::queue::envelope::payloads;
use gengate_shared::queue::{Envelope, MessageKind};
use tokio_util::sync::CancellationToken;

use crate::consumer::publish;
use crate::context::WorkerContext;

/// Arbitrary, fixed: the advisory lock that makes one sweeper run at a time.
const SWEEP_LOCK: i64 = 0x67_656e_6761_7465;
/// A poll this late, or a failure the sweeper sent this long ago for a job still queued, is
/// considered lost.
const LOST_AFTER_SECS: f64 = 60.0;
/// Most generations handled per sweep (the next sweep takes the rest).
const BATCH: i64 = 500;

/// Sweeps every `worker.sweep_interval_ms` until `shutdown`.
pub async fn run(ctx: Arc<WorkerContext>, shutdown: CancellationToken) {
    let every = Duration::from_millis(ctx.settings.worker.sweep_interval_ms);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        match sweep(&ctx).await {
            Ok(Sweep { polls, failures }) if polls + failures > 0 => {
                tracing::info!(polls, failures, "sweeper re-enqueued lost work");
            }
            Ok(_) => {}
            Err(err) => tracing::warn!(error = %err, "sweep failed"),
        }
    }
}

/// What one sweep did.
#[derive(Debug, Default, Clone, Copy)]
pub struct Sweep {
    /// Polls re-scheduled.
    pub polls: usize,
    /// Queued jobs past their deadline sent to fail.
    pub failures: usize,
}

/// One sweep (also called by tests).
pub async fn sweep(ctx: &WorkerContext) -> anyhow::Result<Sweep> {
    let mut conn = ctx.pool.acquire().await?;
    let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
        .bind(SWEEP_LOCK)
        .fetch_one(&mut *conn)
        .await?;
    if !locked {
        return Ok(Sweep::default());
    }
    let result = sweep_locked(ctx).await;
    sqlx::query("SELECT pg_advisory_unlock($1)").bind(SWEEP_LOCK).execute(&mut *conn).await?;
    result
}

async fn sweep_locked(ctx: &WorkerContext) -> anyhow::Result<Sweep> {
    let mut sweep = Sweep::default();
    // Polls that are long overdue: send one now (with the number the lost one had, so if it was
    // only late the two cannot both run), and mark it due now so the next sweep leaves it alone
    // unless this one is lost too.
    let overdue: Vec<(GenerationId, i32)> = sqlx::query_as(
        "UPDATE generations SET next_poll_at = now()
         WHERE id IN (SELECT id FROM generations
                      WHERE next_poll_at < now() - make_interval(secs => $1)
                      ORDER BY next_poll_at LIMIT $2)
         RETURNING id, polls",
    )
    .bind(LOST_AFTER_SECS)
    .bind(BATCH)
    .fetch_all(&ctx.pool)
    .await?;
    for (id, polls) in overdue {
        let poll = Envelope::new(MessageKind::PollTask, id, serde_json::json!({"poll": polls}));
        publish(&ctx.broker, &poll).await?;
        sweep.polls += 1;
    }
    // Queued jobs past their deadline never reached a provider: fail them (through the same event
    // handle-failure uses, so the failure path is one). Marked as sent, like the polls above, so
    // that workers behind on `gengate.events` get one failure per job, not one per sweep.
    let stuck: Vec<GenerationId> = sqlx::query_scalar(
        "UPDATE generations SET swept_at = now()
         WHERE id IN (SELECT id FROM generations
                      WHERE status = $1 AND deadline_at < now()
                        AND (swept_at IS NULL OR swept_at < now() - make_interval(secs => $3))
                      ORDER BY deadline_at LIMIT $2)
         RETURNING id",
    )
    .bind(GenerationStatus::Queued.as_str())
    .bind(BATCH)
    .bind(LOST_AFTER_SECS)
    .fetch_all(&ctx.pool)
    .await?;
    for id in stuck {
        let failure = payloads::Failure {
            cause: "sweeper".into(),
            code: "deadline_exceeded".into(),
            reason: "never submitted to the provider before the deadline".into(),
        };
        let message = Envelope::new(MessageKind::Failure, id, serde_json::to_value(&failure)?);
        publish(&ctx.broker, &message).await?;
        sweep.failures += 1;
    }
    metrics::counter!("gengate_sweeper_requeued_total", "what" => "poll")
        .increment(sweep.polls as u64);
    metrics::counter!("gengate_sweeper_requeued_total", "what" => "failure")
        .increment(sweep.failures as u64);
    Ok(sweep)
}
