//! `job.submit`: create the upstream task of a queued generation.
//!
//! The money-leak to guard against: a worker that dies after the provider accepted a task but
//! before recording it would, on redelivery, create (and pay for) a second task. So the attempt is
//! counted in the database before the provider is called, and a job that may already have a task
//! (a redelivery, a retry, a counted attempt) first asks the provider for it by gengate's id
//! (Kling's `external_task_id`) and adopts it instead of creating another.

use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use gengate_shared::db;
use gengate_shared::generation::GenerationStatus;
use gengate_shared::generation::failure::{Failure, FailureKind};
use gengate_shared::generation::settle;
use gengate_shared::generation::transitions::{self, Changes};
use gengate_shared::ledger::LedgerError;
use gengate_shared::providers::{ProviderError, TaskRequest};
use gengate_shared::queue::Envelope;
use serde_json::json;

use super::{HandlerError, Job, Outcome, cause, schedule_poll};
use crate::context::WorkerContext;

pub(super) async fn handle(
    ctx: &WorkerContext,
    envelope: &Envelope,
    redelivered: bool,
) -> Result<Outcome, HandlerError> {
    let Some(job) = Job::load(&ctx.pool, envelope.generation_id).await? else {
        return Ok(Outcome::DeadLetter {
            kind: "unknown_generation",
            message: "no such generation".into(),
        });
    };
    match job.status() {
        GenerationStatus::Queued => {}
        GenerationStatus::Canceled => {
            tracing::info!("canceled before it was submitted; nothing to do");
            return Ok(Outcome::Done);
        }
        // Submitted (or ended) by an earlier delivery of this message.
        _ => return Ok(Outcome::Done),
    }
    let provider = ctx
        .providers
        .get(job.provider()?)
        .ok_or_else(|| anyhow::anyhow!("no client for {}", job.provider))?;
    let mode = job.mode()?;

    let maybe_created = redelivered || envelope.attempt > 0 || job.submit_attempts > 0;
    if maybe_created {
        match provider.find_by_generation(mode, &job.provider_model, job.id).await {
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

    // Count the attempt before calling: after a crash, the next delivery knows to look first.
    sqlx::query("UPDATE generations SET submit_attempts = submit_attempts + 1 WHERE id = $1 AND status = 'queued'")
        .bind(job.id)
        .execute(&ctx.pool)
        .await?;

    let request = task_request(ctx, &job)?;
    let create = || async { provider.create_task(&request).await };
    let created = create
        .retry(
            ExponentialBuilder::default()
                .with_min_delay(Duration::from_millis(100))
                .with_max_delay(Duration::from_secs(1))
                .with_max_times(2)
                .with_jitter(),
        )
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

fn task_request(ctx: &WorkerContext, job: &Job) -> anyhow::Result<TaskRequest> {
    let token = ctx.callback_keys.token(job.webhook_key_version, job.id).ok_or_else(|| {
        anyhow::anyhow!("callback key version {} is not configured", job.webhook_key_version)
    })?;
    let base = ctx.settings.api.public_base_url.trim_end_matches('/');
    let callback_url = match job.provider()? {
        // Kling's relay form carries the id in the path.
        gengate_shared::providers::ProviderKind::Kling => {
            format!("{base}/kling/callback/{}?token={token}", job.id)
        }
        gengate_shared::providers::ProviderKind::Kie => {
            format!("{base}/api/generation/webhook?generation_id={}&token={token}", job.id)
        }
    };
    Ok(TaskRequest {
        generation_id: job.id,
        provider_model: job.provider_model.clone(),
        options: job.provider_options(),
        mode: job.mode()?,
        params: job.params()?,
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
    let first_poll = ctx.settings.worker.poll_intervals_ms[0];
    let mut audit = cause("provider_accepted", envelope);
    audit.detail =
        Some(json!({"remote_task_id": remote_task_id, "how": how, "attempt": envelope.attempt}));
    let changes = Changes { remote_task_id: Some(remote_task_id.to_owned()), ..Changes::default() };
    let moved = db::transaction!(&ctx.pool, HandlerError, |tx| {
        let moved = transitions::transition(tx, job.id, &[GenerationStatus::Queued], GenerationStatus::Submitted, &audit, &changes).await?;
        if moved.is_some() {
            sqlx::query("UPDATE generations SET next_poll_at = now() + make_interval(secs => $2), polls = 0 WHERE id = $1")
                .bind(job.id)
                .bind(first_poll as f64 / 1000.0)
                .execute(&mut **tx)
                .await?;
        }
        moved
    })
    .await?;
    let poll_now = match moved {
        Some(_) => {
            metrics::counter!("gengate_jobs_submitted_total", "provider" => job.provider.clone())
                .increment(1);
            true
        }
        None => {
            // The job moved on while the provider was answering (canceled, or failed by an early
            // failure report). Keep the task id all the same: a failed job is still polled, so a
            // success that comes later restores it; a canceled one just has it on record.
            let status: Option<String> = sqlx::query_scalar(
                "UPDATE generations SET remote_task_id = COALESCE(remote_task_id, $2),
                        next_poll_at = CASE WHEN status = 'failed' THEN now() + make_interval(secs => $3) ELSE next_poll_at END
                 WHERE id = $1 RETURNING status",
            )
            .bind(job.id)
            .bind(remote_task_id)
            .bind(first_poll as f64 / 1000.0)
            .fetch_optional(&ctx.pool)
            .await?;
            tracing::warn!(
                remote_task_id,
                ?status,
                "the job changed while its task was being created"
            );
            status.as_deref() == Some(GenerationStatus::Failed.as_str())
        }
    };
    if poll_now {
        // If this publish is lost, the sweeper finds the overdue poll and schedules it.
        if let Err(err) = schedule_poll(ctx, job.id, 0, Duration::from_millis(first_poll)).await {
            tracing::warn!(error = %err, "first poll not scheduled; the sweeper will");
        }
    }
    Ok(Outcome::Done)
}

/// A retryable error: wait in the delay tiers, or give up after the configured attempts.
async fn retry_later(
    ctx: &WorkerContext,
    envelope: &Envelope,
    job: &Job,
    err: &ProviderError,
) -> Result<Outcome, HandlerError> {
    let attempts = ctx.settings.worker.submit_attempts;
    let ProviderError::Retryable { code, message, retry_after } = err else {
        unreachable!("only retryable errors come here")
    };
    if envelope.attempt + 1 >= attempts {
        let message = format!("gave up after {attempts} attempts: {message}");
        let failure = Failure::from_provider(FailureKind::ProviderUnavailable, code, &message);
        return fail(ctx, envelope, job, failure).await;
    }
    // 5 s, 15 s, 30 s, … as the tiers allow, or what the provider asked for.
    let backoff = Duration::from_secs(5 * 3u64.pow(envelope.attempt.min(4)));
    let delay = retry_after.map_or(backoff, |asked| asked.max(backoff));
    Ok(Outcome::Retry { delay, reason: format!("provider answered {code}: {message}") })
}

/// Fails the job and refunds it (one transaction).
async fn fail(
    ctx: &WorkerContext,
    envelope: &Envelope,
    job: &Job,
    failure: Failure,
) -> Result<Outcome, HandlerError> {
    let audit = cause("submit_failed", envelope);
    let failed = db::transaction!(&ctx.pool, LedgerError, |tx| {
        settle::fail(tx, job.id, &[GenerationStatus::Queued], &audit, &failure).await?
    })
    .await?;
    if failed.is_some() {
        tracing::warn!(
            code = failure.kind.code(),
            detail = failure.detail,
            "submission failed; refunded"
        );
    }
    Ok(Outcome::Done)
}
