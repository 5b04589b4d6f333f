//! Importing a legacy credits ledger (seed 001's `credits` table) into gengate's grants and entries,
//! and rolling an import back. Mapping tables: `migrations/0007_legacy_import.sql`.
//!
//! - A positive `new_user` / `order_pay` / `system_add` row becomes a grant (its expiry, its order
//!   number for `order_pay`, effective from the row's time) with its entry.
//! - A negative row (a consumption) becomes entries drawn from the user's grants that carry the
//!   row's expiry (the legacy row carries the expiry of the package it drew from), oldest first;
//!   only imported grants, never one the user got in gengate.
//!   The legacy generation uuid (the row's `order_no`, when it names a legacy generation) is kept
//!   in the mapping; `ledger_entries.generation_id` stays NULL.
//! - A positive `…_refund` row voids the live charge it refunds: the one charge row of the same
//!   generation with exactly its amount, or else all of that generation's live charge rows when
//!   they add up to it. Anything else (a second refund, a refund with no charge, a partial one) is
//!   reported and not imported: never guessed.
//! - Each batch is one transaction; a legacy `trans_no` or user already mapped is skipped, so a
//!   re-run imports nothing twice and an interrupted run resumes where it stopped.
//! - At the end every imported user's gengate balance is compared with the legacy balance computed
//!   the legacy way (the sum of `credits` over rows not yet expired), at one instant.

use std::collections::{HashMap, HashSet};

use serde::Serialize;
use sqlx::{PgConnection, PgPool};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::ids::{EntryId, GrantId, UserId};

/// Advisory lock key that serializes import batches and rollbacks with each other.
const IMPORT_LOCK: i64 = 0x6765_6e67_6174_6531;

/// What went wrong with an import or a rollback.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// Bad input (arguments, a source that is not a legacy ledger, a run that cannot be rolled
    /// back); nothing was changed.
    #[error("{0}")]
    Refused(String),
    /// The legacy database failed.
    #[error("legacy database: {0}")]
    Source(#[source] sqlx::Error),
    /// gengate's database failed; the batch in progress was rolled back.
    #[error("gengate database: {0}")]
    Target(#[from] sqlx::Error),
}

/// How to run an import.
#[derive(Debug, Clone)]
pub struct ImportOptions {
    /// Only these legacy user uuids (none: every legacy user).
    pub users: Option<Vec<String>>,
    /// Legacy rows per transaction.
    pub batch: usize,
    /// Do everything in one transaction, report, and roll it back.
    pub dry_run: bool,
    /// The source database, password redacted (recorded with the run).
    pub source_label: String,
}

/// A legacy row that was not imported, or something worth knowing about one that was.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Problem {
    /// The legacy `trans_no` (none for a user).
    pub trans_no: Option<String>,
    /// The legacy user.
    pub legacy_user: String,
    /// What is wrong.
    pub what: String,
}

/// A user whose gengate balance differs from the legacy balance.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct BalanceMismatch {
    /// The legacy user.
    pub legacy_user: String,
    /// The gengate user.
    pub user_id: UserId,
    /// The legacy balance.
    pub legacy: i64,
    /// gengate's balance.
    pub gengate: i64,
}

/// What an import did and found.
#[derive(Debug, Clone, Serialize, Default)]
pub struct ImportReport {
    /// The run (none for a dry run, which writes nothing).
    pub run_id: Option<Uuid>,
    /// Whether everything was rolled back at the end.
    pub dry_run: bool,
    /// Legacy users created in gengate by this run.
    pub users_imported: u64,
    /// Legacy credits rows imported by this run.
    pub rows_imported: u64,
    /// Legacy users and rows skipped because an earlier run imported them.
    pub already_imported: u64,
    /// Legacy rows with zero credits (nothing to import).
    pub zero_rows: u64,
    /// Rows not imported; the run exits non-zero when there are any.
    pub problems: Vec<Problem>,
    /// Imported but worth a look (e.g. a charge whose order number is not a legacy generation).
    pub warnings: Vec<Problem>,
    /// Users whose balance was compared.
    pub users_checked: u64,
    /// Users whose balance differs from the legacy one.
    pub mismatches: Vec<BalanceMismatch>,
}

impl ImportReport {
    /// True when every row was imported and every balance matches.
    pub fn is_clean(&self) -> bool {
        self.problems.is_empty() && self.mismatches.is_empty()
    }
}

