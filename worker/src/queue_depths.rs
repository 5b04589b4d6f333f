//! Queue depth gauges: how many messages wait in each work queue and in the dead-letter queue
//! (a growing dead-letter queue is the first thing an operator should be told about), and how
//! many result files wait to be copied into storage.

use std::sync::Arc;
use std::time::Duration;

use gengate_shared::generation::archive;
use gengate_shared::queue::WorkQueue;
use lapin::options::QueueDeclareOptions;
use lapin::types::FieldTable;
use tokio_util::sync::CancellationToken;

use crate::context::WorkerContext;

/// How often the depths are read.
const EVERY: Duration = Duration::from_secs(15);

/// Reads the depths every 15 s until `shutdown`.
pub async fn run(ctx: Arc<WorkerContext>, shutdown: CancellationToken) {
    loop {
        if let Err(err) = sample(&ctx).await {
            tracing::debug!(error = %err, "queue depths not read");
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(EVERY) => {}
        }
    }
}

async fn sample(ctx: &WorkerContext) -> anyhow::Result<()> {
    let topology = ctx.broker.topology();
    let channel = ctx.broker.channel().await?;
    let passive = QueueDeclareOptions { passive: true, ..Default::default() };
    for queue in WorkQueue::ALL {
        let name = topology.queue(queue);
        let declared =
            channel.queue_declare(name.clone().into(), passive, FieldTable::default()).await?;
        metrics::gauge!("gengate_queue_messages", "queue" => queue.suffix())
            .set(f64::from(declared.message_count()));
    }
    let dlq = channel
        .queue_declare(topology.dead_letter_queue().into(), passive, FieldTable::default())
        .await?;
    metrics::gauge!("gengate_dlq_messages").set(f64::from(dlq.message_count()));
    let _ = channel.close(200, "sampled".into()).await;
    let pending = archive::pending_count(&ctx.pool).await?;
    metrics::gauge!("gengate_archive_pending").set(pending as f64);
    Ok(())
}
