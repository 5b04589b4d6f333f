//! Reading the ledger: balance with its grants, the timeline, totals per transaction type.
//! Voided entries are excluded everywhere unless a query asks for them.

use serde::Serialize;
use sqlx::PgExecutor;
use time::OffsetDateTime;

use crate::ids::{EntryId, GenerationId, GrantId, UserId};
use crate::pagination::Cursor;

/// A grant as the balance shows it.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct GrantView {
    /// The grant.
    pub id: GrantId,
    /// `new_user`, `order_pay` or `system_add`.
    pub source: String,
    /// Credits granted.
    pub amount: i64,
    /// Credits left.
    pub remaining: i64,
    /// When the credits stop counting.
    #[serde(with = "time::serde::rfc3339::option")]
    pub expires_at: Option<OffsetDateTime>,
    /// Lower is drawn first.
    pub priority: i32,
    /// When the credits start counting.
    #[serde(with = "time::serde::rfc3339")]
    pub effective_at: OffsetDateTime,
    /// The payment's order number, for `order_pay`.
    pub order_no: Option<String>,
    /// Past its expiry: what remains no longer counts.
    pub expired: bool,
    /// When it was granted.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

/// A user's credits now.
#[derive(Debug, Clone, Serialize)]
pub struct Balance {
    /// Credits in usable grants (effective, unexpired).
    pub balance: i64,
    /// Credits held for the user's running postpaid jobs: charged if they succeed, released if
    /// they fail. Part of the balance, but not available to new jobs.
    pub held: i64,
    /// What new jobs may use: the balance less what is held.
    pub available: i64,
    /// Credits owed; new charges wait until it is paid.
    pub debt: i64,
    /// Grants that still hold credits (usable, expired or not yet effective), in consumption order.
    pub grants: Vec<GrantView>,
}

/// The balance and the grants holding credits. `None` for an unknown user.
///
/// One statement, so the debt and the grants come from one snapshot (and one round trip).
pub async fn balance(
    executor: impl PgExecutor<'_>,
    user_id: UserId,
) -> Result<Option<Balance>, sqlx::Error> {
    let rows: Vec<BalanceRow> = sqlx::query_as(
        "SELECT u.debt,
                (SELECT COALESCE(sum(h.amount), 0) FROM credit_holds h
                 WHERE h.user_id = u.id AND h.released_at IS NULL)::bigint AS held,
                g.id, g.source, g.amount, g.remaining, g.expires_at, g.priority,
                g.effective_at, g.order_no,
                (g.expires_at IS NOT NULL AND g.expires_at <= now()) AS expired, g.created_at
         FROM users u
         LEFT JOIN credit_grants g ON g.user_id = u.id AND g.remaining > 0
         WHERE u.id = $1
         ORDER BY g.priority, g.expires_at NULLS LAST, g.created_at, g.id",
    )
    .bind(user_id)
    .fetch_all(executor)
    .await?;
    let Some((debt, held)) = rows.first().map(|row| (row.debt, row.held)) else {
        return Ok(None);
    };
    let grants: Vec<GrantView> = rows.into_iter().filter_map(BalanceRow::grant).collect();
    let now = OffsetDateTime::now_utc();
    let balance =
        grants.iter().filter(|g| !g.expired && g.effective_at <= now).map(|g| g.remaining).sum();
    Ok(Some(Balance { balance, held, available: balance - held, debt, grants }))
}

/// The user's debt and one of their grants (all `None` when they hold none).
#[derive(sqlx::FromRow)]
struct BalanceRow {
    debt: i64,
    held: i64,
    id: Option<GrantId>,
    source: Option<String>,
    amount: Option<i64>,
    remaining: Option<i64>,
    expires_at: Option<OffsetDateTime>,
    priority: Option<i32>,
    effective_at: Option<OffsetDateTime>,
    order_no: Option<String>,
    expired: Option<bool>,
    created_at: Option<OffsetDateTime>,
}

impl BalanceRow {
    fn grant(self) -> Option<GrantView> {
        Some(GrantView {
            id: self.id?,
            source: self.source?,
            amount: self.amount?,
            remaining: self.remaining?,
            expires_at: self.expires_at,
            priority: self.priority?,
            effective_at: self.effective_at?,
            order_no: self.order_no,
            expired: self.expired?,
            created_at: self.created_at?,
        })
    }
}

