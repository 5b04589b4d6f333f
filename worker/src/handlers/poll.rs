//! `poll.task`: ask the provider how a task is doing. A terminal answer becomes the same event a
//! webhook would make; otherwise the next poll is scheduled through the delay tiers, with growing
//! pauses. At the deadline an unfinished job fails and is refunded here. After a failure (the
//! deadline's or the provider's own) polling goes on at a slow rate for the reconciliation window,
//! so a success that comes late still restores the charge.
//!
//! One poll chain per job: each poll message carries its number, and a poll claims its number
//! (`polls = n → n + 1`) before it asks the provider. A duplicate (the sweeper re-sent a poll that
//! was only late, a redelivery) finds its number taken and ends. A poll that arrives before it is
//! due (its pause was longer than the longest delay tier) goes back to wait for the rest.

use std::time::Duration;

use gengate_shared::db;
use gengate_shared::generation::GenerationStatus;
use gengate_shared::generation::failure::{Failure, FailureKind};
use gengate_shared::generation::settle;
use gengate_shared::ids::GenerationId;
use gengate_shared::ledger::LedgerError;
use gengate_shared::providers::{ProviderError, TaskRef, TaskState};
use gengate_shared::queue::envelope::payloads;
use gengate_shared::queue::{BrokerError, Envelope, MessageKind};
use serde_json::json;
use time::OffsetDateTime;

use super::{HandlerError, Job, Outcome, cause};
use crate::consumer::{publish, publish_delayed};
use crate::context::WorkerContext;

pub(super) async fn handle(
    ctx: &WorkerContext,
    envelope: &Envelope,
) -> Result<Outcome, HandlerError> {
    let Some(job) = Job::load(&ctx.pool, envelope.generation_id).await? else {
        return Ok(Outcome::Done);
    };
    let number = envelope.payload["poll"].as_i64().map_or(job.polls, |n| n as i32);
    if number != job.polls {
        return Ok(Outcome::Done);
    }
    let now = OffsetDateTime::now_utc();
    if let Some(due) = job.next_poll_at
        && due > now + Duration::from_secs(1)
    {
        let rest = (due - now).unsigned_abs();
        schedule_poll(ctx, job.id, number, rest).await?;
        return Ok(Outcome::Done);
    }
    let window = Duration::from_millis(ctx.settings.worker.reconcile_window_ms);
    let status = job.status();
    let (Some(remote_task_id), true) =
        (job.remote_task_id.clone(), polling_continues(&job, status, now, window))
    else {
        stop_polling(ctx, job.id).await?;
        return Ok(Outcome::Done);
    };
    let claimed =
        sqlx::query("UPDATE generations SET polls = polls + 1 WHERE id = $1 AND polls = $2")
            .bind(job.id)
            .bind(number)
            .execute(&ctx.pool)
            .await?
            .rows_affected();
    if claimed == 0 {
        return Ok(Outcome::Done);
    }
    let provider = ctx
        .providers
        .get(job.provider()?)
        .ok_or_else(|| anyhow::anyhow!("no client for {}", job.provider))?;
    let task =
        TaskRef { mode: job.mode()?, provider_model: job.provider_model.clone(), remote_task_id };
    let answer = provider.query_task(&task).await;
    metrics::counter!("gengate_polls_total", "provider" => job.provider.clone()).increment(1);
    // A provider's failure is not the last word: a success may follow it, and success overrides
    // failure. So a polled failure keeps the (slow) polls going, as a deadline failure does.
    let mut provider_failed = false;
    match &answer {
        Ok(update) if update.state.is_terminal() => {
            provider_failed = matches!(update.state, TaskState::Failed { .. });
            // A failure the generation already shows needs no new event (nor audit row).
            if !(provider_failed && status == GenerationStatus::Failed) {
                let event = payloads::ProviderUpdate {
                    source: "poll".into(),
                    update: update.clone(),
                    payload_digest: None,
                };
                let message = Envelope::new(
                    MessageKind::ProviderUpdate,
                    job.id,
                    serde_json::to_value(&event).expect("serializes"),
                );
                publish(&ctx.broker, &message).await?;
            }
            if !provider_failed {
                stop_polling(ctx, job.id).await?;
                return Ok(Outcome::Done);
            }
        }
        Ok(update) => {
            match &update.state {
                TaskState::Running { progress: Some(progress) } => {
                    sqlx::query("UPDATE generations SET progress = $2 WHERE id = $1 AND status = 'submitted'")
                    .bind(job.id)
                    .bind(i16::from(*progress).min(100))
                    .execute(&ctx.pool)
                    .await?;
                }
                TaskState::Unknown { status } => {
                    tracing::warn!(
                        status,
                        "the provider reports an undocumented status; still running"
                    );
                    metrics::counter!("gengate_provider_unknown_status_total", "provider" => job.provider.clone()).increment(1);
                }
                _ => {}
            }
        }
        Err(
            ProviderError::Retryable { code, message, .. }
            | ProviderError::Permanent { code, message, .. },
        ) => {
            tracing::warn!(code, message, "poll failed; trying again later");
        }
        Err(ProviderError::NotFound) => {
            tracing::warn!("the provider does not know the task (yet?)")
        }
    }

    let mut late = status == GenerationStatus::Failed || provider_failed;
    if status == GenerationStatus::Submitted && now >= job.deadline_at && !provider_failed {
        let audit = cause("deadline", envelope);
        let failure = Failure::with_detail(
            FailureKind::DeadlineExceeded,
            format!("not finished by the deadline ({})", job.deadline_at),
        );
        db::transaction!(&ctx.pool, LedgerError, |tx| {
            settle::fail(tx, job.id, &[GenerationStatus::Submitted], &audit, &failure).await?
        })
        .await?;
        tracing::warn!("deadline passed; failed and refunded; polling on for a late success");
        late = true;
    }
    let intervals = &ctx.settings.worker.poll_intervals_ms;
    let pause = if late {
        ctx.settings.worker.late_poll_interval_ms
    } else {
        intervals[(number.max(0) as usize).min(intervals.len() - 1)]
    };
    let pause = Duration::from_millis(pause);
    sqlx::query(
        "UPDATE generations SET next_poll_at = now() + make_interval(secs => $2) WHERE id = $1",
    )
    .bind(job.id)
    .bind(pause.as_secs_f64())
    .execute(&ctx.pool)
    .await?;
    schedule_poll(ctx, job.id, number + 1, pause).await?;
    Ok(Outcome::Done)
}

/// Submitted jobs are polled until they end; failed ones for the reconciliation window after
/// they failed; nothing else.
fn polling_continues(
    job: &Job,
    status: GenerationStatus,
    now: OffsetDateTime,
    window: Duration,
) -> bool {
    match status {
        GenerationStatus::Submitted => true,
        GenerationStatus::Failed => job.completed_at.is_some_and(|failed| now < failed + window),
        _ => false,
    }
}

async fn stop_polling(ctx: &WorkerContext, id: GenerationId) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE generations SET next_poll_at = NULL WHERE id = $1")
        .bind(id)
        .execute(&ctx.pool)
        .await?;
    Ok(())
}

/// Schedules poll number `poll` of a generation after `delay`.
pub async fn schedule_poll(
    ctx: &WorkerContext,
    id: GenerationId,
    poll: i32,
    delay: Duration,
) -> Result<(), BrokerError> {
    let message = Envelope::new(MessageKind::PollTask, id, json!({"poll": poll}));
    publish_delayed(ctx, &message, delay).await
}
