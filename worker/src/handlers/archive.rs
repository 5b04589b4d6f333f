//! `generation.archive`: copy a completed generation's pending result files into storage (see
//! `crate::archive`). Each file ends `archived` or `failed` by a conditional update, so a message
//! handled twice (a redelivery, a worker killed mid-copy) records each file once; what could not
//! be copied for a reason that may pass comes back through the delay tiers, up to
//! `archive.attempts` tries, and then ends `failed` with its reason. Nothing here touches the
//! job's status or its credits: the job completed when the provider said so.

use std::time::{Duration, Instant};

use gengate_shared::db;
use gengate_shared::generation::archive::{self, ResultFileRow};
use gengate_shared::queue::Envelope;
use serde_json::json;

use super::{HandlerError, Outcome};
use crate::archive::{self as copier, CopyError};
use crate::context::WorkerContext;

pub(super) async fn handle(
    ctx: &WorkerContext,
    envelope: &Envelope,
) -> Result<Outcome, HandlerError> {
    let files = archive::pending_files(&ctx.pool, envelope.generation_id).await?;
    let last_try = envelope.attempt + 1 >= ctx.settings.archive.attempts;
    let mut retry = None;
    for file in &files {
        let started = Instant::now();
        let copied = copier::copy(ctx, file).await;
        metrics::histogram!("gengate_archive_seconds").record(started.elapsed().as_secs_f64());
        match copied {
            Ok(archived) => {
                let outcome = json!({"status": "archived", "object_key": archived.object_key,
                    "poster_key": archived.poster_key, "size_bytes": archived.size_bytes,
                    "detail": archived.detail});
                let recorded = db::transaction!(&ctx.pool, HandlerError, |tx| {
                    let recorded = archive::mark_archived(&mut **tx, file, &archived).await?;
                    if recorded {
                        archive::record_outcome(tx, file, outcome.clone()).await?;
                    }
                    recorded
                })
                .await?;
                if recorded {
                    tracing::info!(kind = ?file.kind, label = file.label, key = archived.object_key, bytes = archived.size_bytes, "result file archived");
                }
            }
            Err(CopyError::Retryable(detail)) if !last_try => {
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
    Ok(match retry {
        // 5 s, 30 s, 2.5 min, … as the tiers allow.
        Some(reason) => Outcome::Retry {
            delay: Duration::from_secs(5 * 6u64.pow(envelope.attempt.min(3))),
            reason,
        },
        None => Outcome::Done,
    })
}

async fn fail(
    ctx: &WorkerContext,
    file: &ResultFileRow,
    reason: &'static str,
    detail: &str,
) -> Result<(), HandlerError> {
    let outcome = json!({"status": "failed", "reason": reason, "detail": detail});
    let recorded = db::transaction!(&ctx.pool, HandlerError, |tx| {
        let recorded = archive::mark_failed(&mut **tx, file, detail).await?;
        if recorded {
            archive::record_outcome(tx, file, outcome.clone()).await?;
        }
        recorded
    })
    .await?;
    if recorded {
        tracing::warn!(kind = ?file.kind, label = file.label, reason, detail, "result file not archived; the job keeps the provider's URL");
        metrics::counter!("gengate_archive_failures_total", "reason" => reason).increment(1);
    }
    Ok(())
}
