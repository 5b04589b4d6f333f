//! `job.submit`: create the upstream task of a queued generation.
//!
//! The money-leak to guard against: a worker that dies after the provider accepted a task but
//! before recording it would, on redelivery, create (and pay for) a second task. So the attempt is
//! counted in the database before the provider is called, and a job that may already have a task
//! (a redelivery, a retry, a counted attempt) first asks the provider for it by gengate's id
//! (Kling's `external_task_id`) and adopts it instead of creating another.

use std::time::Duration;

use backon::Retryable;
use gengate_shared::generation::GenerationStatus;
use gengate_shared::generation::callback_token;
use gengate_shared::generation::failure::{Failure, FailureKind};
use gengate_shared::generation::job::Job;
use gengate_shared::generation::polling;
use gengate_shared::generation::transitions::{self, Changes, PollChange, Transition};
use gengate_shared::providers::{ProviderError, TaskRequest};
use gengate_shared::queue::{Envelope, payloads};
use serde_json::json;

use super::{HandlerError, Outcome, bad_row, cause, fail_job, provider_of, undecodable};
use crate::context::WorkerContext;
use crate::retry::RetryPolicies;

pub(super) async fn handle(
    ctx: &WorkerContext,
    envelope: &Envelope,
    redelivered: bool,
) -> Result<Outcome, HandlerError> {
    let payloads::SubmitJob {} = envelope.payload()?;
    // The attempt is counted as the job is read (one statement in the next batch), before the
    // provider is asked anything: after a crash, the next delivery knows to look first.
    let id = envelope.generation_id;
    let taken = ctx
        .commits
        .run(id, move |tx| {
            Box::pin(async move {
                Job::take_for_submit(&mut **tx, id).await.map_err(|err| undecodable(id, err))
            })
        })
        .await?;
    let Some(job) = taken else {
        return Ok(super::unknown_generation());
    };
    match job.status {
        GenerationStatus::Queued => {}
        GenerationStatus::Canceled => {
            tracing::info!("canceled before it was submitted; nothing to do");
            return Ok(Outcome::Done);
        }
        // Submitted (or ended) by an earlier delivery of this message.
        _ => return Ok(Outcome::Done),
    }
    let provider = provider_of(ctx, &job)?;
    // From here until the task is recorded (or the attempt ends), an early webhook for it that
    // reaches this worker waits for the record instead of going through the delay tiers.
    let _accepting = ctx.accepts.begin(job.id);

    let maybe_created = redelivered || envelope.attempt > 0 || job.submit_attempts > 0;
    if maybe_created {
        match provider.find_by_generation(job.mode, &job.provider_model, job.id).await {
            Ok(Some(existing)) => {
                tracing::info!(remote_task_id = %existing.remote_task_id, "the task was created before; adopting it");
                return record_submitted(ctx, envelope, &job, &existing.remote_task_id, "adopted")
                    .await;
            }
            Ok(None) | Err(ProviderError::NotFound | ProviderError::Permanent { .. }) => {}
            Err(err @ ProviderError::Retryable { .. }) => {
                return retry_later(ctx, envelope, &job, &err).await;
            }
        }
    }

    let request = task_request(ctx, &job)?;

    let create = || async { provider.create_task(&request).await };
    let created = create
        .retry(RetryPolicies::create_call())
        .when(|err| matches!(err, ProviderError::Retryable { .. }))
        .await;
    match created {
        Ok(remote_task_id) => {
            record_submitted(ctx, envelope, &job, &remote_task_id, "created").await
        }
        Err(err @ ProviderError::Retryable { .. }) => retry_later(ctx, envelope, &job, &err).await,
        Err(ProviderError::Permanent { code, message, account_problem }) => {
            let kind = if account_problem {
                tracing::error!(code, message, provider = %job.provider, "the gateway's provider account has a problem; failing the job");
                FailureKind::ProviderUnavailable
            } else {
                FailureKind::RequestRejected
            };
            fail(ctx, envelope, &job, Failure::from_provider(kind, &code, &message)).await
        }
        Err(ProviderError::NotFound) => {
            let failure = Failure::with_detail(
                FailureKind::ProviderUnavailable,
                "the provider did not find the endpoint",
            );
            fail(ctx, envelope, &job, failure).await
        }
    }
}

