//! The poll scheduler: every `worker.poll_schedule_ms`, publishes the polls that are due.
//!
//! A job's next poll is a time in the database (`generations.next_poll_at`), set in the
//! transaction that accepted the job and by each poll for the next one; it is published as a
//! `poll.task` message only when due. A job whose webhook settles it first has its poll cleared
//! and never costs a message. Safe with any number of workers: each takes the due polls with
//! `SKIP LOCKED` and leases them (see [`polling::take_due`]); a poll whose message is lost is due
//! again when its lease runs out, and the poll's number makes a duplicate harmless.

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use gengate_shared::generation::polling;
use gengate_shared::queue::payloads::PollTask;
use gengate_shared::queue::{Envelope, Route};
use tokio_util::sync::CancellationToken;

use crate::context::WorkerContext;

/// How long a published poll is leased: if it has not run by then (its message was lost, its
/// worker died), it is published again.
pub const LEASE: Duration = Duration::from_secs(60);
/// Most polls published per round; a full round is followed by another at once.
const BATCH: i64 = 500;

/// Publishes due polls every `worker.poll_schedule_ms` until `shutdown`.
pub async fn run(ctx: Arc<WorkerContext>, shutdown: CancellationToken) {
    let every = Duration::from_millis(ctx.settings.worker.poll_schedule_ms);
    self::every(ctx, shutdown, every, BATCH, "due polls", |ctx| {
        Box::pin(async move { publish_due(&ctx).await })
    })
    .await;
}

/// Runs `publish` every `interval` until `shutdown`, at once again after a full round (`batch`
/// published): the loop of every scheduler that publishes work kept due in the database.
pub async fn every<F>(
    ctx: Arc<WorkerContext>,
    shutdown: CancellationToken,
    interval: Duration,
    batch: i64,
    what: &'static str,
    publish: F,
) where
    F: Fn(Arc<WorkerContext>) -> BoxFuture<'static, anyhow::Result<usize>>,
{
    loop {
        // Without a broker nothing could be published, and what a round takes stays leased until
        // its lease runs out: while the connection is being replaced (a node of a cluster went
        // away), wait for it rather than take work that would then wait a whole lease.
        let published = if !ctx.broker.is_connected() {
            0
        } else {
            match publish(ctx.clone()).await {
                Ok(published) => published,
                Err(err) => {
                    tracing::warn!(error = %err, "{what} not published; trying again");
                    0
                }
            }
        };
        if i64::try_from(published) == Ok(batch) {
            continue;
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
    }
}

/// Publishes the polls that are due now (also called by tests); returns how many.
pub async fn publish_due(ctx: &WorkerContext) -> anyhow::Result<usize> {
    let due = polling::take_due(&ctx.pool, LEASE, BATCH).await?;
    for (id, poll) in &due {
        // A publish that fails leaves the rest leased too: they are all due again after the lease.
        ctx.broker.send(&Envelope::of(*id, &PollTask { poll: *poll }), Route::Now).await?;
    }
    metrics::counter!("gengate_polls_published_total").increment(due.len() as u64);
    Ok(due.len())
}
