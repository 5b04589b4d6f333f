//! The provider tasks this worker is creating and has not recorded yet.
//!
//! A fast provider calls its webhook back within milliseconds of creating a task, and the
//! webhook's event can reach a worker before the `job.submit` handler that created the task has
//! committed its transition (the transition waits for its batch). The event then finds no task
//! recorded, and a webhook alone never settles a job. Rather than sending such an event through
//! the delay tiers (a message, a second handling and a second of latency), the event's handler
//! waits here for the accept: woken the moment it commits when this worker is the one creating
//! the task, or looking again after a short pause when it is another worker.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use gengate_shared::ids::GenerationId;
use tokio::sync::Notify;

/// Generations whose task this worker is creating or recording (see the module docs).
#[derive(Debug, Default)]
pub struct Accepts {
    /// Per generation: how many deliveries are accepting it (a redelivery may overlap the
    /// first), and how to wake those waiting for them.
    creating: Mutex<HashMap<GenerationId, (usize, Arc<Notify>)>>,
}

/// Held while a task is being created and recorded; dropping it wakes whoever waits for it.
#[derive(Debug)]
#[must_use = "the generation counts as being accepted only while this is held"]
pub struct Accepting<'a> {
    accepts: &'a Accepts,
    generation: GenerationId,
}

impl Accepts {
    /// Notes that this worker is about to create (or adopt) `generation`'s task, until the
    /// returned guard is dropped: after the transition recording it committed, or failed.
    pub fn begin(&self, generation: GenerationId) -> Accepting<'_> {
        self.lock().entry(generation).or_default().0 += 1;
        Accepting { accepts: self, generation }
    }

    /// Whether this worker is creating `generation`'s task right now.
    pub fn is_creating(&self, generation: GenerationId) -> bool {
        self.lock().contains_key(&generation)
    }

    /// Waits until this worker has finished accepting `generation` (at once if it is not
    /// accepting it), or `at_most`, whichever first.
    pub async fn wait(&self, generation: GenerationId, at_most: Duration) {
        let notify = match self.lock().get(&generation) {
            Some((_, notify)) => notify.clone(),
            None => return,
        };
        let notified = notify.notified();
        tokio::pin!(notified);
        // Registered before the map's lock is taken again below: a guard wakes waiters while it
        // holds that lock, so no wake-up falls between the two.
        notified.as_mut().enable();
        if !self.is_creating(generation) {
            return;
        }
        let _ = tokio::time::timeout(at_most, notified).await;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<GenerationId, (usize, Arc<Notify>)>> {
        // The map is only ever changed by whole insertions and removals: a panic elsewhere
        // cannot leave it half-changed.
        self.creating.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Drop for Accepting<'_> {
    fn drop(&mut self) {
        let mut creating = self.accepts.lock();
        let Some((count, notify)) = creating.get_mut(&self.generation) else { return };
        // Waiters look at the database again when woken, so waking them for a redelivery's
        // accept that is not the last one costs a read, nothing more.
        notify.notify_waiters();
        *count -= 1;
        if *count == 0 {
            creating.remove(&self.generation);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id() -> GenerationId {
        GenerationId::new()
    }

    #[tokio::test]
    async fn a_waiter_is_woken_when_the_accept_ends_not_after_its_timeout() {
        let accepts = Arc::new(Accepts::default());
        let generation = id();
        let guard = accepts.begin(generation);
        let waiter = {
            let accepts = accepts.clone();
            tokio::spawn(async move {
                let started = tokio::time::Instant::now();
                accepts.wait(generation, Duration::from_secs(3600)).await;
                started.elapsed()
            })
        };
        tokio::task::yield_now().await;
        assert!(accepts.is_creating(generation));
        drop(guard);
        let waited = tokio::time::timeout(Duration::from_secs(30), waiter)
            .await
            .expect("the waiter was woken")
            .unwrap();
        assert!(waited < Duration::from_secs(3600));
        assert!(!accepts.is_creating(generation));
    }

    #[tokio::test]
    async fn waiting_for_a_generation_nobody_accepts_returns_at_once() {
        let accepts = Accepts::default();
        let _other = accepts.begin(id());
        tokio::time::timeout(
            Duration::from_secs(30),
            accepts.wait(id(), Duration::from_secs(3600)),
        )
        .await
        .expect("no wait for a generation this worker is not accepting");
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiter_gives_up_after_its_timeout() {
        let accepts = Accepts::default();
        let generation = id();
        let _guard = accepts.begin(generation);
        let started = tokio::time::Instant::now();
        accepts.wait(generation, Duration::from_millis(40)).await;
        assert_eq!(started.elapsed(), Duration::from_millis(40));
        assert!(accepts.is_creating(generation));
    }
}
