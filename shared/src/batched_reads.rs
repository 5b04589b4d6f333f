//! Point reads, shared: concurrent readers of one kind of row, each by its own key, are answered
//! from one statement (`WHERE id = ANY(…)`), batched as writes are (see [`crate::group_commit`]:
//! a lone read goes at once; under load, the reads that arrive while a batch is being read share
//! the next). Each read used to cost its own statement and its own (read-only) transaction.

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;

use tokio::sync::{mpsc, oneshot};

use crate::config::GroupCommitSettings;
use crate::group_commit::{self, Waiting};

/// Why a read has no answer.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ReadError {
    /// The batch's query failed (the database is away, the pool closed): it may pass.
    #[error("reading a batch: {0}")]
    Query(String),
    /// The row exists and cannot be decoded (a value this version does not know): waiting will
    /// not help.
    #[error("{0}")]
    Undecodable(String),
}

/// What a batch's query returns: the rows found, each decoded on its own (so one undecodable row
/// fails its own read only). A key with no row is absent.
pub type Rows<K, V> = Vec<(K, Result<V, sqlx::Error>)>;

struct Pending<K, V> {
    key: K,
    answer: oneshot::Sender<Result<Option<V>, ReadError>>,
}

impl<K: Send + 'static, V: Send + 'static> Waiting for Pending<K, V> {
    fn abandoned(&self) -> bool {
        self.answer.is_closed()
    }
}

/// Hands point reads to the reader tasks. Cheap to clone.
#[derive(Debug)]
pub struct BatchedReads<K, V> {
    queue: mpsc::Sender<Pending<K, V>>,
}

impl<K, V> Clone for BatchedReads<K, V> {
    fn clone(&self) -> Self {
        Self { queue: self.queue.clone() }
    }
}

impl<K, V> BatchedReads<K, V>
where
    K: Eq + Hash + Clone + Send + Sync + 'static,
    V: Clone + Send + 'static,
{
    /// Starts the reader tasks (on the current tokio runtime); `query` reads the rows of a batch's
    /// keys, and `name` labels the batch-size histogram (`gengate_read_batch_size`).
    pub fn start<Q, Fut>(settings: &GroupCommitSettings, name: &'static str, query: Q) -> Self
    where
        Q: Fn(Vec<K>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Rows<K, V>, sqlx::Error>> + Send + 'static,
    {
        let query = std::sync::Arc::new(query);
        let queue = group_commit::start(settings, move |batch: Vec<Pending<K, V>>| {
            let query = query.clone();
            async move {
                metrics::histogram!("gengate_read_batch_size", "read" => name)
                    .record(batch.len() as f64);
                let keys = batch.iter().map(|pending| pending.key.clone()).collect();
                let rows =
                    query(keys).await.map(|rows| rows.into_iter().collect::<HashMap<_, _>>());
                for pending in batch {
                    let answer = match &rows {
                        Err(err) => Err(ReadError::Query(err.to_string())),
                        Ok(rows) => match rows.get(&pending.key) {
                            None => Ok(None),
                            Some(Ok(value)) => Ok(Some(value.clone())),
                            Some(Err(err)) => Err(ReadError::Undecodable(err.to_string())),
                        },
                    };
                    let _ = pending.answer.send(answer);
                }
            }
        });
        Self { queue }
    }

    /// The row of `key`, read in the next batch; `None` if there is none.
    pub async fn get(&self, key: K) -> Result<Option<V>, ReadError> {
        let stopped = || ReadError::Query("the readers have stopped".into());
        let (answer, answered) = oneshot::channel();
        if self.queue.send(Pending { key, answer }).await.is_err() {
            return Err(stopped());
        }
        answered.await.unwrap_or_else(|_| Err(stopped()))
    }
}
