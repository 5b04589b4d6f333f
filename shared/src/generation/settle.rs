//! The money-moving transitions: a generation fails (and is refunded) or completes (and is
//! confirmed, restored or charged). Each runs inside the caller's transaction, so the status, the
//! ledger and the audit log change together or not at all, and each is a no-op (recorded in the
//! audit log) when another delivery already moved the generation.

use serde_json::json;

use super::archive;
use super::failure::Failure;
use super::transitions::{self, Cause, Changes, PollChange, Transition, Transitioned};
use super::{Billing, GenerationStatus, MediaType};
use crate::db::Tx;
use crate::ids::GenerationId;
use crate::ledger::{self, LedgerError};
use crate::providers::ResultFile;

/// Fails a generation by `transition` (one that leads to `failed`: [`Transition::RejectSubmission`],
/// [`Transition::FailTask`] or [`Transition::Abandon`]): refunds a prepaid one, releases a postpaid
/// one's hold (it was never charged). Its owner sees `failure.kind`'s code and text; what the
/// provider said goes to the audit row. `None`: its status was not one the transition leaves.
pub async fn fail(
    tx: &mut Tx,
    id: GenerationId,
    transition: Transition,
    cause: &Cause,
    failure: &Failure,
) -> Result<Option<Transitioned>, LedgerError> {
    debug_assert_eq!(transition.to(), GenerationStatus::Failed, "{transition:?} does not fail");
    let kind = failure.kind;
    let changes = Changes {
        failure: Some((kind.code().to_owned(), kind.message().to_owned())),
        ..Changes::default()
    };
    let cause = Cause { detail: Some(failure.audit_detail(cause.detail.clone())), ..cause.clone() };
    let Some(moved) = transitions::transition(tx, id, transition, &cause, &changes).await? else {
        return Ok(None);
    };
    match moved.billing {
        Billing::Prepaid => {
            let reason = format!("{}: {}", cause.kind, kind.code());
            ledger::refund(tx, &moved.ledger(), &reason).await?;
        }
        Billing::Postpaid => {
            ledger::release_hold(tx, &moved.ledger(), "failed").await?;
        }
    }
    Ok(Some(moved))
}

/// What a completion settled.
#[derive(Debug, Clone)]
pub struct Completed {
    /// The generation and the status it came from.
    pub generation: Transitioned,
    /// Credits that became debt (a late success the balance could not cover).
    pub debt_added: i64,
}

/// Completes a generation that is `submitted` (or `failed`: a success overrides a failure) with its
/// result files, settling the credits:
/// - prepaid from `submitted`: the reservation is confirmed at `final_cost` (never more than it);
/// - prepaid from `failed`: the refund is undone by charging again (restore; a shortfall is debt);
/// - postpaid: the price is charged now (a shortfall is debt).
///
/// `None`: it was already completed or canceled (or still queued).
pub async fn complete(
    tx: &mut Tx,
    id: GenerationId,
    cause: &Cause,
    files: &[ResultFile],
    final_cost: Option<i64>,
) -> Result<Option<Completed>, LedgerError> {
    let cost: Option<i64> = sqlx::query_scalar("SELECT cost FROM generations WHERE id = $1")
        .bind(id)
        .fetch_optional(&mut **tx)
        .await?;
    let Some(cost) = cost else { return Ok(None) };
    let final_cost = final_cost.map_or(cost, |f| f.clamp(0, cost));
    // Its polls stop with the transition (one update of the row).
    let changes = Changes {
        final_cost: Some(final_cost),
        polls: Some(PollChange::Stop),
        ..Changes::default()
    };
    let Some(moved) =
        transitions::transition(tx, id, Transition::Complete, cause, &changes).await?
    else {
        return Ok(None);
    };
    let generation = moved.ledger();
    let debt_added = match (moved.billing, moved.from) {
        (Billing::Prepaid, GenerationStatus::Failed) => {
            let outcome = ledger::restore(tx, &generation, final_cost).await?;
            metrics::counter!("gengate_late_successes_total").increment(1);
            outcome.debt_added
        }
        (Billing::Prepaid, _) => {
            ledger::confirm(tx, &generation, final_cost).await?;
            0
        }
        (Billing::Postpaid, _) => ledger::charge(tx, &generation, final_cost).await?.debt_added,
    };
    if debt_added > 0 {
        metrics::counter!("gengate_restore_shortfalls_total").increment(1);
        let detail = Cause {
            kind: "debt",
            detail: Some(json!({"debt_added": debt_added})),
            ..Cause::default()
        };
        transitions::record(tx, id, Some(GenerationStatus::Completed), None, &detail).await?;
    }
    store_files(tx, id, generation.media, files).await?;
    // The files are the provider's, for now: their copy into gengate's storage is queued with
    // the completion, so a completed job is never left without one (settlement does not wait).
    if !files.is_empty() {
        archive::enqueue(tx, id).await?;
    }
    Ok(Some(Completed { generation: moved, debt_added }))
}

/// Records result files as the provider serves them (`pending` their copy); a file already
/// recorded (a duplicate delivery) is left as it is.
async fn store_files(
    tx: &mut Tx,
    id: GenerationId,
    media: MediaType,
    files: &[ResultFile],
) -> Result<(), sqlx::Error> {
    match media {
        MediaType::Video => {
            let quality: Option<String> =
                sqlx::query_scalar("SELECT params->>'quality' FROM generations WHERE id = $1")
                    .bind(id)
                    .fetch_one(&mut **tx)
                    .await?;
            let label = quality.unwrap_or_else(|| "original".to_owned());
            for (i, file) in files.iter().enumerate() {
                let quality = if i == 0 { label.clone() } else { format!("{label}-{}", i + 1) };
                sqlx::query(
                    "INSERT INTO generation_videos (id, generation_id, quality, url, duration_s)
                     VALUES ($1, $2, $3, $4, $5)
                     ON CONFLICT (generation_id, quality) DO NOTHING",
                )
                .bind(uuid::Uuid::now_v7())
                .bind(id)
                .bind(quality)
                .bind(&file.url)
                .bind(file.duration_s)
                .execute(&mut **tx)
                .await?;
            }
        }
        MediaType::Image => {
            // Positions are smallints: files past the 32,767th are not kept (no provider returns
            // that many images for one request).
            for (position, file) in (0i16..).zip(files) {
                sqlx::query(
                    "INSERT INTO generation_images (id, generation_id, position, url)
                     VALUES ($1, $2, $3, $4)
                     ON CONFLICT (generation_id, position) DO NOTHING",
                )
                .bind(uuid::Uuid::now_v7())
                .bind(id)
                .bind(position)
                .bind(&file.url)
                .execute(&mut **tx)
                .await?;
            }
        }
    }
    Ok(())
}
