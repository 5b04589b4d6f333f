//! The state machine: every change of a generation's status is one [`Transition`], made as one
//! conditional update in the caller's transaction together with its ledger operation, and
//! recorded in the audit log.
//!
//! ```text
//! queued ──Accept──► submitted ──Complete──► completed
//!   │                  │     ▲
//!   │      FailTask ───┤     │ Complete (a late success overrides a failure and restores the charge)
//!   │                  ▼     │
//!   ├─RejectSubmission─► failed ◄── Abandon (from queued or submitted)
//!   └──────Cancel────► canceled ◄── Cancel (from submitted)
//! ```
//!
//! `UPDATE … WHERE status = ANY(transition.from())`: when zero rows change, another delivery got
//! there first (or the generation already ended); the caller records that and moves on.
//! `completed` and `canceled` are terminal: no transition leaves them.

use std::sync::LazyLock;

use serde_json::Value;
use uuid::Uuid;

use super::{Billing, GenerationStatus, MediaType};
use crate::client_webhooks::{self, Event};
use crate::db::Tx;
use crate::ids::{GenerationId, UserId};
use crate::ledger::LedgerGeneration;
use crate::queue::{Envelope, MessageKind, payloads};

/// Every way a generation's status changes, with the statuses it may leave. Nothing else changes a
/// status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transition {
    /// A worker created the upstream task: `queued → submitted`.
    Accept,
    /// The upstream task could not be created, for good: `queued → failed`.
    RejectSubmission,
    /// The provider ended the task without a usable result, or its deadline passed:
    /// `submitted → failed`.
    FailTask,
    /// A job that will not finish, reported (by a trusted server, an operator) or found past its
    /// deadline by the sweeper: `queued | submitted → failed`.
    Abandon,
    /// The provider reported success: `submitted | failed → completed`.
    Complete,
    /// The client canceled: `queued | submitted → canceled`.
    Cancel,
}

impl Transition {
    /// Every transition.
    pub const ALL: [Transition; 6] = [
        Transition::Accept,
        Transition::RejectSubmission,
        Transition::FailTask,
        Transition::Abandon,
        Transition::Complete,
        Transition::Cancel,
    ];

    /// The statuses it may leave.
    pub fn from(self) -> &'static [GenerationStatus] {
        use GenerationStatus::{Failed, Queued, Submitted};
        match self {
            Transition::Accept | Transition::RejectSubmission => &[Queued],
            Transition::FailTask => &[Submitted],
            Transition::Abandon | Transition::Cancel => &[Queued, Submitted],
            Transition::Complete => &[Submitted, Failed],
        }
    }

    /// The status it leads to.
    pub fn to(self) -> GenerationStatus {
        match self {
            Transition::Accept => GenerationStatus::Submitted,
            Transition::RejectSubmission | Transition::FailTask | Transition::Abandon => {
                GenerationStatus::Failed
            }
            Transition::Complete => GenerationStatus::Completed,
            Transition::Cancel => GenerationStatus::Canceled,
        }
    }
}

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
    /// Its polls, changed in the same statement (one row version fewer than a separate update).
    pub polls: Option<PollChange>,
}

/// How a transition changes a job's polls (see [`super::polling`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PollChange {
    /// The poll chain starts: poll 0 is due after this long (on `submitted`).
    Start(std::time::Duration),
    /// No more polls (on `completed`).
    Stop,
}

/// A generation that just changed status.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Transitioned {
    /// The generation.
    pub id: GenerationId,
    /// Its owner.
    pub user_id: UserId,
    /// Its media type.
    #[sqlx(rename = "type")]
    pub media: MediaType,
    /// Prepaid or postpaid.
    pub billing: Billing,
    /// Its price at submit.
    pub cost: i64,
    /// The status it had.
    #[sqlx(rename = "from_status")]
    pub from: GenerationStatus,
    /// When it was accepted.
    pub created_at: time::OffsetDateTime,
}

impl Transitioned {
    /// The generation as the ledger sees it.
    pub fn ledger(&self) -> LedgerGeneration {
        LedgerGeneration { id: self.id, user_id: self.user_id, media: self.media }
    }
}

/// The transition's statement: the conditional update, and the client's notification when the
/// new status makes an event ([`Event::on_status`]: a final status, or `submitted`) and the event
/// has a target (`$10`: the message, `NULL` otherwise; `$13`: the event).
static TRANSITION_SQL: LazyLock<String> = LazyLock::new(|| {
    format!(
        "WITH current AS (SELECT id, status FROM generations WHERE id = $1 FOR UPDATE),
         moved AS (
         UPDATE generations g SET
             status = $3,
             updated_at = now(),
             remote_task_id = COALESCE($4, g.remote_task_id),
             failure_code = CASE WHEN $3 = 'failed' THEN $5 WHEN $3 = 'completed' THEN NULL ELSE g.failure_code END,
             failure_message = CASE WHEN $3 = 'failed' THEN $6 WHEN $3 = 'completed' THEN NULL ELSE g.failure_message END,
             final_cost = CASE WHEN $3 = 'completed' THEN $7 ELSE NULL END,
             progress = CASE WHEN $3 IN ('completed', 'failed', 'canceled') THEN NULL ELSE g.progress END,
             submitted_at = CASE WHEN $3 = 'submitted' THEN now() ELSE g.submitted_at END,
             completed_at = CASE WHEN $3 IN ('completed', 'failed', 'canceled') THEN now() ELSE g.completed_at END,
             next_poll_at = CASE $8 WHEN 'start' THEN now() + make_interval(secs => $9)
                                    WHEN 'stop' THEN NULL ELSE g.next_poll_at END,
             polls = CASE $8 WHEN 'start' THEN 0 ELSE g.polls END
         FROM current
         WHERE g.id = current.id AND current.status = ANY($2)
         RETURNING g.id, g.user_id, g.api_key_id, g.type, g.billing, g.cost, current.status AS from_status,
                   g.created_at, g.webhook_url, g.webhook_events),
         notified AS (
             INSERT INTO outbox (message_id, routing_key, body)
             SELECT $11, $12, $10 FROM moved g
             WHERE $10::jsonb IS NOT NULL AND {has_target})
         SELECT id, user_id, type, billing, cost, from_status, created_at FROM moved",
        has_target = client_webhooks::HAS_TARGET_SQL.replace("{event}", "$13::text")
    )
});

