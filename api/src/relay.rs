//! The outbox relay: publishes messages committed to the outbox, with publisher confirms, and deletes
//! them. Woken right after a commit — in-process by the request that committed, and through
//! `LISTEN`/`NOTIFY` in other API processes — with a sweep every second as a fallback (a missed
//! wake-up, a broker that was down). Several API processes may relay at once: rows are claimed with
//! `FOR UPDATE SKIP LOCKED`, so each message is published by one of them.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures_util::future::join_all;
use gengate_shared::db::Tx;
use gengate_shared::outbox::{self, PendingMessage};
use gengate_shared::queue::{Broker, Parcel, Route};
use sqlx::PgPool;
use sqlx::postgres::PgListener;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Messages published per transaction when a backlog builds up.
const BATCH: i64 = 200;
/// The fallback sweep.
const SWEEP: Duration = Duration::from_secs(1);

/// Cross-process `NOTIFY`s are coalesced to one per this long.
const NOTIFY_EVERY: Duration = Duration::from_millis(50);

/// Wakes the relays after a commit that wrote to the outbox: this process's at once, other
/// processes' through one coalesced `NOTIFY`.
#[derive(Debug, Clone, Default)]
pub struct RelayWaker {
    local: Arc<Notify>,
    others_pending: Arc<AtomicBool>,
}

impl RelayWaker {
    /// Call after the commit.
    pub fn wake(&self) {
        self.local.notify_one();
        self.others_pending.store(true, Ordering::Release);
    }
}

/// Starts the relay; it stops when `shutdown` is cancelled (after finishing the batch in hand).
pub fn spawn(
    pool: PgPool,
    broker: Broker,
    waker: RelayWaker,
    shutdown: CancellationToken,
) -> JoinHandle<()> {
    tokio::spawn(notify_others(pool.clone(), waker.clone(), shutdown.clone()));
    tokio::spawn(async move {
        let mut listener: Option<PgListener> = None;
        // Rows an earlier version marked sent instead of deleting them (none after the first run).
        let mut purged = false;
        loop {
            if listener.is_none() {
                listener = listen(&pool).await;
            }
            let woken = async {
                match listener.as_mut() {
                    Some(l) => l.recv().await.map(|_| ()),
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = waker.local.notified() => {}
                result = woken => {
                    if let Err(err) = result {
                        tracing::debug!(error = %err, "outbox listener lost; sweeping until it is back");
                        listener = None;
                    }
                }
                _ = tokio::time::sleep(SWEEP) => {
                    if !purged {
                        match outbox::purge_sent(&pool).await {
                            Ok(_) => purged = true,
                            Err(err) => tracing::warn!(error = %err, "purging sent outbox rows failed"),
                        }
                    }
                    report_backlog(&pool).await;
                }
            }
            drain(&pool, &broker).await;
        }
        // Publish what was committed before the shutdown, as far as the broker allows.
        drain(&pool, &broker).await;
    })
}

/// Sends the coalesced `NOTIFY` for relays in other processes.
async fn notify_others(pool: PgPool, waker: RelayWaker, shutdown: CancellationToken) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(NOTIFY_EVERY) => {}
        }
        if waker.others_pending.swap(false, Ordering::AcqRel)
            && let Err(err) = outbox::notify(&pool).await
        {
            tracing::debug!(error = %err, "outbox NOTIFY not sent; other relays sweep");
        }
    }
}

async fn listen(pool: &PgPool) -> Option<PgListener> {
    let mut listener = PgListener::connect_with(pool).await.ok()?;
    listener.listen(outbox::NOTIFY_CHANNEL).await.ok()?;
    Some(listener)
}

/// Publishes batches until the outbox is empty or publishing fails.
async fn drain(pool: &PgPool, broker: &Broker) {
    while broker.is_connected() {
        match relay_batch(pool, broker).await {
            Ok(Batch { published, failed: 0 }) if published > 0 => continue,
            Ok(_) => break,
            Err(err) => {
                tracing::warn!(error = %err, "outbox relay round failed");
                break;
            }
        }
    }
}

struct Batch {
    published: usize,
    failed: usize,
}

async fn relay_batch(pool: &PgPool, broker: &Broker) -> Result<Batch, sqlx::Error> {
    let mut tx: Tx = pool.begin().await?;
    let pending = outbox::claim(&mut tx, BATCH).await?;
    if pending.is_empty() {
        return Ok(Batch { published: 0, failed: 0 });
    }
    // Publish the whole batch at once; the confirms come back pipelined.
    let results = join_all(pending.iter().map(|message| publish(broker, message))).await;
    let mut sent = Vec::new();
    let mut failed = Vec::new();
    let mut last_error = String::new();
    for (message, result) in pending.iter().zip(results) {
        match result {
            Ok(()) => sent.push(message.id),
            Err(err) => {
                last_error = err.to_string();
                failed.push(message.id);
            }
        }
    }
    outbox::delete_sent(&mut tx, &sent).await?;
    if !failed.is_empty() {
        outbox::mark_failed(&mut tx, &failed, &last_error).await?;
        tracing::warn!(failed = failed.len(), error = %last_error, "outbox messages not confirmed; retrying");
        metrics::counter!("gengate_outbox_publish_failures_total").increment(failed.len() as u64);
    }
    tx.commit().await?;
    metrics::counter!("gengate_outbox_published_total").increment(sent.len() as u64);
    Ok(Batch { published: sent.len(), failed: failed.len() })
}

async fn publish(
    broker: &Broker,
    message: &PendingMessage,
) -> Result<(), gengate_shared::queue::BrokerError> {
    // The body goes out exactly as it was written in the submit's transaction.
    let parcel = Parcel {
        routing_key: message.routing_key.clone(),
        body: serde_json::to_vec(&message.body).expect("JSON re-serializes"),
        message_id: Some(message.message_id.to_string()),
        headers: Default::default(),
    };
    broker.publish(parcel, Route::Now).await
}

async fn report_backlog(pool: &PgPool) {
    if let Ok((unsent, oldest)) = outbox::backlog(pool).await {
        metrics::gauge!("gengate_outbox_unsent").set(unsent as f64);
        metrics::gauge!("gengate_outbox_oldest_unsent_seconds").set(oldest);
    }
}
