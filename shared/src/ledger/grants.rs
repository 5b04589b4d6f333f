//! Grants: packages of credits a user receives, and paying debt out of them.

use time::OffsetDateTime;

use super::settlement::{draw, give_back, lock_user};
use super::{LedgerError, TransType};
use crate::db::Tx;
use crate::ids::{GrantId, UserId};
use crate::names::named_enum;

/// The largest grant: sums of a user's credits stay far from overflowing 64 bits.
pub const MAX_GRANT: i64 = 1_000_000_000_000;

named_enum! {
    /// Where a grant's credits come from (also the transaction type of its entry).
    pub enum GrantSource ("grant source") {
        /// The welcome grant of a new account.
        NewUser = "new_user",
        /// A paid order; carries a unique order number.
        OrderPay = "order_pay",
        /// Added by an operator or the system.
        SystemAdd = "system_add",
    }
}

impl GrantSource {
    fn trans_type(self) -> TransType {
        match self {
            GrantSource::NewUser => TransType::NewUser,
            GrantSource::OrderPay => TransType::OrderPay,
            GrantSource::SystemAdd => TransType::SystemAdd,
        }
    }
}

/// A grant to create.
#[derive(Debug, Clone)]
pub struct NewGrant {
    /// Who receives it.
    pub user_id: UserId,
    /// Where it comes from.
    pub source: GrantSource,
    /// Credits; must be positive.
    pub amount: i64,
    /// When its credits stop counting (none: never).
    pub expires_at: Option<OffsetDateTime>,
    /// Lower is drawn first.
    pub priority: i32,
    /// When its credits start counting (none: now).
    pub effective_at: Option<OffsetDateTime>,
    /// The payment's order number; required for `order_pay`, where a repeat returns the first grant.
    pub order_no: Option<String>,
}

/// The result of [`grant`].
#[derive(Debug, Clone)]
pub struct GrantOutcome {
    /// The grant (the earlier one when the order number was seen before).
    pub grant_id: GrantId,
    /// False when an earlier grant with the same order number was returned instead.
    pub created: bool,
    /// Debt paid out of this grant.
    pub debt_settled: i64,
}

