//! What every provider call goes through, whichever the provider: the per-provider limits
//! (a concurrency cap on every call, a rate limit on creates), a tracing span, and the metrics.
//!
//! Metrics: `gengate_provider_requests_total{provider,op,outcome}`,
//! `gengate_provider_request_seconds{provider,op}` (the provider's own time, without the wait
//! for the limits), `gengate_provider_errors_total{provider,code}`,
//! `gengate_provider_account_alerts_total{provider,code}` (our provider account needs an
//! operator), `gengate_provider_unknown_status_total{provider,status}` (an undocumented status,
//! treated as still running).

use std::sync::Arc;
use std::time::Duration;

use gengate_shared::config::ProviderLimits;
use gengate_shared::generation::Mode;
use gengate_shared::ids::GenerationId;
use gengate_shared::providers::{
    ProviderError, ProviderKind, TaskRef, TaskRequest, TaskState, TaskUpdate,
};
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tracing::Instrument;

use super::limits::RateLimiter;
use super::{ProviderClient, ProviderFuture};

/// A provider client behind its limits, traced and measured.
#[derive(Debug)]
pub struct Guarded {
    inner: Arc<dyn ProviderClient>,
    in_flight: Semaphore,
    creates: Option<RateLimiter>,
}

/// Which call, for spans and metric labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Create,
    Query,
    Find,
}

impl Op {
    fn as_str(self) -> &'static str {
        match self {
            Op::Create => "create",
            Op::Query => "query",
            Op::Find => "find",
        }
    }
}

impl Guarded {
    /// Wraps `inner` with `limits`: `max_concurrency` calls at once, and at most `rate_limit`
    /// creates per `rate_window_ms` (0: unlimited). Callers over a limit wait.
    pub fn new(inner: Arc<dyn ProviderClient>, limits: &ProviderLimits) -> Self {
        let permits = usize::try_from(limits.max_concurrency.max(1)).unwrap_or(usize::MAX);
        Self {
            inner,
            in_flight: Semaphore::new(permits.min(Semaphore::MAX_PERMITS)),
            creates: RateLimiter::new(
                limits.rate_limit,
                Duration::from_millis(limits.rate_window_ms),
            ),
        }
    }

    async fn call<T>(&self, op: Op, call: ProviderFuture<'_, T>) -> Result<T, ProviderError> {
        // The rate wait comes before taking a concurrency slot, so that creates held back by the
        // rate limit do not block queries.
        if op == Op::Create
            && let Some(creates) = &self.creates
        {
            creates.admit().await;
        }
        let Ok(_slot) = self.in_flight.acquire().await else {
            // Only a closed semaphore refuses, and this one is never closed.
            return Err(ProviderError::Retryable {
                code: "closed".to_owned(),
                message: "the provider's concurrency limiter is closed".to_owned(),
                retry_after: None,
            });
        };
        let started = Instant::now();
        let result = call.await;
        self.record(op, started.elapsed(), &result);
        result
    }

    fn record<T>(&self, op: Op, elapsed: Duration, result: &Result<T, ProviderError>) {
        let provider = self.inner.kind().as_str();
        let outcome = match result {
            Ok(_) => "ok",
            Err(ProviderError::Retryable { .. }) => "retryable",
            Err(ProviderError::Permanent { .. }) => "permanent",
            Err(ProviderError::NotFound) => "not_found",
        };
        let op = op.as_str();
        metrics::counter!("gengate_provider_requests_total",
            "provider" => provider, "op" => op, "outcome" => outcome)
        .increment(1);
        metrics::histogram!("gengate_provider_request_seconds", "provider" => provider, "op" => op)
            .record(elapsed.as_secs_f64());
        let Err(error) = result else {
            tracing::debug!(elapsed_ms = elapsed.as_millis(), "provider call succeeded");
            return;
        };
        let code = match error {
            ProviderError::Retryable { code, .. } | ProviderError::Permanent { code, .. } => {
                code.clone()
            }
            ProviderError::NotFound => "not_found".to_owned(),
        };
        metrics::counter!("gengate_provider_errors_total", "provider" => provider, "code" => code.clone())
            .increment(1);
        match error {
            ProviderError::Permanent { account_problem: true, message, .. } => {
                metrics::counter!("gengate_provider_account_alerts_total",
                    "provider" => provider, "code" => code.clone())
                .increment(1);
                tracing::error!(%code, %message, "provider account problem: an operator must act");
            }
            ProviderError::Permanent { message, .. } => {
                tracing::warn!(%code, %message, "provider call failed permanently");
            }
            ProviderError::Retryable { message, .. } => {
                tracing::info!(%code, %message, "provider call failed, retryable");
            }
            ProviderError::NotFound => tracing::info!("provider does not know the task"),
        }
    }

