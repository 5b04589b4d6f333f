//! Reconcile: proves the ledger adds up, for one user or for everyone.
//!
//! - every grant: `remaining` equals the sum of its live entries (its own positive entry minus
//!   what was drawn, plus what came back);
//! - every generation: its net charge matches its status: the final price once `completed`,
//!   nothing once `failed` or `canceled`, the reservation while a prepaid job is in flight,
//!   nothing while a postpaid job is;
//! - every user: `debt` equals the charges that became debt minus what grants paid of it;
//! - every hold: a postpaid job in flight holds its price, nothing else holds anything.

use serde::Serialize;
use sqlx::PgPool;

use crate::db::Tx;

use crate::generation::{Billing, GenerationStatus};
use crate::ids::UserId;

/// A generation with its net charge.
#[derive(sqlx::FromRow)]
struct GenerationCharge {
    id: uuid::Uuid,
    user_id: UserId,
    status: GenerationStatus,
    billing: Billing,
    cost: i64,
    final_cost: Option<i64>,
    net: i64,
}

/// One thing that does not add up.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Mismatch {
    /// `grant`, `generation` or `user`.
    pub kind: &'static str,
    /// The row's id.
    pub id: uuid::Uuid,
    /// Its owner.
    pub user_id: UserId,
    /// What the entries say it should be.
    pub expected: i64,
    /// What the row says.
    pub actual: i64,
    /// Which figure this is about.
    pub detail: String,
}

/// What reconcile checked and found.
#[derive(Debug, Clone, Serialize, Default)]
pub struct ReconcileReport {
    /// Grants checked.
    pub grants: i64,
    /// Generations checked.
    pub generations: i64,
    /// Users checked.
    pub users: i64,
    /// Holds (and postpaid jobs in flight) checked.
    pub holds: i64,
    /// Everything that does not add up; empty when the ledger is consistent.
    pub mismatches: Vec<Mismatch>,
}

impl ReconcileReport {
    /// True when nothing is off.
    pub fn is_clean(&self) -> bool {
        self.mismatches.is_empty()
    }
}

/// Checks the ledger of `user` (or of every user). Read-only, and every figure is read from one
/// snapshot of the database (a repeatable-read transaction), so it can run against a live system
/// at any time: a job that moves during the run cannot show as a mismatch.
pub async fn reconcile(
    pool: &PgPool,
    user: Option<UserId>,
) -> Result<ReconcileReport, sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .execute(&mut *tx)
        .await?;
    let report = check(&mut tx, user).await?;
    tx.commit().await?;
    Ok(report)
}

