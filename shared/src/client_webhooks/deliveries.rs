//! Deliveries: one event of one generation to one URL, sent at least once.
//!
//! ```text
//! notify.generation ─► open (row made once: target, body) ─► claim (lease, attempt n) ─► send
//!                                                                   ▲                    │
//!          scheduler (due, lease lapsed) ─► notify.generation ──────┘      finish: delivered
//!                                                                          │ or failed (410,
//!                                                                          │ refused, gave up)
//!                                                                          └ or due again later
//! ```
//!
//! The row's id is the `webhook-id` header, so every attempt of a delivery carries the same one,
//! and its body is written once, so every attempt sends the same bytes. A worker holds a lease on
//! the delivery while it sends; a message for a delivery someone else is sending, or that is not
//! due, changes nothing. A worker that dies mid-attempt leaves the lease to lapse, and the
//! delivery, still due, is published again: it is sent again, with the same id.

use std::sync::LazyLock;
use std::time::Duration;

use serde::Serialize;
use serde_json::json;
use sqlx::{PgExecutor, PgPool};
use time::OffsetDateTime;
use uuid::Uuid;

use super::signing::webhook_id;
use super::{Event, Format};
use crate::generation::store;
use crate::ids::{GenerationId, UserId};
use crate::storage::{Storage, StorageError};

/// How a delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, sqlx::Type)]
#[sqlx(type_name = "text", rename_all = "lowercase")]
#[serde(rename_all = "lowercase")]
pub enum DeliveryStatus {
    /// Being sent, or due again later.
    Pending,
    /// An attempt got a 2xx answer.
    Delivered,
    /// It will not be sent again (410 Gone, a refused address, every retry failed, its endpoint
    /// was disabled) unless an operator redelivers it.
    Failed,
}

/// A delivery that is due: the work of one `notify.generation` message.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Delivery {
    /// Its id (the `webhook-id` is made of it).
    pub id: Uuid,
    /// The generation.
    pub generation_id: GenerationId,
    /// Its owner.
    pub user_id: UserId,
    /// The default endpoint it goes to (`None`: the URL its request named).
    pub endpoint_id: Option<Uuid>,
    /// The event.
    pub event: String,
    /// Where it goes.
    pub url: String,
    /// The exact body every attempt sends.
    pub body: String,
    /// How it stands.
    pub status: DeliveryStatus,
}

const DELIVERY_COLUMNS: &str = "id, generation_id, user_id, endpoint_id, event, url, body, status";

/// Why a delivery could not be made.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// PostgreSQL.
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    /// The links to the generation's stored files could not be made.
    #[error("links to stored files: {0}")]
    Storage(#[from] StorageError),
}

/// An event's target as [`open`] resolves it: the owner, the URL, the default endpoint (`None`: the
/// request's URL), whether it takes the event, and the body's shape.
type Target = (UserId, Option<String>, Option<Uuid>, bool, String);

/// [`open`]'s target of event `$2` of generation `$1`.
static OPEN_SQL: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT g.user_id,
                COALESCE(g.webhook_url, e.url),
                CASE WHEN g.webhook_url IS NULL THEN e.id END,
                CASE WHEN g.webhook_url IS NOT NULL THEN {request} ELSE {endpoint} END,
                CASE WHEN g.webhook_url IS NOT NULL THEN g.webhook_format ELSE 'standard' END
         FROM generations g
         LEFT JOIN LATERAL (
             SELECT e.id, e.url, e.events FROM webhook_endpoints e
             WHERE e.user_id = g.user_id AND e.disabled_at IS NULL
               AND (e.api_key_id IS NULL OR e.api_key_id = g.api_key_id)
             ORDER BY e.api_key_id NULLS LAST LIMIT 1) e ON true
         WHERE g.id = $1",
        request = super::takes_sql("g.webhook_events").replace("{event}", "$2::text"),
        endpoint = super::takes_sql("e.events").replace("{event}", "$2::text"),
    )
});

