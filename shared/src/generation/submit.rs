//! Accepting a generation: one transaction that checks the idempotency key, inserts the
//! generation, reserves (prepaid) or checks (postpaid) the credits, enforces the in-flight limit,
//! logs the submit and puts the job message in the outbox (see [`crate::outbox`]). Either all of
//! it happens or none.
//!
//! Many submits can share one transaction ([`submit_batch`]): the commit, a WAL flush, is the
//! largest cost of a submit, and a batch pays it once. Each submit of a batch still happens
//! entirely or not at all, in a savepoint of its own.

use std::collections::BTreeMap;
use std::sync::{Arc, LazyLock};

use serde_json::json;

use super::callback_token::CallbackKeys;
use super::store::{self, GenerationView, VIEW_COLUMNS, ViewRow};
use super::{Billing, GenerationStatus};
use crate::catalogue::Submission;
use crate::client_webhooks::Subscription;
use crate::db::{Transient, Tx};
use crate::ids::{ApiKeyId, GenerationId, GrantId, UserId};
use crate::ledger::{self, BookUser, BookWrites, LedgerError, LedgerGeneration};
use crate::queue::{Envelope, payloads};
use sqlx::PgPool;
use sqlx::types::Json;

/// Who submits, and how.
#[derive(Debug, Clone)]
pub struct SubmitRequest {
    /// The owner.
    pub user_id: UserId,
    /// The API key used.
    pub api_key_id: Option<ApiKeyId>,
    /// The validated, priced request.
    pub submission: Submission,
    /// The client's `Idempotency-Key`.
    pub idempotency_key: Option<String>,
    /// The in-flight limit for users without their own.
    pub default_max_in_flight: i32,
    /// Where the client wants to be told of its events (`webhook_url`, `webhook_events`).
    pub webhook: Option<Subscription>,
}

/// What a submit did.
#[derive(Debug, Clone)]
pub enum SubmitOutcome {
    /// A new generation.
    Created(GenerationView),
    /// The idempotency key was used before with the same request: that generation, as it was
    /// accepted.
    Replayed(GenerationView),
}

/// Why a submit was refused; nothing was written.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    /// The idempotency key was used before with a different request.
    #[error("idempotency key already used with a different request")]
    IdempotencyConflict,
    /// A concurrent request with the same idempotency key committed first; running the
    /// transaction again replays it.
    #[error("a concurrent request with the same idempotency key won")]
    IdempotencyRace,
    /// The user has too many jobs in flight.
    #[error("{in_flight} jobs in flight; the limit is {limit}")]
    TooManyInFlight {
        /// The user's limit.
        limit: i32,
        /// Jobs already queued or submitted (the refused one not counted).
        in_flight: i64,
    },
    /// Not enough credits, or debt.
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    /// A database failure.
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    /// The transaction this submit shared with others failed as a whole (its commit, or the
    /// connection): nothing of the batch was written.
    #[error("the batch's transaction failed: {0}")]
    Batch(Arc<sqlx::Error>),
}

impl Transient for SubmitError {
    fn is_transient(&self) -> bool {
        match self {
            SubmitError::IdempotencyRace => true,
            SubmitError::Ledger(err) => err.is_transient(),
            SubmitError::Database(err) => err.is_transient(),
            SubmitError::Batch(err) => err.is_transient(),
            _ => false,
        }
    }
}

