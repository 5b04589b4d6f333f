//! `event.failure`: fail a generation that will not finish (a failure report through
//! `POST /api/generation/handle-failure`, an operator, the sweeper) and refund it. Idempotent, and
//! a later success still overrides it.

use gengate_shared::generation::failure::{Failure, FailureKind};
use gengate_shared::generation::transitions::{Cause, Transition};
use gengate_shared::queue::Envelope;
use gengate_shared::queue::payloads::{self, FailureCause};
use serde_json::json;

use super::{HandlerError, Outcome, fail_job};
use crate::context::WorkerContext;

pub(super) async fn handle(
    ctx: &WorkerContext,
    envelope: &Envelope,
) -> Result<Outcome, HandlerError> {
    let report: payloads::Failure = envelope.payload()?;
    let (kind, failure_kind) = match report.cause {
        FailureCause::Deadline => ("deadline", FailureKind::DeadlineExceeded),
        FailureCause::Operator => ("operator", FailureKind::Operator),
        FailureCause::Sweeper => ("sweeper", FailureKind::DeadlineExceeded),
        FailureCause::HandleFailure => ("handle_failure", FailureKind::ReportedFailure),
    };
    let audit = Cause {
        kind,
        message_id: Some(envelope.message_id),
        detail: Some(json!({"reported_code": report.code})),
        ..Cause::default()
    };
    let failure = Failure::with_detail(failure_kind, report.reason);
    fail_job(ctx, envelope.generation_id, Transition::Abandon, &audit, &failure).await?;
    Ok(Outcome::Done)
}