    /// An undocumented status is treated as still running; it is logged and counted so that a
    /// provider's new status is noticed.
    fn note_unknown_status(&self, update: &TaskUpdate) {
        if let TaskState::Unknown { status } = &update.state {
            let provider = self.inner.kind().as_str();
            metrics::counter!("gengate_provider_unknown_status_total",
                "provider" => provider, "status" => status.clone())
            .increment(1);
            tracing::warn!(%status, remote_task_id = %update.remote_task_id,
                "undocumented provider status; treating the task as still running");
        }
    }
}

impl ProviderClient for Guarded {
    fn kind(&self) -> ProviderKind {
        self.inner.kind()
    }

    fn create_task<'a>(&'a self, request: &'a TaskRequest) -> ProviderFuture<'a, String> {
        let span = tracing::info_span!("provider_call",
            provider = %self.kind(), op = "create", generation_id = %request.generation_id,
            mode = %request.mode, provider_model = %request.provider_model);
        Box::pin(self.call(Op::Create, self.inner.create_task(request)).instrument(span))
    }

    fn query_task<'a>(&'a self, task: &'a TaskRef) -> ProviderFuture<'a, TaskUpdate> {
        // A TaskRef carries no generation id: the caller's span has it.
        let span = tracing::info_span!("provider_call",
            provider = %self.kind(), op = "query", remote_task_id = %task.remote_task_id,
            mode = %task.mode);
        Box::pin(
            async move {
                let update = self.call(Op::Query, self.inner.query_task(task)).await?;
                self.note_unknown_status(&update);
                Ok(update)
            }
            .instrument(span),
        )
    }

    fn find_by_generation<'a>(
        &'a self,
        mode: Mode,
        provider_model: &'a str,
        generation_id: GenerationId,
    ) -> ProviderFuture<'a, Option<TaskUpdate>> {
        let span = tracing::info_span!("provider_call",
            provider = %self.kind(), op = "find", generation_id = %generation_id, mode = %mode);
        let call = self.inner.find_by_generation(mode, provider_model, generation_id);
        Box::pin(
            async move {
                let found = self.call(Op::Find, call).await?;
                if let Some(update) = &found {
                    self.note_unknown_status(update);
                }
                Ok(found)
            }
            .instrument(span),
        )
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    /// A provider that takes 100 ms per call and remembers the most calls it saw at once.
    #[derive(Debug, Default)]
    struct Slow {
        now: AtomicUsize,
        most: AtomicUsize,
    }

    impl ProviderClient for Slow {
        fn kind(&self) -> ProviderKind {
            ProviderKind::Kie
        }

        fn create_task<'a>(&'a self, _: &'a TaskRequest) -> ProviderFuture<'a, String> {
            Box::pin(async move {
                let at_once = self.now.fetch_add(1, Ordering::SeqCst) + 1;
                self.most.fetch_max(at_once, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(100)).await;
                self.now.fetch_sub(1, Ordering::SeqCst);
                Ok("task".to_owned())
            })
        }

        fn query_task<'a>(&'a self, _: &'a TaskRef) -> ProviderFuture<'a, TaskUpdate> {
            Box::pin(async { Err(ProviderError::NotFound) })
        }

        fn find_by_generation<'a>(
            &'a self,
            _: Mode,
            _: &'a str,
            _: GenerationId,
        ) -> ProviderFuture<'a, Option<TaskUpdate>> {
            Box::pin(async { Ok(None) })
        }
    }

    fn request() -> TaskRequest {
        TaskRequest {
            generation_id: GenerationId::new(),
            provider_model: "sora-2".to_owned(),
            options: Default::default(),
            mode: Mode::Text2Video,
            params: gengate_shared::generation::GenerationParams {
                prompt: "p".to_owned(),
                client_prompt: "p".to_owned(),
                negative_prompt: None,
                duration: None,
                aspect_ratio: None,
                image_urls: Vec::new(),
                end_image_url: None,
                camera_control: None,
                quality: None,
                sub_type: None,
            },
            callback_url: String::new(),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn calls_are_capped_and_creates_rate_limited() {
        let slow = Arc::new(Slow::default());
        let limits = ProviderLimits {
            max_concurrency: 2,
            rate_limit: 3,
            rate_window_ms: 1000,
            timeout_ms: 1000,
            max_response_bytes: 1024,
        };
        let guarded = Arc::new(Guarded::new(slow.clone(), &limits));
        let start = Instant::now();
        let calls: Vec<_> = (0..6)
            .map(|_| {
                let guarded = guarded.clone();
                tokio::spawn(async move {
                    guarded.create_task(&request()).await.unwrap();
                    start.elapsed().as_millis()
                })
            })
            .collect();
        let mut finished = Vec::new();
        for call in calls {
            finished.push(call.await.unwrap());
        }
        finished.sort_unstable();
        // Three creates in the first second, two at a time; the next three a second later.
        assert_eq!(finished, [100, 100, 200, 1100, 1100, 1200]);
        assert_eq!(slow.most.load(Ordering::SeqCst), 2);
    }
}