/// A legacy user.
#[derive(Debug, Clone, sqlx::FromRow)]
struct LegacyUser {
    uuid: String,
    email: Option<String>,
    nickname: Option<String>,
    created_at: Option<OffsetDateTime>,
}

/// A legacy `credits` row.
#[derive(Debug, Clone, sqlx::FromRow)]
struct LegacyRow {
    trans_no: String,
    created_at: OffsetDateTime,
    user_uuid: String,
    trans_type: String,
    credits: i64,
    order_no: Option<String>,
    expired_at: Option<OffsetDateTime>,
}

/// What a legacy row is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Grant(&'static str),
    Charge,
    Refund,
}

fn classify(row: &LegacyRow) -> Result<Kind, String> {
    let valid_name = !row.trans_type.is_empty()
        && row
            .trans_type
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if !valid_name {
        return Err(format!("transaction type {:?} is not a valid name", row.trans_type));
    }
    if row.credits < 0 {
        return Ok(Kind::Charge);
    }
    match row.trans_type.as_str() {
        "new_user" => Ok(Kind::Grant("new_user")),
        "order_pay" => Ok(Kind::Grant("order_pay")),
        "system_add" => Ok(Kind::Grant("system_add")),
        t if t.ends_with("_refund") => Ok(Kind::Refund),
        t => Err(format!("positive row of unknown transaction type {t:?}")),
    }
}

/// Imports the legacy ledger in `source` into `target`. `progress(done, total)` is called after
/// every committed batch.
pub async fn import_legacy(
    target: &PgPool,
    source: &PgPool,
    options: &ImportOptions,
    mut progress: impl FnMut(u64, u64),
) -> Result<ImportReport, ImportError> {
    if options.batch == 0 {
        return Err(ImportError::Refused("--batch must be at least 1".into()));
    }
    let (users, rows, generations) = read_source(source, options.users.as_deref()).await?;
    let total = (users.len() + rows.len()) as u64;
    let mut report = ImportReport { dry_run: options.dry_run, ..ImportReport::default() };
    let check_at = OffsetDateTime::now_utc();

    if options.dry_run {
        let mut tx = target.begin().await?;
        ensure_dry_run_row(&mut tx).await?;
        let mut done = 0;
        for chunk in users.chunks(options.batch) {
            import_users(&mut tx, None, chunk, &mut report).await?;
            done += chunk.len() as u64;
            progress(done, total);
        }
        for chunk in rows.chunks(options.batch) {
            import_rows(&mut tx, None, chunk, &generations, &mut report).await?;
            done += chunk.len() as u64;
            progress(done, total);
        }
        check_balances(&mut tx, source, &users, check_at, &mut report).await?;
        tx.rollback().await?;
        return Ok(report);
    }

    let run_id = Uuid::now_v7();
    sqlx::query("INSERT INTO legacy_import_runs (id, source) VALUES ($1, $2)")
        .bind(run_id)
        .bind(&options.source_label)
        .execute(target)
        .await?;
    report.run_id = Some(run_id);
    let outcome = async {
        let mut done = 0;
        for chunk in users.chunks(options.batch) {
            let mut tx = target.begin().await?;
            import_users(&mut tx, Some(run_id), chunk, &mut report).await?;
            tx.commit().await?;
            done += chunk.len() as u64;
            progress(done, total);
        }
        for chunk in rows.chunks(options.batch) {
            let mut tx = target.begin().await?;
            import_rows(&mut tx, Some(run_id), chunk, &generations, &mut report).await?;
            tx.commit().await?;
            done += chunk.len() as u64;
            progress(done, total);
        }
        let mut conn = target.acquire().await?;
        check_balances(&mut conn, source, &users, check_at, &mut report).await?;
        Ok::<(), ImportError>(())
    }
    .await;
    let status = if outcome.is_ok() { "finished" } else { "failed" };
    let problems =
        i64::try_from(report.problems.len() + report.mismatches.len()).unwrap_or(i64::MAX);
    let imported = i64::try_from(report.users_imported + report.rows_imported).unwrap_or(i64::MAX);
    // Best effort: the run's own rows are what rollback uses, not this summary.
    let _ = sqlx::query(
        "UPDATE legacy_import_runs SET status = $2, finished_at = now(), imported = $3, problems = $4
         WHERE id = $1 AND status = 'running'",
    )
    .bind(run_id)
    .bind(status)
    .bind(imported)
    .bind(problems)
    .execute(target)
    .await;
    outcome.map(|()| report)
}

