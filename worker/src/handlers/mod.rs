//! One module per message kind. Every handler is idempotent: it reads the generation and changes
//! it only through `gengate_shared::generation` (its transitions, polling and archive functions),
//! so a redelivered, duplicated or late message is harmless. No SQL lives here.

mod archive;
mod canceled;
mod failure;
mod notify;
mod poll;
mod provider_update;
mod submit_job;

use std::sync::Arc;
use std::time::Duration;

use gengate_shared::batched_reads::ReadError;
use gengate_shared::db;
use gengate_shared::generation::failure::Failure;
use gengate_shared::generation::job::Job;
use gengate_shared::generation::settle;
use gengate_shared::generation::transitions::{Cause, Transition};
use gengate_shared::ids::GenerationId;
use gengate_shared::ledger::LedgerError;
use gengate_shared::queue::{BrokerError, Envelope, MessageKind, PayloadError};

use crate::context::WorkerContext;
use crate::providers::ProviderClient;

/// What became of a message.
#[derive(Debug)]
pub enum Outcome {
    /// Handled (or nothing to do): acknowledge it.
    Done,
    /// Try again after `delay`, as a new message with the attempt counted.
    Retry {
        /// How long to wait.
        delay: Duration,
        /// Why, for the log.
        reason: String,
    },
    /// It can never be handled: move it to the dead-letter queue.
    DeadLetter {
        /// A short, stable name for the reason.
        kind: &'static str,
        /// Details.
        message: String,
    },
}

/// Why a handler could not finish. Most failures may pass (the database is down, a deadlock):
/// the message returns to its queue, and after repeated failures goes to the dead-letter queue
/// with this error. A [`HandlerError::Fatal`] one cannot pass by waiting (the worker's settings
/// lack something, the message is malformed): it is dead-lettered at once, with its reason, so
/// that it does not hold a slot while it fails again and again.
#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    /// PostgreSQL.
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    /// RabbitMQ.
    #[error("broker: {0}")]
    Broker(#[from] BrokerError),
    /// The ledger.
    #[error("ledger: {0}")]
    Ledger(#[from] LedgerError),
    /// Retrying will not help until an operator acts.
    #[error("{message}")]
    Fatal {
        /// A short, stable name: `configuration` (fix the settings, then replay), `bad_payload`,
        /// `bad_row` (a stored generation the worker cannot read).
        kind: &'static str,
        /// What is wrong, for the operator.
        message: String,
    },
}

impl HandlerError {
    /// The worker's settings lack something this message needs.
    pub fn configuration(message: impl Into<String>) -> Self {
        HandlerError::Fatal { kind: "configuration", message: message.into() }
    }

    /// A stored generation the worker cannot read (a status, provider or mode it does not know,
    /// content it cannot parse): never guessed at.
    pub fn bad_row(id: GenerationId, why: impl std::fmt::Display) -> Self {
        HandlerError::Fatal { kind: "bad_row", message: format!("generation {id}: {why}") }
    }

    /// A short, stable name for the error's kind (the dead-letter header and the metrics label).
    pub fn kind(&self) -> &'static str {
        match self {
            HandlerError::Database(_) => "database",
            HandlerError::Broker(_) => "broker",
            HandlerError::Ledger(_) => "ledger",
            HandlerError::Fatal { kind, .. } => kind,
        }
    }

    /// Whether retrying cannot help: dead-letter at once.
    pub fn is_fatal(&self) -> bool {
        matches!(self, HandlerError::Fatal { .. })
    }
}

impl From<PayloadError> for HandlerError {
    fn from(err: PayloadError) -> Self {
        HandlerError::Fatal { kind: "bad_payload", message: err.to_string() }
    }
}

impl db::Transient for HandlerError {
    fn is_transient(&self) -> bool {
        match self {
            HandlerError::Database(err) => err.is_transient(),
            HandlerError::Ledger(err) => err.is_transient(),
            _ => false,
        }
    }
}

