//! Settings for every gengate process, layered: built-in defaults < `gengate.toml` < environment.
//!
//! The file comes from `--config PATH` or `GENGATE_CONFIG`; environment variables override single
//! keys as `GENGATE__SECTION__KEY` (for example `GENGATE__DATABASE__URL`). Secrets (tokens, keys,
//! connection URLs with passwords) are [`SecretString`]s: their `Debug` output is redacted, and each
//! can also be read from a file named by the matching `*_file` key (for container secrets).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use config::{Config, Environment, File, FileFormat};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use crate::generation::{Billing, MediaType, Mode};
use crate::providers::ProviderKind;

/// The defaults every layer starts from; `deploy/gengate.example.toml` documents each key.
pub const DEFAULTS: &str = include_str!("config/defaults.toml");

/// Settings that are lists; from the environment they are written comma-separated.
const LIST_KEYS: &[&str] = &[
    "amqp.delay_tiers_ms",
    "amqp.urls",
    "client_webhooks.retry_schedule_ms",
    "webhook.allowed_result_hosts",
    "webhook.allowed_result_origins",
    "worker.poll_intervals_ms",
];

/// Environment variable naming the config file when `--config` is not given.
pub const CONFIG_PATH_ENV: &str = "GENGATE_CONFIG";

/// Why settings could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A layer could not be read or merged, or a value has the wrong type.
    #[error("invalid configuration: {0}")]
    Invalid(#[from] config::ConfigError),
    /// A `*_file` secret could not be read.
    #[error("cannot read secret {key} from {path}: {source}")]
    SecretFile {
        /// The settings key, e.g. `api.admin_token_file`.
        key: &'static str,
        /// The file that was named.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A value parsed but makes no sense (a zero pool size, an empty tier list, …).
    #[error("invalid configuration: {0}")]
    Semantic(String),
}

/// All settings of a gengate process. Each binary reads the sections it needs.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// `production` (the default) or `dev` (the local stack): what the checks at start-up
    /// insist on, e.g. admin and internal tokens of at least 32 characters outside `dev`.
    #[serde(default)]
    pub profile: Profile,
    /// PostgreSQL.
    pub database: DatabaseSettings,
    /// RabbitMQ.
    pub amqp: AmqpSettings,
    /// The HTTP API process.
    pub api: ApiSettings,
    /// The worker process.
    pub worker: WorkerSettings,
    /// Logs and metrics.
    pub telemetry: TelemetrySettings,
    /// Accounts.
    pub accounts: AccountSettings,
    /// Upstream providers.
    pub providers: ProvidersSettings,
    /// Provider webhooks (callback tokens, result URL allowlist).
    pub webhook: WebhookSettings,
    /// Webhooks gengate sends to its clients (`[client_webhooks]`).
    pub client_webhooks: ClientWebhookSettings,
    /// Per-user and per-key limits.
    pub limits: LimitSettings,
    /// Where result files are kept (`[storage]`).
    pub storage: StorageSettings,
    /// Copying result files into storage (`[archive]`).
    pub archive: ArchiveSettings,
    /// The model catalogue's version (stored on every generation with its price).
    pub catalogue: CatalogueSettings,
    /// The model catalogue: `[models.<name>]`.
    pub models: BTreeMap<String, ModelSettings>,
    /// Prompt templates by `sub_type`: `[prompt_templates.<sub_type>]`.
    #[serde(default)]
    pub prompt_templates: BTreeMap<String, PromptTemplateSettings>,
    /// The Kling-compatible API (`/kling/v1/…`): `[kling_compat]`.
    #[serde(default)]
    pub kling_compat: KlingCompatSettings,
}

/// The Kling-compatible API.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KlingCompatSettings {
    /// Catalogue models by Kling `model_name` and quality `mode`, keyed `"<model_name>/<mode>"`
    /// (e.g. `"kling-v1-6/pro" = "kling-v1-6-pro"`); a pair not listed is Kling's unknown-model
    /// error.
    #[serde(default)]
    pub models: BTreeMap<String, String>,
}

/// Where a process runs, for the checks at start-up.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Profile {
    /// A real deployment: weak secrets are refused.
    #[default]
    Production,
    /// The local stack (`deploy/dev up`) and tests.
    Dev,
}

/// Shortest admin or internal token accepted outside the `dev` profile.
pub const MIN_TOKEN_CHARS: usize = 32;

/// Provider webhooks.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookSettings {
    /// The key callback tokens are derived from (HMAC-SHA256 of the generation id). Required by
    /// the API and the workers; changing it invalidates the callback URLs of running jobs unless
    /// the old key stays in `previous_secrets` under its version.
    #[serde(default)]
    pub secret: Option<SecretString>,
    /// Read the secret from this file instead.
    #[serde(default)]
    pub secret_file: Option<PathBuf>,
    /// The version new generations are stamped with (1–32767).
    pub key_version: i16,
    /// Older keys by version, so callbacks of jobs started before a rotation still verify.
    #[serde(default)]
    pub previous_secrets: BTreeMap<String, SecretString>,
    /// Hosts result URLs may point at (https only): exact names or `*.` wildcards for subdomains.
    pub allowed_result_hosts: Vec<String>,
    /// Exact origins also accepted, including plain http and ports (`http://127.0.0.1:8099` for
    /// the local simulator). Empty in production.
    #[serde(default)]
    pub allowed_result_origins: Vec<String>,
    /// Largest accepted webhook body.
    pub max_body_bytes: usize,
    /// How far a signed webhook's timestamp may be from now, in seconds, so a captured signed
    /// callback cannot be replayed later.
    pub signature_tolerance_secs: i64,
}

