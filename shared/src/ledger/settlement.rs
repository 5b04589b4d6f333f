//! Moving credits for generations: reserve, confirm, refund, restore, charge.

use std::collections::BTreeMap;

use sqlx::PgExecutor;

use super::grants::{forgive_debt, settle_debt};
use super::{LedgerError, TransType};
use crate::db::Tx;
use crate::generation::MediaType;
use crate::ids::{EntryId, GenerationId, GrantId, UserId};

/// The generation a ledger operation is about: whose it is and what it makes (the `{type}` of its
/// entries).
#[derive(Debug, Clone, Copy)]
pub struct LedgerGeneration {
    /// The generation.
    pub id: GenerationId,
    /// Its owner.
    pub user_id: UserId,
    /// What it produces.
    pub media: MediaType,
}

/// What [`restore`] or [`charge`] moved.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ChargeOutcome {
    /// Credits drawn from grants.
    pub from_grants: i64,
    /// Credits that could not be drawn and became debt.
    pub debt_added: i64,
}

/// Locks the user's row for the rest of the transaction (the first lock of every ledger
/// operation; see the module docs) and returns their debt.
pub(super) async fn lock_user(tx: &mut Tx, user_id: UserId) -> Result<i64, LedgerError> {
    sqlx::query_scalar("SELECT debt FROM users WHERE id = $1 FOR NO KEY UPDATE")
        .bind(user_id)
        .fetch_optional(&mut **tx)
        .await?
        .ok_or(LedgerError::UnknownUser)
}

/// Which grants can be drawn from now: effective, unexpired, with credits left.
pub(super) const USABLE_GRANT: &str =
    "remaining > 0 AND effective_at <= now() AND (expires_at IS NULL OR expires_at > now())";

/// The order a user's grants are drawn in: priority, soonest expiry (none last), oldest.
pub(super) const CONSUMPTION_ORDER: &str = "priority, expires_at NULLS LAST, created_at, id";

/// The user's usable grants (effective, unexpired, with credits left) in consumption order, locked.
async fn usable_grants(tx: &mut Tx, user_id: UserId) -> Result<Vec<(GrantId, i64)>, LedgerError> {
    let sql = format!(
        "SELECT id, remaining FROM credit_grants WHERE user_id = $1 AND {USABLE_GRANT}
         ORDER BY {CONSUMPTION_ORDER} FOR NO KEY UPDATE"
    );
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(user_id).fetch_all(&mut **tx).await?)
}

/// Splits `amount` across `grants` in their order: how much to take from each.
pub(super) fn plan_draw(grants: &[(GrantId, i64)], amount: i64) -> Vec<(GrantId, i64)> {
    let mut left = amount;
    let mut plan = Vec::new();
    for (grant_id, remaining) in grants {
        if left == 0 {
            break;
        }
        let take = left.min(*remaining);
        plan.push((*grant_id, take));
        left -= take;
    }
    plan
}

/// Takes the planned amounts out of the grants and writes one negative entry per grant; returns
/// the total taken.
async fn take(
    tx: &mut Tx,
    user_id: UserId,
    generation: Option<GenerationId>,
    trans_type: TransType,
    plan: &[(GrantId, i64)],
) -> Result<i64, LedgerError> {
    if plan.is_empty() {
        return Ok(0);
    }
    let negated: Vec<(GrantId, i64)> = plan.iter().map(|(id, amount)| (*id, -amount)).collect();
    give_back(tx, user_id, generation, trans_type, &negated).await?;
    Ok(plan.iter().map(|(_, amount)| amount).sum())
}

/// Moves credits of grants: adds each amount (negative to draw) to the grant's remaining credits
/// and writes one entry of `trans_type` with that amount per grant.
pub(super) async fn give_back(
    tx: &mut Tx,
    user_id: UserId,
    generation: Option<GenerationId>,
    trans_type: TransType,
    returns: &[(GrantId, i64)],
) -> Result<(), LedgerError> {
    let trans_type = trans_type.name();
    let moves: Vec<CreditMove> = returns
        .iter()
        .map(|(grant_id, amount)| CreditMove {
            user_id,
            generation,
            trans_type: trans_type.clone(),
            grant_id: *grant_id,
            amount: *amount,
        })
        .collect();
    move_credits(tx, &moves).await
}

