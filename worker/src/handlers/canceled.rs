//! `event.canceled`: the client canceled and was refunded already (in the API's transaction).
//! Neither Kling nor kie.ai offers a way to cancel a task, so the task runs on upstream; its
//! result, when it comes, is recorded in the audit log and otherwise ignored. Polling stops.

use gengate_shared::queue::Envelope;

use super::{HandlerError, Outcome};
use crate::context::WorkerContext;

pub(super) async fn handle(
    ctx: &WorkerContext,
    envelope: &Envelope,
) -> Result<Outcome, HandlerError> {
    sqlx::query("UPDATE generations SET next_poll_at = NULL WHERE id = $1 AND status = 'canceled'")
        .bind(envelope.generation_id)
        .execute(&ctx.pool)
        .await?;
    tracing::info!(
        "canceled; the providers offer no upstream cancel, so the task is left to finish"
    );
    Ok(Outcome::Done)
}
