//! The state machine: every change of a generation's status is one conditional update, made in
//! the caller's transaction together with its ledger operation, and recorded in the audit log.
//!
//! ```text
//! queued ──► submitted ──► completed
//!   │            │    ▲
//!   │            ▼    │ (a late success overrides a failure, and restores the charge)
//!   ├────────► failed ┘
//!   └──► canceled ◄── submitted
//! ```
//!
//! `UPDATE … WHERE status = ANY(allowed)`: when zero rows change, another delivery got there first
//! (or the generation is already final); the caller records that and moves on.

use serde_json::Value;
use uuid::Uuid;

use super::{Billing, GenerationStatus, MediaType};
use crate::db::Tx;
use crate::ids::{GenerationId, UserId};
use crate::ledger::LedgerGeneration;

/// Why a transition is attempted: stored in the audit log.
#[derive(Debug, Clone, Default)]
pub struct Cause {
    /// `submit`, `provider_accepted`, `submit_failed`, `webhook`, `poll`, `deadline`,
    /// `handle_failure`, `cancel`, `operator`, …
    pub kind: &'static str,
    /// The message that carried it.
    pub message_id: Option<Uuid>,
    /// SHA-256 of the provider payload it is based on.
    pub payload_digest: Option<[u8; 32]>,
    /// Anything else worth keeping (provider codes, operator notes).
    pub detail: Option<Value>,
}

impl Cause {
    /// A cause with nothing but its kind.
    pub fn new(kind: &'static str) -> Self {
        Self { kind, ..Self::default() }
    }
}

/// Column changes that come with a transition.
#[derive(Debug, Clone, Default)]
pub struct Changes {
    /// The provider's task id (on `submitted`).
    pub remote_task_id: Option<String>,
    /// Why it failed (on `failed`).
    pub failure: Option<(String, String)>,
    /// What it finally cost (on `completed`).
    pub final_cost: Option<i64>,
}

/// A generation that just changed status.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Transitioned {
    /// The generation.
    pub id: GenerationId,
    /// Its owner.
    pub user_id: UserId,
    /// Its media type (stored name).
    #[sqlx(rename = "type")]
    pub media: String,
    /// Its billing (stored name).
    pub billing: String,
    /// Its price at submit.
    pub cost: i64,
    /// The status it had.
    pub from_status: String,
    /// When it was accepted.
    pub created_at: time::OffsetDateTime,
}

impl Transitioned {
    /// The generation as the ledger sees it.
    pub fn ledger(&self) -> LedgerGeneration {
        LedgerGeneration {
            id: self.id,
            user_id: self.user_id,
            media: MediaType::parse(&self.media).unwrap_or(MediaType::Video),
        }
    }

    /// Prepaid or postpaid.
    pub fn billing(&self) -> Billing {
        Billing::parse(&self.billing).unwrap_or(Billing::Prepaid)
    }

    /// The status it had.
    pub fn from(&self) -> Option<GenerationStatus> {
        GenerationStatus::parse(&self.from_status)
    }
}

/// Moves generation `id` to `to` if its status is one of `from`, and records the attempt either
/// way. `None`: the status was not one of `from` (nothing changed but the audit log).
pub async fn transition(
    tx: &mut Tx,
    id: GenerationId,
    from: &[GenerationStatus],
    to: GenerationStatus,
    cause: &Cause,
    changes: &Changes,
) -> Result<Option<Transitioned>, sqlx::Error> {
    let from: Vec<&str> = from.iter().map(|s| s.as_str()).collect();
    let (failure_code, failure_message) = changes.failure.clone().unzip();
    let moved: Option<Transitioned> = sqlx::query_as(
        "WITH current AS (SELECT id, status FROM generations WHERE id = $1 FOR UPDATE)
         UPDATE generations g SET
             status = $3,
             updated_at = now(),
             remote_task_id = COALESCE($4, g.remote_task_id),
             failure_code = CASE WHEN $3 = 'failed' THEN $5 WHEN $3 = 'completed' THEN NULL ELSE g.failure_code END,
             failure_message = CASE WHEN $3 = 'failed' THEN $6 WHEN $3 = 'completed' THEN NULL ELSE g.failure_message END,
             final_cost = CASE WHEN $3 = 'completed' THEN $7 ELSE NULL END,
             progress = CASE WHEN $3 IN ('completed', 'failed', 'canceled') THEN NULL ELSE g.progress END,
             submitted_at = CASE WHEN $3 = 'submitted' THEN now() ELSE g.submitted_at END,
             completed_at = CASE WHEN $3 IN ('completed', 'failed', 'canceled') THEN now() ELSE g.completed_at END
         FROM current
         WHERE g.id = current.id AND current.status = ANY($2)
         RETURNING g.id, g.user_id, g.type, g.billing, g.cost, current.status AS from_status, g.created_at",
    )
    .bind(id)
    .bind(&from)
    .bind(to.as_str())
    .bind(&changes.remote_task_id)
    .bind(failure_code)
    .bind(failure_message)
    .bind(changes.final_cost)
    .fetch_optional(&mut **tx)
    .await?;
    match &moved {
        Some(m) => record(tx, id, Some(&m.from_status), Some(to.as_str()), cause).await?,
        None => {
            let current: Option<String> =
                sqlx::query_scalar("SELECT status FROM generations WHERE id = $1")
                    .bind(id)
                    .fetch_optional(&mut **tx)
                    .await?;
            if current.is_some() {
                record(tx, id, current.as_deref(), None, cause).await?;
            }
        }
    }
    if let Some(m) = &moved {
        metrics::counter!(
            "gengate_transitions_total",
            "from" => m.from_status.clone(),
            "to" => to.as_str(),
            "cause" => cause.kind
        )
        .increment(1);
        if matches!(
            to,
            GenerationStatus::Completed | GenerationStatus::Failed | GenerationStatus::Canceled
        ) {
            let age = time::OffsetDateTime::now_utc() - m.created_at;
            metrics::histogram!("gengate_generation_seconds_to_end", "status" => to.as_str())
                .record(age.as_seconds_f64().max(0.0));
        }
    }
    Ok(moved)
}

/// Writes one audit row (`to: None` means recorded but not applied).
pub async fn record(
    tx: &mut Tx,
    id: GenerationId,
    from: Option<&str>,
    to: Option<&str>,
    cause: &Cause,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO generation_events (generation_id, from_status, to_status, cause, message_id, payload_digest, detail)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(id)
    .bind(from)
    .bind(to)
    .bind(cause.kind)
    .bind(cause.message_id)
    .bind(cause.payload_digest.map(|d| d.to_vec()))
    // Details quote providers and webhooks: whatever they sent, the row can be written.
    .bind(cause.detail.as_ref().map(super::failure::outside_json))
    .execute(&mut **tx)
    .await?;
    Ok(())
}