/// The delivery `id` of `event` of `generation`: made now (its target resolved, its body written)
/// if it does not exist yet. `None`: the event has nowhere to go any more (the endpoint was
/// disabled or removed since, or takes other events), or the generation does not exist.
pub async fn open(
    pool: &PgPool,
    storage: &Storage,
    id: Uuid,
    generation: GenerationId,
    event: Event,
) -> Result<Option<Delivery>, OpenError> {
    if let Some(existing) = get_row(pool, id).await? {
        return Ok(Some(existing));
    }
    // The most specific target: the request's URL, else its key's endpoint, else its user's
    // (the same choice as `super::HAS_TARGET_SQL`, and the same events: a target without an event
    // list does not take the opt-in ones, `generation.processing`).
    // The body's shape is the request's (a Kling `callback_url`'s is Kling's); an endpoint's is
    // always the standard one.
    let target: Option<Target> = sqlx::query_as(sqlx::AssertSqlSafe(OPEN_SQL.as_str()))
        .bind(generation)
        .bind(event.as_str())
        .fetch_optional(pool)
        .await?;
    let Some((user, Some(url), endpoint, true, format)) = target else { return Ok(None) };
    let format = Format::from_stored(&format);
    let Some(view) = store::view(pool, generation, Some(user)).await? else { return Ok(None) };
    let now = OffsetDateTime::now_utc();
    let view = view.with_links(storage, now.unix_timestamp()).await?;
    let timestamp =
        now.format(&time::format_description::well_known::Rfc3339).expect("a time formats");
    // The generation as it is now: a delivery made late (they are not ordered; a
    // `generation.processing` message may be handled after the generation ended) shows the
    // status it has by then, and its client reads `data.status` and `data.updated_at`.
    let body = match format {
        // Standard Webhooks' payload: the event's type, when it happened, and the object.
        Format::Standard => {
            json!({"type": event.as_str(), "timestamp": timestamp, "data": view}).to_string()
        }
        // Kling's callback: the bare task object, as a query answers its `data`.
        Format::Kling => crate::kling_task::task(&view).to_string(),
    };
    // A concurrent first delivery of the same message makes one row: the first one wins.
    sqlx::query(
        "INSERT INTO webhook_deliveries
             (id, generation_id, user_id, endpoint_id, event, url, body, format, next_attempt_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, now()) ON CONFLICT (id) DO NOTHING",
    )
    .bind(id)
    .bind(generation)
    .bind(user)
    .bind(endpoint)
    .bind(event.as_str())
    .bind(&url)
    .bind(&body)
    .bind(format.as_str())
    .execute(pool)
    .await?;
    get_row(pool, id).await.map_err(Into::into)
}

async fn get_row(executor: impl PgExecutor<'_>, id: Uuid) -> Result<Option<Delivery>, sqlx::Error> {
    let sql = format!("SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries WHERE id = $1");
    sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(id).fetch_optional(executor).await
}

/// An attempt this worker holds: nobody else sends the delivery until it is finished or its
/// lease lapses.
#[derive(Debug, Clone, Copy)]
pub struct Claim {
    /// The delivery.
    pub id: Uuid,
    /// Which attempt this is (1 for the first).
    pub attempt: i32,
}

/// Claims the next attempt of a pending, due delivery that nobody is sending, for `lease`, and
/// logs the attempt's start. `None`: not pending, not due, or being sent.
pub async fn claim(pool: &PgPool, id: Uuid, lease: Duration) -> Result<Option<Claim>, sqlx::Error> {
    let attempt: Option<i32> = sqlx::query_scalar(
        "WITH claimed AS (
             UPDATE webhook_deliveries
             SET attempts = attempts + 1, lease_until = now() + make_interval(secs => $2),
                 scheduled_until = NULL
             WHERE id = $1 AND status = 'pending' AND next_attempt_at <= now()
               AND (lease_until IS NULL OR lease_until < now())
             RETURNING id, attempts),
         logged AS (INSERT INTO webhook_attempts (delivery_id, attempt) SELECT id, attempts FROM claimed)
         SELECT attempts FROM claimed",
    )
    .bind(id)
    .bind(lease.as_secs_f64())
    .fetch_optional(pool)
    .await?;
    Ok(attempt.map(|attempt| Claim { id, attempt }))
}

