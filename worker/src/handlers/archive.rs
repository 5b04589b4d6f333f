//! `generation.archive`: copy a completed generation's pending result files into storage (see
//! `crate::archive`). Each file ends `archived` or `failed` by a conditional update, so a message
//! handled twice (a redelivery, a worker killed mid-copy) records each file once; what could not
//! be copied for a reason that may pass comes back through the delay tiers, up to
//! `archive.attempts` tries (`RetryPolicies::archive`), and then ends `failed` with its reason. Nothing here touches the
//! job's status or its credits: the job completed when the provider said so.

use std::time::Instant;

use gengate_shared::client_webhooks;
use gengate_shared::generation::archive::{self, ArchiveStatus, ArchivedFile, ResultFileRow};
use gengate_shared::queue::{Envelope, payloads};
use serde_json::json;

use super::{HandlerError, Outcome};
use crate::archive::{self as copier, CopyError};
use crate::context::WorkerContext;

pub(super) async fn handle(
    ctx: &WorkerContext,
    envelope: &Envelope,
) -> Result<Outcome, HandlerError> {
    let payloads::Archive {} = envelope.payload()?;
    let files = archive::pending_files(&ctx.pool, envelope.generation_id).await?;
    let retry_after = ctx.retry.archive.after(envelope.attempt);
    let mut retry = None;
    for file in &files {
        let started = Instant::now();
        let copied = copier::copy(ctx, file).await;
        metrics::histogram!("gengate_archive_seconds").record(started.elapsed().as_secs_f64());
        match copied {
            Ok(archived) => {
                let outcome = json!({"status": ArchiveStatus::Archived, "object_key": archived.object_key,
                    "poster_key": archived.poster_key, "size_bytes": archived.size_bytes,
                    "detail": archived.detail});
                let recorded =
                    record(ctx, file, Ending::Archived(archived.clone()), outcome).await?;
                if recorded {
                    tracing::info!(kind = ?file.kind, label = file.label, key = archived.object_key, bytes = archived.size_bytes, "result file archived");
                }
            }
            Err(CopyError::Retryable(detail)) if retry_after.is_some() => {
                tracing::warn!(kind = ?file.kind, label = file.label, %detail, "result file not copied; trying again later");
                retry = Some(detail);
            }
            Err(err) => {
                let reason = match &err {
                    CopyError::Permanent { reason, .. } => reason,
                    CopyError::Retryable(_) => "source_unreachable",
                };
                fail(ctx, file, reason, &err.to_string()).await?;
            }
        }
    }
    Ok(match (retry, retry_after) {
        // See `RetryPolicies::archive` for the pauses.
        (Some(reason), Some(delay)) => Outcome::Retry { delay, reason },
        _ => Outcome::Done,
    })
}

async fn fail(
    ctx: &WorkerContext,
    file: &ResultFileRow,
    reason: &'static str,
    detail: &str,
) -> Result<(), HandlerError> {
    let outcome = json!({"status": ArchiveStatus::Failed, "reason": reason, "detail": detail});
    let recorded = record(ctx, file, Ending::Failed(detail.to_owned()), outcome).await?;
    if recorded {
        tracing::warn!(kind = ?file.kind, label = file.label, reason, detail, "result file not archived; the job keeps the provider's URL");
        metrics::counter!("gengate_archive_failures_total", "reason" => reason).increment(1);
    }
    Ok(())
}

/// How a file's copy ended.
#[derive(Clone)]
enum Ending {
    Archived(ArchivedFile),
    /// Why not.
    Failed(String),
}

/// Records how a file's copy ended, if it is still pending: its status and an audit row, in one
/// transaction (shared with other deliveries' writes, see [`crate::commits`]). `false`: another
/// copy recorded it first.
async fn record(
    ctx: &WorkerContext,
    file: &ResultFileRow,
    ending: Ending,
    outcome: serde_json::Value,
) -> Result<bool, HandlerError> {
    let file = file.clone();
    ctx.commits
        .run_waking_relays(file.generation_id, move |tx| {
            let (file, ending, outcome) = (file.clone(), ending.clone(), outcome.clone());
            Box::pin(async move {
                let recorded = match &ending {
                    Ending::Archived(archived) => {
                        archive::mark_archived(&mut **tx, &file, archived).await?
                    }
                    Ending::Failed(why) => archive::mark_failed(&mut **tx, &file, why).await?,
                };
                if recorded {
                    archive::record_outcome(tx, &file, outcome).await?;
                    // The last file's ending tells the client (if it asked to be told).
                    client_webhooks::notify_when_archived(tx, file.generation_id).await?;
                }
                Ok(recorded)
            })
        })
        .await
}