/// One move of credits: `amount` (negative to draw) added to a grant, and written as one entry.
pub(super) struct CreditMove {
    pub(super) user_id: UserId,
    pub(super) generation: Option<GenerationId>,
    /// [`TransType::name`].
    pub(super) trans_type: String,
    pub(super) grant_id: GrantId,
    pub(super) amount: i64,
}

/// Applies `moves` with one statement: each grant's remaining credits change by the sum of its
/// moves, and each move is written as an entry (see [`MoveColumns::ctes`]).
pub(super) async fn move_credits(tx: &mut Tx, moves: &[CreditMove]) -> Result<(), LedgerError> {
    if moves.is_empty() {
        return Ok(());
    }
    let columns = MoveColumns::of(moves);
    let sql = format!(
        "WITH {} SELECT (SELECT count(*) FROM adjusted), (SELECT count(*) FROM written)",
        MoveColumns::ctes(1)
    );
    let (adjusted, written): (i64, i64) = sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(&columns.entry_ids)
        .bind(&columns.grants)
        .bind(&columns.users)
        .bind(&columns.generations)
        .bind(&columns.types)
        .bind(&columns.amounts)
        .fetch_one(&mut **tx)
        .await?;
    columns.check(adjusted, written)
}

/// Credit moves as the columns of one statement, for [`move_credits`] or for a caller that
/// applies them in a statement of its own (the submit batch writes its generations and their
/// reservations in one).
#[derive(Debug, Default)]
pub(super) struct MoveColumns {
    pub(super) entry_ids: Vec<EntryId>,
    pub(super) grants: Vec<GrantId>,
    pub(super) users: Vec<UserId>,
    pub(super) generations: Vec<Option<GenerationId>>,
    pub(super) types: Vec<String>,
    pub(super) amounts: Vec<i64>,
}

impl MoveColumns {
    pub(super) fn of(moves: &[CreditMove]) -> Self {
        Self {
            entry_ids: moves.iter().map(|_| EntryId::new()).collect(),
            grants: moves.iter().map(|m| m.grant_id).collect(),
            users: moves.iter().map(|m| m.user_id).collect(),
            generations: moves.iter().map(|m| m.generation).collect(),
            types: moves.iter().map(|m| m.trans_type.clone()).collect(),
            amounts: moves.iter().map(|m| m.amount).collect(),
        }
    }

    /// The common table expressions that apply the moves: `moves`, `adjusted` (the grants, one
    /// row each; an `UPDATE … FROM` applies one joined row per target row, so several moves of
    /// one grant are summed first) and `written` (the entries). Their parameters are numbered from
    /// `first`, bound in the order of the fields. `CHECK (remaining >= 0)` still refuses an
    /// overdraft.
    pub(super) fn ctes(first: usize) -> String {
        let p = |n: usize| first + n;
        format!(
            "moves AS (
                 SELECT * FROM UNNEST(${}::uuid[], ${}::uuid[], ${}::uuid[], ${}::uuid[], ${}::text[],
                                      ${}::bigint[])
                     AS m(entry_id, grant_id, user_id, generation_id, trans_type, amount)),
             adjusted AS (
                 UPDATE credit_grants g SET remaining = g.remaining + t.total
                 FROM (SELECT grant_id, sum(amount) AS total FROM moves GROUP BY grant_id) t
                 WHERE g.id = t.grant_id
                 RETURNING g.id),
             written AS (
                 INSERT INTO ledger_entries (id, user_id, grant_id, generation_id, trans_type, amount)
                 SELECT entry_id, user_id, grant_id, generation_id, trans_type, amount FROM moves
                 RETURNING id)",
            p(0),
            p(1),
            p(2),
            p(3),
            p(4),
            p(5)
        )
    }

    /// Whether the statement adjusted every grant and wrote every entry (`count(*)` of
    /// `adjusted` and `written`).
    pub(super) fn check(&self, adjusted: i64, written: i64) -> Result<(), LedgerError> {
        let distinct_grants = self.grants.iter().collect::<std::collections::BTreeSet<_>>().len();
        if usize::try_from(adjusted).ok() != Some(distinct_grants)
            || usize::try_from(written).ok() != Some(self.entry_ids.len())
        {
            return Err(LedgerError::inconsistent(format!(
                "adjusted {adjusted} of {distinct_grants} grants and wrote {written} of {} entries",
                self.entry_ids.len()
            )));
        }
        for trans_type in &self.types {
            count_written(trans_type);
        }
        Ok(())
    }
}