/// Which object store keeps result files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StorageBackend {
    /// Files under `storage.path`, served by the API's `/files/…` route with signed links.
    Filesystem,
    /// An S3-compatible store (AWS S3, MinIO, Cloudflare R2, …); clients get presigned URLs.
    S3,
}

/// Where result files are kept.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageSettings {
    /// `filesystem` (the default; nothing else to run) or `s3`.
    pub backend: StorageBackend,
    /// The directory the filesystem store keeps files under (created if missing). The API and
    /// every worker must see the same directory.
    pub path: PathBuf,
    /// S3: the bucket.
    #[serde(default)]
    pub bucket: Option<String>,
    /// S3: the endpoint, for stores other than AWS (`http://127.0.0.1:9000`); unset for AWS.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// S3: the region (`us-east-1` where the store does not care).
    pub region: String,
    /// S3: the access key id (secret).
    #[serde(default)]
    pub access_key_id: Option<SecretString>,
    /// Read the access key id from this file instead.
    #[serde(default)]
    pub access_key_id_file: Option<PathBuf>,
    /// S3: the secret access key (secret).
    #[serde(default)]
    pub secret_access_key: Option<SecretString>,
    /// Read the secret access key from this file instead.
    #[serde(default)]
    pub secret_access_key_file: Option<PathBuf>,
    /// S3: allow a plain-http endpoint (a store on the same machine or network).
    pub allow_http: bool,
    /// How long a link handed to a client works, in seconds; a re-read gives a fresh one.
    pub link_ttl_secs: u64,
}

/// Copying result files into storage.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArchiveSettings {
    /// Copies a worker process runs at once (each holds one file on disk while it runs).
    pub concurrency: u16,
    /// Largest result file copied; a larger one ends `failed` (`too_large`).
    pub max_file_bytes: u64,
    /// Connecting to the file's host may take this long (ms).
    pub connect_timeout_ms: u64,
    /// Each read of the file may wait this long for data (ms); there is no limit on the whole
    /// copy, which streams.
    pub read_timeout_ms: u64,
    /// Tries of an archive before a file that keeps timing out or failing ends `failed`.
    pub attempts: u32,
    /// The `ffprobe` and `ffmpeg` programs (Debian package `ffmpeg`), for the probe and the
    /// poster.
    pub ffprobe: PathBuf,
    /// See `ffprobe`.
    pub ffmpeg: PathBuf,
    /// Where a file is staged while it is probed (default: the system's temporary directory).
    #[serde(default)]
    pub temp_dir: Option<PathBuf>,
}

/// Webhooks gengate sends to its clients when their jobs end (Standard Webhooks).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientWebhookSettings {
    /// Accept `http://` webhook URLs (the local stack and tests only: a delivery's body and
    /// signature travel in clear).
    pub allow_http: bool,
    /// Deliver to private, loopback, link-local and metadata addresses (the local stack and
    /// tests only: in production a client could otherwise make gengate's workers call into their
    /// own network).
    pub allow_private_addresses: bool,
    /// Each attempt may take this long, connecting included (ms).
    pub timeout_ms: u64,
    /// The pause before each retry (ms): the first retry waits the first pause, and so on; a
    /// delivery that failed once more than there are pauses ends `failed`.
    pub retry_schedule_ms: Vec<u64>,
    /// Read at most this much of an answer's body (it is discarded; reading it lets the
    /// connection be reused).
    pub max_response_bytes: usize,
    /// An endpoint whose every attempt failed for this long is disabled (ms).
    pub disable_after_ms: u64,
    /// After a rotation, the old signing secret still signs for this long (ms).
    pub secret_grace_ms: u64,
    /// How often a worker publishes the retries that are due (ms).
    pub schedule_ms: u64,
}

/// Per-user and per-key limits.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitSettings {
    /// Jobs a user may have queued or submitted at once, unless the user has their own limit.
    pub default_max_in_flight: i32,
    /// Requests per second per API key (token bucket refill rate; 0: unlimited).
    pub rate_limit_per_second: f64,
    /// Burst size of that bucket.
    pub rate_limit_burst: f64,
    /// Failed authentications (bad API keys, webhook tokens, admin or internal tokens) allowed
    /// per client address per minute once the burst is spent (0: unlimited). Past it, the address
    /// is answered 429 with `Retry-After`, except for credentials that are valid.
    pub auth_failures_per_minute: f64,
    /// Failed authentications an address may make at once before the per-minute rate applies.
    pub auth_failure_burst: f64,
}

/// The catalogue as a whole.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CatalogueSettings {
    /// The price table's version; bump it with every price change. Stored on each generation.
    pub version: String,
    /// Accept input `image_urls` that are plain http, IP addresses, `localhost` or other private
    /// names, or on ports other than 443. Off in production (the provider would fetch them, so
    /// they would reach into the provider's or gengate's network); on for the local stack and
    /// tests.
    #[serde(default)]
    pub allow_private_image_urls: bool,
}