/// Accepts one generation (see the module docs): the rules every submit of a batch follows, and
/// how [`submit_batch`] applies them one by one. [`SubmitError::IdempotencyRace`] says to run it
/// again, which then replays the winner.
async fn submit(
    tx: &mut Tx,
    request: &SubmitRequest,
    keys: &CallbackKeys,
) -> Result<SubmitOutcome, SubmitError> {
    let submission = &request.submission;
    if let Some(key) = &request.idempotency_key {
        let earlier: Option<(GenerationId, Option<Vec<u8>>)> = sqlx::query_as(
            "SELECT id, request_hash FROM generations WHERE user_id = $1 AND idempotency_key = $2",
        )
        .bind(request.user_id)
        .bind(key)
        .fetch_optional(&mut **tx)
        .await?;
        if let Some((id, hash)) = earlier {
            if hash.as_deref() != Some(&submission.request_hash[..]) {
                return Err(SubmitError::IdempotencyConflict);
            }
            let view = store::view(&mut **tx, id, Some(request.user_id))
                .await?
                .expect("the row was just read");
            return Ok(SubmitOutcome::Replayed(as_accepted(view)));
        }
    }

    let row = NewRow::of(request, keys);
    let id = row.id;
    let model = &submission.model;
    let inserted = insert_rows(tx, &[(request, row)], &BookWrites::default()).await;
    if let Err(SubmitError::Database(sqlx::Error::Database(err))) = &inserted
        && err.constraint() == Some("generations_idempotency_key")
    {
        return Err(SubmitError::IdempotencyRace);
    }
    inserted?;

    let generation = LedgerGeneration { id, user_id: request.user_id, media: model.media };
    match model.billing {
        Billing::Prepaid => ledger::reserve(tx, &generation, submission.cost).await?,
        Billing::Postpaid => ledger::hold(tx, &generation, submission.cost).await?,
    }

    // The audit row and the job message were written with the generation (`insert_rows`); one
    // statement reads back what the client is answered plus the in-flight count. The ledger
    // locked the user row above, so concurrent submits of this user count one at a time; a
    // refusal rolls the whole transaction back, these inserts included.
    let sql = format!(
        "SELECT {VIEW_COLUMNS},
                COALESCE(u.max_in_flight, $3) AS in_flight_limit,
                (SELECT count(*) FROM generations f
                 WHERE f.user_id = u.id AND f.status = ANY($4)) AS in_flight
         FROM generations g JOIN users u ON u.id = g.user_id
         WHERE g.id = $1 AND g.user_id = $2"
    );
    let accepted: Accepted = sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(id)
        .bind(request.user_id)
        .bind(request.default_max_in_flight)
        .bind(&GenerationStatus::IN_FLIGHT[..])
        .fetch_one(&mut **tx)
        .await?;
    // The count includes the row just inserted (and rolled back with this error).
    let before = accepted.in_flight - 1;
    if before >= i64::from(accepted.in_flight_limit) {
        return Err(SubmitError::TooManyInFlight {
            limit: accepted.in_flight_limit,
            in_flight: before,
        });
    }
    metrics::counter!("gengate_generations_submitted_total", "model" => model.name.clone())
        .increment(1);
    Ok(SubmitOutcome::Created(accepted.view.into_view(false)))
}

/// The parts of a new generation's row that are made, not copied from the request.
struct NewRow {
    id: GenerationId,
    token_hash: [u8; 32],
    key_version: i16,
    /// What the provider receives, plus what the worker needs of the submit (metadata, the
    /// client's own negative prompt, the adapter options and expected usage in force).
    params: serde_json::Value,
    deadline_secs: f64,
}

impl NewRow {
    fn of(request: &SubmitRequest, keys: &CallbackKeys) -> Self {
        let id = GenerationId::new();
        let (_token, token_hash, key_version) = keys.issue(id);
        let submission = &request.submission;
        let model = &submission.model;
        let mut params = serde_json::to_value(&submission.params).expect("params serialize");
        params["metadata"] = submission.metadata.clone();
        if let Some(negative) = &submission.client_negative_prompt {
            params["client_negative_prompt"] = negative.as_str().into();
        }
        // The adapter options in force when the job was accepted (and priced) travel with it.
        params["provider_options"] =
            serde_json::to_value(&model.options).expect("options serialize");
        // What the provider is expected to report using, for settling at reported usage.
        if let Some(units) = model.expected_units(submission.params.duration) {
            params["expected_units"] = units.into();
        }
        Self { id, token_hash, key_version, params, deadline_secs: model.deadline.as_secs_f64() }
    }
}

