//! Consuming one work queue: manual acks, a bounded number of messages in hand, and every
//! message ending in exactly one of: acknowledged, re-published to a delay tier (then
//! acknowledged), dead-lettered with its error (then acknowledged), or returned to the queue.
//!
//! The loop survives the broker going away: lapin's auto-recovery resumes the consumer after a
//! short outage, and when recovery gives up the loop waits for the process's broker connection to
//! come back and consumes anew. Deliveries in hand during an outage cannot be acknowledged; the
//! broker redelivers them, which the idempotent handlers make harmless.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use gengate_shared::queue::route::delivery_count;
use gengate_shared::queue::{BrokerError, DeadLetterNote, Envelope, Parcel, Route, WorkQueue};
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions,
};
use lapin::types::FieldTable;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::context::WorkerContext;
use crate::handlers::{self, Outcome};

/// Consumes `queue` until `shutdown`, then stops taking messages, lets the ones in hand finish
/// (up to `grace`), and returns. Whatever is still unacknowledged goes back to the queue when the
/// connection closes.
pub async fn run(
    ctx: Arc<WorkerContext>,
    queue: WorkQueue,
    prefetch: u16,
    shutdown: CancellationToken,
    grace: Duration,
) {
    let name = ctx.broker.topology().queue(queue);
    let in_hand = TaskTracker::new();
    let slots = Arc::new(Semaphore::new(usize::from(prefetch)));
    let mut connected = ctx.broker.watch_connected();
    while !shutdown.is_cancelled() {
        match consume(&ctx, &name, prefetch, &in_hand, &slots, &shutdown).await {
            Ok(()) => {}
            Err(err) => {
                tracing::warn!(queue = %name, error = %err, "consumer stopped; starting again when RabbitMQ is back")
            }
        }
        // Wait for a usable connection (or the shutdown) before consuming again.
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = connected.wait_for(|up| *up) => {}
        }
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
    }
    in_hand.close();
    if tokio::time::timeout(grace, in_hand.wait()).await.is_err() {
        tracing::warn!(queue = %name, "messages still in hand after the grace period; they return to the queue");
    }
}

