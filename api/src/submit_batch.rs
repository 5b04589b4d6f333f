//! Group commit of submits. A submit's largest cost is its commit (a WAL flush, which waits for
//! the disk); concurrent submits therefore share one transaction, written by
//! [`submit::submit_batch`] so that each request still gets exactly the answer it would get
//! alone (a 402, 409 or 429 is that request's own and never fails
//! or delays its neighbours' commit).
//!
//! A handler hands its submit to a [`SubmitBatcher`] and waits for the answer; how batches form
//! (`max_size`, `window_us`, `transactions`) is [`group_commit`]'s.

use std::sync::Arc;

use gengate_shared::config::GroupCommitSettings;
use gengate_shared::db;
use gengate_shared::generation::callback_token::CallbackKeys;
use gengate_shared::generation::submit::{self, SubmitError, SubmitOutcome, SubmitRequest};
use gengate_shared::group_commit::{self, Waiting};
use sqlx::PgPool;
use tokio::sync::{mpsc, oneshot};

/// What a submit is answered.
pub type SubmitAnswer = Result<SubmitOutcome, SubmitError>;

/// One submit waiting for its batch.
struct Pending {
    request: SubmitRequest,
    answer: oneshot::Sender<SubmitAnswer>,
}

/// Hands submits to the committer tasks. Cheap to clone; the committers stop when the last clone
/// is dropped.
#[derive(Clone, Debug)]
pub struct SubmitBatcher {
    queue: mpsc::Sender<Pending>,
}

impl Waiting for Pending {
    fn abandoned(&self) -> bool {
        self.answer.is_closed()
    }
}

impl SubmitBatcher {
    /// Starts the committer tasks (on the current tokio runtime).
    pub fn start(pool: PgPool, keys: Arc<CallbackKeys>, settings: &GroupCommitSettings) -> Self {
        let queue =
            group_commit::start(settings, move |batch| write(pool.clone(), keys.clone(), batch));
        Self { queue }
    }

    /// Submits in the next batch and waits for the answer. If the request is abandoned (the
    /// client went away) before its batch is formed, it is left out of the batch.
    pub async fn submit(&self, request: SubmitRequest) -> SubmitAnswer {
        let (answer, answered) = oneshot::channel();
        if self.queue.send(Pending { request, answer }).await.is_err() {
            return Err(stopped());
        }
        answered.await.unwrap_or_else(|_| Err(stopped()))
    }
}

/// The batcher is gone (the process is stopping) or its batch's task ended without an answer.
fn stopped() -> SubmitError {
    SubmitError::Batch(Arc::new(sqlx::Error::PoolClosed))
}

/// Writes one batch in one transaction (run again whole after a serialization failure or a
/// deadlock of the transaction itself) and answers each submit.
async fn write(pool: PgPool, keys: Arc<CallbackKeys>, batch: Vec<Pending>) {
    let (requests, answers): (Vec<_>, Vec<_>) =
        batch.into_iter().map(|p| (p.request, p.answer)).unzip();
    metrics::histogram!("gengate_submit_batch_size").record(requests.len() as f64);
    let written = db::retry_transient(|| submit::submit_batch(&pool, &requests, &keys)).await;
    match written {
        Ok(results) => {
            for (answer, result) in answers.into_iter().zip(results) {
                let _ = answer.send(result);
            }
        }
        Err(err) => {
            let err = Arc::new(err);
            for answer in answers {
                let _ = answer.send(Err(SubmitError::Batch(err.clone())));
            }
        }
    }
}