/// The submit's audit row detail.
fn submit_detail(submission: &Submission) -> serde_json::Value {
    json!({"cost": submission.cost, "price_version": submission.catalogue_version})
}

/// How many times one submit of a batch runs again after a deadlock, a serialization failure or a
/// lost idempotency-key race (which then replays the winner) before it is answered with the error.
const BATCH_ITEM_ATTEMPTS: u32 = 4;

/// Accepts many submits in one transaction: each submit happens entirely or not at all, so a
/// refused one (no credits, an idempotency conflict, too many in flight, a value PostgreSQL
/// refuses) gets its own error while its neighbours are kept. Each result is what the submit
/// alone would have been answered, in the order of `requests`.
///
/// The batch's users are locked first, all in one statement and in one order, so that batches
/// running at once cannot deadlock one another (a submit locks its user only after inserting its
/// row, which is safe for one submit per transaction but not for several). Submits are then
/// applied in the order given, each seeing the ones before it: of two submits with one
/// idempotency key the second replays the first, and a user's credits go to the earlier ones.
///
/// Most batches are planned and written at once, in five round trips whatever their size (a lone
/// submit's latency is mostly round trips). What that path cannot take (a key used before, a user
/// with debt) goes one by one, each submit in a savepoint of its own, in the same transaction;
/// a statement of the at-once path that fails sends the batch one by one in a new transaction.
///
/// An `Err` is a failure of the transaction itself (the connection, the commit): nothing of the
/// batch was written, and every submit failed.
pub async fn submit_batch(
    pool: &PgPool,
    requests: &[SubmitRequest],
    keys: &CallbackKeys,
) -> Result<Vec<Result<SubmitOutcome, SubmitError>>, sqlx::Error> {
    let mut users: Vec<UserId> = requests.iter().map(|r| r.user_id).collect();
    users.sort_unstable();
    users.dedup();
    let mut tx = begin_locking(pool, &users, Plans::Generic).await?;
    match submit_at_once(&mut tx, requests, &users, keys).await {
        Ok(Some(results)) => {
            tx.commit().await?;
            metrics::counter!("gengate_submit_batches_total", "path" => "at_once").increment(1);
            return Ok(results);
        }
        // Nothing was written: the same transaction goes on one by one, planned as usual.
        Ok(None) => {
            sqlx::raw_sql("SET LOCAL plan_cache_mode = auto").execute(&mut *tx).await?;
        }
        Err(err) => {
            tracing::info!(error = %err, "a batch of submits is written one by one");
            tx.rollback().await?;
            tx = begin_locking(pool, &users, Plans::Auto).await?;
        }
    }
    metrics::counter!("gengate_submit_batches_total", "path" => "one_by_one").increment(1);
    let results = submit_one_by_one(&mut tx, requests, keys).await?;
    tx.commit().await?;
    Ok(results)
}

/// How the statements of a batch's transaction are planned.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Plans {
    /// Once per connection (`plan_cache_mode = force_generic_plan`): the at-once path's two
    /// statements are written for it. PostgreSQL would otherwise plan them afresh for every
    /// batch, which took about half of a lone submit's time in the database.
    Generic,
    /// As PostgreSQL chooses: the one-by-one path's statements are shared with the rest of the
    /// code and were not written for generic plans.
    Auto,
}

/// Begins a batch's transaction, sets how it is planned, and locks its users' rows (in id order).
///
/// `BEGIN` and `SET LOCAL` go as one simple query, the locks as a statement of their own inside
/// the transaction. Taking locks can fail (a deadlock, a lock wait cut short): inside the `BEGIN`
/// statement such a failure left the connection in an aborted transaction that sqlx, which rolls
/// back only a transaction it has seen begin, returned to the pool, and every later user of that
/// connection failed. Inside the transaction, a failure drops it and sqlx rolls it back.
async fn begin_locking(pool: &PgPool, users: &[UserId], plans: Plans) -> Result<Tx, sqlx::Error> {
    let mut tx = match plans {
        Plans::Generic => {
            pool.begin_with("BEGIN; SET LOCAL plan_cache_mode = force_generic_plan").await?
        }
        Plans::Auto => pool.begin().await?,
    };
    let ids: Vec<uuid::Uuid> = users.iter().map(|user| user.0).collect();
    sqlx::query("SELECT FROM users WHERE id = ANY($1) ORDER BY id FOR NO KEY UPDATE")
        .bind(ids)
        .execute(&mut *tx)
        .await?;
    Ok(tx)
}

