//! `provider-sim`: the provider simulator as a standalone server, for `deploy/dev up` and for
//! people trying the stack by hand. Every flag has a `SIM_*` environment variable.
//! See `docs/simulator.md`.

use std::net::SocketAddr;

use clap::Parser;
use gengate_shared::config::{LogFormat, TelemetrySettings};
use gengate_sim::{Rates, SimConfig, Simulator};

/// Kling and kie.ai on one port, with fault injection by prompt markers and rates.
#[derive(Debug, Parser)]
#[command(name = "provider-sim", version)]
struct Args {
    /// Address to listen on.
    #[arg(long, env = "SIM_LISTEN", default_value = "127.0.0.1:8099")]
    listen: SocketAddr,
    /// Origin of result URLs (default: http://<listen address>).
    #[arg(long, env = "SIM_PUBLIC_URL")]
    public_url: Option<String>,
    /// Kling access key (JWT `iss`).
    #[arg(long, env = "SIM_KLING_ACCESS_KEY", default_value = "sim-kling-access-key")]
    kling_access_key: String,
    /// Kling secret key (JWT HS256 key).
    #[arg(long, env = "SIM_KLING_SECRET_KEY", default_value = "sim-kling-secret-key")]
    kling_secret_key: String,
    /// kie.ai API key.
    #[arg(long, env = "SIM_KIE_API_KEY", default_value = "sim-kie-api-key")]
    kie_api_key: String,
    /// Sign kie callbacks (X-Webhook-Timestamp, X-Webhook-Signature) with this key.
    #[arg(long, env = "SIM_KIE_WEBHOOK_HMAC_KEY")]
    kie_webhook_hmac_key: Option<String>,
    /// Wrap Kling callbacks in {code, message, request_id, data}.
    #[arg(long, env = "SIM_KLING_CALLBACK_ENVELOPE")]
    kling_callback_envelope: bool,
    /// Time from creation to the terminal status, in ms.
    #[arg(long, env = "SIM_TASK_DURATION_MS", default_value_t = 200)]
    task_duration_ms: u64,
    /// fail-then-success: time from the failure to the success, in ms.
    #[arg(long, env = "SIM_RECOVERY_DELAY_MS", default_value_t = 100)]
    recovery_delay_ms: u64,
    /// Hold every create response this long after recording the task, in ms.
    #[arg(long, env = "SIM_ACCEPT_DELAY_MS", default_value_t = 0)]
    accept_delay_ms: u64,
    /// Delivery attempts per callback.
    #[arg(long, env = "SIM_CALLBACK_ATTEMPTS", default_value_t = 5)]
    callback_attempts: u32,
    /// Pause between callback attempts, in ms.
    #[arg(long, env = "SIM_CALLBACK_RETRY_INTERVAL_MS", default_value_t = 1000)]
    callback_retry_interval_ms: u64,
    /// Timeout of one callback attempt, in ms.
    #[arg(long, env = "SIM_CALLBACK_TIMEOUT_MS", default_value_t = 5000)]
    callback_timeout_ms: u64,
    /// Seed of the rate rolls.
    #[arg(long, env = "SIM_SEED", default_value_t = 0)]
    seed: u64,
    /// Share of unmarked tasks that fail (0.0–1.0).
    #[arg(long, env = "SIM_FAIL_RATE", default_value_t = 0.0)]
    fail_rate: f64,
    /// Share of unmarked tasks whose terminal callback comes 3 times.
    #[arg(long, env = "SIM_DUP_CALLBACK_RATE", default_value_t = 0.0)]
    dup_callback_rate: f64,
    /// Share of unmarked tasks that call back failure, then success.
    #[arg(long, env = "SIM_FAIL_THEN_SUCCESS_RATE", default_value_t = 0.0)]
    fail_then_success_rate: f64,
    /// Share of unmarked tasks that never call back.
    #[arg(long, env = "SIM_NO_CALLBACK_RATE", default_value_t = 0.0)]
    no_callback_rate: f64,
    /// Share of unmarked tasks whose first create gets a 5xx.
    #[arg(long, env = "SIM_CREATE_5XX_RATE", default_value_t = 0.0)]
    create_5xx_rate: f64,
    /// Share of unmarked tasks whose first create gets a retryable error.
    #[arg(long, env = "SIM_CREATE_RETRY_RATE", default_value_t = 0.0)]
    create_retry_rate: f64,
    /// Share of unmarked tasks that report an undocumented status before succeeding.
    #[arg(long, env = "SIM_UNKNOWN_STATUS_RATE", default_value_t = 0.0)]
    unknown_status_rate: f64,
    /// A tracing filter; RUST_LOG overrides it.
    #[arg(long, env = "SIM_LOG", default_value = "info")]
    log: String,
}

impl Args {
    fn config(self) -> SimConfig {
        SimConfig {
            listen: self.listen,
            public_url: self.public_url,
            kling_access_key: self.kling_access_key,
            kling_secret_key: self.kling_secret_key,
            kie_api_key: self.kie_api_key,
            kie_webhook_hmac_key: self.kie_webhook_hmac_key,
            kling_callback_envelope: self.kling_callback_envelope,
            task_duration_ms: self.task_duration_ms,
            recovery_delay_ms: self.recovery_delay_ms,
            accept_delay_ms: self.accept_delay_ms,
            callback_attempts: self.callback_attempts,
            callback_retry_interval_ms: self.callback_retry_interval_ms,
            callback_timeout_ms: self.callback_timeout_ms,
            seed: self.seed,
            rates: Rates {
                fail: self.fail_rate,
                dup_callback: self.dup_callback_rate,
                fail_then_success: self.fail_then_success_rate,
                no_callback: self.no_callback_rate,
                create_5xx: self.create_5xx_rate,
                create_retry: self.create_retry_rate,
                unknown_status: self.unknown_status_rate,
            },
        }
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    gengate_shared::telemetry::init_tracing(&TelemetrySettings {
        log_format: LogFormat::Pretty,
        log_filter: args.log.clone(),
    });
    let sim = Simulator::start(args.config())?;
    tracing::info!(url = sim.url(), "provider-sim ready");

    // The server runs on the simulator's own thread; this one only waits for the signal to stop.
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async { gengate_shared::shutdown::on_signal().cancelled().await });
    drop(sim);
    Ok(())
}