/// What came of an attempt.
#[derive(Debug, Clone)]
pub struct AttemptOutcome {
    /// The answer's status, if one came.
    pub status_code: Option<u16>,
    /// How long it took.
    pub latency: Duration,
    /// What went wrong (`None` for a 2xx).
    pub error: Option<String>,
    /// What it means for the delivery.
    pub verdict: Verdict,
}

/// What an attempt means for its delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// A 2xx: delivered.
    Delivered,
    /// 410 Gone: the endpoint does not want deliveries any more; it is disabled (a default
    /// endpoint) and this delivery ends `failed`.
    Gone,
    /// The address was refused (private) or the URL cannot be called: ends `failed`.
    Refused,
    /// Anything else (an error status, a timeout, a connection error): tried again after the
    /// schedule's next pause, or `failed` when the schedule is spent.
    TryAgain,
}

/// How a delivery stands after an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finished {
    /// Delivered.
    Delivered,
    /// Tried again after this long.
    Retrying(Duration),
    /// Failed for good.
    Failed,
    /// Someone else finished or took over the delivery meanwhile (this worker's lease lapsed):
    /// only the attempt's log was written.
    Superseded,
}

/// Records an attempt's outcome and moves its delivery on, in one transaction; with a default
/// endpoint's failure streak (cleared by a success; disabling the endpoint once it is older than
/// `disable_after`, or at once on 410). Returns how the delivery stands, and the endpoint's
/// disabling reason if this disabled it.
pub async fn finish(
    pool: &PgPool,
    claim: Claim,
    outcome: &AttemptOutcome,
    schedule: &[Duration],
    disable_after: Duration,
) -> Result<(Finished, Option<String>), sqlx::Error> {
    let mut tx = pool.begin().await?;
    let latency_ms = i32::try_from(outcome.latency.as_millis()).unwrap_or(i32::MAX);
    sqlx::query(
        "UPDATE webhook_attempts SET status_code = $3, latency_ms = $4, error = $5
         WHERE delivery_id = $1 AND attempt = $2",
    )
    .bind(claim.id)
    .bind(claim.attempt)
    .bind(outcome.status_code.map(|s| i16::try_from(s).unwrap_or(i16::MAX)))
    .bind(latency_ms)
    .bind(&outcome.error)
    .execute(&mut *tx)
    .await?;
    // Attempt n failed: the n-th pause, if the schedule has one.
    let pause = usize::try_from(claim.attempt - 1).ok().and_then(|n| schedule.get(n)).copied();
    let mut finished = match (outcome.verdict, pause) {
        (Verdict::Delivered, _) => Finished::Delivered,
        (Verdict::TryAgain, Some(pause)) => Finished::Retrying(pause),
        _ => Finished::Failed,
    };
    let (status, retry_in) = match finished {
        Finished::Delivered => (DeliveryStatus::Delivered, None),
        Finished::Retrying(pause) => (DeliveryStatus::Pending, Some(pause.as_secs_f64())),
        _ => (DeliveryStatus::Failed, None),
    };
    let last_error = match (&outcome.error, finished) {
        (Some(error), Finished::Failed) if outcome.verdict == Verdict::TryAgain => {
            Some(format!("{error} (gave up after {} attempts)", claim.attempt))
        }
        (error, _) => error.clone(),
    };
    let endpoint: Option<Option<Uuid>> = sqlx::query_scalar(
        "UPDATE webhook_deliveries SET
             status = $3, lease_until = NULL, last_error = $5,
             next_attempt_at = CASE WHEN $3 = 'pending' THEN now() + make_interval(secs => $4) END,
             finished_at = CASE WHEN $3 = 'pending' THEN NULL ELSE now() END
         WHERE id = $1 AND attempts = $2 AND status = 'pending'
         RETURNING endpoint_id",
    )
    .bind(claim.id)
    .bind(claim.attempt)
    .bind(status)
    .bind(retry_in)
    .bind(&last_error)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(endpoint) = endpoint else {
        tx.commit().await?;
        return Ok((Finished::Superseded, None));
    };
    let mut disabled: Option<String> = None;
    if let Some(endpoint) = endpoint {
        let reason = match outcome.verdict {
            Verdict::Delivered => None,
            Verdict::Gone => Some("the endpoint answered 410 Gone".to_owned()),
            Verdict::Refused | Verdict::TryAgain => {
                let error = outcome.error.as_deref().unwrap_or("error");
                Some(format!(
                    "every attempt failed for {}; the last: {error}",
                    humanize(disable_after)
                ))
            }
        };
        // A success clears the streak; a failure starts it (or keeps its start), and disables the
        // endpoint when it is old enough, or at once on 410.
        disabled = sqlx::query_scalar(
            "UPDATE webhook_endpoints SET
                 failing_since = CASE WHEN $2 THEN NULL ELSE COALESCE(failing_since, now()) END,
                 disabled_at = CASE WHEN disabled_at IS NULL AND ($3 OR (NOT $2 AND failing_since < now() - make_interval(secs => $4)))
                                    THEN now() ELSE disabled_at END,
                 disabled_reason = CASE WHEN disabled_at IS NULL AND ($3 OR (NOT $2 AND failing_since < now() - make_interval(secs => $4)))
                                        THEN $5 ELSE disabled_reason END
             WHERE id = $1
             RETURNING CASE WHEN disabled_reason = $5 AND disabled_at = now() THEN disabled_reason END",
        )
        .bind(endpoint)
        .bind(outcome.verdict == Verdict::Delivered)
        .bind(outcome.verdict == Verdict::Gone)
        .bind(disable_after.as_secs_f64())
        .bind(reason)
        .fetch_optional(&mut *tx)
        .await?
        .flatten();
        if let Some(reason) = &disabled {
            // This delivery too, if it was to be tried again.
            abandon_endpoint(&mut *tx, endpoint, reason).await?;
            if let Finished::Retrying(_) = finished {
                finished = Finished::Failed;
            }
        }
    }
    tx.commit().await?;
    Ok((finished, disabled))
}