/// One user of a batch as [`submit_at_once`] reads them: id, debt, held, usable grants (see
/// [`ledger::book_user_columns`]), in-flight limit and count, and whether any of the batch's
/// idempotency keys was used before (the same for every row).
type BatchUser = (UserId, i64, i64, Json<Vec<(GrantId, i64)>>, i32, i64, bool);

/// What [`submit_at_once`] reads, in one statement: the users' credits side (their grants
/// locked), their limits and jobs in flight, and whether any of the batch's idempotency keys was
/// used before. Built once. The in-flight statuses are written out (constants of this code), not
/// bound: the statement runs with a generic plan (see `begin_locking`), which uses the in-flight
/// partial index only if it can see the statuses.
static READ_BATCH: LazyLock<String> = LazyLock::new(|| {
    let in_flight_statuses: Vec<String> =
        GenerationStatus::IN_FLIGHT.iter().map(|s| format!("'{}'", s.as_str())).collect();
    format!(
        "SELECT u.id, {}, COALESCE(u.max_in_flight, $2),
                (SELECT count(*) FROM generations f
                 WHERE f.user_id = u.id AND f.status IN ({})),
                EXISTS (SELECT 1 FROM generations g
                        JOIN UNNEST($3::uuid[], $4::text[]) AS k(user_id, key)
                          ON g.user_id = k.user_id AND g.idempotency_key = k.key)
         FROM users u WHERE u.id = ANY($1)",
        ledger::book_user_columns(),
        in_flight_statuses.join(", ")
    )
});

/// What became of one submit of a batch planned at once.
enum Planned {
    /// Accepted: the `n`th new row.
    Created(usize),
    /// The same key and request as the `n`th new row, earlier in the batch.
    Replayed(usize),
    /// Refused.
    Refused(SubmitError),
}