/// One model of the catalogue.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSettings {
    /// Offered to clients (set false to hide a built-in model).
    #[serde(default = "enabled")]
    pub enabled: bool,
    /// `kling` or `kie`.
    pub provider: ProviderKind,
    /// The model family at the provider (see docs/providers.md).
    pub provider_model: String,
    /// Fixed options passed to the provider adapter (e.g. Kling `mode = "pro"`).
    #[serde(default)]
    pub options: BTreeMap<String, String>,
    /// `video` or `image`.
    #[serde(rename = "type")]
    pub media: MediaType,
    /// `prepaid` (reserve at submit) or `postpaid` (hold at submit, charge on success).
    pub billing: Billing,
    /// Credits per 5-second unit (video) or per image.
    pub base_price: i64,
    /// Modes offered.
    pub modes: Vec<Mode>,
    /// Durations offered in seconds (video); the first is the default.
    #[serde(default)]
    pub durations: Vec<u32>,
    /// Aspect ratios offered; the first is the default.
    #[serde(default)]
    pub aspect_ratios: Vec<String>,
    /// Quality (or resolution) choices and their price factors, if the model has any.
    #[serde(default)]
    pub qualities: BTreeMap<String, f64>,
    /// The quality used when a request names none (required when `qualities` is set).
    #[serde(default)]
    pub default_quality: Option<String>,
    /// Longest prompt, in characters, after the `sub_type` template.
    pub max_prompt_chars: usize,
    /// Most input images.
    #[serde(default)]
    pub max_images: usize,
    /// Takes a last frame (`end_image_url`) in image2video (Kling's `image_tail`; Kling models only).
    #[serde(default)]
    pub end_frame: bool,
    /// Takes a `camera_control` in text2video and image2video (Kling models only).
    #[serde(default)]
    pub camera_control: bool,
    /// The provider's usage units a 5-second clip takes, where the provider reports the usage it
    /// charged (Kling `final_unit_deduction`): a job reported at fewer units than expected is
    /// settled at the same fraction of its price (never above the price). Unset: settle at price.
    #[serde(default)]
    pub units_per_5s: Option<f64>,
    /// Seconds until a job that has not finished is failed and refunded.
    #[serde(default = "deadline_seconds")]
    pub deadline_seconds: u64,
}

fn enabled() -> bool {
    true
}

fn deadline_seconds() -> u64 {
    1800
}

/// A prompt template, applied when a request names its `sub_type`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PromptTemplateSettings {
    /// Put before the client's prompt.
    #[serde(default)]
    pub prefix: String,
    /// Put after the client's prompt.
    #[serde(default)]
    pub suffix: String,
    /// The negative prompt when the request has none.
    #[serde(default)]
    pub default_negative_prompt: Option<String>,
}

/// Upstream providers.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProvidersSettings {
    /// Kling's own API.
    pub kling: KlingSettings,
    /// The kie.ai aggregator.
    pub kie: KieSettings,
}

/// How much of a provider a worker process may use at once.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderLimits {
    /// Requests to this provider in flight at once, per worker process.
    pub max_concurrency: u32,
    /// New tasks per `rate_window_ms`, per worker process (0: unlimited). kie.ai allows about 20
    /// per 10 s per account: divide the account's limit by the number of workers.
    pub rate_limit: u32,
    /// The rate limit's window.
    pub rate_window_ms: u64,
    /// Timeout of one HTTP request to the provider.
    pub timeout_ms: u64,
    /// Largest answer read from the provider; a larger one is not read and counts as a
    /// retryable error (`response_too_large`).
    pub max_response_bytes: usize,
}

/// Kling's API.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KlingSettings {
    /// `https://api-singapore.klingai.com` (global) or `https://api-beijing.klingai.com` (China).
    pub base_url: String,
    /// Access key (the JWT issuer).
    #[serde(default)]
    pub access_key: Option<SecretString>,
    /// Read the access key from this file instead.
    #[serde(default)]
    pub access_key_file: Option<PathBuf>,
    /// Secret key (signs the JWT).
    #[serde(default)]
    pub secret_key: Option<SecretString>,
    /// Read the secret key from this file instead.
    #[serde(default)]
    pub secret_key_file: Option<PathBuf>,
    /// Concurrency, rate and timeout.
    #[serde(flatten)]
    pub limits: ProviderLimits,
}

/// The kie.ai API.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KieSettings {
    /// `https://api.kie.ai`.
    pub base_url: String,
    /// API key (`Authorization: Bearer`).
    #[serde(default)]
    pub api_key: Option<SecretString>,
    /// Read the API key from this file instead.
    #[serde(default)]
    pub api_key_file: Option<PathBuf>,
    /// The key kie.ai signs its webhooks with (`X-Webhook-Signature`, set in kie's dashboard).
    /// When set, a kie webhook without a valid, fresh signature is refused (401); unset, the
    /// per-generation token alone admits it. Either way the task is re-fetched before money moves.
    #[serde(default)]
    pub webhook_hmac_key: Option<SecretString>,
    /// Read the webhook signing key from this file instead.
    #[serde(default)]
    pub webhook_hmac_key_file: Option<PathBuf>,
    /// Concurrency, rate and timeout.
    #[serde(flatten)]
    pub limits: ProviderLimits,
}

/// Accounts.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccountSettings {
    /// Credits of the `new_user` grant every new user receives (0: none).
    pub new_user_credits: i64,
    /// Days until the `new_user` grant expires (0: never).
    pub new_user_credits_days: i64,
}

/// PostgreSQL connection settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseSettings {
    /// Connection URL; may carry a password, so it is a secret.
    pub url: SecretString,
    /// Read the URL from this file instead.
    #[serde(default)]
    pub url_file: Option<PathBuf>,
    /// Pool size.
    pub max_connections: u32,
    /// How long a request waits for a pooled connection before failing.
    pub acquire_timeout_ms: u64,
    /// Apply pending migrations when the API starts.
    pub migrate_on_start: bool,
}

