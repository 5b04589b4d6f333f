//! The state every handler sees.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use gengate_shared::allowlist::ResultAllowlist;
use gengate_shared::batched_reads::BatchedReads;
use gengate_shared::catalogue::Catalogue;
use gengate_shared::config::Settings;
use gengate_shared::generation::callback_token::CallbackKeys;
use gengate_shared::generation::store::{self, GenerationView, WebhookTarget};
use gengate_shared::ids::{ApiKeyId, GenerationId};
use gengate_shared::queue::Broker;
use gengate_shared::storage::Storage;
use gengate_shared::telemetry::PrometheusHandle;
use sqlx::PgPool;

use crate::error::ApiError;
use crate::keys::KeyCache;
use crate::rate_limit::RateLimiter;
use crate::relay::RelayWaker;
use crate::submit_batch::SubmitBatcher;

/// Shared handles of the API process. Cheap to clone.
#[derive(Clone, Debug)]
pub struct ApiContext {
    /// Settings as loaded at start-up.
    pub settings: Arc<Settings>,
    /// PostgreSQL.
    pub pool: PgPool,
    /// RabbitMQ.
    pub broker: Broker,
    /// The Prometheus recorder `/metrics` renders.
    pub metrics: PrometheusHandle,
    /// The model catalogue.
    pub catalogue: Arc<Catalogue>,
    /// Callback-token keys.
    pub callback_keys: Arc<CallbackKeys>,
    /// Per-API-key request rate limit.
    pub rate_limiter: Arc<RateLimiter<ApiKeyId>>,
    /// Failed authentications per client address.
    pub auth_failures: Arc<RateLimiter<IpAddr>>,
    /// API keys this process has checked, and their use.
    pub keys: Arc<KeyCache>,
    /// Where result files are kept (and how links to them are made).
    pub storage: Storage,
    /// Result URLs gengate accepts from providers.
    pub allowlist: Arc<ResultAllowlist>,
    /// Wakes the outbox relays after a commit that wrote to the outbox.
    pub relay: RelayWaker,
    /// Writes submits, many to a transaction.
    pub submits: SubmitBatcher,
    /// What webhook ingress reads of the generations webhooks name, shared by concurrent webhooks.
    pub webhook_targets: BatchedReads<GenerationId, WebhookTarget>,
}

impl ApiContext {
    /// Bundles the process's handles and starts the submit committers (on the current tokio
    /// runtime); fails when the settings lack what the API needs.
    pub fn new(
        settings: Settings,
        pool: PgPool,
        broker: Broker,
        metrics: PrometheusHandle,
    ) -> anyhow::Result<Self> {
        let catalogue = Catalogue::from_settings(&settings).map_err(anyhow::Error::msg)?;
        let callback_keys =
            CallbackKeys::required(&settings.webhook).map_err(anyhow::Error::msg)?;
        let rate_limiter = RateLimiter::new(
            settings.limits.rate_limit_per_second,
            settings.limits.rate_limit_burst,
        );
        let allowlist = ResultAllowlist::from_settings(&settings.webhook);
        let auth_failures = RateLimiter::new(
            settings.limits.auth_failures_per_minute / 60.0,
            settings.limits.auth_failure_burst,
        );
        let keys = KeyCache::new(Duration::from_millis(settings.api.key_cache_ttl_ms));
        let storage = Storage::from_settings(&settings)?;
        let callback_keys = Arc::new(callback_keys);
        let submits =
            SubmitBatcher::start(pool.clone(), callback_keys.clone(), &settings.api.submit_batch);
        let webhook_targets = {
            let pool = pool.clone();
            BatchedReads::start(&settings.api.submit_batch, "webhook_target", move |ids| {
                let pool = pool.clone();
                async move { store::webhook_targets(&pool, &ids).await }
            })
        };
        Ok(Self {
            submits,
            webhook_targets,
            allowlist: Arc::new(allowlist),
            relay: RelayWaker::default(),
            settings: Arc::new(settings),
            pool,
            broker,
            metrics,
            catalogue: Arc::new(catalogue),
            callback_keys,
            rate_limiter: Arc::new(rate_limiter),
            auth_failures: Arc::new(auth_failures),
            keys: Arc::new(keys),
            storage,
        })
    }

    /// A generation as a client gets it: links to gengate's copies of its archived files,
    /// made now (they expire).
    pub async fn present(&self, view: GenerationView) -> Result<GenerationView, ApiError> {
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        view.with_links(&self.storage, now).await.map_err(|e| ApiError::Internal(e.into()))
    }
}