/// Plans the whole batch from one read of its users' credits, holds and jobs in flight, by the
/// rules [`submit`] applies one at a time, and writes it with a statement per table. `None`
/// (nothing written) where the batch needs [`submit`] itself: an idempotency key used before
/// this batch (its answer is the stored generation), a user with debt, or an unknown user.
async fn submit_at_once(
    tx: &mut Tx,
    requests: &[SubmitRequest],
    users: &[UserId],
    keys: &CallbackKeys,
) -> Result<Option<Vec<Result<SubmitOutcome, SubmitError>>>, SubmitError> {
    let default_limit = requests.first().map_or(0, |r| r.default_max_in_flight);
    if requests.iter().any(|r| r.default_max_in_flight != default_limit) {
        return Ok(None);
    }
    let (key_users, key_names): (Vec<UserId>, Vec<&str>) =
        requests.iter().filter_map(|r| Some((r.user_id, r.idempotency_key.as_deref()?))).unzip();
    // One statement (`READ_BATCH`).
    let found: Vec<BatchUser> = sqlx::query_as(sqlx::AssertSqlSafe(READ_BATCH.as_str()))
        .bind(users)
        .bind(default_limit)
        .bind(&key_users)
        .bind(&key_names)
        .fetch_all(&mut **tx)
        .await?;
    if found.iter().any(|row| row.6) {
        return Ok(None);
    }
    let mut in_flight: BTreeMap<UserId, (i32, i64)> = BTreeMap::new();
    let mut book_users: Vec<BookUser> = Vec::with_capacity(found.len());
    for (user, debt, held, grants, limit, count, _) in found {
        in_flight.insert(user, (limit, count));
        book_users.push((user, debt, held, grants));
    }
    let Some(mut book) = ledger::SubmitBook::of(users, book_users) else {
        return Ok(None);
    };

    let mut rows: Vec<(&SubmitRequest, NewRow)> = Vec::new();
    let mut claimed: BTreeMap<(UserId, &str), usize> = BTreeMap::new();
    let mut planned = Vec::with_capacity(requests.len());
    for request in requests {
        let submission = &request.submission;
        let key = request.idempotency_key.as_deref();
        if let Some(&earlier) = key.and_then(|k| claimed.get(&(request.user_id, k))) {
            let same = rows[earlier].0.submission.request_hash == submission.request_hash;
            planned.push(if same {
                Planned::Replayed(earlier)
            } else {
                Planned::Refused(SubmitError::IdempotencyConflict)
            });
            continue;
        }
        // The checks in the order `submit` makes them: credits, then jobs in flight.
        if let Err(err) = book.covers(request.user_id, submission.cost) {
            planned.push(Planned::Refused(err.into()));
            continue;
        }
        let Some((limit, count)) = in_flight.get_mut(&request.user_id) else {
            return Ok(None);
        };
        if *count >= i64::from(*limit) {
            planned.push(Planned::Refused(SubmitError::TooManyInFlight {
                limit: *limit,
                in_flight: *count,
            }));
            continue;
        }
        *count += 1;
        let row = NewRow::of(request, keys);
        let generation = LedgerGeneration {
            id: row.id,
            user_id: request.user_id,
            media: submission.model.media,
        };
        match submission.model.billing {
            Billing::Prepaid => book.reserve(generation, submission.cost)?,
            Billing::Postpaid => book.hold(generation, submission.cost)?,
        }
        if let Some(key) = key {
            claimed.insert((request.user_id, key), rows.len());
        }
        planned.push(Planned::Created(rows.len()));
        rows.push((request, row));
    }

    let views: BTreeMap<GenerationId, GenerationView> = if rows.is_empty() {
        BTreeMap::new()
    } else {
        let views = insert_rows(tx, &rows, &book.into_writes()).await?;
        views.into_iter().map(|v| (v.id, v)).collect()
    };
    for (request, _) in &rows {
        let model = request.submission.model.name.clone();
        metrics::counter!("gengate_generations_submitted_total", "model" => model).increment(1);
    }
    let view_of = |n: usize| {
        views.get(&rows[n].1.id).cloned().ok_or_else(|| {
            SubmitError::Database(sqlx::Error::Protocol(
                "a new generation was not read back".into(),
            ))
        })
    };
    let mut results = Vec::with_capacity(planned.len());
    for plan in planned {
        results.push(match plan {
            Planned::Created(n) => Ok(SubmitOutcome::Created(as_accepted(view_of(n)?))),
            Planned::Replayed(n) => Ok(SubmitOutcome::Replayed(as_accepted(view_of(n)?))),
            Planned::Refused(err) => Err(err),
        });
    }
    Ok(Some(results))
}