/// RabbitMQ connection and topology settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AmqpSettings {
    /// Connection URL of a single broker; may carry a password, so it is a secret. Ignored when
    /// [`AmqpSettings::urls`] names the nodes of a cluster.
    pub url: SecretString,
    /// Read the URL from this file instead.
    #[serde(default)]
    pub url_file: Option<PathBuf>,
    /// The URLs of a cluster's nodes (secrets, like `url`). When set, they replace `url`: every
    /// (re)connection tries them in turn, starting at a node picked per process (so that
    /// processes spread over the cluster) and, after a connection was lost, at the node after the
    /// one it was on. From the environment: comma-separated.
    #[serde(default)]
    pub urls: Vec<SecretString>,
    /// Read the nodes' URLs from this file instead (one per line).
    #[serde(default)]
    pub urls_file: Option<PathBuf>,
    /// Replicas of each quorum queue when it is declared (`x-quorum-initial-group-size`), e.g. 3
    /// on a cluster of three nodes; unset: the broker's default. Like `delivery_limit`, fixed for
    /// a queue once declared.
    #[serde(default)]
    pub quorum_initial_group_size: Option<u32>,
    /// Prefix of every exchange and queue name (`gengate` gives `gengate.jobs`, …). Lets several
    /// deployments, or parallel test runs, share one broker without seeing each other's messages.
    pub prefix: String,
    /// Deliveries after which the broker dead-letters a message that keeps failing (quorum queue
    /// `x-delivery-limit`): the last line of defence behind the worker's own failure counting.
    pub delivery_limit: u32,
    /// Delay tiers in milliseconds, one fixed-TTL queue each, shortest first.
    pub delay_tiers_ms: Vec<u64>,
    /// Upper bound for one connection attempt.
    pub connect_timeout_ms: u64,
}

impl AmqpSettings {
    /// The broker nodes to connect to: [`AmqpSettings::urls`] if set, else the one `url`.
    pub fn node_urls(&self) -> Vec<SecretString> {
        if self.urls.is_empty() { vec![self.url.clone()] } else { self.urls.clone() }
    }

    fn read_secret_files(&mut self) -> Result<(), ConfigError> {
        if let Some(path) = &self.url_file {
            self.url = read_secret("amqp.url_file", path)?;
        }
        if let Some(path) = &self.urls_file {
            let text = read_secret("amqp.urls_file", path)?;
            self.urls = text
                .expose_secret()
                .lines()
                .map(str::trim)
                .filter(|line| !line.is_empty())
                .map(|line| SecretString::from(line.to_owned()))
                .collect();
        }
        Ok(())
    }

    fn validate(&self) -> Result<(), ConfigError> {
        for (index, url) in self.node_urls().iter().enumerate() {
            // The URL itself is a secret: the message names its position only.
            if url.expose_secret().parse::<lapin::uri::AMQPUri>().is_err() {
                return Err(ConfigError::Semantic(format!(
                    "amqp.urls[{index}] (or amqp.url) is not an AMQP URL"
                )));
            }
        }
        if self.quorum_initial_group_size == Some(0) {
            return Err(ConfigError::Semantic(
                "amqp.quorum_initial_group_size must be at least 1 (or unset)".to_owned(),
            ));
        }
        Ok(())
    }
}

/// The API process.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiSettings {
    /// Address the HTTP server binds (port 0 picks a free one).
    pub listen: SocketAddr,
    /// The URL providers and clients reach this API at (callback URLs are built from it).
    pub public_base_url: String,
    /// Bearer token of the admin API. Unset: the admin API refuses every request.
    #[serde(default)]
    pub admin_token: Option<SecretString>,
    /// Read the admin token from this file instead.
    #[serde(default)]
    pub admin_token_file: Option<PathBuf>,
    /// Bearer token of the server-to-server endpoints. Unset: they refuse every request.
    #[serde(default)]
    pub internal_token: Option<SecretString>,
    /// Read the internal token from this file instead.
    #[serde(default)]
    pub internal_token_file: Option<PathBuf>,
    /// Largest accepted request body.
    pub body_limit_bytes: usize,
    /// A request taking longer is answered 408 and its work abandoned.
    pub request_timeout_ms: u64,
    /// On SIGTERM, how long in-flight requests may take to finish.
    pub shutdown_grace_ms: u64,
    /// Address of the operations listener: `/metrics` (served only there), `/healthz`,
    /// `/readyz`, and the admin and internal routes when `admin_on_ops_listener` is set. Keep it
    /// off the public network.
    pub ops_listen: SocketAddr,
    /// Serve `/admin/*` and `/api/generation/handle-failure` on the operations listener only,
    /// not on the public one.
    pub admin_on_ops_listener: bool,
    /// Requests handled at once on the public listener; one more is answered 503 `overloaded`
    /// at once instead of queueing without bound.
    pub max_in_flight_requests: usize,
    /// The header a trusted proxy in front of the API puts the client's address in
    /// (`x-forwarded-for`: the last address in it is used). Unset: the TCP peer's address. Only
    /// set it when every request comes through such a proxy, or clients could claim any address.
    #[serde(default)]
    pub client_address_header: Option<String>,
    /// How long an API key, once checked, is trusted from memory. A revocation reaches every API
    /// process at once (PostgreSQL `NOTIFY`); this bounds how stale a key can be if a
    /// notification is lost with the connection that carried it.
    pub key_cache_ttl_ms: u64,
    /// How often the time API keys were last used is written to the database (one statement for
    /// all keys used since), instead of a write per request.
    pub key_usage_flush_ms: u64,
    /// Group commit of submits: concurrent submits share one transaction (see docs/design.md).
    pub submit_batch: GroupCommitSettings,
    /// PEM certificate chain (leaf first) for serving HTTPS on the public listener. Set together
    /// with `tls_key_file`; unset (both): plain HTTP, as behind a TLS-terminating proxy.
    #[serde(default)]
    pub tls_cert_file: Option<PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1) of `tls_cert_file`'s certificate.
    #[serde(default)]
    pub tls_key_file: Option<PathBuf>,
}