/// What the provider is asked to do. A callback key version the worker does not have (an old key
/// removed from the settings too early) is a configuration error: the message is dead-lettered
/// at once, to be replayed once the key is back.
fn task_request(ctx: &WorkerContext, job: &Job) -> Result<TaskRequest, HandlerError> {
    let token = ctx.callback_keys.token(job.webhook_key_version, job.id).ok_or_else(|| {
        HandlerError::configuration(format!(
            "callback key version {} is not configured (webhook.previous_secrets)",
            job.webhook_key_version
        ))
    })?;
    let callback_url = callback_token::callback_url(
        &ctx.settings.api.public_base_url,
        job.provider,
        job.id,
        &token,
    );
    Ok(TaskRequest {
        generation_id: job.id,
        provider_model: job.provider_model.clone(),
        options: job.provider_options().map_err(|err| bad_row(job, "provider options", err))?,
        mode: job.mode,
        params: job.params().map_err(|err| bad_row(job, "params", err))?,
        callback_url,
    })
}

/// `queued → submitted` with the task id, then the first poll.
async fn record_submitted(
    ctx: &WorkerContext,
    envelope: &Envelope,
    job: &Job,
    remote_task_id: &str,
    how: &str,
) -> Result<Outcome, HandlerError> {
    let first_poll = Duration::from_millis(ctx.settings.worker.poll_intervals_ms[0]);
    let mut audit = cause("provider_accepted", envelope);
    audit.detail =
        Some(json!({"remote_task_id": remote_task_id, "how": how, "attempt": envelope.attempt}));
    // The first poll is due with the transition (one update of the row).
    let changes = Changes {
        remote_task_id: Some(remote_task_id.to_owned()),
        polls: Some(PollChange::Start(first_poll)),
        ..Changes::default()
    };
    let id = job.id;
    let moved = ctx
        .commits
        .run(id, move |tx| {
            let (audit, changes) = (audit.clone(), changes.clone());
            Box::pin(async move {
                Ok(transitions::transition(tx, id, Transition::Accept, &audit, &changes).await?)
            })
        })
        .await?;
    // The first poll is due in the database now (set with the transition): the poll scheduler
    // publishes it then, unless the job has ended by that time.
    match moved {
        Some(_) => {
            metrics::counter!("gengate_jobs_submitted_total", "provider" => job.provider.as_str())
                .increment(1);
        }
        None => {
            // The job moved on while the provider was answering (canceled, or failed by an early
            // failure report). Keep the task id all the same: a failed job is still polled, so a
            // success that comes later restores it; a canceled one just has it on record.
            let status =
                polling::keep_task_of_moved_job(&ctx.pool, job.id, remote_task_id, first_poll)
                    .await?;
            tracing::warn!(
                remote_task_id,
                ?status,
                "the job changed while its task was being created"
            );
        }
    }
    Ok(Outcome::Done)
}

/// A retryable error: wait in the delay tiers (see [`RetryPolicies::submit`]), or give up after
/// the configured attempts.
async fn retry_later(
    ctx: &WorkerContext,
    envelope: &Envelope,
    job: &Job,
    err: &ProviderError,
) -> Result<Outcome, HandlerError> {
    let ProviderError::Retryable { code, message, retry_after } = err else {
        unreachable!("only retryable errors come here")
    };
    let Some(pause) = ctx.retry.submit.after(envelope.attempt) else {
        let attempts = ctx.retry.submit.attempts;
        let message = format!("gave up after {attempts} attempts: {message}");
        let failure = Failure::from_provider(FailureKind::ProviderUnavailable, code, &message);
        return fail(ctx, envelope, job, failure).await;
    };
    let delay = retry_after.map_or(pause, |asked| asked.max(pause));
    Ok(Outcome::Retry { delay, reason: format!("provider answered {code}: {message}") })
}

/// The task could not be created, for good: the job fails and is refunded.
async fn fail(
    ctx: &WorkerContext,
    envelope: &Envelope,
    job: &Job,
    failure: Failure,
) -> Result<Outcome, HandlerError> {
    let audit = cause("submit_failed", envelope);
    fail_job(ctx, job.id, Transition::RejectSubmission, &audit, &failure).await?;
    Ok(Outcome::Done)
}
