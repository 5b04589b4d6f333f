//! Manual intervention by an operator (`gengatectl generation fail|refund`), through the same
//! transitions and ledger functions as every other cause: idempotent, and in the audit log with
//! cause `operator`.

use serde_json::json;

use super::failure::{Failure, FailureKind};
use super::settle;
use super::transitions::{self, Cause, Transition};
use super::{GenerationStatus, MediaType};
use crate::db::Tx;
use crate::ids::{GenerationId, UserId};
use crate::ledger::{self, LedgerError, LedgerGeneration};

/// What an operator action did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OperatorOutcome {
    /// The generation was changed; this many credits went back to the user.
    Done {
        /// Credits returned.
        refunded: i64,
    },
    /// Nothing to do (already failed, canceled, or refunded); the attempt is in the audit log.
    Unchanged {
        /// Its status.
        status: GenerationStatus,
    },
    /// No such generation.
    NotFound,
}

fn operator_cause(reason: &str) -> Cause {
    Cause { kind: "operator", detail: Some(json!({"reason": reason})), ..Cause::default() }
}

async fn current(
    tx: &mut Tx,
    id: GenerationId,
) -> Result<Option<(GenerationStatus, UserId, MediaType)>, sqlx::Error> {
    sqlx::query_as("SELECT status, user_id, type FROM generations WHERE id = $1 FOR UPDATE")
        .bind(id)
        .fetch_optional(&mut **tx)
        .await
}

/// Fails a job that is still queued or submitted (stuck, or known lost upstream) and refunds it.
/// A success that arrives later still completes it, as after any failure.
pub async fn fail(
    tx: &mut Tx,
    id: GenerationId,
    reason: &str,
) -> Result<OperatorOutcome, LedgerError> {
    let Some((status, ..)) = current(tx, id).await? else { return Ok(OperatorOutcome::NotFound) };
    let cause = operator_cause(reason);
    let charged = ledger::net_charge(&mut **tx, id).await?;
    let failure = Failure::with_detail(FailureKind::Operator, reason);
    match settle::fail(tx, id, Transition::Abandon, &cause, &failure).await? {
        Some(_) => {
            let refunded = charged - ledger::net_charge(&mut **tx, id).await?;
            Ok(OperatorOutcome::Done { refunded })
        }
        None => Ok(OperatorOutcome::Unchanged { status }),
    }
}

/// Gives a job's credits back whatever became of it: a job in flight is failed (as [`fail`]); a
/// completed job stays completed but is settled at 0 (a goodwill refund, e.g. for a broken
/// result), so reconcile still adds up; a failed or canceled job has nothing left to refund.
pub async fn refund(
    tx: &mut Tx,
    id: GenerationId,
    reason: &str,
) -> Result<OperatorOutcome, LedgerError> {
    let Some((status, user_id, media)) = current(tx, id).await? else {
        return Ok(OperatorOutcome::NotFound);
    };
    match status {
        GenerationStatus::Queued | GenerationStatus::Submitted => fail(tx, id, reason).await,
        GenerationStatus::Completed => {
            let generation = LedgerGeneration { id, user_id, media };
            let refunded = ledger::refund(tx, &generation, &format!("operator: {reason}")).await?;
            sqlx::query("UPDATE generations SET final_cost = 0, updated_at = now() WHERE id = $1")
                .bind(id)
                .execute(&mut **tx)
                .await?;
            let mut cause = operator_cause(reason);
            cause.detail = Some(json!({"reason": reason, "refunded": refunded, "settled_at": 0}));
            transitions::record(tx, id, Some(GenerationStatus::Completed), None, &cause).await?;
            if refunded == 0 {
                return Ok(OperatorOutcome::Unchanged { status });
            }
            Ok(OperatorOutcome::Done { refunded })
        }
        GenerationStatus::Failed | GenerationStatus::Canceled => {
            transitions::record(tx, id, Some(status), None, &operator_cause(reason)).await?;
            Ok(OperatorOutcome::Unchanged { status })
        }
    }
}
