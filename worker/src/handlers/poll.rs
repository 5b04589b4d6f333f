//! `poll.task`: ask the provider how a task is doing. A terminal answer becomes the same event a
//! webhook would make; otherwise the next poll is scheduled in the database, with growing pauses,
//! and published when due by the [`poll_scheduler`](crate::poll_scheduler). At the deadline an unfinished job fails and is refunded here. After a failure (the
//! deadline's or the provider's own) polling goes on at a slow rate for the late-success window,
//! so a success that comes late still restores the charge.
//!
//! One poll chain per job (see `gengate_shared::generation::polling`): a poll claims its number
//! before it asks the provider, so a duplicate ends.

use std::time::Duration;

use gengate_shared::generation::GenerationStatus;
use gengate_shared::generation::failure::{Failure, FailureKind};
use gengate_shared::generation::polling;
use gengate_shared::generation::transitions::Transition;
use gengate_shared::providers::{ProviderError, TaskRef, TaskState};
use gengate_shared::queue::payloads::{self, UpdateSource};
use gengate_shared::queue::{Envelope, Route};
use time::OffsetDateTime;

use super::{HandlerError, Outcome, cause, fail_job, load, provider_of};
use crate::context::WorkerContext;

pub(super) async fn handle(
    ctx: &WorkerContext,
    envelope: &Envelope,
) -> Result<Outcome, HandlerError> {
    let payloads::PollTask { poll: number } = envelope.payload()?;
    let Some(job) = load(ctx, envelope.generation_id).await? else {
        return Ok(Outcome::Done);
    };
    if number != job.polls {
        return Ok(Outcome::Done);
    }
    let now = OffsetDateTime::now_utc();
    let window = Duration::from_millis(ctx.settings.worker.reconcile_window_ms);
    let (Some(remote_task_id), true) =
        (job.remote_task_id.clone(), polling::continues(&job, now, window))
    else {
        polling::stop(&ctx.pool, job.id).await?;
        return Ok(Outcome::Done);
    };
    if !polling::claim(&ctx.pool, job.id, number).await? {
        return Ok(Outcome::Done);
    }
    let provider = provider_of(ctx, &job)?;
    let task =
        TaskRef { mode: job.mode, provider_model: job.provider_model.clone(), remote_task_id };
    let answer = provider.query_task(&task).await;
    metrics::counter!("gengate_polls_total", "provider" => job.provider.as_str()).increment(1);
    // A provider's failure is not the last word: a success may follow it, and success overrides
    // failure. So a polled failure keeps the (slow) polls going, as a deadline failure does.
    let mut provider_failed = false;
    match &answer {
        Ok(update) if update.state.has_ended() => {
            provider_failed = matches!(update.state, TaskState::Failed { .. });
            // A failure the generation already shows needs no new event (nor audit row).
            if !(provider_failed && job.status == GenerationStatus::Failed) {
                let event = payloads::ProviderUpdate {
                    source: UpdateSource::Poll,
                    update: update.clone(),
                    payload_digest: None,
                };
                ctx.broker.send(&Envelope::of(job.id, &event), Route::Now).await?;
            }
            if !provider_failed {
                polling::stop(&ctx.pool, job.id).await?;
                return Ok(Outcome::Done);
            }
        }
        Ok(update) => match &update.state {
            TaskState::Running { progress: Some(progress) } => {
                polling::record_progress(&ctx.pool, job.id, &update.remote_task_id, *progress)
                    .await?;
            }
            TaskState::Unknown { status } => {
                tracing::warn!(
                    status,
                    "the provider reports an undocumented status; still running"
                );
                metrics::counter!("gengate_provider_unknown_status_total", "provider" => job.provider.as_str()).increment(1);
            }
            _ => {}
        },
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

    let mut late = job.status == GenerationStatus::Failed || provider_failed;
    if job.status == GenerationStatus::Submitted && now >= job.deadline_at && !provider_failed {
        let failure = Failure::with_detail(
            FailureKind::DeadlineExceeded,
            format!("not finished by the deadline ({})", job.deadline_at),
        );
        let audit = cause("deadline", envelope);
        if fail_job(ctx, job.id, Transition::FailTask, &audit, &failure).await? {
            tracing::info!("polling on for a late success");
        }
        late = true;
    }
    let pause = Duration::from_millis(if late {
        ctx.settings.worker.late_poll_interval_ms
    } else {
        let intervals = &ctx.settings.worker.poll_intervals_ms;
        let index = usize::try_from(number).unwrap_or(0).min(intervals.len() - 1);
        intervals[index]
    });
    // The poll scheduler publishes the next one when it is due.
    polling::schedule_next(&ctx.pool, job.id, pause).await?;
    Ok(Outcome::Done)
}
