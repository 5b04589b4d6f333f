//! The worker's writes, group-committed: a handler hands the transaction body of its transition to
//! [`Commits::run`] and waits for its own outcome. Concurrent deliveries (up to the prefetch of
//! each queue) share one transaction per batch (see [`gengate_shared::group_commit`]), each body in
//! a savepoint of its own, so a body that fails (its error, a deadlock) is rolled back alone and
//! answered alone while its neighbours commit. A batch of one runs without a savepoint.
//!
//! Batches must not deadlock each other (a deadlock costs PostgreSQL's `deadlock_timeout`, a
//! second, every time): a batch first locks the owners of all its generations in one statement,
//! in id order (as the API's submit batches do), then runs its bodies in generation id order. Every
//! batch thus takes its locks in one global order: users, then generations.
//!
//! Nothing is answered before the commit: a handler acknowledges its delivery only after its
//! transition is durable. A crash between a batch's commit and its acknowledgements redelivers
//! those messages, and the transitions being conditional, the redelivered ones change nothing
//! (the audit log records them as not applied). Provider calls stay outside: a body only touches
//! the database.

use std::any::Any;
use std::sync::Arc;

use futures_util::future::BoxFuture;
use gengate_shared::config::GroupCommitSettings;
use gengate_shared::db::{self, Tx};
use gengate_shared::group_commit::{self, Waiting};
use gengate_shared::ids::GenerationId;
use gengate_shared::{crash_point, outbox};
use sqlx::PgPool;
use tokio::sync::{mpsc, oneshot};

use crate::handlers::HandlerError;

/// The crash point reached right after a batch committed, before any of its writers is answered
/// (see [`gengate_shared::crash_point`]).
pub const COMMITTED: &str = "worker.batch_committed";

type Output = Box<dyn Any + Send>;
type Body =
    Box<dyn for<'t> FnOnce(&'t mut Tx) -> BoxFuture<'t, Result<Output, HandlerError>> + Send>;

/// A transaction body: what a handler's transition does in the transaction it is given. It may run
/// more than once (after a deadlock), so it clones what it captures into each run.
pub trait TxBody<T>:
    for<'t> Fn(&'t mut Tx) -> BoxFuture<'t, Result<T, HandlerError>> + Send + Sync + 'static
{
}

impl<T, B> TxBody<T> for B where
    B: for<'t> Fn(&'t mut Tx) -> BoxFuture<'t, Result<T, HandlerError>> + Send + Sync + 'static
{
}

/// One transaction body waiting for its batch.
struct Pending {
    /// The generation it changes.
    generation: GenerationId,
    body: Body,
    /// The body writes to the outbox: the relays are woken once the batch committed.
    wakes_relays: bool,
    answer: oneshot::Sender<Result<Output, HandlerError>>,
}

impl Waiting for Pending {
    fn abandoned(&self) -> bool {
        self.answer.is_closed()
    }
}

/// Hands transaction bodies to the committer tasks. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Commits {
    queue: mpsc::Sender<Pending>,
}

impl Commits {
    /// Starts the committer tasks (on the current tokio runtime).
    pub fn start(pool: PgPool, settings: &GroupCommitSettings) -> Self {
        let queue = group_commit::start(settings, move |batch| write(pool.clone(), batch));
        Self { queue }
    }

    /// Runs `body`, which changes `generation`, in the next batch's transaction and returns its
    /// result once that committed.
    /// A body that fails with a serialization failure or a deadlock runs again, in a later batch.
    /// `body` must only touch the database through the transaction it is given; it may run more
    /// than once, but commits at most once.
    pub async fn run<T, B>(&self, generation: GenerationId, body: B) -> Result<T, HandlerError>
    where
        T: Send + 'static,
        B: TxBody<T>,
    {
        self.run_inner(generation, body, false).await
    }

    /// As [`Commits::run`], for a body that writes to the outbox: the relays are woken after the
    /// commit.
    pub async fn run_waking_relays<T, B>(
        &self,
        generation: GenerationId,
        body: B,
    ) -> Result<T, HandlerError>
    where
        T: Send + 'static,
        B: TxBody<T>,
    {
        self.run_inner(generation, body, true).await
    }

