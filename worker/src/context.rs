//! What every handler of the worker process shares.

use std::sync::Arc;

use gengate_shared::allowlist::ResultAllowlist;
use gengate_shared::batched_reads::BatchedReads;
use gengate_shared::config::Settings;
use gengate_shared::generation::callback_token::CallbackKeys;
use gengate_shared::generation::job::Job;
use gengate_shared::ids::GenerationId;
use gengate_shared::queue::Broker;
use gengate_shared::storage::Storage;
use sqlx::PgPool;

use crate::accepts::Accepts;
use crate::archive::fetch::Fetcher;
use crate::commits::Commits;
use crate::notify::sender::Sender;
use crate::providers::Registry;
use crate::retry::RetryPolicies;

/// The worker's handles and settings.
#[derive(Debug)]
pub struct WorkerContext {
    /// Settings as loaded at start-up.
    pub settings: Arc<Settings>,
    /// PostgreSQL.
    pub pool: PgPool,
    /// RabbitMQ.
    pub broker: Broker,
    /// Provider clients, each behind its limits.
    pub providers: Registry,
    /// Callback-token keys (to build callback URLs).
    pub callback_keys: CallbackKeys,
    /// Result URLs gengate accepts (polled results are checked here; webhooks at ingress).
    pub allowlist: Arc<ResultAllowlist>,
    /// Where result files are kept.
    pub storage: Storage,
    /// Downloads result files (from allowlisted URLs only).
    pub fetcher: Fetcher,
    /// How each kind of work is tried again.
    pub retry: RetryPolicies,
    /// The transactions the handlers' transitions share.
    pub commits: Commits,
    /// The handlers' reads of their generation, shared by concurrent deliveries.
    pub jobs: BatchedReads<GenerationId, Job>,
    /// The provider tasks this worker is creating and has not recorded yet.
    pub accepts: Accepts,
    /// Sends webhooks to clients.
    pub webhooks: Sender,
}

impl WorkerContext {
    /// Bundles the handles and starts the committer tasks (on the current tokio runtime); fails
    /// when the settings lack what the worker needs.
    pub fn new(settings: Settings, pool: PgPool, broker: Broker) -> anyhow::Result<Self> {
        let callback_keys =
            CallbackKeys::required(&settings.webhook).map_err(anyhow::Error::msg)?;
        let providers = Registry::from_settings(&settings.providers)?;
        let allowlist = Arc::new(ResultAllowlist::from_settings(&settings.webhook));
        let storage = Storage::from_settings(&settings)?;
        let fetcher = Fetcher::new(&settings.archive, allowlist.clone())?;
        let webhooks = Sender::new(&settings.client_webhooks)?;
        Ok(Self {
            commits: Commits::start(pool.clone(), &settings.worker.group_commit),
            jobs: {
                let pool = pool.clone();
                BatchedReads::start(&settings.worker.group_commit, "job", move |ids| {
                    let pool = pool.clone();
                    async move { Job::load_many(&pool, &ids).await }
                })
            },
            retry: RetryPolicies::from_settings(&settings),
            settings: Arc::new(settings),
            pool,
            broker,
            providers,
            callback_keys,
            allowlist,
            storage,
            fetcher,
            accepts: Accepts::default(),
            webhooks,
        })
    }
}