/// Reads the legacy users (all, or the chosen ones), their credits rows in order, and which of
/// the rows' order numbers are legacy generations.
async fn read_source(
    source: &PgPool,
    chosen: Option<&[String]>,
) -> Result<(Vec<LegacyUser>, Vec<LegacyRow>, HashSet<String>), ImportError> {
    let schema_problem = |err: sqlx::Error| match &err {
        sqlx::Error::Database(db) if db.code().is_some_and(|c| c.starts_with("42")) => {
            ImportError::Refused(format!(
                "the source is not a legacy credits database (users, credits, orders, generations): {}",
                db.message()
            ))
        }
        _ => ImportError::Source(err),
    };
    let users: Vec<LegacyUser> = sqlx::query_as(
        "SELECT uuid::text AS uuid, email::text AS email, nickname::text AS nickname, created_at
         FROM users WHERE $1::text[] IS NULL OR uuid = ANY($1) ORDER BY created_at, uuid",
    )
    .bind(chosen)
    .fetch_all(source)
    .await
    .map_err(schema_problem)?;
    if let Some(chosen) = chosen {
        let found: HashSet<&str> = users.iter().map(|u| u.uuid.as_str()).collect();
        let missing: Vec<&str> =
            chosen.iter().map(String::as_str).filter(|u| !found.contains(u)).collect();
        if !missing.is_empty() {
            return Err(ImportError::Refused(format!(
                "no such legacy users: {}",
                missing.join(", ")
            )));
        }
    }
    let rows: Vec<LegacyRow> = sqlx::query_as(
        "SELECT trans_no::text AS trans_no, created_at, user_uuid::text AS user_uuid,
                trans_type::text AS trans_type, credits::bigint AS credits,
                order_no::text AS order_no, expired_at
         FROM credits WHERE $1::text[] IS NULL OR user_uuid = ANY($1)
         ORDER BY created_at, id",
    )
    .bind(chosen)
    .fetch_all(source)
    .await
    .map_err(schema_problem)?;
    let order_nos: Vec<&str> = rows.iter().filter_map(|r| r.order_no.as_deref()).collect();
    let generations: Vec<String> =
        sqlx::query_scalar("SELECT uuid::text FROM generations WHERE uuid = ANY($1)")
            .bind(&order_nos)
            .fetch_all(source)
            .await
            .map_err(schema_problem)?;
    sqlx::query("SELECT 1 FROM orders LIMIT 0").execute(source).await.map_err(schema_problem)?;
    Ok((users, rows, generations.into_iter().collect()))
}

/// Takes the import lock and checks the run is still going.
async fn begin_batch(conn: &mut PgConnection, run: Option<Uuid>) -> Result<(), ImportError> {
    sqlx::query("SELECT pg_advisory_xact_lock($1)").bind(IMPORT_LOCK).execute(&mut *conn).await?;
    if let Some(run) = run {
        let status: String =
            sqlx::query_scalar("SELECT status FROM legacy_import_runs WHERE id = $1 FOR SHARE")
                .bind(run)
                .fetch_one(&mut *conn)
                .await?;
        if status != "running" {
            return Err(ImportError::Refused(format!("run {run} was {status} meanwhile")));
        }
    }
    Ok(())
}

async fn import_users(
    conn: &mut PgConnection,
    run: Option<Uuid>,
    users: &[LegacyUser],
    report: &mut ImportReport,
) -> Result<(), ImportError> {
    begin_batch(conn, run).await?;
    for user in users {
        let mapped: Option<UserId> =
            sqlx::query_scalar("SELECT user_id FROM legacy_import_users WHERE legacy_uuid = $1")
                .bind(&user.uuid)
                .fetch_optional(&mut *conn)
                .await?;
        if mapped.is_some() {
            report.already_imported += 1;
            continue;
        }
        if let Some(email) = &user.email {
            let owner: Option<UserId> = sqlx::query_scalar("SELECT id FROM users WHERE email = $1")
                .bind(email)
                .fetch_optional(&mut *conn)
                .await?;
            if let Some(owner) = owner {
                report.problems.push(Problem {
                    trans_no: None,
                    legacy_user: user.uuid.clone(),
                    what: format!(
                        "email {email} already belongs to gengate user {owner}: user and credits not imported"
                    ),
                });
                continue;
            }
        }
        let user_id = UserId::new();
        sqlx::query(
            "INSERT INTO users (id, email, name, created_at) VALUES ($1, $2, $3, COALESCE($4, now()))",
        )
        .bind(user_id)
        .bind(&user.email)
        .bind(&user.nickname)
        .bind(user.created_at)
        .execute(&mut *conn)
        .await?;
        sqlx::query(
            "INSERT INTO legacy_import_users (legacy_uuid, user_id, run_id) VALUES ($1, $2, $3)",
        )
        .bind(&user.uuid)
        .bind(user_id)
        .bind(run.unwrap_or(DRY_RUN))
        .execute(&mut *conn)
        .await?;
        report.users_imported += 1;
    }
    Ok(())
}

