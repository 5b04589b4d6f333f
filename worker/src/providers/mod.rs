//! The worker's side of the upstream providers: one HTTP client per provider behind the
//! object-safe [`ProviderClient`] trait, and the [`Registry`] that hands them out by
//! [`ProviderKind`], each wrapped with the provider's limits, a tracing span and metrics.
//!
//! The wire formats (bodies, paths, status mapping, error classification) live in
//! `gengate_shared::providers::<name>`; the clients here only move them over HTTP. Adding a
//! provider is one module here (plus its wire module in `shared`) and one line in
//! [`Registry::from_settings`].

mod guarded;
pub mod kie;
pub mod kling;
pub mod limits;
mod transport;

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use gengate_shared::config::{ProviderLimits, ProvidersSettings};
use gengate_shared::generation::Mode;
use gengate_shared::ids::GenerationId;
use gengate_shared::providers::{ProviderError, ProviderKind, TaskRef, TaskRequest, TaskUpdate};

pub use guarded::Guarded;
pub use kie::KieClient;
pub use kling::KlingClient;
pub use limits::RateLimiter;
pub(crate) use transport::error_chain;

/// What a provider call returns: boxed so that [`ProviderClient`] stays object-safe.
pub type ProviderFuture<'a, T> =
    Pin<Box<dyn Future<Output = Result<T, ProviderError>> + Send + 'a>>;

/// One upstream provider, as the worker uses it. Errors are already classified: retry later,
/// fail the job (and maybe alert), or no such task.
pub trait ProviderClient: Send + Sync + std::fmt::Debug {
    /// Which provider this is.
    fn kind(&self) -> ProviderKind;

    /// Creates the upstream task of one generation; returns the provider's task id.
    fn create_task<'a>(&'a self, request: &'a TaskRequest) -> ProviderFuture<'a, String>;

    /// Asks the provider where a task stands. An unknown task is [`ProviderError::NotFound`].
    fn query_task<'a>(&'a self, task: &'a TaskRef) -> ProviderFuture<'a, TaskUpdate>;

    /// Finds the task a generation created, for a worker that crashed (or lost the answer)
    /// between creating a task and recording its id. `Ok(None)`: there is none, or the provider
    /// offers no such lookup (kie.ai), in which case the caller cannot tell and must decide
    /// whether to create again.
    fn find_by_generation<'a>(
        &'a self,
        mode: Mode,
        provider_model: &'a str,
        generation_id: GenerationId,
    ) -> ProviderFuture<'a, Option<TaskUpdate>>;
}

/// Every configured provider's client, by kind, each behind its limits.
#[derive(Debug, Clone, Default)]
pub struct Registry {
    clients: HashMap<ProviderKind, Arc<dyn ProviderClient>>,
}

impl Registry {
    /// A client for every provider in the settings. A provider without keys still gets one; its
    /// calls fail permanently with `not_configured` (an account problem an operator must fix).
    pub fn from_settings(settings: &ProvidersSettings) -> Result<Self, reqwest::Error> {
        let mut registry = Self::default();
        registry.register(KlingClient::new(&settings.kling)?, &settings.kling.limits);
        registry.register(KieClient::new(&settings.kie)?, &settings.kie.limits);
        Ok(registry)
    }

    /// Adds (or replaces) the client of `client.kind()`, behind `limits`.
    pub fn register(&mut self, client: impl ProviderClient + 'static, limits: &ProviderLimits) {
        let guarded = Guarded::new(Arc::new(client), limits);
        self.clients.insert(guarded.kind(), Arc::new(guarded));
    }

    /// The client of `kind`, if one is registered.
    pub fn get(&self, kind: ProviderKind) -> Option<Arc<dyn ProviderClient>> {
        self.clients.get(&kind).cloned()
    }
}

/// The answer of every call to a provider whose keys are missing from the settings.
pub(crate) fn not_configured(kind: ProviderKind, what: &str) -> ProviderError {
    ProviderError::Permanent {
        code: "not_configured".to_owned(),
        message: format!("{kind} is not configured: set {what}"),
        account_problem: true,
    }
}
