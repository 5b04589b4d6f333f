//! Publishes the deliveries that are due: a retry whose pause is over, a delivery whose worker
//! died mid-attempt (its lease lapsed), a redelivery an operator asked for. Each is leased to the
//! publication for [`LEASE`]: if its message is lost, it is published again after that.

use std::sync::Arc;
use std::time::Duration;

use gengate_shared::client_webhooks::{Event, deliveries};
use gengate_shared::queue::payloads::Notify;
use gengate_shared::queue::{Envelope, Route};
use tokio_util::sync::CancellationToken;

use crate::context::WorkerContext;
use crate::poll_scheduler;

/// How long a published delivery is left to its message before it is published again.
pub const LEASE: Duration = Duration::from_secs(60);
/// Most deliveries published per round.
const BATCH: i64 = 500;

/// Publishes due deliveries every `client_webhooks.schedule_ms` until `shutdown`.
pub async fn run(ctx: Arc<WorkerContext>, shutdown: CancellationToken) {
    let every = Duration::from_millis(ctx.settings.client_webhooks.schedule_ms);
    poll_scheduler::every(ctx, shutdown, every, BATCH, "due webhook deliveries", |ctx| {
        Box::pin(publish_due(ctx))
    })
    .await;
}

/// Publishes the deliveries that are due now; returns how many.
pub async fn publish_due(ctx: Arc<WorkerContext>) -> anyhow::Result<usize> {
    let due = deliveries::take_due(&ctx.pool, LEASE, BATCH).await?;
    for (delivery, generation, event) in &due {
        let Ok(event) = event.parse::<Event>() else { continue };
        let message = Envelope::of(*generation, &Notify { event, delivery: *delivery });
        // A publish that fails leaves the rest leased too: they are due again after the lease.
        ctx.broker.send(&message, Route::Now).await?;
    }
    metrics::counter!("gengate_webhook_retries_published_total").increment(due.len() as u64);
    Ok(due.len())
}
