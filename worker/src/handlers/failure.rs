//! `event.failure`: fail a generation that did not finish (a polling-failure report through
//! `POST /api/generation/handle-failure`, an operator, the sweeper) and refund it. Idempotent, and
//! a later success still overrides it.

use gengate_shared::db;
use gengate_shared::generation::GenerationStatus;
use gengate_shared::generation::failure::{Failure, FailureKind};
use gengate_shared::generation::settle;
use gengate_shared::generation::transitions::Cause;
use gengate_shared::ledger::LedgerError;
use gengate_shared::queue::Envelope;
use gengate_shared::queue::envelope::payloads;

use super::{HandlerError, Outcome};
use crate::context::WorkerContext;

pub(super) async fn handle(
    ctx: &WorkerContext,
    envelope: &Envelope,
) -> Result<Outcome, HandlerError> {
    let Ok(failure) = serde_json::from_value::<payloads::Failure>(envelope.payload.clone()) else {
        return Ok(Outcome::DeadLetter {
            kind: "bad_payload",
            message: "event.failure without cause, code and reason".into(),
        });
    };
    let (kind, failure_kind): (&'static str, FailureKind) = match failure.cause.as_str() {
        "deadline" => ("deadline", FailureKind::DeadlineExceeded),
        "operator" => ("operator", FailureKind::Operator),
        "sweeper" => ("sweeper", FailureKind::DeadlineExceeded),
        _ => ("handle_failure", FailureKind::ReportedFailure),
    };
    let audit = Cause { kind, message_id: Some(envelope.message_id), ..Cause::default() };
    let outcome = Failure::with_detail(failure_kind, failure.reason.clone());
    let from = [GenerationStatus::Queued, GenerationStatus::Submitted];
    let failed = db::transaction!(&ctx.pool, LedgerError, |tx| {
        settle::fail(tx, envelope.generation_id, &from, &audit, &outcome).await?
    })
    .await?;
    if failed.is_some() {
        tracing::warn!(code = failure.code, reason = failure.reason, "failed and refunded");
    }
    Ok(Outcome::Done)
}