/// Counts one ledger entry written, by its transaction type: with
/// `gengate_ledger_entries_voided_total`, the share of entries that refunds void.
pub(super) fn count_written(trans_type: &str) {
    metrics::counter!("gengate_ledger_entries_written_total", "trans_type" => trans_type.to_owned())
        .increment(1);
}

/// Adds `deltas[i]` to the remaining credits of `grant_ids[i]` (negative to draw).
async fn adjust_grants(
    tx: &mut Tx,
    grant_ids: &[GrantId],
    deltas: &[i64],
) -> Result<(), LedgerError> {
    let updated = sqlx::query(
        "UPDATE credit_grants g SET remaining = g.remaining + d.delta
         FROM UNNEST($1::uuid[], $2::bigint[]) AS d(id, delta)
         WHERE g.id = d.id",
    )
    .bind(grant_ids)
    .bind(deltas)
    .execute(&mut **tx)
    .await?
    .rows_affected();
    if usize::try_from(updated).ok() != Some(grant_ids.len()) {
        return Err(LedgerError::inconsistent(format!(
            "adjusted {updated} of {} grants",
            grant_ids.len()
        )));
    }
    Ok(())
}

/// Draws up to `amount` from the user's usable grants in consumption order, writing entries of
/// `trans_type`; returns what was drawn (less than `amount` when the grants run out).
pub(super) async fn draw(
    tx: &mut Tx,
    user_id: UserId,
    generation: Option<GenerationId>,
    trans_type: TransType,
    amount: i64,
) -> Result<i64, LedgerError> {
    let grants = usable_grants(tx, user_id).await?;
    let plan = plan_draw(&grants, amount);
    take(tx, user_id, generation, trans_type, &plan).await
}

/// Writes an entry of the generation that no grant backs: a charge that became debt (negative) or
/// part of one settled lower (positive).
async fn debt_entry(
    tx: &mut Tx,
    generation: &LedgerGeneration,
    trans_type: TransType,
    amount: i64,
) -> Result<(), LedgerError> {
    sqlx::query(
        "INSERT INTO ledger_entries (id, user_id, grant_id, generation_id, trans_type, amount)
         VALUES ($1, $2, NULL, $3, $4, $5)",
    )
    .bind(EntryId::new())
    .bind(generation.user_id)
    .bind(generation.id)
    .bind(trans_type.name())
    .bind(amount)
    .execute(&mut **tx)
    .await?;
    count_written(&trans_type.name());
    Ok(())
}

/// Makes sure the user has no debt, paying it from usable grants first if possible.
async fn require_no_debt(tx: &mut Tx, user_id: UserId, debt: i64) -> Result<(), LedgerError> {
    if debt == 0 {
        return Ok(());
    }
    let paid = settle_debt(tx, user_id).await?;
    if paid < debt {
        return Err(LedgerError::OutstandingDebt { debt: debt - paid });
    }
    Ok(())
}

/// Prepaid submit: draws `cost` across the user's usable grants in consumption order (priority,
/// soonest expiry with none last, oldest), one `{type}_generation` entry per grant touched. What
/// postpaid holds keep back is not available. Not enough credits, or outstanding debt: an error,
/// and nothing written.
pub async fn reserve(
    tx: &mut Tx,
    generation: &LedgerGeneration,
    cost: i64,
) -> Result<(), LedgerError> {
    let Some(grants) = covering_grants(tx, generation.user_id, cost).await? else {
        return Ok(());
    };
    let plan = plan_draw(&grants, cost);
    take(
        tx,
        generation.user_id,
        Some(generation.id),
        TransType::Generation(generation.media),
        &plan,
    )
    .await?;
    metrics::counter!("gengate_ledger_reserved_credits_total").increment(cost.unsigned_abs());
    Ok(())
}

