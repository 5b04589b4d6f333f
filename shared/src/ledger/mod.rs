//! The credits ledger: grants, and reserve / confirm / refund / restore / charge of generations.
//!
//! Postpaid jobs are not charged until they succeed, but from their submit their price is *held*
//! (`credit_holds`): what holds keep back is not available to other submits, prepaid or postpaid,
//! so a user cannot start more postpaid work than their balance covers. A hold draws from no
//! grant; the success's charge consumes it, a failure or cancel releases it.
//!
//! Every operation takes an open transaction and is written for concurrency:
//!
//! - **Lock order.** Each operation first locks the user row (`FOR NO KEY UPDATE`, which does not
//!   block foreign-key checks of other transactions), then the user's grants in consumption order.
//!   One lock order for every path means no deadlocks, and one user's ledger changes one at a
//!   time, so nothing can overdraw. Different users never wait for each other.
//! - **Idempotence by construction.** Refund voids `WHERE is_voided = false`; confirm, restore and
//!   charge compute the generation's current net charge and only move the difference. Running any
//!   of them twice changes nothing the second time.
//! - **Constraints as the last line.** `remaining BETWEEN 0 AND amount`, `debt >= 0`, unique
//!   `order_no`, foreign keys: a bug here fails loudly instead of minting or losing credits.
//!
//! Entries: grants add a positive entry of their source type; charges are negative
//! `{type}_generation` entries, one per grant drawn from (or one without a grant for the part that
//! became debt); a refund voids the generation's entries, which returns every amount to the grant
//! it came from; a confirm at a lower price adds positive `{type}_generation_refund` entries;
//! paying debt out of a grant adds a negative `debt_settlement` entry. Hence, for every grant,
//! `remaining = sum of its non-voided entries`, which [`reconcile`] checks.

mod batch;
mod grants;
pub mod import;
mod queries;
mod reconcile;
mod settlement;

pub use batch::{BookUser, BookWrites, SubmitBook, book_user_columns};
pub use grants::{GrantOutcome, GrantSource, MAX_GRANT, NewGrant, grant};
pub use queries::{
    Balance, EntryView, GrantView, SummaryLine, TimelinePage, TimelineQuery, balance,
    generation_entries, summary, timeline,
};
pub use reconcile::{Audit, Mismatch, ReconcileReport, audit_if_due, reconcile};
pub use settlement::{
    ChargeOutcome, LedgerGeneration, charge, confirm, hold, net_charge, refund, release_hold,
    reserve, restore,
};

use crate::db::Transient;
use crate::generation::MediaType;

/// A ledger entry's transaction type. Built here, never spelled out elsewhere.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransType {
    /// A charge for a generation: `{type}_generation`.
    Generation(MediaType),
    /// A partial return after a generation settled lower than reserved:
    /// `{type}_generation_refund`.
    GenerationRefund(MediaType),
    /// The grant every new user gets.
    NewUser,
    /// A paid order.
    OrderPay,
    /// Credits added by an operator or the system.
    SystemAdd,
    /// A chat charge (reserved for the chat product).
    Chat,
    /// A chat refund (reserved for the chat product).
    ChatRefund,
    /// Debt paid out of a grant.
    DebtSettlement,
}

impl TransType {
    /// The stored name, e.g. `video_generation`.
    pub fn name(self) -> String {
        match self {
            TransType::Generation(media) => format!("{media}_generation"),
            TransType::GenerationRefund(media) => format!("{media}_generation_refund"),
            TransType::NewUser => "new_user".into(),
            TransType::OrderPay => "order_pay".into(),
            TransType::SystemAdd => "system_add".into(),
            TransType::Chat => "chat".into(),
            TransType::ChatRefund => "chat_refund".into(),
            TransType::DebtSettlement => "debt_settlement".into(),
        }
    }

    /// Parses a stored name.
    pub fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "new_user" => TransType::NewUser,
            "order_pay" => TransType::OrderPay,
            "system_add" => TransType::SystemAdd,
            "chat" => TransType::Chat,
            "chat_refund" => TransType::ChatRefund,
            "debt_settlement" => TransType::DebtSettlement,
            other => {
                if let Some(media) = other.strip_suffix("_generation_refund") {
                    TransType::GenerationRefund(media.parse().ok()?)
                } else {
                    TransType::Generation(other.strip_suffix("_generation")?.parse().ok()?)
                }
            }
        })
    }
}

impl std::fmt::Display for TransType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name())
    }
}

