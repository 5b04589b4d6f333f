//! A generation as the workers handle it: what they need to create, poll and settle its upstream
//! task, read in one statement.

use std::collections::BTreeMap;

use sqlx::{FromRow, PgExecutor, Row};
use time::OffsetDateTime;

use super::{GenerationParams, GenerationStatus, Mode};
use crate::batched_reads::Rows;
use crate::ids::GenerationId;
use crate::providers::ProviderKind;

/// The columns of a [`Job`] (a macro, so that each query stays one static string).
macro_rules! job_columns {
    () => {
        "id, status, provider, provider_model, mode, params, webhook_key_version, remote_task_id,
         submit_attempts, polls, next_poll_at, cost, deadline_at, completed_at"
    };
}

/// What the handlers need to know of a generation.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Job {
    /// The generation.
    pub id: GenerationId,
    /// Where it is in its life.
    pub status: GenerationStatus,
    /// Who runs it.
    pub provider: ProviderKind,
    /// The provider's model family.
    pub provider_model: String,
    /// How it was asked for.
    pub mode: Mode,
    /// The params snapshot as stored at submit (normalized request plus gengate's notes).
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
    pub next_poll_at: Option<OffsetDateTime>,
    /// Its price at submit.
    pub cost: i64,
    /// Past this, an unfinished job fails.
    pub deadline_at: OffsetDateTime,
    /// When it ended.
    pub completed_at: Option<OffsetDateTime>,
}

impl Job {
    /// Loads generations in one statement, for readers that share a query (the worker's batched
    /// reads). A status, provider or mode gengate does not know is an error, never a guess; each
    /// row is decoded on its own: a row gengate cannot read is that
    /// generation's error, not its neighbours'. An id with no generation is absent.
    pub async fn load_many(
        executor: impl PgExecutor<'_>,
        ids: &[GenerationId],
    ) -> Result<Rows<GenerationId, Self>, sqlx::Error> {
        let rows =
            sqlx::query(concat!("SELECT ", job_columns!(), " FROM generations WHERE id = ANY($1)"))
                .bind(ids)
                .fetch_all(executor)
                .await?;
        rows.iter().map(|row| Ok((row.try_get("id")?, Self::from_row(row)))).collect()
    }

    /// Takes a job for a `job.submit` delivery, in one statement: counts the attempt if the job
    /// is still queued (before the provider is asked anything, so that after a crash the next
    /// delivery knows a task may exist and looks for it first), and returns the job as it was
    /// before the count. `None` if there is no such generation.
    pub async fn take_for_submit(
        executor: impl PgExecutor<'_>,
        id: GenerationId,
    ) -> Result<Option<Self>, sqlx::Error> {
        // The statement's own SELECT sees the row as it was before the CTE's update.
        sqlx::query_as(concat!(
            "WITH counted AS (
                 UPDATE generations SET submit_attempts = submit_attempts + 1
                 WHERE id = $1 AND status = 'queued')
             SELECT ",
            job_columns!(),
            " FROM generations WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(executor)
        .await
    }

    /// The normalized request.
    pub fn params(&self) -> Result<GenerationParams, serde_json::Error> {
        serde_json::from_value(self.params.clone())
    }

    /// The adapter options stored at submit.
    pub fn provider_options(&self) -> Result<BTreeMap<String, String>, serde_json::Error> {
        match self.params.get("provider_options") {
            None | Some(serde_json::Value::Null) => Ok(BTreeMap::new()),
            Some(options) => serde_json::from_value(options.clone()),
        }
    }

    /// The units (seconds, images) its price was computed for, where the model bills by usage.
    pub fn expected_units(&self) -> Option<f64> {
        self.params.get("expected_units").and_then(serde_json::Value::as_f64)
    }
}