/// Creates a grant and its entry, then pays any outstanding debt out of the user's usable grants.
/// A second grant with an `order_no` already used for this user returns the first grant when it
/// asks for the same amount (a retried request), and is refused otherwise.
pub async fn grant(tx: &mut Tx, new: &NewGrant) -> Result<GrantOutcome, LedgerError> {
    if new.amount <= 0 || new.amount > MAX_GRANT {
        return Err(LedgerError::InvalidAmount(new.amount));
    }
    lock_user(tx, new.user_id).await?;
    if let Some(order_no) = &new.order_no {
        let existing: Option<(GrantId, UserId, i64)> =
            sqlx::query_as("SELECT id, user_id, amount FROM credit_grants WHERE order_no = $1")
                .bind(order_no)
                .fetch_optional(&mut **tx)
                .await?;
        if let Some((grant_id, owner, granted)) = existing {
            if owner != new.user_id {
                return Err(LedgerError::OrderNoConflict { order_no: order_no.clone() });
            }
            if granted != new.amount {
                return Err(LedgerError::OrderNoReused { order_no: order_no.clone(), granted });
            }
            return Ok(GrantOutcome { grant_id, created: false, debt_settled: 0 });
        }
    }
    let grant_id = GrantId::new();
    // The order number's uniqueness is also enforced by the database: a concurrent grant of the
    // same order for the same user waits on the user lock above and then finds this row.
    sqlx::query(
        "INSERT INTO credit_grants
             (id, user_id, source, amount, remaining, priority, effective_at, expires_at, order_no)
         VALUES ($1, $2, $3, $4, $4, $5, COALESCE($6, now()), $7, $8)",
    )
    .bind(grant_id)
    .bind(new.user_id)
    .bind(new.source.as_str())
    .bind(new.amount)
    .bind(new.priority)
    .bind(new.effective_at)
    .bind(new.expires_at)
    .bind(&new.order_no)
    .execute(&mut **tx)
    .await
    .map_err(|err| match &err {
        sqlx::Error::Database(db) if db.constraint() == Some("credit_grants_order_no_key") => {
            LedgerError::OrderNoConflict { order_no: new.order_no.clone().unwrap_or_default() }
        }
        _ => LedgerError::Database(err),
    })?;
    sqlx::query(
        "INSERT INTO ledger_entries (id, user_id, grant_id, trans_type, amount)
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(crate::ids::EntryId::new())
    .bind(new.user_id)
    .bind(grant_id)
    .bind(new.source.trans_type().name())
    .bind(new.amount)
    .execute(&mut **tx)
    .await?;
    super::settlement::count_written(&new.source.trans_type().name());
    let debt_settled = settle_debt(tx, new.user_id).await?;
    Ok(GrantOutcome { grant_id, created: true, debt_settled })
}

/// Pays as much of the user's debt as their usable grants allow, in consumption order, one
/// `debt_settlement` entry per grant drawn. The caller holds the user lock. Returns what was paid.
pub(super) async fn settle_debt(tx: &mut Tx, user_id: UserId) -> Result<i64, LedgerError> {
    let debt: i64 = sqlx::query_scalar("SELECT debt FROM users WHERE id = $1")
        .bind(user_id)
        .fetch_one(&mut **tx)
        .await?;
    if debt == 0 {
        return Ok(0);
    }
    let drawn = draw(tx, user_id, None, TransType::DebtSettlement, debt).await?;
    if drawn > 0 {
        sqlx::query("UPDATE users SET debt = debt - $2, updated_at = now() WHERE id = $1")
            .bind(user_id)
            .bind(drawn)
            .execute(&mut **tx)
            .await?;
        metrics::counter!("gengate_ledger_debt_settled_credits_total")
            .increment(drawn.unsigned_abs());
    }
    Ok(drawn)
}

/// Forgives `amount` credits of the user's debt (a charge that had become debt was refunded or
/// settled lower). What is still owed is simply reduced; what grants already paid of it goes back
/// to those grants, the latest payer first, as positive `debt_settlement` entries. The caller
/// holds the user lock.
pub(super) async fn forgive_debt(
    tx: &mut Tx,
    user_id: UserId,
    amount: i64,
) -> Result<(), LedgerError> {
    let debt: i64 = sqlx::query_scalar("SELECT debt FROM users WHERE id = $1")
        .bind(user_id)
        .fetch_one(&mut **tx)
        .await?;
    let from_debt = debt.min(amount);
    if from_debt > 0 {
        sqlx::query("UPDATE users SET debt = debt - $2, updated_at = now() WHERE id = $1")
            .bind(user_id)
            .bind(from_debt)
            .execute(&mut **tx)
            .await?;
    }
    let mut paid_back = amount - from_debt;
    if paid_back == 0 {
        return Ok(());
    }
    let payers: Vec<(GrantId, i64)> = sqlx::query_as(
        "SELECT grant_id, -sum(amount)::bigint FROM ledger_entries
         WHERE user_id = $1 AND trans_type = $2 AND NOT is_voided
         GROUP BY grant_id
         HAVING sum(amount) < 0
         ORDER BY max(id::text) DESC",
    )
    .bind(user_id)
    .bind(TransType::DebtSettlement.name())
    .fetch_all(&mut **tx)
    .await?;
    let mut back = Vec::new();
    for (grant_id, paid) in payers {
        let give = paid_back.min(paid);
        if give > 0 {
            back.push((grant_id, give));
            paid_back -= give;
        }
    }
    if paid_back > 0 {
        return Err(LedgerError::inconsistent(format!(
            "forgiving {amount} credits of debt, {paid_back} were never owed or paid"
        )));
    }
    give_back(tx, user_id, None, TransType::DebtSettlement, &back).await
}
