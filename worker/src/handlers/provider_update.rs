//! `event.provider_update`: a provider's word on a task becomes a transition, exactly once however
//! often it arrives:
//! - success on `submitted` → `completed`, credits confirmed (or charged, postpaid), files kept;
//! - success on `failed` → `completed`, the refund undone (restore);
//! - failure on `submitted` → `failed`, refunded; so is a success whose result URL is refused
//!   (`result_rejected`) or that has no result (`empty_result`);
//! - anything on `completed`/`canceled` → the audit log only.
//!
//! Money moves only on the provider's own answer. An update from a poll is that answer (the
//! worker asked the provider by the task id it recorded). A webhook is a hint and never evidence:
//! whatever it says, the task is queried by the id gengate recorded, and only a terminal answer of
//! that query is applied, with its results, URLs and usage. A job with no recorded task cannot be
//! settled by a webhook at all; one that arrives before the submission is recorded (a fast
//! provider) waits for the record a moment (see [`crate::accepts`]), then comes back a few times
//! through the delay tiers, then polling takes over.

use gengate_shared::catalogue::settle_by_usage;
use gengate_shared::generation::GenerationStatus;
use gengate_shared::generation::failure::{Failure, FailureKind};
use gengate_shared::generation::job::Job;
use gengate_shared::generation::settle;
use gengate_shared::generation::transitions::{self, Cause, Transition};
use gengate_shared::providers::{ProviderError, ResultFile, TaskRef, TaskState, TaskUpdate};
use gengate_shared::queue::Envelope;
use gengate_shared::queue::payloads::{self, UpdateSource};
use serde_json::json;

use super::{HandlerError, Outcome, fail_job, load, provider_of};
use crate::context::WorkerContext;

