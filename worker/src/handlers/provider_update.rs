//! `event.provider_update`: a provider's word on a task (from a webhook or a poll) becomes a
//! transition, exactly once however often it arrives:
//! - success on `submitted` → `completed`, credits confirmed (or charged, postpaid), files kept;
//! - success on `failed` → `completed`, the refund undone (restore);
//! - failure on `submitted` → `failed`, refunded; so is a success whose result URL is off the
//!   allowlist (`result_url_rejected`);
//! - a terminal update on `queued` (the provider answered before the submission was recorded)
//!   comes back a few times first, and only then applies to `queued`;
//! - progress → `progress` only; anything on `completed`/`canceled` → the audit log only.
//!
//! A webhook's success is a hint: where configured, the task is fetched from the provider first,
//! and what the provider says then is what counts.

use std::time::Duration;

use gengate_shared::catalogue::settle_by_usage;
use gengate_shared::db;
use gengate_shared::generation::GenerationStatus;
use gengate_shared::generation::settle;
use gengate_shared::generation::transitions::{self, Cause};
use gengate_shared::ledger::LedgerError;
use gengate_shared::providers::{ProviderError, ResultFile, TaskRef, TaskState, TaskUpdate};
use gengate_shared::queue::Envelope;
use gengate_shared::queue::envelope::payloads;
use serde_json::json;

use super::{HandlerError, Job, Outcome};
use crate::context::WorkerContext;

/// A terminal update that arrives before the job's submission is recorded (a fast provider) is
/// retried this many times: first a second apart (the worker that created the task usually
/// records it within milliseconds), then five seconds apart, about half a minute in all, for a
/// provider whose create answer is slow.
const EARLY_UPDATE_RETRIES: u32 = 8;
const EARLY_UPDATE_QUICK_RETRIES: u32 = 3;

/// When to look again at an update that came before the submission was recorded.
fn early_update_retry(attempt: u32) -> Outcome {
    let seconds = if attempt < EARLY_UPDATE_QUICK_RETRIES { 1 } else { 5 };
    Outcome::Retry {
        delay: Duration::from_secs(seconds),
        reason: "the submission is not recorded yet".into(),
    }
}

/// The failure code of a job whose provider put its result off the allowlist.
const REFUSED_RESULT: &str = "result_url_rejected";
/// The failure code of a success that came without any result file.
const EMPTY_RESULT: &str = "empty_result";

pub(super) async fn handle(
    ctx: &WorkerContext,
    envelope: &Envelope,
) -> Result<Outcome, HandlerError> {
    let Ok(event) = serde_json::from_value::<payloads::ProviderUpdate>(envelope.payload.clone())
    else {
        return Ok(Outcome::DeadLetter {
            kind: "bad_payload",
            message: "event.provider_update without an update".into(),
        });
    };
    let Some(job) = Job::load(&ctx.pool, envelope.generation_id).await? else {
        return Ok(Outcome::DeadLetter {
            kind: "unknown_generation",
            message: "no such generation".into(),
        });
    };
    let source: &'static str = if event.source == "poll" { "poll" } else { "webhook" };
    let mut audit = Cause {
        kind: source,
        message_id: Some(envelope.message_id),
        payload_digest: event.payload_digest.as_deref().and_then(digest_bytes),
        detail: None,
    };
    let update = event.update;

    if let Some(known) = &job.remote_task_id
        && *known != update.remote_task_id
    {
        audit.detail = Some(
            json!({"ignored": "the update names another task", "remote_task_id": update.remote_task_id}),
        );
        record_only(ctx, &job, &audit).await?;
        return Ok(Outcome::Done);
    }

    match &update.state {
        TaskState::Queued => Ok(Outcome::Done),
        TaskState::Running { progress } => {
            if let Some(progress) = progress {
                sqlx::query(
                    "UPDATE generations SET progress = $2 WHERE id = $1 AND status = 'submitted'",
                )
                .bind(job.id)
                .bind(i16::from(*progress).min(100))
                .execute(&ctx.pool)
                .await?;
            }
            Ok(Outcome::Done)
        }
        TaskState::Unknown { status } => {
            tracing::warn!(status, "undocumented provider status; treated as still running");
            metrics::counter!("gengate_provider_unknown_status_total", "provider" => job.provider.clone(), "status" => status.clone()).increment(1);
            Ok(Outcome::Done)
        }
        // The provider is faster than our record of the submission: come back shortly, so that
        // the task id is recorded (and polled) before the job fails, as for a success.
        TaskState::Failed { .. }
            if job.status() == GenerationStatus::Queued
                && envelope.attempt < EARLY_UPDATE_RETRIES =>
        {
            Ok(early_update_retry(envelope.attempt))
        }
        TaskState::Failed { code, message } => {
            let from = [GenerationStatus::Queued, GenerationStatus::Submitted];
            audit.detail = Some(json!({"provider_code": code}));
            let failed = db::transaction!(&ctx.pool, LedgerError, |tx| {
                settle::fail(tx, job.id, &from, &audit, code, message).await?
            })
            .await?;
            if failed.is_some() {
                tracing::warn!(code, message, "the provider failed the task; refunded");
                metrics::counter!("gengate_jobs_failed_total", "provider" => job.provider.clone(), "code" => code.clone()).increment(1);
            }
            Ok(Outcome::Done)
        }
        TaskState::Succeeded { .. } => succeeded(ctx, envelope, &job, source, update, audit).await,
    }
}