    async fn run_inner<T, B>(
        &self,
        generation: GenerationId,
        body: B,
        wakes_relays: bool,
    ) -> Result<T, HandlerError>
    where
        T: Send + 'static,
        B: TxBody<T>,
    {
        let body = Arc::new(body);
        let output = db::retry_transient(|| {
            let body = body.clone();
            async move {
                let erased: Body = Box::new(move |tx: &mut Tx| {
                    let run = body(tx);
                    Box::pin(async move { run.await.map(|value| Box::new(value) as Output) })
                });
                let (answer, answered) = oneshot::channel();
                let pending = Pending { generation, body: erased, wakes_relays, answer };
                if self.queue.send(pending).await.is_err() {
                    return Err(stopped());
                }
                answered.await.unwrap_or_else(|_| Err(stopped()))
            }
        })
        .await?;
        Ok(*output.downcast::<T>().expect("a body's output comes back as its own type"))
    }
}

/// The committers are gone (the process is stopping) or a batch ended without answering.
fn stopped() -> HandlerError {
    HandlerError::Database(sqlx::Error::PoolClosed)
}

/// Why every write of a batch failed: the transaction itself did (begin, a savepoint, the commit).
fn batch_failed(err: &sqlx::Error) -> HandlerError {
    HandlerError::Database(sqlx::Error::Protocol(format!("the batch's transaction failed: {err}")))
}

/// Writes one batch: each body in a savepoint (none for a batch of one), one commit, then every
/// writer answered.
async fn write(pool: PgPool, mut batch: Vec<Pending>) {
    metrics::histogram!("gengate_worker_batch_size").record(batch.len() as f64);
    batch.sort_by_key(|p| p.generation);
    let generations: Vec<GenerationId> = batch.iter().map(|p| p.generation).collect();
    let alone = batch.len() == 1;
    let wakes_relays = batch.iter().any(|p| p.wakes_relays);
    let (bodies, answers): (Vec<_>, Vec<_>) = batch.into_iter().map(|p| (p.body, p.answer)).unzip();
    let results = match run_bodies(&pool, &generations, bodies, alone).await {
        Ok(results) => results,
        Err(err) => {
            tracing::warn!(error = %err, "a batch's transaction failed; its writes return to their queues");
            for answer in answers {
                let _ = answer.send(Err(batch_failed(&err)));
            }
            return;
        }
    };
    crash_point::reached(COMMITTED);
    if wakes_relays && let Err(err) = outbox::notify(&pool).await {
        tracing::debug!(error = %err, "outbox NOTIFY not sent; the relays sweep");
    }
    for (answer, result) in answers.into_iter().zip(results) {
        let _ = answer.send(result);
    }
}

/// Runs the bodies in one transaction and commits it; each body's own result, or the error of the
/// transaction itself (then nothing was committed, or, if the commit's answer was lost, maybe
/// everything: the transitions being conditional, a writer that tries again finds out which).
async fn run_bodies(
    pool: &PgPool,
    generations: &[GenerationId],
    bodies: Vec<Body>,
    alone: bool,
) -> Result<Vec<Result<Output, HandlerError>>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query(
        "SELECT id FROM users WHERE id IN (SELECT user_id FROM generations WHERE id = ANY($1))
         ORDER BY id FOR NO KEY UPDATE",
    )
    .bind(generations)
    .execute(&mut *tx)
    .await?;
    let mut results = Vec::with_capacity(bodies.len());
    for body in bodies {
        if alone {
            let result = body(&mut tx).await;
            if result.is_err() {
                tx.rollback().await?;
                return Ok(vec![result]);
            }
            results.push(result);
            continue;
        }
        sqlx::query("SAVEPOINT write").execute(&mut *tx).await?;
        let result = body(&mut tx).await;
        let end =
            if result.is_ok() { "RELEASE SAVEPOINT write" } else { "ROLLBACK TO SAVEPOINT write" };
        sqlx::query(end).execute(&mut *tx).await?;
        results.push(result);
    }
    tx.commit().await?;
    Ok(results)
}