/// Makes `transition` of generation `id` if its status is one the transition leaves, and records
/// the attempt either way. `None`: it was not (nothing changed but the audit log).
pub async fn transition(
    tx: &mut Tx,
    id: GenerationId,
    transition: Transition,
    cause: &Cause,
    changes: &Changes,
) -> Result<Option<Transitioned>, sqlx::Error> {
    let (from, to) = (transition.from(), transition.to());
    let (failure_code, failure_message) = changes.failure.clone().unzip();
    let (polls, first_poll) = match changes.polls {
        None => (None, None),
        Some(PollChange::Start(after)) => (Some("start"), Some(after.as_secs_f64())),
        Some(PollChange::Stop) => (Some("stop"), None),
    };
    // A final status tells the client, in the same statement (see `client_webhooks`), and so does
    // `submitted` (`generation.processing`) a client that asked for it: the message is written
    // only when the event has somewhere to go (a target without an event list does not take the
    // opt-in `generation.processing`), so a job without a webhook costs nothing more.
    let notify = Event::on_status(to).map(|event| {
        let payload = payloads::Notify { event, delivery: Uuid::now_v7() };
        (event, Envelope::of(id, &payload))
    });
    let (notify_event, notify_id, notify_body) = match &notify {
        Some((event, envelope)) => (
            Some(event.as_str()),
            Some(envelope.message_id),
            Some(serde_json::to_value(envelope).expect("an envelope always serializes")),
        ),
        None => (None, None, None),
    };
    let moved: Option<Transitioned> = sqlx::query_as(sqlx::AssertSqlSafe(TRANSITION_SQL.as_str()))
        .bind(id)
        .bind(from)
        .bind(to)
        .bind(&changes.remote_task_id)
        .bind(failure_code)
        .bind(failure_message)
        .bind(changes.final_cost)
        .bind(polls)
        .bind(first_poll)
        .bind(notify_body)
        .bind(notify_id)
        .bind(MessageKind::Notify.routing_key())
        .bind(notify_event)
        .fetch_optional(&mut **tx)
        .await?;
    match &moved {
        Some(m) => record(tx, id, Some(m.from), Some(to), cause).await?,
        None => {
            let current: Option<GenerationStatus> =
                sqlx::query_scalar("SELECT status FROM generations WHERE id = $1")
                    .bind(id)
                    .fetch_optional(&mut **tx)
                    .await?;
            if current.is_some() {
                record(tx, id, current, None, cause).await?;
            }
        }
    }
    if let Some(m) = &moved {
        metrics::counter!(
            "gengate_transitions_total",
            "from" => m.from.as_str(),
            "to" => to.as_str(),
            "cause" => cause.kind
        )
        .increment(1);
        if !to.is_in_flight() {
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
    from: Option<GenerationStatus>,
    to: Option<GenerationStatus>,
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

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use GenerationStatus::{Canceled, Completed, Failed, Queued, Submitted};

    /// The edges the design allows (docs/design.md, "The generation state machine").
    const ALLOWED: [(GenerationStatus, GenerationStatus); 7] = [
        (Queued, Submitted),
        (Queued, Failed),
        (Queued, Canceled),
        (Submitted, Completed),
        (Submitted, Failed),
        (Submitted, Canceled),
        (Failed, Completed),
    ];

    #[test]
    fn the_transitions_make_exactly_the_allowed_edges() {
        let made: BTreeSet<_> = Transition::ALL
            .iter()
            .flat_map(|t| t.from().iter().map(move |from| (*from, t.to())))
            .collect();
        let allowed: BTreeSet<_> = ALLOWED.into_iter().collect();
        assert_eq!(made, allowed);
    }

    #[test]
    fn nothing_leaves_a_terminal_status_and_nothing_stays_put() {
        for transition in Transition::ALL {
            assert!(!transition.from().contains(&transition.to()), "{transition:?}");
            assert!(transition.from().iter().all(|s| !s.is_terminal()), "{transition:?}");
        }
        let terminal: Vec<_> = GenerationStatus::ALL.iter().filter(|s| s.is_terminal()).collect();
        assert_eq!(terminal, [&Completed, &Canceled]);
    }
}