/// What [`insert_rows`] runs, built once: the generations, their `submit` audit rows, their job
/// messages (the outbox) and their credits, in one statement. The foreign keys to the generations
/// are checked at the end of the statement, when the generations exist.
static INSERT_ROWS: LazyLock<String> = LazyLock::new(|| {
    format!(
        "WITH created AS (
         INSERT INTO generations
             (id, user_id, api_key_id, status, type, sub_type, model, mode, provider, provider_model,
              billing, params, cost, price_version, webhook_token_hash, webhook_key_version,
              idempotency_key, request_hash, deadline_at, webhook_url, webhook_events, webhook_format)
         SELECT id, user_id, api_key_id, $4, type, sub_type, model, mode, provider, provider_model,
                billing, params, cost, price_version, token_hash, key_version, idempotency_key,
                request_hash, now() + make_interval(secs => deadline), hook_url,
                string_to_array(hook_events, ','), COALESCE(hook_format, 'standard')
         FROM UNNEST($1::uuid[], $2::uuid[], $3::uuid[], $5::text[], $6::text[], $7::text[],
                     $8::text[], $9::text[], $10::text[], $11::text[], $12::jsonb[], $13::bigint[],
                     $14::text[], $15::bytea[], $16::smallint[], $17::text[], $18::bytea[],
                     $19::float8[], $24::text[], $25::text[], $26::text[])
           AS r(id, user_id, api_key_id, type, sub_type, model, mode, provider, provider_model,
                billing, params, cost, price_version, token_hash, key_version, idempotency_key,
                request_hash, deadline, hook_url, hook_events, hook_format)
         RETURNING *),
         event AS (
             INSERT INTO generation_events (generation_id, from_status, to_status, cause, detail)
             SELECT id, NULL, $4, 'submit', detail FROM UNNEST($1::uuid[], $20::jsonb[]) AS e(id, detail)),
         queued AS (
             INSERT INTO outbox (message_id, routing_key, body)
             SELECT * FROM UNNEST($21::uuid[], $22::text[], $23::jsonb[])),
         {book_ctes}
         SELECT {VIEW_COLUMNS}, {book_counts} FROM created g",
        book_ctes = BookWrites::ctes(27),
        book_counts = BookWrites::COUNTS
    )
});

/// What [`insert_rows`] reads back of each new generation.
#[derive(sqlx::FromRow)]
struct Inserted {
    #[sqlx(flatten)]
    view: ViewRow,
    grants_adjusted: i64,
    entries_written: i64,
}

/// Inserts new generations, `queued`, with their audit rows, their job messages and the batch's
/// reservations and holds (`book`), in one statement, and returns them as their owners see them,
/// but for what the statement cannot see of itself (their charge): [`as_accepted`] completes them.
async fn insert_rows(
    tx: &mut Tx,
    rows: &[(&SubmitRequest, NewRow)],
    book: &BookWrites,
) -> Result<Vec<GenerationView>, SubmitError> {
    let column = |f: &dyn Fn(&SubmitRequest, &NewRow) -> String| -> Vec<String> {
        rows.iter().map(|(r, row)| f(r, row)).collect()
    };
    let ids: Vec<GenerationId> = rows.iter().map(|(_, row)| row.id).collect();
    let users: Vec<UserId> = rows.iter().map(|(r, _)| r.user_id).collect();
    let api_keys: Vec<Option<ApiKeyId>> = rows.iter().map(|(r, _)| r.api_key_id).collect();
    let sub_types: Vec<Option<String>> =
        rows.iter().map(|(r, _)| r.submission.params.sub_type.clone()).collect();
    let params: Vec<&serde_json::Value> = rows.iter().map(|(_, row)| &row.params).collect();
    let costs: Vec<i64> = rows.iter().map(|(r, _)| r.submission.cost).collect();
    let token_hashes: Vec<&[u8]> = rows.iter().map(|(_, row)| &row.token_hash[..]).collect();
    let key_versions: Vec<i16> = rows.iter().map(|(_, row)| row.key_version).collect();
    let idempotency_keys: Vec<Option<&str>> =
        rows.iter().map(|(r, _)| r.idempotency_key.as_deref()).collect();
    let request_hashes: Vec<&[u8]> =
        rows.iter().map(|(r, _)| &r.submission.request_hash[..]).collect();
    let deadlines: Vec<f64> = rows.iter().map(|(_, row)| row.deadline_secs).collect();
    let details: Vec<serde_json::Value> =
        rows.iter().map(|(r, _)| submit_detail(&r.submission)).collect();
    let envelopes: Vec<Envelope> =
        ids.iter().map(|id| Envelope::of(*id, &payloads::SubmitJob {})).collect();
    let message_ids: Vec<uuid::Uuid> = envelopes.iter().map(|e| e.message_id).collect();
    let routing_keys: Vec<&str> = envelopes.iter().map(|e| e.kind.routing_key()).collect();
    let bodies: Vec<serde_json::Value> = envelopes
        .iter()
        .map(|e| serde_json::to_value(e).expect("an envelope always serializes"))
        .collect();
    let query = sqlx::query_as(sqlx::AssertSqlSafe(INSERT_ROWS.as_str()))
        .bind(&ids)
        .bind(&users)
        .bind(&api_keys)
        .bind(GenerationStatus::Queued.as_str())
        .bind(column(&|r, _| r.submission.model.media.as_str().to_owned()))
        .bind(&sub_types)
        .bind(column(&|r, _| r.submission.model.name.clone()))
        .bind(column(&|r, _| r.submission.mode.as_str().to_owned()))
        .bind(column(&|r, _| r.submission.model.provider.as_str().to_owned()))
        .bind(column(&|r, _| r.submission.model.provider_model.clone()))
        .bind(column(&|r, _| r.submission.model.billing.as_str().to_owned()))
        .bind(&params)
        .bind(&costs)
        .bind(column(&|r, _| r.submission.catalogue_version.clone()))
        .bind(&token_hashes)
        .bind(&key_versions)
        .bind(&idempotency_keys)
        .bind(&request_hashes)
        .bind(&deadlines)
        .bind(&details)
        .bind(&message_ids)
        .bind(&routing_keys)
        .bind(&bodies)
        .bind(
            rows.iter()
                .map(|(r, _)| r.webhook.as_ref().map(|w| w.url.as_str()))
                .collect::<Vec<_>>(),
        )
        .bind(
            rows.iter()
                .map(|(r, _)| r.webhook.as_ref().and_then(|w| w.event_names()).map(|e| e.join(",")))
                .collect::<Vec<_>>(),
        )
        .bind(
            rows.iter()
                .map(|(r, _)| r.webhook.as_ref().map(|w| w.format.as_str()))
                .collect::<Vec<_>>(),
        );
    let created: Vec<Inserted> = book.bind(query).fetch_all(&mut **tx).await?;
    if let Some(first) = created.first() {
        book.check(first.grants_adjusted, first.entries_written)?;
    }
    Ok(created.into_iter().map(|row| row.view.into_view(false)).collect())
}

