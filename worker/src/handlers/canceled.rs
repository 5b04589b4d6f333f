//! `event.canceled`: the client canceled and was refunded already (in the API's transaction).
//! Neither Kling nor kie.ai offers a way to cancel a task, so the task runs on upstream; its
//! result, when it comes, is recorded in the audit log and otherwise ignored. Polling stops.

use gengate_shared::generation::polling;
use gengate_shared::queue::{Envelope, payloads};

use super::{HandlerError, Outcome};
use crate::context::WorkerContext;

pub(super) async fn handle(
    ctx: &WorkerContext,
    envelope: &Envelope,
) -> Result<Outcome, HandlerError> {
    let payloads::Canceled { was } = envelope.payload()?;
    polling::stop_canceled(&ctx.pool, envelope.generation_id).await?;
    tracing::info!(
        %was,
        "canceled; the providers offer no upstream cancel, so the task is left to finish"
    );
    Ok(Outcome::Done)
}