/// A ledger entry as the timeline shows it.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct EntryView {
    /// The entry.
    pub id: EntryId,
    /// E.g. `video_generation`, `order_pay`.
    pub trans_type: String,
    /// Credits; negative for charges.
    pub amount: i64,
    /// The generation it belongs to, if any.
    pub generation_id: Option<GenerationId>,
    /// The grant it moved credits of (none: a charge that became debt).
    pub grant_id: Option<GrantId>,
    /// When it was written.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// When it was voided by a refund.
    #[serde(with = "time::serde::rfc3339::option")]
    pub voided_at: Option<OffsetDateTime>,
    /// Why it was voided.
    pub voided_reason: Option<String>,
}

/// What page of the timeline to read.
#[derive(Debug, Clone, Copy)]
pub struct TimelineQuery {
    /// Entries per page (1–200).
    pub limit: i64,
    /// Continue after this entry.
    pub cursor: Option<Cursor>,
    /// Include entries voided by refunds.
    pub include_voided: bool,
}

/// One page of the timeline, newest first.
#[derive(Debug, Clone, Serialize)]
pub struct TimelinePage {
    /// The entries.
    pub data: Vec<EntryView>,
    /// Where the next page starts; `None` on the last page.
    pub next_cursor: Option<String>,
}

/// The user's entries, newest first, a page at a time.
pub async fn timeline(
    executor: impl PgExecutor<'_>,
    user_id: UserId,
    query: TimelineQuery,
) -> Result<TimelinePage, sqlx::Error> {
    let limit = query.limit.clamp(1, 200);
    let after_time = query.cursor.map(|c| c.created_at);
    let after_id = query.cursor.map(|c| c.id);
    let mut data: Vec<EntryView> = sqlx::query_as(
        "SELECT id, trans_type, amount, generation_id, grant_id, created_at, voided_at, voided_reason
         FROM ledger_entries
         WHERE user_id = $1
           AND ($2 OR NOT is_voided)
           AND ($3::timestamptz IS NULL OR (created_at, id) < ($3, $4))
         ORDER BY created_at DESC, id DESC
         LIMIT $5",
    )
    .bind(user_id)
    .bind(query.include_voided)
    .bind(after_time)
    .bind(after_id)
    .bind(limit + 1)
    .fetch_all(executor)
    .await?;
    let next_cursor =
        Cursor::next_page(&mut data, limit, |e| Cursor { created_at: e.created_at, id: e.id.0 });
    Ok(TimelinePage { data, next_cursor })
}

/// Totals of one transaction type over a period.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct SummaryLine {
    /// The transaction type.
    pub trans_type: String,
    /// Sum of the amounts (negative for charges).
    pub total: i64,
    /// Number of entries.
    pub count: i64,
}

/// Totals per transaction type of the user's live entries in `[from, to)`.
pub async fn summary(
    executor: impl PgExecutor<'_>,
    user_id: UserId,
    from: Option<OffsetDateTime>,
    to: Option<OffsetDateTime>,
) -> Result<Vec<SummaryLine>, sqlx::Error> {
    sqlx::query_as(
        "SELECT trans_type, sum(amount)::bigint AS total, count(*) AS count
         FROM ledger_entries
         WHERE user_id = $1 AND NOT is_voided
           AND ($2::timestamptz IS NULL OR created_at >= $2)
           AND ($3::timestamptz IS NULL OR created_at < $3)
         GROUP BY trans_type
         ORDER BY trans_type",
    )
    .bind(user_id)
    .bind(from)
    .bind(to)
    .fetch_all(executor)
    .await
}

/// Every entry of one generation, voided ones included, oldest first (for operators).
pub async fn generation_entries(
    executor: impl PgExecutor<'_>,
    generation: GenerationId,
) -> Result<Vec<EntryView>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, trans_type, amount, generation_id, grant_id, created_at, voided_at, voided_reason
         FROM ledger_entries WHERE generation_id = $1 ORDER BY created_at, id",
    )
    .bind(generation)
    .fetch_all(executor)
    .await
}