async fn succeeded(
    ctx: &WorkerContext,
    envelope: &Envelope,
    job: &Job,
    source: &'static str,
    update: TaskUpdate,
    mut audit: Cause,
) -> Result<Outcome, HandlerError> {
    match job.status() {
        // The provider is faster than our record of the submission: come back shortly.
        GenerationStatus::Queued if envelope.attempt < EARLY_UPDATE_RETRIES => {
            return Ok(early_update_retry(envelope.attempt));
        }
        GenerationStatus::Completed | GenerationStatus::Canceled => {
            // Final already: the audit log notes the arrival, nothing else changes.
            record_only(ctx, job, &audit).await?;
            return Ok(Outcome::Done);
        }
        _ => {}
    }

    // Webhooks are hints: ask the provider itself before money moves.
    let mut update = update;
    if source == "webhook" && ctx.settings.worker.confirm_webhooks_by_query {
        let provider = ctx
            .providers
            .get(job.provider()?)
            .ok_or_else(|| anyhow::anyhow!("no client for {}", job.provider))?;
        let task = TaskRef {
            mode: job.mode()?,
            provider_model: job.provider_model.clone(),
            remote_task_id: update.remote_task_id.clone(),
        };
        match provider.query_task(&task).await {
            Ok(confirmed) => match confirmed.state {
                TaskState::Succeeded { .. } => update = confirmed,
                TaskState::Failed { .. } => {
                    audit.detail = Some(
                        json!({"ignored": "the webhook said success, the provider says failed"}),
                    );
                    record_only(ctx, job, &audit).await?;
                    return Ok(Outcome::Done);
                }
                _ => {
                    // Not finished by the provider's own account: polling will settle it.
                    audit.detail = Some(
                        json!({"ignored": "the webhook said success, the provider says still running"}),
                    );
                    record_only(ctx, job, &audit).await?;
                    return Ok(Outcome::Done);
                }
            },
            Err(ProviderError::Retryable { code, message, .. }) => {
                return Ok(Outcome::Retry {
                    delay: Duration::from_secs(5),
                    reason: format!("confirming query failed: {code} {message}"),
                });
            }
            Err(err) => {
                tracing::warn!(error = %err, "the success could not be confirmed by a query; using the webhook")
            }
        }
    }
    let TaskState::Succeeded { files, usage } = &update.state else {
        unreachable!("checked above")
    };

    // Every result URL must be allowlisted (webhook ingress checked its own; this covers polls
    // and confirming queries). The provider itself says the result is somewhere gengate will not
    // send anyone: the job cannot complete, and nothing else would end it (polling stops at a
    // terminal answer), so it fails now and the credits go back.
    if let Err((url, why)) = ctx.allowlist.check_all(files.iter().map(|f| f.url.as_str())) {
        tracing::warn!(url, %why, "result URL refused; failing the job");
        metrics::counter!("gengate_result_urls_refused_total", "provider" => job.provider.clone())
            .increment(1);
        audit.detail = Some(
            json!({"refused": "result URL not allowlisted", "url": url, "why": why.to_string()}),
        );
        let from = [GenerationStatus::Queued, GenerationStatus::Submitted];
        let message = format!("the provider's result URL {why}");
        let failed = db::transaction!(&ctx.pool, LedgerError, |tx| {
            settle::fail(tx, job.id, &from, &audit, REFUSED_RESULT, &message).await?
        })
        .await?;
        if failed.is_some() {
            metrics::counter!("gengate_jobs_failed_total", "provider" => job.provider.clone(), "code" => REFUSED_RESULT).increment(1);
        }
        return Ok(Outcome::Done);
    }
    if files.is_empty() {
        // Nothing to deliver: the user is not charged for a success without a result.
        tracing::warn!("the provider reported success without result files; failing the job");
        audit.detail = Some(json!({"refused": "success without result files"}));
        let from = [GenerationStatus::Queued, GenerationStatus::Submitted];
        db::transaction!(&ctx.pool, LedgerError, |tx| {
            settle::fail(
                tx,
                job.id,
                &from,
                &audit,
                EMPTY_RESULT,
                "the provider reported success without a result",
            )
            .await?
        })
        .await?;
        return Ok(Outcome::Done);
    }
    // Where the provider reports the usage it charged, a job that used less costs less.
    let final_cost = match (
        job.params_value()["expected_units"].as_f64(),
        usage.as_deref().and_then(|u| u.trim().parse::<f64>().ok()),
    ) {
        (Some(expected), Some(reported)) => Some(settle_by_usage(job.cost, expected, reported)),
        _ => None,
    };
    audit.detail = Some(json!({"files": files.len(), "usage": usage, "final_cost": final_cost}));
    let files: Vec<ResultFile> = files.clone();
    let completed = db::transaction!(&ctx.pool, LedgerError, |tx| {
        settle::complete(tx, job.id, &audit, &files, final_cost).await?
    })
    .await?;
    if let Some(completed) = completed {
        let late = completed.generation.from() == Some(GenerationStatus::Failed);
        tracing::info!(late, debt_added = completed.debt_added, "completed");
        metrics::counter!("gengate_jobs_completed_total", "provider" => job.provider.clone(), "late" => late.to_string()).increment(1);
        sqlx::query("UPDATE generations SET next_poll_at = NULL WHERE id = $1")
            .bind(job.id)
            .execute(&ctx.pool)
            .await?;
    }
    Ok(Outcome::Done)
}

/// Writes an audit row without changing anything else.
async fn record_only(ctx: &WorkerContext, job: &Job, audit: &Cause) -> Result<(), HandlerError> {
    let status = job.status();
    db::transaction!(&ctx.pool, HandlerError, |tx| {
        transitions::record(tx, job.id, Some(status.as_str()), None, audit).await?
    })
    .await
}

fn digest_bytes(hex_digest: &str) -> Option<[u8; 32]> {
    hex::decode(hex_digest).ok()?.try_into().ok()
}