/// What every submit checks, holding the user lock from here on: no debt, and usable credits less
/// what holds keep back covering `cost`. Returns the usable grants in consumption order (`None`
/// for a cost of 0: nothing to draw or hold).
async fn covering_grants(
    tx: &mut Tx,
    user_id: UserId,
    cost: i64,
) -> Result<Option<Vec<(GrantId, i64)>>, LedgerError> {
    if cost < 0 {
        return Err(LedgerError::InvalidAmount(cost));
    }
    let debt = lock_user(tx, user_id).await?;
    require_no_debt(tx, user_id, debt).await?;
    if cost == 0 {
        return Ok(None);
    }
    let grants = usable_grants(tx, user_id).await?;
    let balance: i64 = grants.iter().map(|(_, remaining)| remaining).sum();
    let held = held(tx, user_id).await?;
    if balance - held < cost {
        return Err(LedgerError::InsufficientCredits { balance, held, cost });
    }
    Ok(Some(grants))
}

/// Postpaid submit: holds `cost` of the user's balance for the generation until it ends. The
/// balance less what other holds keep back must cover it (and there must be no debt); nothing is
/// drawn from any grant. Holding while the user row is locked is what keeps concurrent postpaid
/// submits from promising the same credits twice.
pub async fn hold(
    tx: &mut Tx,
    generation: &LedgerGeneration,
    cost: i64,
) -> Result<(), LedgerError> {
    if covering_grants(tx, generation.user_id, cost).await?.is_none() {
        return Ok(());
    }
    sqlx::query("INSERT INTO credit_holds (generation_id, user_id, amount) VALUES ($1, $2, $3)")
        .bind(generation.id)
        .bind(generation.user_id)
        .bind(cost)
        .execute(&mut **tx)
        .await?;
    metrics::counter!("gengate_ledger_held_credits_total").increment(cost.unsigned_abs());
    Ok(())
}

/// Ends the generation's hold, if it has one still active (`reason`: `charged`, `failed`,
/// `canceled`). Repeating it changes nothing. Returns the credits no longer held.
pub async fn release_hold(
    tx: &mut Tx,
    generation: &LedgerGeneration,
    reason: &str,
) -> Result<i64, LedgerError> {
    let released: Option<i64> = sqlx::query_scalar(
        "UPDATE credit_holds SET released_at = now(), released_reason = $2
         WHERE generation_id = $1 AND released_at IS NULL
         RETURNING amount",
    )
    .bind(generation.id)
    .bind(reason)
    .fetch_optional(&mut **tx)
    .await?;
    Ok(released.unwrap_or(0))
}

/// Credits the user's active holds keep back.
async fn held(tx: &mut Tx, user_id: UserId) -> Result<i64, LedgerError> {
    Ok(sqlx::query_scalar(
        "SELECT COALESCE(sum(amount), 0)::bigint FROM credit_holds
         WHERE user_id = $1 AND released_at IS NULL",
    )
    .bind(user_id)
    .fetch_one(&mut **tx)
    .await?)
}

/// The generation's net charge now: what its non-voided entries took, in credits (≥ 0).
pub async fn net_charge<'e>(
    executor: impl PgExecutor<'e>,
    generation: GenerationId,
) -> Result<i64, sqlx::Error> {
    let sum: Option<i64> = sqlx::query_scalar(
        "SELECT sum(amount)::bigint FROM ledger_entries WHERE generation_id = $1 AND NOT is_voided",
    )
    .bind(generation)
    .fetch_one(executor)
    .await?;
    Ok(-sum.unwrap_or(0))
}

/// Per source (a grant, or `None` for debt) of a generation's live entries: net amount and the
/// newest entry, newest source first.
async fn charge_sources(
    tx: &mut Tx,
    generation: GenerationId,
) -> Result<Vec<(Option<GrantId>, i64)>, LedgerError> {
    Ok(sqlx::query_as(
        "SELECT grant_id, sum(amount)::bigint FROM ledger_entries
         WHERE generation_id = $1 AND NOT is_voided
         GROUP BY grant_id
         ORDER BY max(id::text) DESC",
    )
    .bind(generation)
    .fetch_all(&mut **tx)
    .await?)
}

