//! gengate's shared library: everything the API, the workers and the operations CLI must agree on.
//!
//! Money and state changes live here, behind functions that take a transaction, so that the API and
//! the workers cannot settle credits in two different ways.

pub mod accounts;
pub mod allowlist;
pub mod batched_reads;
pub mod catalogue;
pub mod client_webhooks;
pub mod config;
pub mod crash_point;
pub mod db;
pub mod generation;
pub mod group_commit;
pub mod ids;
pub mod kling_compat;
pub mod kling_task;
pub mod ledger;
pub mod names;
pub mod outbox;
pub mod pagination;
pub mod providers;
pub mod queue;
pub mod shutdown;
pub mod storage;
pub mod telemetry;
pub mod validation;

/// What a gengate process does first: loads the settings `--config` and the environment name,
/// installs the log subscriber they configure and the TLS crypto provider.
pub fn start_process(config: &config::ConfigArg) -> Result<config::Settings, config::ConfigError> {
    let settings = config.load()?;
    telemetry::init_tracing(&settings.telemetry);
    install_crypto_provider();
    Ok(settings)
}

/// Installs the process-wide TLS crypto provider (ring) for outgoing HTTPS and AMQPS. Call once at
/// start-up, before any client is built; later calls do nothing.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
