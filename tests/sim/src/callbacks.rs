//! Callback delivery. Each task has one deliverer that sends its callbacks in the order the
//! status changes happened; a failed delivery (connection error or non-2xx) is retried like a
//! real provider does: `callback_attempts` tries, `callback_retry_interval_ms` apart. Every
//! attempt is recorded on the task for assertions.

use std::time::Duration;

use serde_json::Value;
use tokio::sync::mpsc;

use super::kie;
use super::state::{CallbackAttempt, Sim, now_ms, now_unix};

/// One callback to deliver, rendered at the moment of the status change.
#[derive(Debug)]
pub(crate) struct Callback {
    pub(crate) task_id: String,
    pub(crate) url: String,
    /// The status it reports, for the record.
    pub(crate) status: String,
    pub(crate) body: Value,
    /// How many copies go out at once (3 for `dup-callback` terminal callbacks).
    pub(crate) copies: u32,
    /// kie's optional webhook signing key.
    pub(crate) hmac_key: Option<String>,
}

/// A channel for one task's callbacks and the work that delivers them, in order.
pub(crate) fn deliverer(
    sim: Sim,
) -> (mpsc::UnboundedSender<Callback>, impl Future<Output = ()> + Send + 'static) {
    let (sender, mut receiver) = mpsc::unbounded_channel::<Callback>();
    let work = async move {
        while let Some(callback) = receiver.recv().await {
            let copies = (1..=callback.copies).map(|copy| deliver(&sim, &callback, copy));
            // Duplicates go out concurrently, as a provider's parallel retry workers would send them.
            futures_util::future::join_all(copies).await;
        }
    };
    (sender, work)
}

async fn deliver(sim: &Sim, callback: &Callback, copy: u32) {
    let mut attempt = 1;
    loop {
        // Read per attempt, so a test can change retry settings while a delivery is under way.
        let config = sim.config();
        let mut request = sim
            .http()
            .post(&callback.url)
            .json(&callback.body)
            .timeout(Duration::from_millis(config.callback_timeout_ms));
        if let Some(key) = &callback.hmac_key {
            let timestamp = now_unix();
            request = request.header("X-Webhook-Timestamp", timestamp.to_string()).header(
                "X-Webhook-Signature",
                kie::webhook_signature(key, &callback.task_id, timestamp),
            );
        }
        let (http_status, error) = match request.send().await {
            Ok(response) => (Some(response.status().as_u16()), None),
            Err(error) => (None, Some(error.to_string())),
        };
        let record = CallbackAttempt {
            status: callback.status.clone(),
            copy,
            attempt,
            http_status,
            error,
            at_ms: now_ms(),
        };
        let delivered = record.delivered();
        tracing::info!(
            task_id = %callback.task_id,
            status = %callback.status,
            copy,
            attempt,
            http_status,
            error = record.error.as_deref(),
            "callback",
        );
        sim.with(|state| {
            if let Some(task) = state.tasks.get_mut(&callback.task_id) {
                task.callbacks.push(record);
            }
        });
        if delivered || attempt >= config.callback_attempts {
            return;
        }
        attempt += 1;
        tokio::time::sleep(Duration::from_millis(config.callback_retry_interval_ms)).await;
    }
}