/// Each submit of the batch in a savepoint of its own, run again after a deadlock, a
/// serialization failure or a lost idempotency-key race.
async fn submit_one_by_one(
    tx: &mut Tx,
    requests: &[SubmitRequest],
    keys: &CallbackKeys,
) -> Result<Vec<Result<SubmitOutcome, SubmitError>>, sqlx::Error> {
    let mut results = Vec::with_capacity(requests.len());
    for request in requests {
        let mut attempts = 0;
        let result = loop {
            attempts += 1;
            sqlx::raw_sql("SAVEPOINT submit").execute(&mut **tx).await?;
            match submit(tx, request, keys).await {
                Ok(outcome) => {
                    sqlx::raw_sql("RELEASE SAVEPOINT submit").execute(&mut **tx).await?;
                    break Ok(outcome);
                }
                Err(err) => {
                    sqlx::raw_sql("ROLLBACK TO SAVEPOINT submit; RELEASE SAVEPOINT submit")
                        .execute(&mut **tx)
                        .await?;
                    if err.is_transient() && attempts < BATCH_ITEM_ATTEMPTS {
                        continue;
                    }
                    break Err(err);
                }
            }
        };
        results.push(result);
    }
    Ok(results)
}

/// The new generation as the client sees it, and the in-flight count it was admitted under.
#[derive(sqlx::FromRow)]
struct Accepted {
    #[sqlx(flatten)]
    view: ViewRow,
    in_flight_limit: i32,
    in_flight: i64,
}

/// The generation as it was when it was accepted: a replay answers exactly what the first
/// request was answered, whatever happened since.
fn as_accepted(mut view: GenerationView) -> GenerationView {
    view.status = GenerationStatus::Queued;
    view.charged = if view.billing == Billing::Prepaid { view.cost } else { 0 };
    view.progress = None;
    view.failure = None;
    view.result = None;
    view.updated_at = view.created_at;
    view.completed_at = None;
    view
}