/// "5 days", "2 h", "30 s": a duration as an operator reads it.
fn humanize(d: Duration) -> String {
    let secs = d.as_secs();
    match secs {
        s if s >= 86_400 && s % 86_400 == 0 => format!("{} days", s / 86_400),
        s if s >= 3_600 => format!("{:.1} h", s as f64 / 3_600.0),
        s if s >= 60 => format!("{:.1} min", s as f64 / 60.0),
        s => format!("{s} s"),
    }
}

/// Ends the pending deliveries of a disabled endpoint that nobody is sending now (one being sent
/// ends when its attempt does, or is abandoned by its next message); returns how many.
pub async fn abandon_endpoint(
    executor: impl PgExecutor<'_>,
    endpoint: Uuid,
    reason: &str,
) -> Result<u64, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE webhook_deliveries SET status = 'failed', next_attempt_at = NULL,
             scheduled_until = NULL, last_error = 'endpoint disabled: ' || $2, finished_at = now()
         WHERE endpoint_id = $1 AND status = 'pending' AND (lease_until IS NULL OR lease_until < now())",
    )
    .bind(endpoint)
    .bind(reason)
    .execute(executor)
    .await?;
    Ok(done.rows_affected())
}

/// Ends a pending delivery without an attempt (its endpoint was disabled meanwhile).
pub async fn abandon(
    executor: impl PgExecutor<'_>,
    id: Uuid,
    why: &str,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE webhook_deliveries SET status = 'failed', next_attempt_at = NULL, lease_until = NULL,
             scheduled_until = NULL, last_error = $2, finished_at = now()
         WHERE id = $1 AND status = 'pending'",
    )
    .bind(id)
    .bind(why)
    .execute(executor)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Takes up to `limit` deliveries that are due and that nobody sends or has been asked to (their
/// lease and their last publication lapsed), marks them published for `lease`, and returns them
/// for the scheduler to publish: a retry whose time came, a delivery whose worker died, a
/// redelivery an operator asked for.
pub async fn take_due(
    executor: impl PgExecutor<'_>,
    lease: Duration,
    limit: i64,
) -> Result<Vec<(Uuid, GenerationId, String)>, sqlx::Error> {
    sqlx::query_as(
        "UPDATE webhook_deliveries d SET scheduled_until = now() + make_interval(secs => $1)
         WHERE d.id IN (SELECT id FROM webhook_deliveries
                        WHERE status = 'pending' AND next_attempt_at <= now()
                          AND (lease_until IS NULL OR lease_until < now())
                          AND (scheduled_until IS NULL OR scheduled_until < now())
                        ORDER BY next_attempt_at LIMIT $2 FOR UPDATE SKIP LOCKED)
         RETURNING d.id, d.generation_id, d.event",
    )
    .bind(lease.as_secs_f64())
    .bind(limit)
    .fetch_all(executor)
    .await
}

/// Makes a delivery due again now, whatever became of it: it gets one more attempt (and the
/// retries the schedule has left, if any), with the same id and body. A delivery being sent right
/// now keeps its lease: that attempt's outcome decides (two attempts never run at once).
/// `None`: no such delivery.
pub async fn redeliver(
    executor: impl PgExecutor<'_>,
    id: Uuid,
) -> Result<Option<DeliveryView>, sqlx::Error> {
    let sql = format!(
        "WITH again AS (
             UPDATE webhook_deliveries SET status = 'pending', next_attempt_at = now(),
                 scheduled_until = NULL, finished_at = NULL
             WHERE id = $1 RETURNING *)
         SELECT {VIEW_COLUMNS} FROM again d"
    );
    let row: Option<ViewRow> =
        sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(id).fetch_optional(executor).await?;
    Ok(row.map(ViewRow::into_view))
}

