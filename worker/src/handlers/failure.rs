//! `event.failure`: fail a generation that did not finish (a polling-failure report through
//! `POST /api/generation/handle-failure`, an operator, the sweeper) and refund it. Idempotent, and
//! a later success still overrides it.

use gengate_shared::db;
use gengate_shared::generation::GenerationStatus;
use gengate_shared::generation::settle;
use gengate_shared::generation::transitions::Cause;
use gengate_shared::ledger::LedgerError;
use gengate_shared::queue::Envelope;
use gengate_shared::queue::envelope::payloads;
use serde_json::json;

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
    let kind: &'static str = match failure.cause.as_str() {
        "deadline" => "deadline",
        "operator" => "operator",
        "sweeper" => "sweeper",
        _ => "handle_failure",
    };
    let audit = Cause {
        kind,
        message_id: Some(envelope.message_id),
        detail: Some(json!({"reason": failure.reason})),
        ..Cause::default()
    };
    let from = [GenerationStatus::Queued, GenerationStatus::Submitted];
    let failed = db::transaction!(&ctx.pool, LedgerError, |tx| {
        settle::fail(tx, envelope.generation_id, &from, &audit, &failure.code, &failure.reason)
            .await?
    })
    .await?;
    if failed.is_some() {
        tracing::warn!(code = failure.code, reason = failure.reason, "failed and refunded");
    }
    Ok(Outcome::Done)
}