/// The run id of a dry run's mapping rows (its transaction is rolled back; the row is created in
/// it so the foreign keys hold).
const DRY_RUN: Uuid = Uuid::nil();

async fn ensure_dry_run_row(conn: &mut PgConnection) -> Result<(), ImportError> {
    sqlx::query(
        "INSERT INTO legacy_import_runs (id, source) VALUES ($1, 'dry run') ON CONFLICT DO NOTHING",
    )
    .bind(DRY_RUN)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

async fn import_rows(
    conn: &mut PgConnection,
    run: Option<Uuid>,
    rows: &[LegacyRow],
    generations: &HashSet<String>,
    report: &mut ImportReport,
) -> Result<(), ImportError> {
    begin_batch(conn, run).await?;
    let run_id = run.unwrap_or(DRY_RUN);
    let trans_nos: Vec<&str> = rows.iter().map(|r| r.trans_no.as_str()).collect();
    let done: HashSet<String> =
        sqlx::query_scalar("SELECT trans_no FROM legacy_import_credits WHERE trans_no = ANY($1)")
            .bind(&trans_nos)
            .fetch_all(&mut *conn)
            .await?
            .into_iter()
            .collect();
    let legacy_users: Vec<&str> = rows.iter().map(|r| r.user_uuid.as_str()).collect();
    let owners: HashMap<String, UserId> = sqlx::query_as::<_, (String, UserId)>(
        "SELECT legacy_uuid, user_id FROM legacy_import_users WHERE legacy_uuid = ANY($1)",
    )
    .bind(&legacy_users)
    .fetch_all(&mut *conn)
    .await?
    .into_iter()
    .collect();
    // One lock order for every ledger path: users by id, then their grants.
    let mut locked: Vec<UserId> = owners.values().copied().collect();
    locked.sort();
    sqlx::query("SELECT 1 FROM users WHERE id = ANY($1) ORDER BY id FOR NO KEY UPDATE")
        .bind(&locked)
        .execute(&mut *conn)
        .await?;

    for row in rows {
        if done.contains(&row.trans_no) {
            report.already_imported += 1;
            continue;
        }
        if row.credits == 0 {
            report.zero_rows += 1;
            continue;
        }
        let problem = |what: String| Problem {
            trans_no: Some(row.trans_no.clone()),
            legacy_user: row.user_uuid.clone(),
            what,
        };
        let Some(&user_id) = owners.get(&row.user_uuid) else {
            report.problems.push(problem("its user was not imported".into()));
            continue;
        };
        let kind = match classify(row) {
            Ok(kind) => kind,
            Err(what) => {
                report.problems.push(problem(what));
                continue;
            }
        };
        let outcome = match kind {
            Kind::Grant(source) => import_grant(conn, run_id, user_id, row, source).await?,
            Kind::Charge => import_charge(conn, run_id, user_id, row, generations).await?,
            Kind::Refund => import_refund(conn, run_id, user_id, row, generations).await?,
        };
        match outcome {
            Ok(warning) => {
                report.rows_imported += 1;
                if let Some(what) = warning {
                    report.warnings.push(problem(what));
                }
            }
            Err(what) => report.problems.push(problem(what)),
        }
    }
    Ok(())
}

/// `Ok(Ok(warning))` imported, `Ok(Err(problem))` not imported, `Err` a database failure.
type RowOutcome = Result<Result<Option<String>, String>, ImportError>;

#[allow(clippy::too_many_arguments)]
async fn map_row(
    conn: &mut PgConnection,
    run_id: Uuid,
    user_id: UserId,
    row: &LegacyRow,
    kind: &str,
    generation: Option<&str>,
    grant_id: Option<GrantId>,
    entries: &[(EntryId, &str)],
) -> Result<(), ImportError> {
    sqlx::query(
        "INSERT INTO legacy_import_credits
             (trans_no, run_id, user_id, kind, legacy_trans_type, credits, legacy_order_no,
              legacy_generation_uuid, grant_id)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(&row.trans_no)
    .bind(run_id)
    .bind(user_id)
    .bind(kind)
    .bind(&row.trans_type)
    .bind(row.credits)
    .bind(&row.order_no)
    .bind(generation)
    .bind(grant_id)
    .execute(&mut *conn)
    .await?;
    for (entry_id, role) in entries {
        sqlx::query(
            "INSERT INTO legacy_import_entries (entry_id, role, trans_no) VALUES ($1, $2, $3)",
        )
        .bind(entry_id)
        .bind(role)
        .bind(&row.trans_no)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

async fn import_grant(
    conn: &mut PgConnection,
    run_id: Uuid,
    user_id: UserId,
    row: &LegacyRow,
    source: &str,
) -> RowOutcome {
    if row.expired_at.is_some_and(|e| e <= row.created_at) {
        return Ok(Err("package expires before it was granted".into()));
    }
    let order_no = if source == "order_pay" {
        let Some(order_no) = row.order_no.as_deref().filter(|o| !o.is_empty()) else {
            return Ok(Err("order_pay row without an order number".into()));
        };
        let existing: Option<GrantId> =
            sqlx::query_scalar("SELECT id FROM credit_grants WHERE order_no = $1")
                .bind(order_no)
                .fetch_optional(&mut *conn)
                .await?;
        if let Some(existing) = existing {
            return Ok(Err(format!(
                "order {order_no} was already granted in gengate (grant {existing})"
            )));
        }
        Some(order_no)
    } else {
        None
    };
    let grant_id = GrantId::new();
    sqlx::query(
        "INSERT INTO credit_grants
             (id, user_id, source, amount, remaining, effective_at, expires_at, order_no, created_at)
         VALUES ($1, $2, $3, $4, $4, $5, $6, $7, $5)",
    )
    .bind(grant_id)
    .bind(user_id)
    .bind(source)
    .bind(row.credits)
    .bind(row.created_at)
    .bind(row.expired_at)
    .bind(order_no)
    .execute(&mut *conn)
    .await?;
    let entry_id = EntryId::new();
    sqlx::query(
        "INSERT INTO ledger_entries (id, user_id, grant_id, trans_type, amount, created_at)
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(entry_id)
    .bind(user_id)
    .bind(grant_id)
    .bind(source)
    .bind(row.credits)
    .bind(row.created_at)
    .execute(&mut *conn)
    .await?;
    map_row(conn, run_id, user_id, row, "grant", None, Some(grant_id), &[(entry_id, "grant")])
        .await?;
    Ok(Ok(None))
}

fn generation_of<'a>(row: &'a LegacyRow, generations: &HashSet<String>) -> Option<&'a str> {
    row.order_no.as_deref().filter(|o| generations.contains(*o))
}

async fn import_charge(
    conn: &mut PgConnection,
    run_id: Uuid,
    user_id: UserId,
    row: &LegacyRow,
    generations: &HashSet<String>,
) -> RowOutcome {
    let need = -row.credits;
    let grants: Vec<(GrantId, i64)> = sqlx::query_as(
        "SELECT id, remaining FROM credit_grants
         WHERE user_id = $1 AND expires_at IS NOT DISTINCT FROM $2 AND remaining > 0
           AND id IN (SELECT grant_id FROM legacy_import_credits
                      WHERE user_id = $1 AND kind = 'grant')
         ORDER BY effective_at > $3, effective_at, id
         FOR UPDATE",
    )
    .bind(user_id)
    .bind(row.expired_at)
    .bind(row.created_at)
    .fetch_all(&mut *conn)
    .await?;
    let available: i64 = grants.iter().map(|(_, r)| r).sum();
    if available < need {
        let expiry = row.expired_at.map_or_else(|| "no expiry".to_string(), |e| e.to_string());
        return Ok(Err(format!(
            "charge of {need} credits, but packages with its expiry ({expiry}) hold only {available}"
        )));
    }
    let mut left = need;
    let mut entries = Vec::new();
    for (grant_id, remaining) in grants {
        if left == 0 {
            break;
        }
        let take = left.min(remaining);
        left -= take;
        sqlx::query("UPDATE credit_grants SET remaining = remaining - $2 WHERE id = $1")
            .bind(grant_id)
            .bind(take)
            .execute(&mut *conn)
            .await?;
        let entry_id = EntryId::new();
        sqlx::query(
            "INSERT INTO ledger_entries (id, user_id, grant_id, trans_type, amount, created_at)
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(entry_id)
        .bind(user_id)
        .bind(grant_id)
        .bind(&row.trans_type)
        .bind(-take)
        .bind(row.created_at)
        .execute(&mut *conn)
        .await?;
        entries.push((entry_id, "charge"));
    }
    let generation = generation_of(row, generations);
    map_row(conn, run_id, user_id, row, "charge", generation, None, &entries).await?;
    Ok(Ok(match (&row.order_no, generation) {
        (Some(order_no), None) => Some(format!(
            "order number {order_no} is not a legacy generation: charge imported unlinked"
        )),
        (None, _) => Some("charge without an order number: imported unlinked".into()),
        _ => None,
    }))
}

async fn import_refund(
    conn: &mut PgConnection,
    run_id: Uuid,
    user_id: UserId,
    row: &LegacyRow,
    generations: &HashSet<String>,
) -> RowOutcome {
    let Some(order_no) = row.order_no.as_deref() else {
        return Ok(Err("refund without an order number".into()));
    };
    // The imported charges of that generation (or order), each with its live total.
    let charges: Vec<(String, i64, i64)> = sqlx::query_as(
        "SELECT c.trans_no, c.credits,
                COALESCE(sum(e.amount) FILTER (WHERE NOT e.is_voided), 0)::bigint
         FROM legacy_import_credits c
         JOIN legacy_import_entries le ON le.trans_no = c.trans_no AND le.role = 'charge'
         JOIN ledger_entries e ON e.id = le.entry_id
         WHERE c.user_id = $1 AND c.kind = 'charge' AND c.legacy_order_no = $2
         GROUP BY c.trans_no, c.credits
         ORDER BY min(e.created_at), c.trans_no",
    )
    .bind(user_id)
    .bind(order_no)
    .fetch_all(&mut *conn)
    .await?;
    if charges.is_empty() {
        return Ok(Err(format!("refund of {order_no} without a matching charge: not imported")));
    }
    let live: Vec<&(String, i64, i64)> = charges.iter().filter(|c| c.2 != 0).collect();
    if live.is_empty() {
        return Ok(Err(format!(
            "refund of {order_no}, whose charge was already refunded (a double refund): not imported"
        )));
    }
    let refund = row.credits;
    let chosen: Vec<&str> = if let Some(one) = live.iter().find(|c| -c.2 == refund && c.1 == c.2) {
        vec![one.0.as_str()]
    } else if -live.iter().map(|c| c.2).sum::<i64>() == refund {
        live.iter().map(|c| c.0.as_str()).collect()
    } else {
        let total: i64 = -live.iter().map(|c| c.2).sum::<i64>();
        return Ok(Err(format!(
            "refund of {refund} for {order_no} matches no live charge (live charges total {total}): not imported"
        )));
    };
    let voided: Vec<EntryId> = sqlx::query_scalar(
        "WITH voided AS (
             UPDATE ledger_entries e
             SET is_voided = true, voided_at = $2, voided_reason = $3
             FROM legacy_import_entries le
             WHERE le.entry_id = e.id AND le.role = 'charge' AND le.trans_no = ANY($1)
               AND NOT e.is_voided
             RETURNING e.id, e.grant_id, e.amount
         ), back AS (
             UPDATE credit_grants g SET remaining = g.remaining - v.amount
             FROM (SELECT grant_id, sum(amount) AS amount FROM voided GROUP BY grant_id) v
             WHERE g.id = v.grant_id
         )
         SELECT id FROM voided",
    )
    .bind(&chosen)
    .bind(row.created_at)
    .bind(format!("legacy refund {}", row.trans_no))
    .fetch_all(&mut *conn)
    .await?;
    let entries: Vec<(EntryId, &str)> = voided.into_iter().map(|id| (id, "void")).collect();
    let generation = generation_of(row, generations);
    map_row(conn, run_id, user_id, row, "refund", generation, None, &entries).await?;
    Ok(Ok(None))
}

/// Compares every imported user's gengate balance with the legacy balance at `at`.
async fn check_balances(
    conn: &mut PgConnection,
    source: &PgPool,
    users: &[LegacyUser],
    at: OffsetDateTime,
    report: &mut ImportReport,
) -> Result<(), ImportError> {
    let uuids: Vec<&str> = users.iter().map(|u| u.uuid.as_str()).collect();
    let gengate: Vec<(String, UserId, i64)> = sqlx::query_as(
        "SELECT m.legacy_uuid, m.user_id,
                (COALESCE((SELECT sum(g.remaining) FROM credit_grants g
                           WHERE g.user_id = m.user_id AND g.effective_at <= $2
                             AND (g.expires_at IS NULL OR g.expires_at > $2)), 0) - u.debt)::bigint
         FROM legacy_import_users m JOIN users u ON u.id = m.user_id
         WHERE m.legacy_uuid = ANY($1)
         ORDER BY m.legacy_uuid",
    )
    .bind(&uuids)
    .bind(at)
    .fetch_all(&mut *conn)
    .await?;
    let legacy: HashMap<String, i64> = sqlx::query_as::<_, (String, i64)>(
        "SELECT user_uuid::text, COALESCE(sum(credits), 0)::bigint FROM credits
         WHERE user_uuid = ANY($1) AND (expired_at IS NULL OR expired_at > $2)
         GROUP BY user_uuid",
    )
    .bind(&uuids)
    .bind(at)
    .fetch_all(source)
    .await
    .map_err(ImportError::Source)?
    .into_iter()
    .collect();
    for (legacy_user, user_id, balance) in gengate {
        report.users_checked += 1;
        let expected = legacy.get(&legacy_user).copied().unwrap_or(0);
        if expected != balance {
            report.mismatches.push(BalanceMismatch {
                legacy_user,
                user_id,
                legacy: expected,
                gengate: balance,
            });
        }
    }
    Ok(())
}

/// What a rollback removed.
#[derive(Debug, Clone, Serialize, Default)]
pub struct RollbackReport {
    /// The run.
    pub run_id: Uuid,
    /// Users deleted.
    pub users: u64,
    /// Grants deleted.
    pub grants: u64,
    /// Entries deleted (grant entries and charges).
    pub entries: u64,
    /// Entries the run's refunds had voided, live again.
    pub unvoided: u64,
}

/// Removes exactly what import run `run_id` wrote, in one transaction. Refuses (changing nothing)
/// when the run does not exist, was rolled back already, or when something else now depends on
/// what it wrote (a later run, or gengate activity of an imported user).
pub async fn rollback(pool: &PgPool, run_id: Uuid) -> Result<RollbackReport, ImportError> {
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)").bind(IMPORT_LOCK).execute(&mut *tx).await?;
    let status: Option<String> =
        sqlx::query_scalar("SELECT status FROM legacy_import_runs WHERE id = $1 FOR UPDATE")
            .bind(run_id)
            .fetch_optional(&mut *tx)
            .await?;
    match status.as_deref() {
        None => return Err(ImportError::Refused(format!("no import run {run_id}"))),
        Some("rolled_back") => {
            return Err(ImportError::Refused(format!(
                "import run {run_id} was already rolled back"
            )));
        }
        Some(_) => {}
    }
    let users: Vec<UserId> =
        sqlx::query_scalar("SELECT user_id FROM legacy_import_users WHERE run_id = $1")
            .bind(run_id)
            .fetch_all(&mut *tx)
            .await?;
    let grants: Vec<GrantId> = sqlx::query_scalar(
        "SELECT grant_id FROM legacy_import_credits WHERE run_id = $1 AND grant_id IS NOT NULL",
    )
    .bind(run_id)
    .fetch_all(&mut *tx)
    .await?;
    // Entries this run wrote (grant entries and charges) and entries its refunds voided.
    let written: Vec<EntryId> = sqlx::query_scalar(
        "SELECT le.entry_id FROM legacy_import_entries le
         JOIN legacy_import_credits c ON c.trans_no = le.trans_no
         WHERE c.run_id = $1 AND le.role IN ('grant', 'charge')",
    )
    .bind(run_id)
    .fetch_all(&mut *tx)
    .await?;
    let voided: Vec<EntryId> = sqlx::query_scalar(
        "SELECT le.entry_id FROM legacy_import_entries le
         JOIN legacy_import_credits c ON c.trans_no = le.trans_no
         WHERE c.run_id = $1 AND le.role = 'void'",
    )
    .bind(run_id)
    .fetch_all(&mut *tx)
    .await?;

    // What else depends on it: refuse rather than break it.
    let dependents: Vec<String> = sqlx::query_scalar(
        "SELECT what FROM (
             SELECT 'ledger entries not written by this run draw on its grants' AS what
             WHERE EXISTS (SELECT 1 FROM ledger_entries
                           WHERE grant_id = ANY($1) AND NOT (id = ANY($2)))
             UNION ALL
             SELECT 'entries it wrote were voided by something else (a later run or gengate)'
             WHERE EXISTS (SELECT 1 FROM ledger_entries e
                           WHERE e.id = ANY($2) AND e.is_voided
                             AND NOT EXISTS (SELECT 1 FROM legacy_import_entries le
                                             JOIN legacy_import_credits c ON c.trans_no = le.trans_no
                                             WHERE le.entry_id = e.id AND le.role = 'void'
                                               AND c.run_id = $4))
             UNION ALL
             SELECT 'its users have grants, entries, generations or API keys it did not write'
             WHERE EXISTS (SELECT 1 FROM credit_grants WHERE user_id = ANY($3) AND NOT (id = ANY($1)))
                OR EXISTS (SELECT 1 FROM ledger_entries WHERE user_id = ANY($3) AND NOT (id = ANY($2)))
                OR EXISTS (SELECT 1 FROM generations WHERE user_id = ANY($3))
                OR EXISTS (SELECT 1 FROM api_keys WHERE user_id = ANY($3))
             UNION ALL
             SELECT 'a later import run wrote rows for its users'
             WHERE EXISTS (SELECT 1 FROM legacy_import_credits
                           WHERE user_id = ANY($3) AND run_id <> $4)
         ) d",
    )
    .bind(&grants)
    .bind(&written)
    .bind(&users)
    .bind(run_id)
    .fetch_all(&mut *tx)
    .await?;
    if !dependents.is_empty() {
        return Err(ImportError::Refused(format!(
            "cannot roll back run {run_id}: {}; roll those back first",
            dependents.join("; ")
        )));
    }

    // Un-void what its refunds voided: the credits go back out of the grants.
    let unvoided = sqlx::query(
        "WITH unvoided AS (
             UPDATE ledger_entries SET is_voided = false, voided_at = NULL, voided_reason = NULL
             WHERE id = ANY($1) AND is_voided
             RETURNING grant_id, amount
         )
         UPDATE credit_grants g SET remaining = g.remaining + u.amount
         FROM (SELECT grant_id, sum(amount) AS amount FROM unvoided GROUP BY grant_id) u
         WHERE g.id = u.grant_id",
    )
    .bind(&voided)
    .execute(&mut *tx)
    .await?;
    let _ = unvoided;
    // Its live charges go back into their grants (earlier runs' grants stay).
    sqlx::query(
        "UPDATE credit_grants g SET remaining = g.remaining - c.amount
         FROM (SELECT grant_id, sum(amount) AS amount FROM ledger_entries
               WHERE id = ANY($1) AND NOT is_voided AND amount < 0 GROUP BY grant_id) c
         WHERE g.id = c.grant_id AND NOT (g.id = ANY($2))",
    )
    .bind(&written)
    .bind(&grants)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "DELETE FROM legacy_import_entries le USING legacy_import_credits c
         WHERE c.trans_no = le.trans_no AND c.run_id = $1",
    )
    .bind(run_id)
    .execute(&mut *tx)
    .await?;
    let entries = sqlx::query("DELETE FROM ledger_entries WHERE id = ANY($1)")
        .bind(&written)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    sqlx::query("DELETE FROM legacy_import_credits WHERE run_id = $1")
        .bind(run_id)
        .execute(&mut *tx)
        .await?;
    let grants_deleted = sqlx::query("DELETE FROM credit_grants WHERE id = ANY($1)")
        .bind(&grants)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    sqlx::query("DELETE FROM legacy_import_users WHERE run_id = $1")
        .bind(run_id)
        .execute(&mut *tx)
        .await?;
    let users_deleted = sqlx::query("DELETE FROM users WHERE id = ANY($1)")
        .bind(&users)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    sqlx::query(
        "UPDATE legacy_import_runs SET status = 'rolled_back', rolled_back_at = now() WHERE id = $1",
    )
    .bind(run_id)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(RollbackReport {
        run_id,
        users: users_deleted,
        grants: grants_deleted,
        entries,
        unvoided: voided.len() as u64,
    })
}