pub(super) async fn handle(
    ctx: &WorkerContext,
    envelope: &Envelope,
) -> Result<Outcome, HandlerError> {
    let event: payloads::ProviderUpdate = envelope.payload()?;
    let Some(mut job) = load(ctx, envelope.generation_id).await? else {
        return Ok(super::unknown_generation());
    };
    let from_webhook = event.source == UpdateSource::Webhook;
    if from_webhook && event.update.state.has_ended() {
        job = await_accept(ctx, job).await?;
    }
    let mut audit = Cause {
        kind: if from_webhook { "webhook" } else { "poll" },
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

    // Only endings are published: webhook ingress records a running task's progress itself, and
    // polls publish terminal answers only. (An earlier version also published progress; such a
    // message, still queued after an upgrade, has nothing left to do.)
    if !update.state.has_ended() {
        return Ok(Outcome::Done);
    }

    // Nothing a provider says changes a completed or canceled job, nor makes a failed one fail
    // again: note the arrival, and spare the provider a query.
    let already_failed =
        job.status == GenerationStatus::Failed && matches!(update.state, TaskState::Failed { .. });
    if job.status.is_terminal() || already_failed {
        record_only(ctx, &job, &audit).await?;
        return Ok(Outcome::Done);
    }

    let answer = if from_webhook {
        match confirm(ctx, envelope, &job, &update, &mut audit).await? {
            Confirmation::Answer(answer) => answer,
            Confirmation::Stop(outcome) => return Ok(outcome),
        }
    } else {
        update
    };
    match answer.state {
        TaskState::Failed { code, message } => {
            let failure = Failure::from_provider(FailureKind::GenerationFailed, &code, &message);
            fail_job(ctx, job.id, Transition::FailTask, &audit, &failure).await?;
            Ok(Outcome::Done)
        }
        TaskState::Succeeded { files, usage } => {
            succeeded(ctx, &job, files, usage.as_deref(), audit).await
        }
        _ => unreachable!("confirm returns terminal answers only; polls publish only those"),
    }
}

/// How long an early webhook's handler waits, in turn, before it looks at its job again: about
/// 0.6 s in all, against the second the delay tiers would cost. When this worker is the one
/// recording the task, the wait ends the moment the record commits.
const ACCEPT_WAITS_MS: [u64; 5] = [20, 40, 80, 160, 320];

/// A webhook that reports the end of a task whose creation is not recorded yet (a fast provider;
/// see [`crate::accepts`]): waits briefly for the record and returns the job as it then is. A job
/// with no attempt counted and none in progress here has no task being created (the attempt is
/// counted before the provider is called): it is returned as it is.
async fn await_accept(ctx: &WorkerContext, mut job: Job) -> Result<Job, HandlerError> {
    for pause in ACCEPT_WAITS_MS {
        let pending = job.status == GenerationStatus::Queued && job.remote_task_id.is_none();
        if !pending || (job.submit_attempts == 0 && !ctx.accepts.is_creating(job.id)) {
            break;
        }
        let pause = std::time::Duration::from_millis(pause);
        if ctx.accepts.is_creating(job.id) {
            // Ends the moment this worker's record commits.
            ctx.accepts.wait(job.id, pause).await;
        } else {
            // Another worker is recording it: look again after the pause.
            tokio::time::sleep(pause).await;
        }
        let Some(now) = load(ctx, job.id).await? else { break };
        job = now;
    }
    Ok(job)
}

/// What the provider said when asked about a webhook's claim.
enum Confirmation {
    /// The provider's own terminal answer: apply it.
    Answer(TaskUpdate),
    /// Nothing to apply (recorded in the audit log), or try again later.
    Stop(Outcome),
}

/// Asks the provider about the task gengate recorded for `job`, because a webhook claims it
/// ended. Only a terminal answer about that very task is returned; anything else is recorded and
/// leaves the job as it is, for polling to settle.
async fn confirm(
    ctx: &WorkerContext,
    envelope: &Envelope,
    job: &Job,
    claim: &TaskUpdate,
    audit: &mut Cause,
) -> Result<Confirmation, HandlerError> {
    let claimed = json!({
        "claimed_state": claim.state.audit_name(),
        "claimed_task_id": claim.remote_task_id,
    });
    let Some(recorded) = job.remote_task_id.clone() else {
        // A fast provider: the webhook came before the worker recorded the task it created.
        if job.status == GenerationStatus::Queued
            && let Some(delay) = ctx.retry.early_update.after(envelope.attempt)
        {
            let reason = "the submission is not recorded yet".into();
            return Ok(Confirmation::Stop(Outcome::Retry { delay, reason }));
        }
        let mut detail = claimed;
        detail["ignored"] = json!("no provider task is recorded for this job");
        return stop_and_record(ctx, job, audit, detail).await;
    };
    let provider = provider_of(ctx, job)?;
    let task = TaskRef {
        mode: job.mode,
        provider_model: job.provider_model.clone(),
        remote_task_id: recorded.clone(),
    };
    let mut detail = claimed;
    let retry = ctx.retry.confirm.after(envelope.attempt);
    let ignored = match provider.query_task(&task).await {
        Ok(answer) if answer.remote_task_id != recorded => {
            "the provider answered about another task".to_owned()
        }
        Ok(answer) if answer.external_id.as_deref().is_some_and(|e| e != job.id.to_string()) => {
            "the provider's task belongs to another generation".to_owned()
        }
        Ok(answer) if answer.state.has_ended() => {
            audit.detail = Some(json!({"confirmed_by": "query"}));
            return Ok(Confirmation::Answer(answer));
        }
        Ok(answer) => format!(
            "the webhook said {}, the provider says {}",
            claim.state.audit_name(),
            answer.state.audit_name()
        ),
        Err(ProviderError::Retryable { code, message, .. }) if let Some(delay) = retry => {
            let reason = format!("confirming query failed: {code} {message}");
            return Ok(Confirmation::Stop(Outcome::Retry { delay, reason }));
        }
        Err(err) => {
            detail["error"] = json!(err.to_string());
            "the provider did not confirm it".to_owned()
        }
    };
    detail["ignored"] = json!(ignored);
    stop_and_record(ctx, job, audit, detail).await
}

async fn stop_and_record(
    ctx: &WorkerContext,
    job: &Job,
    audit: &mut Cause,
    detail: serde_json::Value,
) -> Result<Confirmation, HandlerError> {
    tracing::info!(detail = %detail, "a webhook's claim was not confirmed; nothing changes");
    metrics::counter!("gengate_webhooks_unconfirmed_total", "provider" => job.provider.as_str())
        .increment(1);
    audit.detail = Some(detail);
    record_only(ctx, job, audit).await?;
    Ok(Confirmation::Stop(Outcome::Done))
}

/// Applies the provider's success: completes the job with its files, or fails it when the result
/// cannot be handed out.
async fn succeeded(
    ctx: &WorkerContext,
    job: &Job,
    files: Vec<ResultFile>,
    usage: Option<&str>,
    mut audit: Cause,
) -> Result<Outcome, HandlerError> {
    // Every result URL must be allowlisted and in normal form (webhook ingress checked the
    // webhook's own; this covers what the provider answered). The provider itself says the result
    // is somewhere gengate will not send anyone: the job cannot complete, and nothing else would
    // end it (polling stops at a terminal answer), so it fails now and the credits go back.
    let files = match ctx.allowlist.normalise_all(files.iter().map(|f| f.url.as_str())) {
        Ok(urls) => files
            .into_iter()
            .zip(urls)
            .map(|(file, url)| ResultFile { url, ..file })
            .collect::<Vec<_>>(),
        Err((url, why)) => {
            tracing::warn!(%why, "result URL refused; failing the job");
            metrics::counter!("gengate_result_urls_refused_total", "provider" => job.provider.as_str())
                .increment(1);
            let failure = Failure::with_detail(
                FailureKind::ResultRejected,
                format!("result URL {url:?} {why}"),
            );
            fail_job(ctx, job.id, Transition::FailTask, &audit, &failure).await?;
            return Ok(Outcome::Done);
        }
    };
    if files.is_empty() {
        // Nothing to deliver: the user is not charged for a success without a result.
        tracing::warn!("the provider reported success without result files; failing the job");
        let failure = Failure::new(FailureKind::EmptyResult);
        fail_job(ctx, job.id, Transition::FailTask, &audit, &failure).await?;
        return Ok(Outcome::Done);
    }
    // Where the provider reports the usage it charged, a job that used less costs less.
    let final_cost = match (job.expected_units(), usage.and_then(|u| u.trim().parse::<f64>().ok()))
    {
        (Some(expected), Some(reported)) => Some(settle_by_usage(job.cost, expected, reported)),
        _ => None,
    };
    let mut detail = audit.detail.take().unwrap_or_else(|| json!({}));
    detail["files"] = json!(files.len());
    detail["usage"] = json!(usage);
    detail["final_cost"] = json!(final_cost);
    audit.detail = Some(detail);
    // Completed, its polls stop in the same statement (`settle::complete`); the copy of its files is in the outbox,
    // so the relays are woken after the commit rather than left to their sweep.
    let id = job.id;
    let completed = ctx
        .commits
        .run_waking_relays(id, move |tx| {
            let (audit, files) = (audit.clone(), files.clone());
            Box::pin(async move { Ok(settle::complete(tx, id, &audit, &files, final_cost).await?) })
        })
        .await?;
    if let Some(completed) = completed {
        let late = completed.generation.from == GenerationStatus::Failed;
        tracing::info!(late, debt_added = completed.debt_added, "completed");
        metrics::counter!("gengate_jobs_completed_total", "provider" => job.provider.as_str(), "late" => late.to_string()).increment(1);
    }
    Ok(Outcome::Done)
}

/// Writes an audit row without changing anything else.
async fn record_only(ctx: &WorkerContext, job: &Job, audit: &Cause) -> Result<(), HandlerError> {
    let (id, status, audit) = (job.id, job.status, audit.clone());
    ctx.commits
        .run(id, move |tx| {
            let audit = audit.clone();
            Box::pin(
                async move { Ok(transitions::record(tx, id, Some(status), None, &audit).await?) },
            )
        })
        .await
}

fn digest_bytes(hex_digest: &str) -> Option<[u8; 32]> {
    hex::decode(hex_digest).ok()?.try_into().ok()
}
