//! A trusted server reports that a generation failed (`POST /api/generation/handle-failure`).
//! Nothing changes at once: the report is queued through the outbox as `event.failure`, so it is
//! accepted even while the broker is away, and a worker applies it like every other failure
//! ([`Transition::Abandon`](super::transitions::Transition::Abandon)): idempotent, refunded once,
//! and overridden by a later success.

use sqlx::PgPool;

use crate::db;
use crate::ids::GenerationId;
use crate::outbox;
use crate::queue::{Envelope, payloads};

/// Queues `report` for generation `id`; `false` (and nothing queued) if there is no such
/// generation.
pub async fn failure(
    pool: &PgPool,
    id: GenerationId,
    report: &payloads::Failure,
) -> Result<bool, sqlx::Error> {
    let envelope = Envelope::of(id, report);
    db::transaction!(pool, sqlx::Error, |tx| {
        let exists: bool =
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM generations WHERE id = $1)")
                .bind(id)
                .fetch_one(&mut **tx)
                .await?;
        if exists {
            outbox::enqueue(tx, &envelope).await?;
        }
        exists
    })
    .await
}
