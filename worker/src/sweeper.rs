//! The sweeper: finds generations the message flow lost track of and puts them back on it. Safe
//! with any number of workers: one sweep runs at a time across all of them (a PostgreSQL advisory
//! lock), and everything it does is idempotent anyway.
//!
//! - A submitted job that nothing polls any more (a broken poll chain) is made due for a poll. (A poll
//!   whose message was lost is published again by the [`poll_scheduler`](crate::poll_scheduler)
//!   when its lease runs out.)
//! - A queued job past its deadline (its job message was lost or dead-lettered) fails and is
//!   refunded; the failure is sent again only if the job is still queued a minute later.

use std::sync::Arc;
use std::time::Duration;

use gengate_shared::generation::polling;
use gengate_shared::generation::sweep::{self, SweepLock};
use gengate_shared::queue::payloads::{self, FailureCause};
use gengate_shared::queue::{Envelope, Route};
use tokio_util::sync::CancellationToken;

use crate::context::WorkerContext;

/// A job unpolled this long, or a failure the sweeper sent this long ago for a job still queued,
/// is considered lost.
const LOST_AFTER: Duration = Duration::from_secs(60);
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
    let Some(lock) = SweepLock::try_acquire(&ctx.pool).await? else {
        return Ok(Sweep::default());
    };
    let result = sweep_locked(ctx).await;
    lock.release().await?;
    result
}

async fn sweep_locked(ctx: &WorkerContext) -> anyhow::Result<Sweep> {
    let mut sweep = Sweep::default();
    // Submitted jobs that nothing polls (a broken poll chain): their poll is made due now, and
    // the poll scheduler publishes it. The answer goes through the same transitions as any
    // other, so a job that did settle meanwhile is left as it is.
    for id in polling::take_unpolled(&ctx.pool, LOST_AFTER, BATCH).await? {
        tracing::warn!(generation_id = %id, "a submitted job was no longer polled; polling it again");
        sweep.polls += 1;
    }
    // Queued jobs past their deadline never reached a provider: fail them (through the same event
    // handle-failure uses, so the failure path is one).
    for id in sweep::take_queued_past_deadline(&ctx.pool, LOST_AFTER, BATCH).await? {
        let failure = payloads::Failure {
            cause: FailureCause::Sweeper,
            code: "deadline_exceeded".into(),
            reason: "never submitted to the provider before the deadline".into(),
        };
        ctx.broker.send(&Envelope::of(id, &failure), Route::Now).await?;
        sweep.failures += 1;
    }
    metrics::counter!("gengate_sweeper_requeued_total", "what" => "poll")
        .increment(sweep.polls as u64);
    metrics::counter!("gengate_sweeper_requeued_total", "what" => "failure")
        .increment(sweep.failures as u64);
    Ok(sweep)
}