/// How concurrent writes are grouped into shared transactions: the API's submits
/// (`[api.submit_batch]`) and the worker's transitions (`[worker.group_commit]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupCommitSettings {
    /// Most writes in one transaction (1: every write commits alone).
    pub max_size: usize,
    /// How long a batch waits for more writes, in microseconds, after its first, while another
    /// batch is committing; a write that finds no batch committing goes at once, so a lone
    /// client waits for nothing. 0: never wait.
    pub window_us: u64,
    /// Batches committing at once (each holds one database connection while it runs).
    pub transactions: usize,
}

/// The worker process.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkerSettings {
    /// Address of the worker's health and metrics server (port 0 picks a free one).
    pub listen: SocketAddr,
    /// Unacknowledged messages per consumer.
    pub prefetch: u16,
    /// On SIGTERM, how long in-flight messages may take to finish before they are requeued.
    pub shutdown_grace_ms: u64,
    /// Attempts to create a job's upstream task (each with quick in-process retries) before the
    /// job fails and is refunded; between attempts the job waits in the delay tiers.
    pub submit_attempts: u32,
    /// Pauses between polls of a running task, in order; the last repeats.
    pub poll_intervals_ms: Vec<u64>,
    /// After a job failed at its deadline, polls go on this often for `reconcile_window_ms`, so a
    /// late success is still charged (and its result kept).
    pub late_poll_interval_ms: u64,
    /// How long after the deadline failure polling goes on.
    pub reconcile_window_ms: u64,
    /// Retired: webhooks are always confirmed by querying the provider before money moves. Still
    /// accepted as `true` so that existing configuration files load; `false` is refused.
    #[serde(default)]
    pub confirm_webhooks_by_query: Option<bool>,
    /// How often the whole ledger is reconciled (one worker of the deployment runs it; each run
    /// is a row of `ledger_audits` and the metric `gengate_ledger_audits_total`); 0: never.
    pub ledger_audit_interval_ms: u64,
    /// How often the sweeper looks for jobs stuck past their deadline or with a lost poll.
    pub sweep_interval_ms: u64,
    /// How often each worker looks in the database for polls that are due and publishes them
    /// (`poll.task`): a poll is late by at most this much.
    pub poll_schedule_ms: u64,
    /// How the transitions of concurrent deliveries share transactions.
    pub group_commit: GroupCommitSettings,
}

/// Logs and metrics.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelemetrySettings {
    /// `pretty` for people, `json` for log pipelines.
    pub log_format: LogFormat,
    /// A `tracing` filter (`info`, `gengate_api=debug,info`, …); `RUST_LOG` overrides it.
    pub log_filter: String,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable, colored when writing to a terminal.
    Pretty,
    /// One JSON object per line.
    Json,
}

/// The `--config` option of every gengate program (flattened into its command line).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ConfigArg {
    /// Config file (TOML); defaults to $GENGATE_CONFIG, then built-in defaults. Environment
    /// variables GENGATE__SECTION__KEY override single keys.
    #[arg(long, global = true)]
    pub config: Option<PathBuf>,
}

impl ConfigArg {
    /// The settings this option (and the environment) name.
    pub fn load(&self) -> Result<Settings, ConfigError> {
        Settings::load(self.config.as_deref())
    }
}

