//! One module per message kind. Every handler is idempotent: it reads the generation's status and
//! changes it only through the conditional transitions of `gengate_shared::generation`, so a
//! redelivered, duplicated or late message is harmless.

mod archive;
mod canceled;
mod failure;
mod poll;
mod provider_update;
mod submit_job;

use std::time::Duration;

use gengate_shared::generation::transitions::Cause;
use gengate_shared::generation::{GenerationParams, GenerationStatus, Mode};
use gengate_shared::ids::GenerationId;
use gengate_shared::ledger::LedgerError;
use gengate_shared::providers::ProviderKind;
use gengate_shared::queue::{BrokerError, Envelope, MessageKind};
use sqlx::PgExecutor;

use crate::context::WorkerContext;

pub use poll::schedule_poll;

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

/// A failure that may pass (the database is down, a deadlock): the message returns to its queue,
/// and after repeated failures goes to the dead-letter queue with this error.
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
    /// Anything else.
    #[error("{0}")]
    Other(#[from] anyhow::Error),
}

impl gengate_shared::db::Transient for HandlerError {
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
    match envelope.kind {
        MessageKind::SubmitJob => submit_job::handle(ctx, envelope, redelivered).await,
        MessageKind::ProviderUpdate => provider_update::handle(ctx, envelope).await,
        MessageKind::Failure => failure::handle(ctx, envelope).await,
        MessageKind::Canceled => canceled::handle(ctx, envelope).await,
        MessageKind::PollTask => poll::handle(ctx, envelope).await,
        MessageKind::Archive => archive::handle(ctx, envelope).await,
    }
}

/// What the handlers need to know of a generation.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Job {
    /// The generation.
    pub id: GenerationId,
    status: String,
    provider: String,
    /// The provider's model family.
    pub provider_model: String,
    mode: String,
    params: serde_json::Value,
    /// The callback-token key version.
    pub webhook_key_version: i16,
    /// The provider's task id, once submitted.
    pub remote_task_id: Option<String>,
    /// Create attempts made so far.
    pub submit_attempts: i32,
    /// Polls made so far (the number of the next poll).
    pub polls: i32,
    /// When the next poll is due.
    pub next_poll_at: Option<time::OffsetDateTime>,
    /// Its price at submit.
    pub cost: i64,
    /// Past this, an unfinished job fails.
    pub deadline_at: time::OffsetDateTime,
    /// When it ended.
    pub completed_at: Option<time::OffsetDateTime>,
}

impl Job {
    /// Loads the generation.
    pub async fn load(
        executor: impl PgExecutor<'_>,
        id: GenerationId,
    ) -> Result<Option<Self>, sqlx::Error> {
        sqlx::query_as(
            "SELECT id, status, provider, provider_model, mode, params, webhook_key_version, remote_task_id,
                    submit_attempts, polls, next_poll_at, cost, deadline_at, completed_at
             FROM generations WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(executor)
        .await
    }

    /// Its status.
    pub fn status(&self) -> GenerationStatus {
        GenerationStatus::parse(&self.status).unwrap_or(GenerationStatus::Failed)
    }

    /// Its provider.
    pub fn provider(&self) -> anyhow::Result<ProviderKind> {
        ProviderKind::parse(&self.provider)
            .ok_or_else(|| anyhow::anyhow!("unknown provider {}", self.provider))
    }

    /// Its mode.
    pub fn mode(&self) -> anyhow::Result<Mode> {
        Mode::parse(&self.mode).ok_or_else(|| anyhow::anyhow!("unknown mode {}", self.mode))
    }

    /// The normalized request.
    pub fn params(&self) -> anyhow::Result<GenerationParams> {
        Ok(serde_json::from_value(self.params.clone())?)
    }

    /// The params snapshot as stored.
    pub fn params_value(&self) -> &serde_json::Value {
        &self.params
    }

    /// The adapter options stored at submit.
    pub fn provider_options(&self) -> std::collections::BTreeMap<String, String> {
        serde_json::from_value(self.params["provider_options"].clone()).unwrap_or_default()
    }
}

/// The audit cause of a message.
pub fn cause(kind: &'static str, envelope: &Envelope) -> Cause {
    Cause { kind, message_id: Some(envelope.message_id), ..Cause::default() }
}
