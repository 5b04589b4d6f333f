//! Group commit of submits. A submit's largest cost is its commit (a WAL flush, which waits for
//! the disk); concurrent submits therefore share one transaction, written by
//! [`submit::submit_batch`], each in a savepoint of its own so that each request still gets
//! exactly the answer it would get alone (a 402, 409 or 429 is that request's own and never fails
//! or delays its neighbours' commit).
//!
//! A handler hands its submit to a [`SubmitBatcher`] and waits for the answer. A few committer
//! tasks (`api.submit_batch.transactions`) take submits off one queue: a committer takes the first
//! waiting submit and, if another batch is committing at that moment, keeps collecting until the
//! batch is full (`max_size`) or `window_us` has passed since its first submit; if no batch is
//! committing, it goes at once, so a lone client waits for nothing. Under load, submits gather
//! while the previous batch commits, which is when batching pays.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use gengate_shared::config::GroupCommitSettings;
use gengate_shared::db;
use gengate_shared::generation::callback_token::CallbackKeys;
use gengate_shared::generation::submit::{self, SubmitError, SubmitOutcome, SubmitRequest};
use sqlx::PgPool;
use tokio::sync::{Mutex, mpsc, oneshot};

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

impl SubmitBatcher {
    /// Starts the committer tasks (on the current tokio runtime).
    pub fn start(pool: PgPool, keys: Arc<CallbackKeys>, settings: &GroupCommitSettings) -> Self {
        let (queue, receiver) = mpsc::channel(settings.max_size * settings.transactions * 4);
        let committers = Arc::new(Committers {
            receiver: Mutex::new(receiver),
            committing: AtomicUsize::new(0),
            pool,
            keys,
            max_size: settings.max_size,
            window: Duration::from_micros(settings.window_us),
        });
        for _ in 0..settings.transactions {
            tokio::spawn(committers.clone().run());
        }
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

/// What the committer tasks share.
struct Committers {
    receiver: Mutex<mpsc::Receiver<Pending>>,
    /// Batches being written now.
    committing: AtomicUsize,
    pool: PgPool,
    keys: Arc<CallbackKeys>,
    max_size: usize,
    window: Duration,
}

impl Committers {
    async fn run(self: Arc<Self>) {
        while let Some(batch) = self.next_batch().await {
            self.committing.fetch_add(1, Ordering::SeqCst);
            // The batch runs in a task of its own, so that a panic while writing it answers its
            // submits with an error (their answer channels drop) instead of ending the committer.
            let written = tokio::spawn(self.clone().write(batch)).await;
            self.committing.fetch_sub(1, Ordering::SeqCst);
            if let Err(err) = written {
                tracing::error!(error = %err, "a batch of submits ended without answering");
            }
        }
    }

    /// Waits for a submit, then collects more (see the module docs). `None` once the batcher is
    /// dropped and its queue is empty.
    async fn next_batch(&self) -> Option<Vec<Pending>> {
        let mut receiver = self.receiver.lock().await;
        let first = receiver.recv().await?;
        let deadline = tokio::time::Instant::now() + self.window;
        let mut batch = vec![first];
        while batch.len() < self.max_size {
            match receiver.try_recv() {
                Ok(pending) => {
                    batch.push(pending);
                    continue;
                }
                Err(mpsc::error::TryRecvError::Disconnected) => break,
                Err(mpsc::error::TryRecvError::Empty) => {}
            }
            if self.window.is_zero() || self.committing.load(Ordering::SeqCst) == 0 {
                break;
            }
            match tokio::time::timeout_at(deadline, receiver.recv()).await {
                Ok(Some(pending)) => batch.push(pending),
                Ok(None) | Err(_) => break,
            }
        }
        drop(receiver);
        // Submits whose clients stopped waiting are not written.
        batch.retain(|pending| !pending.answer.is_closed());
        Some(batch)
    }

    /// Writes one batch in one transaction (run again whole after a serialization failure or a
    /// deadlock of the transaction itself) and answers each submit.
    async fn write(self: Arc<Self>, batch: Vec<Pending>) {
        if batch.is_empty() {
            return;
        }
        let (requests, answers): (Vec<_>, Vec<_>) =
            batch.into_iter().map(|p| (p.request, p.answer)).unzip();
        metrics::histogram!("gengate_submit_batch_size").record(requests.len() as f64);
        let written = db::retry_transient(|| async {
            let mut tx = self.pool.begin().await?;
            let results = submit::submit_batch(&mut tx, &requests, &self.keys).await?;
            tx.commit().await?;
            Ok::<_, sqlx::Error>(results)
        })
        .await;
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
}