async fn check(tx: &mut Tx, user: Option<UserId>) -> Result<ReconcileReport, sqlx::Error> {
    let mut report = ReconcileReport::default();

    let grants: Vec<(uuid::Uuid, UserId, i64, i64)> = sqlx::query_as(
        "SELECT g.id, g.user_id, COALESCE(e.live, 0)::bigint, g.remaining
         FROM credit_grants g
         LEFT JOIN LATERAL (
             SELECT sum(amount) AS live FROM ledger_entries
             WHERE grant_id = g.id AND NOT is_voided
         ) e ON true
         WHERE $1::uuid IS NULL OR g.user_id = $1",
    )
    .bind(user)
    .fetch_all(&mut **tx)
    .await?;
    report.grants = count(&grants);
    for (id, user_id, expected, actual) in grants {
        if expected != actual {
            report.mismatches.push(Mismatch {
                kind: "grant",
                id,
                user_id,
                expected,
                actual,
                detail: "remaining vs. sum of live entries".into(),
            });
        }
    }

    let generations: Vec<GenerationCharge> = sqlx::query_as(
        "SELECT g.id, g.user_id, g.status, g.billing, g.cost, g.final_cost,
                    -COALESCE(e.live, 0)::bigint AS net
             FROM generations g
             LEFT JOIN LATERAL (
                 SELECT sum(amount) AS live FROM ledger_entries
                 WHERE generation_id = g.id AND NOT is_voided
             ) e ON true
             WHERE $1::uuid IS NULL OR g.user_id = $1",
    )
    .bind(user)
    .fetch_all(&mut **tx)
    .await?;
    report.generations = count(&generations);
    for GenerationCharge { id, user_id, status, billing, cost, final_cost, net } in generations {
        let expected = match (status, billing) {
            (GenerationStatus::Completed, _) => final_cost.unwrap_or(cost),
            (GenerationStatus::Failed | GenerationStatus::Canceled, _) => 0,
            (_, Billing::Prepaid) => cost,
            (_, Billing::Postpaid) => 0,
        };
        if net != expected {
            report.mismatches.push(Mismatch {
                kind: "generation",
                id,
                user_id,
                expected,
                actual: net,
                detail: format!("net charge of a {status} {billing} generation"),
            });
        }
    }

    let users: Vec<(UserId, i64, i64)> = sqlx::query_as(
        "SELECT u.id,
                COALESCE((SELECT -sum(amount) FROM ledger_entries
                          WHERE user_id = u.id AND grant_id IS NULL AND NOT is_voided), 0)::bigint
              + COALESCE((SELECT sum(amount) FROM ledger_entries
                          WHERE user_id = u.id AND trans_type = 'debt_settlement' AND NOT is_voided), 0)::bigint,
                u.debt
         FROM users u
         WHERE $1::uuid IS NULL OR u.id = $1",
    )
    .bind(user)
    .bind(super::TransType::DebtSettlement.name())
    .fetch_all(&mut **tx)
    .await?;
    report.users = count(&users);

    let holds: Vec<(uuid::Uuid, UserId, GenerationStatus, Billing, i64, i64)> = sqlx::query_as(
        "SELECT g.id, g.user_id, g.status, g.billing, g.cost,
                COALESCE((SELECT sum(h.amount) FROM credit_holds h
                          WHERE h.generation_id = g.id AND h.released_at IS NULL), 0)::bigint
         FROM generations g
         WHERE ($1::uuid IS NULL OR g.user_id = $1)
           AND ((g.billing = $2 AND g.status = ANY($3))
                OR EXISTS (SELECT 1 FROM credit_holds h
                           WHERE h.generation_id = g.id AND h.released_at IS NULL))",
    )
    .bind(user)
    .bind(Billing::Postpaid)
    .bind([GenerationStatus::Queued, GenerationStatus::Submitted])
    .fetch_all(&mut **tx)
    .await?;
    report.holds = count(&holds);
    for (id, user_id, status, billing, cost, held) in holds {
        let expected = if billing == Billing::Postpaid && status.is_in_flight() { cost } else { 0 };
        if held != expected {
            report.mismatches.push(Mismatch {
                kind: "hold",
                id,
                user_id,
                expected,
                actual: held,
                detail: format!("credits held for a {status} {billing} generation"),
            });
        }
    }
    for (user_id, expected, actual) in users {
        if expected != actual {
            report.mismatches.push(Mismatch {
                kind: "user",
                id: user_id.0,
                user_id,
                expected,
                actual,
                detail: "debt vs. unpaid charges".into(),
            });
        }
    }
    Ok(report)
}

/// Arbitrary, fixed: the advisory lock that makes one periodic audit run at a time.
const AUDIT_LOCK: i64 = 0x6c65_6467_6572_6175;

/// Most mismatches an audit keeps in its `ledger_audits` row (the count is always whole).
const AUDIT_SAMPLE: usize = 20;

/// A periodic audit that ran.
#[derive(Debug)]
pub struct Audit {
    /// What it found.
    pub report: ReconcileReport,
    /// How long the check took.
    pub took: std::time::Duration,
}

/// The workers' periodic audit: runs [`reconcile`] over everyone unless another process is
/// running it or one ran less than `every` ago (so that one run per interval happens across the
/// whole deployment, however many workers ask), and records the run in `ledger_audits`.
/// `None`: not due, or another process has it.
pub async fn audit_if_due(
    pool: &PgPool,
    every: std::time::Duration,
) -> Result<Option<Audit>, sqlx::Error> {
    // The lock's transaction stays open while the check runs in a snapshot of its own, and
    // records the run as it commits (which lets the next audit in).
    let mut tx = pool.begin().await?;
    let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_xact_lock($1)")
        .bind(AUDIT_LOCK)
        .fetch_one(&mut *tx)
        .await?;
    if !locked {
        return Ok(None);
    }
    let due: bool = sqlx::query_scalar(
        "SELECT NOT EXISTS (SELECT 1 FROM ledger_audits
                            WHERE ran_at > now() - make_interval(secs => $1))",
    )
    .bind(every.as_secs_f64())
    .fetch_one(&mut *tx)
    .await?;
    if !due {
        return Ok(None);
    }
    let started = std::time::Instant::now();
    let report = reconcile(pool, None).await?;
    let took = started.elapsed();
    let sample = &report.mismatches[..report.mismatches.len().min(AUDIT_SAMPLE)];
    sqlx::query(
        "INSERT INTO ledger_audits (duration_ms, grants, generations, users, mismatches, sample)
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(i64::try_from(took.as_millis()).unwrap_or(i64::MAX))
    .bind(report.grants)
    .bind(report.generations)
    .bind(report.users)
    .bind(count(&report.mismatches))
    .bind(sqlx::types::Json(sample))
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Some(Audit { report, took }))
}

/// How many rows were checked.
fn count<T>(rows: &[T]) -> i64 {
    i64::try_from(rows.len()).unwrap_or(i64::MAX)
}