/// One attempt, as the delivery log shows it.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct AttemptView {
    /// 1 for the first.
    pub attempt: i32,
    /// When it started.
    #[serde(with = "time::serde::rfc3339")]
    pub started_at: OffsetDateTime,
    /// The answer's status, if one came.
    pub status_code: Option<i16>,
    /// How long it took.
    pub latency_ms: Option<i32>,
    /// What went wrong; an attempt without a status or an error was cut short (its worker
    /// stopped) and is made again.
    pub error: Option<String>,
}

/// A delivery, as its owner and operators see it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeliveryView {
    /// The `webhook-id` every attempt carries (`msg_…`).
    pub id: String,
    /// The generation.
    pub generation_id: GenerationId,
    /// The event.
    pub event: String,
    /// Where it goes.
    pub url: String,
    /// The body's shape: `standard`, or `kling` (a Kling request's `callback_url`).
    pub format: Format,
    /// The default endpoint it goes to (`None`: the URL the request named).
    pub endpoint_id: Option<Uuid>,
    /// How it stands.
    pub status: DeliveryStatus,
    /// Attempts made.
    pub attempts: i32,
    /// When the next attempt is due (pending only).
    #[serde(with = "time::serde::rfc3339::option")]
    pub next_attempt_at: Option<OffsetDateTime>,
    /// The last attempt's error.
    pub last_error: Option<String>,
    /// When the event happened (the delivery was made).
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// When it was delivered or failed.
    #[serde(with = "time::serde::rfc3339::option")]
    pub finished_at: Option<OffsetDateTime>,
    /// Every attempt, first first.
    pub attempt_log: Vec<AttemptView>,
}

#[derive(sqlx::FromRow)]
struct ViewRow {
    id: Uuid,
    generation_id: GenerationId,
    event: String,
    url: String,
    format: String,
    endpoint_id: Option<Uuid>,
    status: DeliveryStatus,
    attempts: i32,
    next_attempt_at: Option<OffsetDateTime>,
    last_error: Option<String>,
    created_at: OffsetDateTime,
    finished_at: Option<OffsetDateTime>,
    attempt_log: sqlx::types::Json<Vec<AttemptView>>,
}