/// Success: the reservation becomes final. When the provider settled for less than was reserved
/// (`final_cost` lower than the net charge), the difference goes back to the same grants, the
/// latest-drawn first, as `{type}_generation_refund` entries. Never charges more. Returns the
/// credits given back (0 when there was nothing to give back, e.g. on a repeat).
pub async fn confirm(
    tx: &mut Tx,
    generation: &LedgerGeneration,
    final_cost: i64,
) -> Result<i64, LedgerError> {
    if final_cost < 0 {
        return Err(LedgerError::InvalidAmount(final_cost));
    }
    lock_user(tx, generation.user_id).await?;
    let sources = charge_sources(tx, generation.id).await?;
    let charged: i64 = -sources.iter().map(|(_, net)| net).sum::<i64>();
    let excess = charged - final_cost;
    if excess <= 0 {
        return Ok(0);
    }
    let mut left = excess;
    let mut to_grants = Vec::new();
    let mut forgiven = 0;
    for (source, net) in sources {
        let give = left.min(-net);
        if give <= 0 {
            continue;
        }
        match source {
            Some(grant_id) => to_grants.push((grant_id, give)),
            None => forgiven += give,
        }
        left -= give;
    }
    let trans_type = TransType::GenerationRefund(generation.media);
    give_back(tx, generation.user_id, Some(generation.id), trans_type, &to_grants).await?;
    if forgiven > 0 {
        // The part that had become debt is settled lower: an entry without a grant, and less debt.
        debt_entry(tx, generation, trans_type, forgiven).await?;
        forgive_debt(tx, generation.user_id, forgiven).await?;
    }
    metrics::counter!("gengate_ledger_settled_lower_credits_total")
        .increment(excess.unsigned_abs());
    Ok(excess)
}

/// Failure or cancel: voids the generation's live entries (`is_voided`, `voided_at`,
/// `voided_reason`), which returns each amount to the grant it came from. A grant that expired
/// meanwhile gets its credits back expired: they are recorded but do not count in the balance.
/// Repeating a refund changes nothing. Returns the credits given back.
///
/// Counted in `gengate_ledger_refunds_total{outcome}`: `applied` (entries voided), `none` (nothing
/// left to void: a repeat, or a job that cost nothing) or `failed` (the refund returned an error;
/// its transaction is rolled back and the message retried).
pub async fn refund(
    tx: &mut Tx,
    generation: &LedgerGeneration,
    reason: &str,
) -> Result<i64, LedgerError> {
    let result = void_entries(tx, generation, reason).await;
    let outcome = match &result {
        Ok((_, 0)) => "none",
        Ok(_) => "applied",
        Err(_) => "failed",
    };
    metrics::counter!("gengate_ledger_refunds_total", "outcome" => outcome).increment(1);
    result.map(|(returned, _)| returned)
}

/// [`refund`]: returns the credits given back and how many entries were voided.
async fn void_entries(
    tx: &mut Tx,
    generation: &LedgerGeneration,
    reason: &str,
) -> Result<(i64, usize), LedgerError> {
    lock_user(tx, generation.user_id).await?;
    let voided: Vec<(Option<GrantId>, i64, String)> = sqlx::query_as(
        "UPDATE ledger_entries SET is_voided = true, voided_at = now(), voided_reason = $2
         WHERE generation_id = $1 AND NOT is_voided
         RETURNING grant_id, amount, trans_type",
    )
    .bind(generation.id)
    .bind(reason)
    .fetch_all(&mut **tx)
    .await?;
    let entries = voided.len();
    let mut per_source: BTreeMap<Option<GrantId>, i64> = BTreeMap::new();
    for (grant_id, amount, trans_type) in voided {
        *per_source.entry(grant_id).or_default() -= amount;
        metrics::counter!("gengate_ledger_entries_voided_total", "trans_type" => trans_type)
            .increment(1);
    }
    let mut returned = 0;
    let mut forgiven = 0;
    let mut grant_ids = Vec::new();
    let mut amounts = Vec::new();
    for (source, back) in per_source {
        match source {
            Some(grant_id) if back != 0 => {
                grant_ids.push(grant_id);
                amounts.push(back);
            }
            Some(_) => {}
            None if back != 0 => forgiven += back,
            None => {}
        }
        returned += back;
    }
    adjust_grants(tx, &grant_ids, &amounts).await?;
    if forgiven != 0 {
        // A charge that had become debt was refunded: the debt goes away (or, where a grant
        // already paid it, the credits go back to that grant).
        forgive_debt(tx, generation.user_id, forgiven).await?;
    }
    if returned > 0 {
        metrics::counter!("gengate_ledger_refunded_credits_total")
            .increment(returned.unsigned_abs());
    }
    Ok((returned, entries))
}