async fn consume(
    ctx: &Arc<WorkerContext>,
    queue: &str,
    prefetch: u16,
    in_hand: &TaskTracker,
    slots: &Arc<Semaphore>,
    shutdown: &CancellationToken,
) -> Result<(), BrokerError> {
    // Noted before the channel is made: a connection made in between costs one needless restart,
    // never a consumer left on a dead connection.
    let mut replaced = ctx.broker.watch_connections_made();
    replaced.borrow_and_update();
    let channel = ctx.broker.channel().await?;
    channel.basic_qos(prefetch, BasicQosOptions::default()).await?;
    let tag = format!("gengate-worker-{}", uuid::Uuid::now_v7());
    let mut consumer = channel
        .basic_consume(
            queue.into(),
            tag.clone().into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    tracing::info!(queue, "consuming");
    loop {
        let next = tokio::select! {
            _ = shutdown.cancelled() => {
                let _ = channel.basic_cancel(tag.into(), BasicCancelOptions::default()).await;
                return Ok(());
            }
            Ok(()) = replaced.changed() => return Err(connection_replaced(&channel, queue).await),
            next = consumer.next() => next,
        };
        match next {
            Some(Ok(delivery)) => {
                // At most `prefetch` messages are handled at once (the broker sends no more anyway).
                let permit =
                    slots.clone().acquire_owned().await.expect("the semaphore is never closed");
                let ctx = ctx.clone();
                let queue = queue.to_owned();
                in_hand.spawn(async move {
                    handle(&ctx, &queue, delivery).await;
                    drop(permit);
                });
            }
            Some(Err(err)) => {
                tracing::warn!(queue, error = %err, "delivery error; waiting for the connection to recover");
                tokio::select! {
                    recovered = channel.wait_for_recovery(err) => recovered?,
                    Ok(()) = replaced.changed() => return Err(connection_replaced(&channel, queue).await),
                }
            }
            None => return Ok(()),
        }
    }
}

/// The consumer's connection was given up on and a new one made: consume on that one. The old
/// channel is closed (best effort), so that the broker stops delivering to this consumer and
/// returns what it had sent it: left open, a channel of a connection that lapin later recovers
/// would get deliveries nobody reads, unacknowledged for as long as it lives.
async fn connection_replaced(channel: &lapin::Channel, queue: &str) -> BrokerError {
    tracing::info!(queue, "RabbitMQ connection replaced; consuming on the new one");
    let close = channel.close(200, "consumer moved to a new connection".into());
    let _ = tokio::time::timeout(Duration::from_secs(1), close).await;
    BrokerError::Unavailable
}

/// How many times a message may fail in a handler (counting the broker's redeliveries) before it
/// is dead-lettered with its last error. Below the queue's `x-delivery-limit`, so the worker, which
/// knows the error, normally decides; the broker's limit only catches messages whose worker died
/// each time. A fatal error (see `HandlerError::Fatal`) is dead-lettered on its first failure.
fn failure_budget(ctx: &WorkerContext) -> u64 {
    u64::from(ctx.settings.amqp.delivery_limit.saturating_sub(1).max(1)).min(5)
}

async fn handle(ctx: &WorkerContext, queue: &str, delivery: Delivery) {
    let envelope: Envelope = match serde_json::from_slice(&delivery.data) {
        Ok(envelope) => envelope,
        Err(err) => {
            metrics::counter!("gengate_messages_handled_total", "queue" => queue.to_owned(), "outcome" => "poison").increment(1);
            tracing::warn!(queue, error = %err, "unparsable message; dead-lettering");
            dead_letter(ctx, queue, &delivery, "unparsable", &err.to_string()).await;
            return;
        }
    };
    // Every line the handler logs carries the message's span: its generation and message ids.
    let span = tracing::info_span!(
        "message",
        kind = envelope.kind.routing_key(),
        generation_id = %envelope.generation_id,
        message_id = %envelope.message_id,
        attempt = envelope.attempt,
    );
    handle_envelope(ctx, queue, &delivery, &envelope).instrument(span).await;
}

async fn handle_envelope(
    ctx: &WorkerContext,
    queue: &str,
    delivery: &Delivery,
    envelope: &Envelope,
) {
    let started = std::time::Instant::now();
    tracing::debug!("handling");
    let outcome = handlers::dispatch(ctx, envelope, delivery.redelivered).await;
    let label = match &outcome {
        Ok(Outcome::Done) => "done",
        Ok(Outcome::Retry { .. }) => "retry",
        Ok(Outcome::DeadLetter { .. }) => "dead_letter",
        Err(err) if err.is_fatal() => "fatal",
        Err(_) => "error",
    };
    metrics::counter!("gengate_messages_handled_total", "queue" => queue.to_owned(), "outcome" => label).increment(1);
    metrics::histogram!("gengate_message_handling_seconds", "kind" => envelope.kind.routing_key())
        .record(started.elapsed().as_secs_f64());
    match outcome {
        Ok(Outcome::Done) => ack(delivery).await,
        Ok(Outcome::Retry { delay, reason }) => {
            let retry = envelope.retry();
            match ctx.broker.send(&retry, Route::Delayed(delay)).await {
                Ok(()) => {
                    tracing::info!(?delay, reason, next_attempt = retry.attempt, "retrying later");
                    ack(delivery).await;
                }
                Err(err) => {
                    tracing::warn!(error = %err, "could not schedule the retry; returning the message");
                    nack_requeue(delivery).await;
                }
            }
        }
        Ok(Outcome::DeadLetter { kind, message }) => {
            tracing::warn!(kind, message, "dead-lettering");
            dead_letter(ctx, queue, delivery, kind, &message).await;
        }
        Err(err) if err.is_fatal() => {
            tracing::error!(kind = err.kind(), error = %err, "cannot be handled until an operator acts; dead-lettering");
            dead_letter(ctx, queue, delivery, err.kind(), &err.to_string()).await;
        }
        Err(err) => {
            let failures = delivery_count(delivery.properties.headers().as_ref()) + 1;
            if failures >= failure_budget(ctx) {
                tracing::error!(error = %err, failures, "handler keeps failing; dead-lettering");
                dead_letter(ctx, queue, delivery, err.kind(), &err.to_string()).await;
            } else {
                // Hold the message a moment so a dependency that is down is not hammered.
                tracing::warn!(error = %err, failures, "handler failed; the message goes back to the queue");
                tokio::time::sleep(Duration::from_millis(250 * failures)).await;
                nack_requeue(delivery).await;
            }
        }
    }
}

async fn ack(delivery: &Delivery) {
    if let Err(err) = delivery.ack(BasicAckOptions::default()).await {
        // The channel is gone; the broker will redeliver, and handlers are idempotent.
        tracing::warn!(error = %err, "ack failed");
    }
}

async fn nack_requeue(delivery: &Delivery) {
    if let Err(err) = delivery.nack(BasicNackOptions { requeue: true, ..Default::default() }).await
    {
        tracing::warn!(error = %err, "nack failed");
    }
}

/// Moves a message to the dead-letter queue with its original routing key, body and headers plus
/// the last error, then acknowledges it. If the dead-letter publish is not confirmed, the message
/// goes back to its queue instead: nothing is dropped.
async fn dead_letter(
    ctx: &WorkerContext,
    queue: &str,
    delivery: &Delivery,
    kind: &str,
    message: &str,
) {
    let note = DeadLetterNote { error_kind: kind, error: message, original_queue: queue };
    let published =
        ctx.broker.publish(Parcel::from_delivery(delivery), Route::DeadLetter(note)).await;
    match published {
        Ok(()) => {
            metrics::counter!("gengate_dead_letters_total", "queue" => queue.to_owned(), "reason" => kind.to_owned()).increment(1);
            ack(delivery).await;
        }
        Err(err) => {
            tracing::error!(error = %err, "could not dead-letter; returning the message to its queue");
            nack_requeue(delivery).await;
        }
    }
}