impl Settings {
    /// Loads the layers: defaults, then `path` (or `GENGATE_CONFIG`), then the process environment.
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        let from_env = std::env::var_os(CONFIG_PATH_ENV).map(PathBuf::from);
        Self::load_from(path.map(Path::to_path_buf).or(from_env).as_deref(), None)
    }

    /// Like [`Settings::load`] with an explicit environment instead of the process's (for tests).
    pub fn load_from(
        path: Option<&Path>,
        env: Option<BTreeMap<String, String>>,
    ) -> Result<Self, ConfigError> {
        let mut builder = Config::builder().add_source(File::from_str(DEFAULTS, FileFormat::Toml));
        if let Some(path) = path {
            builder = builder.add_source(File::from(path).format(FileFormat::Toml).required(true));
        }
        let mut environment = Environment::with_prefix("GENGATE")
            .prefix_separator("__")
            .separator("__")
            .try_parsing(true)
            .list_separator(",");
        // These keys take comma-separated lists from the environment (numeric lists need at
        // least two elements: a single number reads as a number).
        for key in LIST_KEYS {
            environment = environment.with_list_parse_key(key);
        }
        let environment = environment.source(env.map(|vars| vars.into_iter().collect()));
        let mut settings: Settings = builder.add_source(environment).build()?.try_deserialize()?;
        settings.read_secret_files()?;
        settings.validate()?;
        Ok(settings)
    }

    fn read_secret_files(&mut self) -> Result<(), ConfigError> {
        if let Some(path) = &self.database.url_file {
            self.database.url = read_secret("database.url_file", path)?;
        }
        self.amqp.read_secret_files()?;
        if let Some(path) = &self.api.admin_token_file {
            self.api.admin_token = Some(read_secret("api.admin_token_file", path)?);
        }
        if let Some(path) = &self.api.internal_token_file {
            self.api.internal_token = Some(read_secret("api.internal_token_file", path)?);
        }
        let kling = &mut self.providers.kling;
        if let Some(path) = &kling.access_key_file {
            kling.access_key = Some(read_secret("providers.kling.access_key_file", path)?);
        }
        if let Some(path) = &kling.secret_key_file {
            kling.secret_key = Some(read_secret("providers.kling.secret_key_file", path)?);
        }
        let kie = &mut self.providers.kie;
        if let Some(path) = &kie.api_key_file {
            kie.api_key = Some(read_secret("providers.kie.api_key_file", path)?);
        }
        if let Some(path) = &kie.webhook_hmac_key_file {
            kie.webhook_hmac_key = Some(read_secret("providers.kie.webhook_hmac_key_file", path)?);
        }
        if kie.webhook_hmac_key.as_ref().is_some_and(|k| k.expose_secret().is_empty()) {
            kie.webhook_hmac_key = None;
        }
        let storage = &mut self.storage;
        if let Some(path) = &storage.access_key_id_file {
            storage.access_key_id = Some(read_secret("storage.access_key_id_file", path)?);
        }
        if let Some(path) = &storage.secret_access_key_file {
            storage.secret_access_key = Some(read_secret("storage.secret_access_key_file", path)?);
        }
        if let Some(path) = &self.webhook.secret_file {
            self.webhook.secret = Some(read_secret("webhook.secret_file", path)?);
        }
        if self.webhook.secret.as_ref().is_some_and(|s| s.expose_secret().is_empty()) {
            self.webhook.secret = None;
        }
        // An empty token would let an empty `Authorization: Bearer ` through; treat it as unset.
        for token in [&mut self.api.admin_token, &mut self.api.internal_token] {
            if token.as_ref().is_some_and(|t| t.expose_secret().is_empty()) {
                *token = None;
            }
        }
        Ok(())
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let fail = |msg: &str| Err(ConfigError::Semantic(msg.to_owned()));
        if self.database.max_connections == 0 {
            return fail("database.max_connections must be at least 1");
        }
        if self.profile != Profile::Dev {
            for (key, token) in [
                ("api.admin_token", &self.api.admin_token),
                ("api.internal_token", &self.api.internal_token),
            ] {
                if token
                    .as_ref()
                    .is_some_and(|t| t.expose_secret().chars().count() < MIN_TOKEN_CHARS)
                {
                    return Err(ConfigError::Semantic(format!(
                        "{key} must be at least {MIN_TOKEN_CHARS} characters (a random 32-byte \
                         hex string, say); only the dev profile accepts shorter ones"
                    )));
                }
            }
        }
        if self.api.max_in_flight_requests == 0
            || self.api.key_cache_ttl_ms == 0
            || self.api.key_usage_flush_ms == 0
        {
            return fail(
                "api.max_in_flight_requests, key_cache_ttl_ms and key_usage_flush_ms must be positive",
            );
        }
        for (section, batch) in [
            ("api.submit_batch", &self.api.submit_batch),
            ("worker.group_commit", &self.worker.group_commit),
        ] {
            if batch.max_size == 0 || batch.transactions == 0 {
                return fail(&format!("{section}.max_size and transactions must be positive"));
            }
            if batch.window_us > 100_000 {
                return fail(&format!(
                    "{section}.window_us is at most 100000 (0.1 s): a batch's wait is every one \
                     of its writes' latency"
                ));
            }
            if batch.transactions > self.database.max_connections as usize {
                return fail(&format!(
                    "{section}.transactions must not exceed database.max_connections (each batch \
                     holds a connection)"
                ));
            }
        }
        if self.limits.auth_failures_per_minute < 0.0
            || (self.limits.auth_failures_per_minute > 0.0 && self.limits.auth_failure_burst < 1.0)
        {
            return fail(
                "limits.auth_failures_per_minute must not be negative, and auth_failure_burst at least 1",
            );
        }
        if self.amqp.prefix.is_empty() || self.amqp.prefix.contains(char::is_whitespace) {
            return fail("amqp.prefix must be a non-empty name without spaces");
        }
        self.amqp.validate()?;
        if self.amqp.delivery_limit == 0 {
            return fail("amqp.delivery_limit must be at least 1");
        }
        if self.amqp.delay_tiers_ms.is_empty()
            || self.amqp.delay_tiers_ms.windows(2).any(|w| w[0] >= w[1])
            || self.amqp.delay_tiers_ms[0] == 0
        {
            return fail(
                "amqp.delay_tiers_ms must be a non-empty, strictly increasing list of positive delays",
            );
        }
        if self.accounts.new_user_credits < 0 || self.accounts.new_user_credits_days < 0 {
            return fail(
                "accounts.new_user_credits and new_user_credits_days must not be negative",
            );
        }
        for (name, limits) in
            [("kling", &self.providers.kling.limits), ("kie", &self.providers.kie.limits)]
        {
            if limits.max_concurrency == 0
                || limits.timeout_ms == 0
                || limits.max_response_bytes == 0
            {
                return Err(ConfigError::Semantic(format!(
                    "providers.{name}.max_concurrency, timeout_ms and max_response_bytes must be at least 1"
                )));
            }
            if limits.rate_limit > 0 && limits.rate_window_ms == 0 {
                return Err(ConfigError::Semantic(format!(
                    "providers.{name}.rate_window_ms must be positive when rate_limit is set"
                )));
            }
        }
        if self.webhook.key_version < 1 {
            return fail("webhook.key_version must be at least 1");
        }
        let hooks = &self.client_webhooks;
        if hooks.timeout_ms == 0
            || hooks.retry_schedule_ms.contains(&0)
            || hooks.max_response_bytes == 0
            || hooks.disable_after_ms == 0
            || hooks.schedule_ms == 0
        {
            return fail(
                "client_webhooks.timeout_ms, retry_schedule_ms, max_response_bytes, disable_after_ms and schedule_ms must be positive",
            );
        }
        if self.limits.default_max_in_flight < 1 {
            return fail("limits.default_max_in_flight must be at least 1");
        }
        if self.limits.rate_limit_per_second < 0.0
            || (self.limits.rate_limit_per_second > 0.0 && self.limits.rate_limit_burst < 1.0)
        {
            return fail(
                "limits.rate_limit_per_second must not be negative, and rate_limit_burst at least 1",
            );
        }
        crate::catalogue::Catalogue::from_settings(self).map_err(ConfigError::Semantic)?;
        if self.worker.submit_attempts == 0
            || self.worker.poll_intervals_ms.is_empty()
            || self.worker.poll_intervals_ms.contains(&0)
            || self.worker.late_poll_interval_ms == 0
            || self.worker.sweep_interval_ms == 0
            || self.worker.poll_schedule_ms == 0
        {
            return fail(
                "worker.submit_attempts, poll_intervals_ms, late_poll_interval_ms, sweep_interval_ms and poll_schedule_ms must be positive",
            );
        }
        if self.worker.prefetch == 0 {
            return fail("worker.prefetch must be at least 1");
        }
        if self.storage.backend == StorageBackend::S3 && self.storage.bucket.is_none() {
            return fail("storage.bucket is required with storage.backend = \"s3\"");
        }
        if self.storage.link_ttl_secs == 0 || self.storage.link_ttl_secs > 7 * 24 * 3600 {
            return fail("storage.link_ttl_secs must be between 1 and 604800 (S3's longest)");
        }
        if self.archive.attempts == 0
            || self.archive.concurrency == 0
            || self.archive.max_file_bytes == 0
            || self.archive.connect_timeout_ms == 0
            || self.archive.read_timeout_ms == 0
        {
            return fail(
                "archive.attempts, concurrency, max_file_bytes, connect_timeout_ms and read_timeout_ms must be positive",
            );
        }
        if self.worker.confirm_webhooks_by_query == Some(false) {
            return fail(
                "worker.confirm_webhooks_by_query = false is no longer supported: a webhook never \
                 moves money without the provider's own answer; remove the key",
            );
        }
        Ok(())
    }
}

