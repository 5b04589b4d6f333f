//! Group commit: concurrent writers share transactions. A commit's largest cost is its WAL flush,
//! which waits for the disk; writes that arrive together therefore commit together, each still
//! getting its own outcome.
//!
//! Writers put their work on one queue; a few committer tasks (`transactions`) take it off. A
//! committer takes the first waiting write and, if another batch is committing at that moment,
//! keeps collecting until the batch is full (`max_size`) or `window_us` has passed since its first
//! write; if no batch is committing, it goes at once, so a lone writer waits for nothing. Under
//! load, writes gather while the previous batch commits, which is when batching pays. What a batch
//! does is the owner's: the API's submit batcher writes a batch planned at once, the worker runs
//! each write in a savepoint of its own.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::{Mutex, mpsc};

use crate::config::GroupCommitSettings;

/// A write waiting for its batch.
pub trait Waiting: Send + 'static {
    /// Whether its writer stopped waiting (then it is left out of its batch).
    fn abandoned(&self) -> bool;
}

/// Starts the committer tasks (on the current tokio runtime), each writing its batches with
/// `write`, and returns the queue writers put their work on. The committers stop when every
/// clone of the queue is dropped.
pub fn start<P, W, Fut>(settings: &GroupCommitSettings, write: W) -> mpsc::Sender<P>
where
    P: Waiting,
    W: Fn(Vec<P>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let (queue, receiver) = mpsc::channel(settings.max_size * settings.transactions * 4);
    let committers = Arc::new(Committers {
        receiver: Mutex::new(receiver),
        committing: AtomicUsize::new(0),
        max_size: settings.max_size,
        window: Duration::from_micros(settings.window_us),
        write,
    });
    for _ in 0..settings.transactions {
        tokio::spawn(committers.clone().run());
    }
    queue
}

/// What the committer tasks share.
struct Committers<P, W> {
    receiver: Mutex<mpsc::Receiver<P>>,
    /// Batches being written now.
    committing: AtomicUsize,
    max_size: usize,
    window: Duration,
    write: W,
}

impl<P, W, Fut> Committers<P, W>
where
    P: Waiting,
    W: Fn(Vec<P>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    async fn run(self: Arc<Self>) {
        while let Some(batch) = self.next_batch().await {
            if batch.is_empty() {
                continue;
            }
            self.committing.fetch_add(1, Ordering::SeqCst);
            // The batch runs in a task of its own, so that a panic while writing it answers its
            // writers with an error (their answer channels drop) instead of ending the committer.
            let written = tokio::spawn((self.write)(batch)).await;
            self.committing.fetch_sub(1, Ordering::SeqCst);
            if let Err(err) = written {
                tracing::error!(error = %err, "a batch ended without answering");
            }
        }
    }

    /// Waits for a write, then collects more (see the module docs). `None` once every writer's
    /// queue is dropped and the queue is empty.
    async fn next_batch(&self) -> Option<Vec<P>> {
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
        batch.retain(|pending| !pending.abandoned());
        Some(batch)
    }
}