/// Charges the generation up to `cost` in total: draws the missing part from usable grants in
/// consumption order; what the grants cannot cover becomes debt (an entry without a grant, and
/// `users.debt`), never a negative grant and never dropped. Charging up to a total (rather than
/// adding `cost`) is what makes a repeat harmless.
async fn charge_up_to(
    tx: &mut Tx,
    generation: &LedgerGeneration,
    cost: i64,
) -> Result<ChargeOutcome, LedgerError> {
    if cost < 0 {
        return Err(LedgerError::InvalidAmount(cost));
    }
    lock_user(tx, generation.user_id).await?;
    let missing = cost - net_charge(&mut **tx, generation.id).await?;
    if missing <= 0 {
        return Ok(ChargeOutcome::default());
    }
    let trans_type = TransType::Generation(generation.media);
    let from_grants =
        draw(tx, generation.user_id, Some(generation.id), trans_type, missing).await?;
    let debt_added = missing - from_grants;
    if debt_added > 0 {
        debt_entry(tx, generation, trans_type, -debt_added).await?;
        sqlx::query("UPDATE users SET debt = debt + $2, updated_at = now() WHERE id = $1")
            .bind(generation.user_id)
            .bind(debt_added)
            .execute(&mut **tx)
            .await?;
        metrics::counter!("gengate_ledger_debt_created_credits_total")
            .increment(debt_added.unsigned_abs());
    }
    metrics::counter!("gengate_ledger_charged_credits_total").increment(missing.unsigned_abs());
    Ok(ChargeOutcome { from_grants, debt_added })
}

/// A success after a refund: charges the generation's `cost` again, as new entries in consumption
/// order; any shortfall becomes debt. A repeat changes nothing.
pub async fn restore(
    tx: &mut Tx,
    generation: &LedgerGeneration,
    cost: i64,
) -> Result<ChargeOutcome, LedgerError> {
    let outcome = charge_up_to(tx, generation, cost).await?;
    if outcome != ChargeOutcome::default() {
        metrics::counter!("gengate_ledger_restores_total").increment(1);
    }
    Ok(outcome)
}

/// Postpaid success: charges `cost` now, consuming the generation's hold; any shortfall becomes
/// debt. A repeat changes nothing.
pub async fn charge(
    tx: &mut Tx,
    generation: &LedgerGeneration,
    cost: i64,
) -> Result<ChargeOutcome, LedgerError> {
    let outcome = charge_up_to(tx, generation, cost).await?;
    release_hold(tx, generation, "charged").await?;
    Ok(outcome)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_draw_takes_from_grants_in_order_until_the_amount_is_covered() {
        let (a, b, c) = (GrantId::new(), GrantId::new(), GrantId::new());
        let grants = [(a, 30), (b, 50), (c, 100)];
        assert_eq!(plan_draw(&grants, 20), vec![(a, 20)]);
        assert_eq!(plan_draw(&grants, 30), vec![(a, 30)]);
        assert_eq!(plan_draw(&grants, 100), vec![(a, 30), (b, 50), (c, 20)]);
        assert_eq!(plan_draw(&grants, 500), vec![(a, 30), (b, 50), (c, 100)]);
        assert_eq!(plan_draw(&grants, 0), vec![]);
    }
}
