//! Accepting a generation: one transaction that checks the idempotency key, inserts the
//! generation, reserves (prepaid) or checks (postpaid) the credits, enforces the in-flight limit,
//! logs the submit and puts the job message in the outbox (see [`crate::outbox`]). Either all of
//! it happens or none.
//!
//! Many submits can share one transaction ([`submit_batch`]): the commit, a WAL flush, is the
//! largest cost of a submit, and a batch pays it once. Each submit of a batch still happens
//! entirely or not at all, in a savepoint of its own.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use super::callback_token::CallbackKeys;
use super::store::{self, GenerationView, VIEW_COLUMNS, ViewRow};
use super::{Billing, GenerationStatus};
use crate::catalogue::Submission;
use crate::db::{Transient, Tx};
use crate::ids::{ApiKeyId, GenerationId, UserId};
use crate::ledger::{self, LedgerError, LedgerGeneration};
use crate::queue::{Envelope, payloads};

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

/// Accepts a generation (see the module docs). Run it in [`crate::db::transaction!`], which
/// also replays the winner when concurrent requests race on one idempotency key.
pub async fn submit(
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

    let id = GenerationId::new();
    let (_token, token_hash, key_version) = keys.issue(id);
    let model = &submission.model;
    let mut params = serde_json::to_value(&submission.params).expect("params serialize");
    params["metadata"] = submission.metadata.clone();
    if let Some(negative) = &submission.client_negative_prompt {
        params["client_negative_prompt"] = negative.as_str().into();
    }
    // The adapter options in force when the job was accepted (and priced) travel with it.
    params["provider_options"] = serde_json::to_value(&model.options).expect("options serialize");
    // What the provider is expected to report using, for settling at reported usage.
    if let Some(units) = model.expected_units(submission.params.duration) {
        params["expected_units"] = units.into();
    }
    let deadline = Duration::as_secs_f64(&model.deadline);
    let inserted = sqlx::query(
        "INSERT INTO generations
             (id, user_id, api_key_id, status, type, sub_type, model, mode, provider, provider_model,
              billing, params, cost, price_version, webhook_token_hash, webhook_key_version,
              idempotency_key, request_hash, deadline_at)
         VALUES ($1, $2, $3, 'queued', $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17,
                 now() + make_interval(secs => $18))",
    )
    .bind(id)
    .bind(request.user_id)
    .bind(request.api_key_id)
    .bind(model.media.as_str())
    .bind(&submission.params.sub_type)
    .bind(&model.name)
    .bind(submission.mode.as_str())
    .bind(model.provider.as_str())
    .bind(&model.provider_model)
    .bind(model.billing.as_str())
    .bind(&params)
    .bind(submission.cost)
    .bind(&submission.catalogue_version)
    .bind(token_hash.as_slice())
    .bind(key_version)
    .bind(request.idempotency_key.as_deref())
    .bind(submission.request_hash.as_slice())
    .bind(deadline)
    .execute(&mut **tx)
    .await;
    if let Err(sqlx::Error::Database(err)) = &inserted
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

    // One statement writes the audit row and the job message and reads back what the client is
    // answered plus the in-flight count: the hot path's round trips are its cost. The ledger
    // locked the user row above, so concurrent submits of this user count one at a time; a
    // refusal rolls the whole transaction back, these inserts included.
    let envelope = Envelope::of(id, &payloads::SubmitJob {});
    let detail = json!({"cost": submission.cost, "price_version": submission.catalogue_version});
    let sql = format!(
        "WITH event AS (
             INSERT INTO generation_events (generation_id, from_status, to_status, cause, detail)
             VALUES ($1, NULL, $3, 'submit', $4)),
         message AS (
             INSERT INTO outbox (message_id, routing_key, body) VALUES ($5, $6, $7))
         SELECT {VIEW_COLUMNS},
                COALESCE(u.max_in_flight, $8) AS in_flight_limit,
                (SELECT count(*) FROM generations f
                 WHERE f.user_id = u.id AND f.status = ANY($9)) AS in_flight
         FROM generations g JOIN users u ON u.id = g.user_id
         WHERE g.id = $1 AND g.user_id = $2"
    );
    let accepted: Accepted = sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(id)
        .bind(request.user_id)
        .bind(GenerationStatus::Queued.as_str())
        .bind(&detail)
        .bind(envelope.message_id)
        .bind(envelope.kind.routing_key())
        .bind(serde_json::to_value(&envelope).expect("an envelope always serializes"))
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

/// How many times one submit of a batch runs again after a deadlock, a serialization failure or a
/// lost idempotency-key race (which then replays the winner) before it is answered with the error.
const BATCH_ITEM_ATTEMPTS: u32 = 4;

/// Accepts many submits in one transaction, `tx`, which the caller commits: each submit runs in a
/// savepoint of its own, so a refused one (no credits, an idempotency conflict, too many in
/// flight, a value PostgreSQL refuses) rolls back only its own writes and gets its own error,
/// while its neighbours are kept. Each result is what [`submit`] alone would have answered, in the
/// order of `requests`; it holds only once `tx` commits (if the commit fails, nothing of the
/// batch was written).
///
/// The batch's users are locked first, all in one statement and in one order, so that batches
/// running at once cannot deadlock one another (a submit locks its user only after inserting its
/// row, which is safe for one submit per transaction but not for several). Submits are then
/// applied in the order given, each seeing the ones before it: of two submits with one
/// idempotency key the second replays the first, and a user's credits go to the earlier ones.
///
/// An `Err` is a failure of the transaction itself (the connection): every submit failed.
pub async fn submit_batch(
    tx: &mut Tx,
    requests: &[SubmitRequest],
    keys: &CallbackKeys,
) -> Result<Vec<Result<SubmitOutcome, SubmitError>>, sqlx::Error> {
    let mut users: Vec<UserId> = requests.iter().map(|r| r.user_id).collect();
    users.sort_unstable();
    users.dedup();
    sqlx::query("SELECT id FROM users WHERE id = ANY($1) ORDER BY id FOR NO KEY UPDATE")
        .bind(&users)
        .execute(&mut **tx)
        .await?;
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
