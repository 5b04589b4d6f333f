//! A client cancels its own job: `queued` or `submitted` becomes `canceled`, the credits come
//! back, and a `canceled` event tells a worker to cancel upstream where the provider can.

use super::store::{self, GenerationView};
use super::transitions::{self, Cause, Changes, Transition};
use super::{Billing, GenerationStatus};
use crate::db::{Transient, Tx};
use crate::ids::{GenerationId, UserId};
use crate::ledger::{self, LedgerError};
use crate::outbox;
use crate::queue::{Envelope, payloads};

/// Why a cancel did nothing.
#[derive(Debug, thiserror::Error)]
pub enum CancelError {
    /// No such generation of this user.
    #[error("not found")]
    NotFound,
    /// It already ended.
    #[error("the generation is {0}; it can no longer be canceled")]
    NotCancelable(GenerationStatus),
    /// The refund failed.
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    /// A database failure.
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

impl Transient for CancelError {
    fn is_transient(&self) -> bool {
        match self {
            CancelError::Ledger(err) => err.is_transient(),
            CancelError::Database(err) => err.is_transient(),
            _ => false,
        }
    }
}

/// Cancels `owner`'s generation `id` and refunds it, in one transaction.
pub async fn cancel(
    tx: &mut Tx,
    id: GenerationId,
    owner: UserId,
) -> Result<GenerationView, CancelError> {
    let status: Option<String> =
        sqlx::query_scalar("SELECT status FROM generations WHERE id = $1 AND user_id = $2")
            .bind(id)
            .bind(owner)
            .fetch_optional(&mut **tx)
            .await?;
    if status.is_none() {
        return Err(CancelError::NotFound);
    }
    let cause = Cause::new("cancel");
    let moved =
        transitions::transition(tx, id, Transition::Cancel, &cause, &Changes::default()).await?;
    let Some(moved) = moved else {
        let view = store::view(&mut **tx, id, Some(owner)).await?.ok_or(CancelError::NotFound)?;
        return Err(CancelError::NotCancelable(view.status));
    };
    match moved.billing {
        Billing::Prepaid => {
            ledger::refund(tx, &moved.ledger(), "canceled").await?;
        }
        Billing::Postpaid => {
            ledger::release_hold(tx, &moved.ledger(), "canceled").await?;
        }
    }
    outbox::enqueue(tx, &Envelope::of(id, &payloads::Canceled { was: moved.from })).await?;
    store::view(&mut **tx, id, Some(owner)).await?.ok_or(CancelError::NotFound)
}
