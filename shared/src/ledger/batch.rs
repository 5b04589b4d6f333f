//! The ledger side of a batch of submits (see `generation::submit::submit_batch`): the users'
//! grants and holds are read once, after their rows were locked; reservations and holds are
//! planned in memory, in the order of the submits, by the same rules as [`super::reserve`] and
//! [`super::hold`]; then everything is written by the statement that inserts the generations.
//!
//! A user with debt is not planned here: paying debt at submit moves credits between grants
//! (see [`super::reserve`]), which the one-by-one path does.

use std::collections::BTreeMap;

use sqlx::Postgres;
use sqlx::postgres::PgArguments;
use sqlx::query::QueryAs;
use sqlx::types::Json;

use super::settlement::{CONSUMPTION_ORDER, CreditMove, MoveColumns, USABLE_GRANT, plan_draw};
use super::{LedgerError, LedgerGeneration, TransType};
use crate::ids::{GenerationId, GrantId, UserId};

/// What a batch's read of its users (`FROM users u`) selects for the book, after `u.id`: the
/// user's debt, what its active holds keep back, and its usable grants in consumption order
/// (locked, as a JSON array of `[id, remaining]`). The caller reads them in the statement that
/// reads what else it needs of the users (one round trip for a batch), after locking the users'
/// rows: every ledger operation locks its user first, so what is read stays true until the
/// batch commits.
pub fn book_user_columns() -> String {
    format!(
        "u.debt,
         (SELECT COALESCE(sum(h.amount), 0)::bigint FROM credit_holds h
          WHERE h.user_id = u.id AND h.released_at IS NULL),
         (SELECT COALESCE(json_agg(json_build_array(g.id, g.remaining) ORDER BY {CONSUMPTION_ORDER}),
                          '[]')
          FROM (SELECT id, remaining, priority, expires_at, created_at FROM credit_grants
                WHERE user_id = u.id AND {USABLE_GRANT} FOR NO KEY UPDATE) g)"
    )
}

/// One user as [`book_user_columns`] reads them: id, debt, held, usable grants.
pub type BookUser = (UserId, i64, i64, Json<Vec<(GrantId, i64)>>);

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
    /// The book of `users` as the caller's read of them (with [`book_user_columns`]) found them.
    /// `None` if a user has debt or does not exist: such a batch is for the one-by-one path.
    pub fn of(users: &[UserId], found: Vec<BookUser>) -> Option<Self> {
        if found.len() != users.len() || found.iter().any(|(_, debt, _, _)| *debt != 0) {
            return None;
        }
        let accounts = found
            .into_iter()
            .map(|(user, _, held, Json(grants))| (user, Account { grants, held }))
            .collect();
        Some(Self { accounts, draws: Vec::new(), holds: Vec::new() })
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

    /// The plan as writes for the statement that inserts the batch's generations (see
    /// [`BookWrites`]).
    pub fn into_writes(self) -> BookWrites {
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
        BookWrites {
            moves: MoveColumns::of(&moves),
            hold_generations: self.holds.iter().map(|(g, _)| g.id).collect(),
            hold_users: self.holds.iter().map(|(g, _)| g.user_id).collect(),
            hold_amounts: self.holds.iter().map(|(_, amount)| *amount).collect(),
        }
    }
}

/// A batch's reservations (grants drawn, their entries) and holds, written by the statement that
/// inserts the batch's generations: one round trip fewer per batch than a statement of their own.
/// The entries and holds refer to the generations; foreign keys are checked at the end of the
/// statement, when the generations exist. The default writes nothing.
#[derive(Debug, Default)]
pub struct BookWrites {
    moves: MoveColumns,
    hold_generations: Vec<GenerationId>,
    hold_users: Vec<UserId>,
    hold_amounts: Vec<i64>,
}

impl BookWrites {
    /// What the statement selects (in every row) for [`Self::check`]: how many grants it
    /// adjusted and how many entries it wrote.
    pub const COUNTS: &str = "(SELECT count(*) FROM adjusted) AS grants_adjusted,
        (SELECT count(*) FROM written) AS entries_written";

    /// The common table expressions that write the book (`moves`, `adjusted`, `written`,
    /// `held`), their nine parameters numbered from `first`, bound by [`Self::bind`].
    pub fn ctes(first: usize) -> String {
        format!(
            "{},
             held AS (
                 INSERT INTO credit_holds (generation_id, user_id, amount)
                 SELECT * FROM UNNEST(${}::uuid[], ${}::uuid[], ${}::bigint[]))",
            MoveColumns::ctes(first),
            first + 6,
            first + 7,
            first + 8
        )
    }

    /// Binds the parameters of [`Self::ctes`], after those bound before.
    pub fn bind<'q, O>(
        &'q self,
        query: QueryAs<'q, Postgres, O, PgArguments>,
    ) -> QueryAs<'q, Postgres, O, PgArguments> {
        query
            .bind(&self.moves.entry_ids)
            .bind(&self.moves.grants)
            .bind(&self.moves.users)
            .bind(&self.moves.generations)
            .bind(&self.moves.types)
            .bind(&self.moves.amounts)
            .bind(&self.hold_generations)
            .bind(&self.hold_users)
            .bind(&self.hold_amounts)
    }

    /// Whether the statement wrote the whole book ([`Self::COUNTS`]); counts what was reserved
    /// and held.
    pub fn check(&self, grants_adjusted: i64, entries_written: i64) -> Result<(), LedgerError> {
        self.moves.check(grants_adjusted, entries_written)?;
        let reserved: i64 = -self.moves.amounts.iter().sum::<i64>();
        if reserved > 0 {
            metrics::counter!("gengate_ledger_reserved_credits_total")
                .increment(reserved.unsigned_abs());
        }
        let held: i64 = self.hold_amounts.iter().sum();
        if held > 0 {
            metrics::counter!("gengate_ledger_held_credits_total").increment(held.unsigned_abs());
        }
        Ok(())
    }
}