impl ViewRow {
    fn into_view(self) -> DeliveryView {
        DeliveryView {
            id: webhook_id(self.id),
            generation_id: self.generation_id,
            event: self.event,
            url: self.url,
            format: Format::from_stored(&self.format),
            endpoint_id: self.endpoint_id,
            status: self.status,
            attempts: self.attempts,
            next_attempt_at: self.next_attempt_at,
            last_error: self.last_error,
            created_at: self.created_at,
            finished_at: self.finished_at,
            attempt_log: self.attempt_log.0,
        }
    }
}

/// The columns of a [`DeliveryView`], from `webhook_deliveries d`.
const VIEW_COLUMNS: &str = "
    d.id, d.generation_id, d.event, d.url, d.format, d.endpoint_id, d.status, d.attempts, d.next_attempt_at,
    d.last_error, d.created_at, d.finished_at,
    (SELECT COALESCE(json_agg(json_build_object(
                'attempt', a.attempt,
                'started_at', a.started_at,
                'status_code', a.status_code, 'latency_ms', a.latency_ms, 'error', a.error)
             ORDER BY a.attempt), '[]'::json)
     FROM webhook_attempts a WHERE a.delivery_id = d.id) AS attempt_log";

/// The deliveries of a generation, oldest first (`owner`: only if the generation is theirs;
/// `None` when it is not, or does not exist).
pub async fn of_generation(
    pool: &PgPool,
    generation: GenerationId,
    owner: Option<UserId>,
) -> Result<Option<Vec<DeliveryView>>, sqlx::Error> {
    let visible: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM generations WHERE id = $1 AND ($2::uuid IS NULL OR user_id = $2))",
    )
    .bind(generation)
    .bind(owner)
    .fetch_one(pool)
    .await?;
    if !visible {
        return Ok(None);
    }
    let sql = format!(
        "SELECT {VIEW_COLUMNS} FROM webhook_deliveries d WHERE d.generation_id = $1
         ORDER BY d.created_at, d.id"
    );
    let rows: Vec<ViewRow> =
        sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(generation).fetch_all(pool).await?;
    Ok(Some(rows.into_iter().map(ViewRow::into_view).collect()))
}

/// One delivery, by its id or its `webhook-id` (`msg_…`).
pub async fn get(
    executor: impl PgExecutor<'_>,
    id: Uuid,
) -> Result<Option<DeliveryView>, sqlx::Error> {
    let sql = format!("SELECT {VIEW_COLUMNS} FROM webhook_deliveries d WHERE d.id = $1");
    let row: Option<ViewRow> =
        sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(id).fetch_optional(executor).await?;
    Ok(row.map(ViewRow::into_view))
}

/// Which deliveries an operator lists.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Only these.
    pub status: Option<DeliveryStatus>,
    /// Only this user's.
    pub user: Option<UserId>,
    /// Only this generation's.
    pub generation: Option<GenerationId>,
    /// At most this many (newest first).
    pub limit: i64,
}

/// Deliveries, newest first.
pub async fn list(
    executor: impl PgExecutor<'_>,
    filter: &Filter,
) -> Result<Vec<DeliveryView>, sqlx::Error> {
    let sql = format!(
        "SELECT {VIEW_COLUMNS} FROM webhook_deliveries d
         WHERE ($1::text IS NULL OR d.status = $1) AND ($2::uuid IS NULL OR d.user_id = $2)
           AND ($3::uuid IS NULL OR d.generation_id = $3)
         ORDER BY d.created_at DESC, d.id DESC LIMIT $4"
    );
    let rows: Vec<ViewRow> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(filter.status)
        .bind(filter.user)
        .bind(filter.generation)
        .bind(filter.limit)
        .fetch_all(executor)
        .await?;
    Ok(rows.into_iter().map(ViewRow::into_view).collect())
}

/// Reads a delivery id as an operator or client writes it: `msg_` and 32 hex digits, or a UUID.
pub fn parse_id(text: &str) -> Option<Uuid> {
    let hex = text.strip_prefix("msg_").unwrap_or(text);
    Uuid::try_parse(hex).ok()
}