impl DatabaseSettings {
    /// How long a request waits for a pooled connection.
    pub fn acquire_timeout(&self) -> Duration {
        Duration::from_millis(self.acquire_timeout_ms)
    }
}

fn read_secret(key: &'static str, path: &Path) -> Result<SecretString, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::SecretFile {
        key,
        path: path.to_path_buf(),
        source,
    })?;
    Ok(SecretString::from(text.trim_end_matches(['\n', '\r']).to_owned()))
}

/// A connection URL with any password replaced by `***`, for logs and error messages.
pub fn redact_url(url: &SecretString) -> String {
    let raw = url.expose_secret();
    let Some((scheme, rest)) = raw.split_once("://") else {
        return "***".to_owned();
    };
    match rest.split_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _password)) => format!("{scheme}://{user}:***@{host}"),
            None => format!("{scheme}://{userinfo}@{host}"),
        },
        None => raw.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Option<BTreeMap<String, String>> {
        Some(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect())
    }

    #[test]
    fn defaults_load_and_environment_overrides_them() {
        let defaults = Settings::load_from(None, env(&[])).unwrap();
        assert_eq!(defaults.api.listen.port(), 8080);
        assert_eq!(defaults.worker.listen.port(), 9090);
        assert_eq!(defaults.amqp.prefix, "gengate");
        assert!(defaults.api.admin_token.is_none());

        let overridden = Settings::load_from(
            None,
            env(&[
                ("GENGATE__DATABASE__URL", "postgres://u:pw@db/x"),
                ("GENGATE__AMQP__PREFIX", "t1"),
                ("GENGATE__WORKER__PREFETCH", "7"),
                ("GENGATE__PROFILE", "dev"),
                ("GENGATE__API__ADMIN_TOKEN", "12345"),
            ]),
        )
        .unwrap();
        assert_eq!(overridden.database.url.expose_secret(), "postgres://u:pw@db/x");
        assert_eq!(overridden.amqp.prefix, "t1");
        assert_eq!(overridden.worker.prefetch, 7);
        // A numeric-looking token stays a string.
        assert_eq!(overridden.api.admin_token.unwrap().expose_secret(), "12345");
    }

    #[test]
    fn file_layer_sits_between_defaults_and_environment() {
        let dir = std::env::temp_dir().join(format!("gengate-config-{}", uuid::Uuid::now_v7()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("gengate.toml");
        std::fs::write(&path, "[amqp]\nprefix = \"from-file\"\ndelivery_limit = 3\n").unwrap();
        let s = Settings::load_from(Some(&path), env(&[("GENGATE__AMQP__DELIVERY_LIMIT", "9")]))
            .unwrap();
        assert_eq!(s.amqp.prefix, "from-file");
        assert_eq!(s.amqp.delivery_limit, 9);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn secrets_come_from_files_and_never_show_in_debug_output() {
        let dir = std::env::temp_dir().join(format!("gengate-secret-{}", uuid::Uuid::now_v7()));
        std::fs::create_dir_all(&dir).unwrap();
        let token = dir.join("admin");
        std::fs::write(&token, "s3cret-admin-token\n").unwrap();
        let s = Settings::load_from(
            None,
            env(&[
                ("GENGATE__PROFILE", "dev"),
                ("GENGATE__API__ADMIN_TOKEN_FILE", token.to_str().unwrap()),
                ("GENGATE__API__INTERNAL_TOKEN", "s3cret-internal-token"),
                ("GENGATE__DATABASE__URL", "postgres://u:s3cret-db@db/x"),
            ]),
        )
        .unwrap();
        assert_eq!(s.api.admin_token.as_ref().unwrap().expose_secret(), "s3cret-admin-token");
        let debug = format!("{s:?}");
        assert!(!debug.contains("s3cret"), "secret leaked into Debug output: {debug}");
        assert_eq!(redact_url(&s.database.url), "postgres://u:***@db/x");
        assert_eq!(redact_url(&"postgres://u@db/x".to_owned().into()), "postgres://u@db/x");
        assert_eq!(redact_url(&"amqp://db/x".to_owned().into()), "amqp://db/x");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn unknown_keys_and_nonsense_values_are_rejected() {
        let typo = Settings::load_from(None, env(&[("GENGATE__API__LISTNE", "0.0.0.0:1")]));
        assert!(typo.is_err(), "a misspelt key must not be silently ignored");
        let provider_typo =
            Settings::load_from(None, env(&[("GENGATE__PROVIDERS__KLING__TIMEOUT", "5")]));
        assert!(provider_typo.is_err(), "a misspelt provider key must not be ignored");
        let provider_ok =
            Settings::load_from(None, env(&[("GENGATE__PROVIDERS__KLING__TIMEOUT_MS", "5")]))
                .unwrap();
        assert_eq!(provider_ok.providers.kling.limits.timeout_ms, 5);
        let lists = Settings::load_from(
            None,
            env(&[
                ("GENGATE__WEBHOOK__ALLOWED_RESULT_ORIGINS", "http://127.0.0.1:8099"),
                ("GENGATE__WORKER__POLL_INTERVALS_MS", "200,500"),
            ]),
        )
        .unwrap();
        assert_eq!(lists.webhook.allowed_result_origins, ["http://127.0.0.1:8099"]);
        assert_eq!(lists.worker.poll_intervals_ms, [200, 500]);
        let zero = Settings::load_from(None, env(&[("GENGATE__WORKER__PREFETCH", "0")]));
        assert!(matches!(zero, Err(ConfigError::Semantic(_))));
        let missing = Settings::load_from(
            None,
            env(&[("GENGATE__API__ADMIN_TOKEN_FILE", "/nonexistent/gengate-token")]),
        );
        assert!(matches!(missing, Err(ConfigError::SecretFile { .. })));
    }

    #[test]
    fn short_admin_and_internal_tokens_are_refused_outside_the_dev_profile() {
        for key in ["GENGATE__API__ADMIN_TOKEN", "GENGATE__API__INTERNAL_TOKEN"] {
            let short = Settings::load_from(None, env(&[(key, "hunter2")]));
            assert!(matches!(short, Err(ConfigError::Semantic(m)) if m.contains("32 characters")));
            let dev =
                Settings::load_from(None, env(&[(key, "hunter2"), ("GENGATE__PROFILE", "dev")]));
            assert!(dev.is_ok(), "{key} in dev");
            let long = Settings::load_from(None, env(&[(key, &"k".repeat(32))]));
            assert!(long.is_ok(), "{key} of 32 characters");
        }
        let typo = Settings::load_from(None, env(&[("GENGATE__PROFILE", "staging")]));
        assert!(typo.is_err(), "an unknown profile is refused");
    }

    #[test]
    fn amqp_nodes_come_from_urls_or_the_single_url() {
        let single = Settings::load_from(None, env(&[])).unwrap().amqp;
        assert_eq!(single.node_urls().len(), 1);
        assert_eq!(single.quorum_initial_group_size, None);
        let cluster = Settings::load_from(
            None,
            env(&[
                (
                    "GENGATE__AMQP__URLS",
                    "amqp://u:p@127.0.0.1:5701/%2f,amqp://u:p@127.0.0.1:5702/%2f",
                ),
                ("GENGATE__AMQP__QUORUM_INITIAL_GROUP_SIZE", "3"),
            ]),
        )
        .unwrap()
        .amqp;
        let nodes: Vec<String> =
            cluster.node_urls().iter().map(|u| u.expose_secret().to_owned()).collect();
        assert_eq!(nodes, ["amqp://u:p@127.0.0.1:5701/%2f", "amqp://u:p@127.0.0.1:5702/%2f"]);
        assert_eq!(cluster.quorum_initial_group_size, Some(3));
        let one = Settings::load_from(None, env(&[("GENGATE__AMQP__URLS", "amqp://h:5701/%2f")]));
        assert_eq!(one.unwrap().amqp.node_urls().len(), 1, "a list of one node");
        let bad = Settings::load_from(
            None,
            env(&[("GENGATE__AMQP__URLS", "amqp://a:secret@h/%2f,nonsense")]),
        );
        assert!(
            matches!(&bad, Err(ConfigError::Semantic(m)) if m.contains("amqp.urls[1]") && !m.contains("secret")),
            "{bad:?}"
        );
        let zero =
            Settings::load_from(None, env(&[("GENGATE__AMQP__QUORUM_INITIAL_GROUP_SIZE", "0")]));
        assert!(zero.is_err());
        let file = std::env::temp_dir().join(format!("gengate-urls-{}", std::process::id()));
        std::fs::write(&file, "amqp://a/%2f\n\namqp://b/%2f\n").unwrap();
        let from_file =
            Settings::load_from(None, env(&[("GENGATE__AMQP__URLS_FILE", file.to_str().unwrap())]));
        std::fs::remove_file(&file).unwrap();
        assert_eq!(from_file.unwrap().amqp.node_urls().len(), 2);
    }

    #[test]
    fn the_shipped_config_files_are_valid() {
        for file in ["gengate.example.toml", "gengate.dev.toml"] {
            let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy").join(file);
            Settings::load_from(Some(&path), env(&[])).unwrap_or_else(|e| panic!("{file}: {e}"));
        }
    }
}