/// Why a ledger operation did nothing.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    /// The usable balance, less what postpaid holds keep back, does not cover the cost; nothing
    /// was written.
    #[error("insufficient credits: balance {balance}, held {held}, cost {cost}")]
    InsufficientCredits {
        /// Usable credits now.
        balance: i64,
        /// Credits held for the user's running postpaid jobs.
        held: i64,
        /// What the operation needed.
        cost: i64,
    },
    /// The user owes credits; new charges wait until the debt is paid.
    #[error("outstanding debt of {debt} credits")]
    OutstandingDebt {
        /// Credits owed.
        debt: i64,
    },
    /// An amount that must be positive (and, for a grant, at most [`MAX_GRANT`]) was not.
    #[error("amount must be positive (and a grant at most {MAX_GRANT}), got {0}")]
    InvalidAmount(i64),
    /// The order number was already used for a different user.
    #[error("order {order_no} was already granted to another user")]
    OrderNoConflict {
        /// The order number.
        order_no: String,
    },
    /// The order number was already granted to this user, for a different amount: a replay must
    /// repeat the original request, and a different order needs its own number.
    #[error("order {order_no} was already granted for {granted} credits")]
    OrderNoReused {
        /// The order number.
        order_no: String,
        /// What the first grant of this order gave.
        granted: i64,
    },
    /// No such user.
    #[error("unknown user")]
    UnknownUser,
    /// The ledger holds something the operation cannot account for (a bug, or a manual edit).
    #[error("ledger inconsistency: {0}")]
    Inconsistent(String),
    /// A database failure.
    #[error(transparent)]
    Database(sqlx::Error),
}

impl LedgerError {
    /// The books do not add up: counted in `gengate_ledger_inconsistencies_total` as it is found.
    pub(crate) fn inconsistent(what: String) -> Self {
        metrics::counter!("gengate_ledger_inconsistencies_total", "what" => "accounting")
            .increment(1);
        LedgerError::Inconsistent(what)
    }
}

impl From<sqlx::Error> for LedgerError {
    /// A `CHECK` constraint refusing a ledger write (`remaining BETWEEN 0 AND amount`,
    /// `debt >= 0`: the last line against minting or losing credits) is an inconsistency too, and
    /// counted as one.
    fn from(err: sqlx::Error) -> Self {
        if let sqlx::Error::Database(db) = &err
            && db.code().as_deref() == Some(CHECK_VIOLATION)
        {
            metrics::counter!("gengate_ledger_inconsistencies_total", "what" => "constraint")
                .increment(1);
        }
        LedgerError::Database(err)
    }
}

/// PostgreSQL's SQLSTATE for a `CHECK` constraint violation.
const CHECK_VIOLATION: &str = "23514";

/// Registers, at 0, the ledger's counters that alerts and dashboards watch, so that `rate()` and
/// `increase()` see their first increment (a series that appears at 1 has no earlier sample to
/// rise from) and a panel of credits moved shows 0 rather than nothing. Called once per process
/// by [`crate::telemetry::metrics_handle`].
pub(crate) fn register_metrics() {
    for credits in [
        "gengate_ledger_reserved_credits_total",
        "gengate_ledger_held_credits_total",
        "gengate_ledger_charged_credits_total",
        "gengate_ledger_refunded_credits_total",
        "gengate_ledger_settled_lower_credits_total",
        "gengate_ledger_debt_created_credits_total",
        "gengate_ledger_debt_settled_credits_total",
        "gengate_ledger_restores_total",
    ] {
        metrics::counter!(credits).increment(0);
    }
    for outcome in ["applied", "none", "failed"] {
        metrics::counter!("gengate_ledger_refunds_total", "outcome" => outcome).increment(0);
    }
    for what in ["accounting", "constraint"] {
        metrics::counter!("gengate_ledger_inconsistencies_total", "what" => what).increment(0);
    }
    for outcome in ["clean", "mismatch", "error"] {
        metrics::counter!("gengate_ledger_audits_total", "outcome" => outcome).increment(0);
    }
}

impl Transient for LedgerError {
    fn is_transient(&self) -> bool {
        matches!(self, LedgerError::Database(err) if err.is_transient())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transaction_types_round_trip_through_their_names() {
        let all = [
            TransType::Generation(MediaType::Video),
            TransType::Generation(MediaType::Image),
            TransType::GenerationRefund(MediaType::Video),
            TransType::NewUser,
            TransType::OrderPay,
            TransType::SystemAdd,
            TransType::Chat,
            TransType::ChatRefund,
            TransType::DebtSettlement,
        ];
        for t in all {
            assert_eq!(TransType::parse(&t.name()), Some(t), "{t}");
        }
        assert_eq!(TransType::Generation(MediaType::Video).name(), "video_generation");
        assert_eq!(TransType::GenerationRefund(MediaType::Image).name(), "image_generation_refund");
        assert_eq!(TransType::parse("audio_generation"), None);
        assert_eq!(TransType::parse("bogus"), None);
    }
}
