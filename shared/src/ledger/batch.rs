//! The ledger side of a batch of submits (see `generation::submit::submit_batch`): the users'
//! grants and holds are read once, after their rows were locked; reservations and holds are
//! planned in memory, in the order of the submits, by the same rules as [`super::reserve`] and
//! [`super::hold`]; then everything is written with one statement per table.
//!
//! A user with debt is not planned here: paying debt at submit moves credits between grants
//! (see [`super::reserve`]), which the one-by-one path does.

use std::collections::BTreeMap;

use super::settlement::{CONSUMPTION_ORDER, CreditMove, USABLE_GRANT, move_credits, plan_draw};
use super::{LedgerError, LedgerGeneration, TransType};
use crate::db::Tx;
use crate::ids::{GenerationId, GrantId, UserId};

/// What a batch's read of its users (`FROM users u`) selects for the book, after `u.id`: the
/// user's debt and what its active holds keep back. The caller reads them in the statement that
/// reads what else it needs of the users (one round trip for a batch).
pub const BOOK_USER_COLUMNS: &str = "u.debt,
    (SELECT COALESCE(sum(h.amount), 0)::bigint FROM credit_holds h
     WHERE h.user_id = u.id AND h.released_at IS NULL)";

/// What one user has, as the batch's plan stands.
#[derive(Debug, Default)]
struct Account {
    /// Usable grants in consumption order, with what the plan leaves in them.
    grants: Vec<(GrantId, i64)>,
    /// What active holds keep back, the plan's new holds included.
    held: i64,
}

impl Account {
    fn balance(&self) -> i64 {
        self.grants.iter().map(|(_, remaining)| remaining).sum()
    }
}

/// One entry the plan writes.
#[derive(Debug)]
struct Draw {
    generation: LedgerGeneration,
    grant: GrantId,
    amount: i64,
}

/// The planned reservations and holds of a batch of submits.
#[derive(Debug)]
pub struct SubmitBook {
    accounts: BTreeMap<UserId, Account>,
    draws: Vec<Draw>,
    holds: Vec<(LedgerGeneration, i64)>,
}

impl SubmitBook {
    /// Reads the users' usable grants (locking them). `found` is what the caller's read of the
    /// users (with [`BOOK_USER_COLUMNS`]) returned: each user's id, debt and active holds. The
    /// caller has locked the users' rows in this transaction. `None` if a user has debt or does
    /// not exist: such a batch is for the one-by-one path.
    pub async fn load(
        tx: &mut Tx,
        users: &[UserId],
        found: Vec<(UserId, i64, i64)>,
    ) -> Result<Option<Self>, LedgerError> {
        if found.len() != users.len() || found.iter().any(|(_, debt, _)| *debt != 0) {
            return Ok(None);
        }
        let mut accounts: BTreeMap<UserId, Account> = found
            .into_iter()
            .map(|(user, _, held)| (user, Account { grants: Vec::new(), held }))
            .collect();
        let sql = format!(
            "SELECT user_id, id, remaining FROM credit_grants
             WHERE user_id = ANY($1) AND {USABLE_GRANT}
             ORDER BY user_id, {CONSUMPTION_ORDER} FOR NO KEY UPDATE"
        );
        let grants: Vec<(UserId, GrantId, i64)> =
            sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(users).fetch_all(&mut **tx).await?;
        for (user, grant, remaining) in grants {
            if let Some(account) = accounts.get_mut(&user) {
                account.grants.push((grant, remaining));
            }
        }
        Ok(Some(Self { accounts, draws: Vec::new(), holds: Vec::new() }))
    }

    /// Whether `cost` can be reserved or held for the user now: the error [`super::reserve`]
    /// would answer, if any. Changes nothing.
    pub fn covers(&self, user: UserId, cost: i64) -> Result<(), LedgerError> {
        if cost < 0 {
            return Err(LedgerError::InvalidAmount(cost));
        }
        let account = self.accounts.get(&user).ok_or(LedgerError::UnknownUser)?;
        let balance = account.balance();
        if cost > 0 && balance - account.held < cost {
            return Err(LedgerError::InsufficientCredits { balance, held: account.held, cost });
        }
        Ok(())
    }

    /// Plans a prepaid reservation: `cost` drawn across the user's grants in consumption order.
    pub fn reserve(&mut self, generation: LedgerGeneration, cost: i64) -> Result<(), LedgerError> {
        self.covers(generation.user_id, cost)?;
        let account = self.accounts.get_mut(&generation.user_id).ok_or(LedgerError::UnknownUser)?;
        for (grant, amount) in plan_draw(&account.grants, cost) {
            if let Some(entry) = account.grants.iter_mut().find(|(id, _)| *id == grant) {
                entry.1 -= amount;
            }
            self.draws.push(Draw { generation, grant, amount });
        }
        account.grants.retain(|(_, remaining)| *remaining > 0);
        Ok(())
    }

    /// Plans a postpaid hold of `cost`.
    pub fn hold(&mut self, generation: LedgerGeneration, cost: i64) -> Result<(), LedgerError> {
        self.covers(generation.user_id, cost)?;
        if cost > 0 {
            let account =
                self.accounts.get_mut(&generation.user_id).ok_or(LedgerError::UnknownUser)?;
            account.held += cost;
            self.holds.push((generation, cost));
        }
        Ok(())
    }

    /// Writes the plan: every draw (grants and their entries in one statement) and every hold.
    /// The generations must exist already (the entries and holds refer to them).
    pub async fn write(self, tx: &mut Tx) -> Result<(), LedgerError> {
        let moves: Vec<CreditMove> = self
            .draws
            .iter()
            .map(|d| CreditMove {
                user_id: d.generation.user_id,
                generation: Some(d.generation.id),
                trans_type: TransType::Generation(d.generation.media).name(),
                grant_id: d.grant,
                amount: -d.amount,
            })
            .collect();
        move_credits(tx, &moves).await?;
        let reserved: i64 = self.draws.iter().map(|d| d.amount).sum();
        if reserved > 0 {
            metrics::counter!("gengate_ledger_reserved_credits_total")
                .increment(reserved.unsigned_abs());
        }
        if !self.holds.is_empty() {
            let generations: Vec<GenerationId> = self.holds.iter().map(|(g, _)| g.id).collect();
            let users: Vec<UserId> = self.holds.iter().map(|(g, _)| g.user_id).collect();
            let amounts: Vec<i64> = self.holds.iter().map(|(_, amount)| *amount).collect();
            sqlx::query(
                "INSERT INTO credit_holds (generation_id, user_id, amount)
                 SELECT * FROM UNNEST($1::uuid[], $2::uuid[], $3::bigint[])",
            )
            .bind(&generations)
            .bind(&users)
            .bind(&amounts)
            .execute(&mut **tx)
            .await?;
            let held: i64 = amounts.iter().sum();
            metrics::counter!("gengate_ledger_held_credits_total").increment(held.unsigned_abs());
        }
        Ok(())
    }
}