/// Routes a message to its handler.
pub async fn dispatch(
    ctx: &WorkerContext,
    envelope: &Envelope,
    redelivered: bool,
) -> Result<Outcome, HandlerError> {
    record_wait(envelope);
    match envelope.kind {
        MessageKind::SubmitJob => submit_job::handle(ctx, envelope, redelivered).await,
        MessageKind::ProviderUpdate => provider_update::handle(ctx, envelope).await,
        MessageKind::Failure => failure::handle(ctx, envelope).await,
        MessageKind::Canceled => canceled::handle(ctx, envelope).await,
        MessageKind::PollTask => poll::handle(ctx, envelope).await,
        MessageKind::Archive => archive::handle(ctx, envelope).await,
        MessageKind::Notify => notify::handle(ctx, envelope).await,
    }
}

/// Records `gengate_message_wait_seconds{kind}`: how long a message waited, from its making (in
/// the outbox, or by a scheduler when its poll or delivery fell due) to a worker starting on it.
/// First attempts only: a retry waits in a delay tier on purpose. A message handled again
/// (returned to its queue after a failure, or redelivered after its worker died) counts again,
/// with its whole wait: the work waited that long.
fn record_wait(envelope: &Envelope) {
    if envelope.attempt > 0 {
        return;
    }
    let waited = time::OffsetDateTime::now_utc() - envelope.created_at;
    metrics::histogram!("gengate_message_wait_seconds", "kind" => envelope.kind.routing_key())
        .record(waited.as_seconds_f64().max(0.0));
}

/// The message's generation, as the handlers see it (read in one statement with other
/// deliveries' generations).
async fn load(ctx: &WorkerContext, id: GenerationId) -> Result<Option<Job>, HandlerError> {
    ctx.jobs.get(id).await.map_err(|err| match err {
        // A status, provider or mode this worker does not know: never guessed at.
        ReadError::Undecodable(why) => HandlerError::bad_row(id, why),
        ReadError::Query(why) => HandlerError::Database(sqlx::Error::Protocol(why)),
    })
}

/// A database error reading a generation: one the worker cannot decode (a status, provider or
/// mode it does not know) is fatal, never guessed at.
fn undecodable(id: GenerationId, err: sqlx::Error) -> HandlerError {
    match err {
        sqlx::Error::ColumnDecode { .. } | sqlx::Error::Decode(_) => HandlerError::bad_row(id, err),
        err => HandlerError::Database(err),
    }
}

/// The dead-letter outcome for a message about a generation that does not exist.
fn unknown_generation() -> Outcome {
    Outcome::DeadLetter { kind: "unknown_generation", message: "no such generation".into() }
}

/// The client of the job's provider.
fn provider_of(ctx: &WorkerContext, job: &Job) -> Result<Arc<dyn ProviderClient>, HandlerError> {
    ctx.providers
        .get(job.provider)
        .ok_or_else(|| HandlerError::configuration(format!("no client for {}", job.provider)))
}

/// A stored generation whose content the worker cannot read.
fn bad_row(job: &Job, what: &str, err: impl std::fmt::Display) -> HandlerError {
    HandlerError::bad_row(job.id, format_args!("{what}: {err}"))
}

/// The one way the worker fails a job: `transition` (which leads to `failed`) with its refund or
/// hold release, in one transaction (group-committed); counted and logged once it committed. `false`: the job had
/// already moved on (another delivery got there first), and nothing changed but the audit log.
async fn fail_job(
    ctx: &WorkerContext,
    id: GenerationId,
    transition: Transition,
    cause: &Cause,
    failure: &Failure,
) -> Result<bool, HandlerError> {
    let (audit, reason) = (cause.clone(), failure.clone());
    // A failure may tell the client (a webhook message in the outbox): wake the relays.
    let failed = ctx
        .commits
        .run_waking_relays(id, move |tx| {
            let (audit, reason) = (audit.clone(), reason.clone());
            Box::pin(async move { Ok(settle::fail(tx, id, transition, &audit, &reason).await?) })
        })
        .await?;
    let Some(failed) = failed else { return Ok(false) };
    let code = failure.kind.code();
    metrics::counter!("gengate_jobs_failed_total", "code" => code, "cause" => cause.kind)
        .increment(1);
    tracing::warn!(
        code,
        detail = failure.detail,
        cause = cause.kind,
        from = %failed.from,
        billing = %failed.billing,
        "failed; credits returned"
    );
    Ok(true)
}

/// The audit cause of a message.
fn cause(kind: &'static str, envelope: &Envelope) -> Cause {
    Cause { kind, message_id: Some(envelope.message_id), ..Cause::default() }
}
