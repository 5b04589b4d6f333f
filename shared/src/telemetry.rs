//! Logs (`tracing`) and metrics (Prometheus text via the `metrics` facade).

use std::sync::OnceLock;
use std::time::Duration;

pub use metrics_exporter_prometheus::PrometheusHandle;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::FmtSpan;

use crate::config::{LogFormat, TelemetrySettings};

/// Installs the global `tracing` subscriber: pretty or JSON lines on stderr, filtered by `RUST_LOG`
/// when set, else by `telemetry.log_filter`. Safe to call more than once (later calls do nothing).
pub fn init_tracing(settings: &TelemetrySettings) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&settings.log_filter))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_span_events(FmtSpan::NONE);
    let _ = match settings.log_format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .try_init(),
        LogFormat::Pretty => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .compact()
            .try_init(),
    };
}

/// Buckets (seconds) for latency histograms: from sub-millisecond database work to slow providers.
const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0, 300.0, 1800.0,
];

/// Buckets (seconds) for `gengate_http_request_duration_seconds`: an API answers in milliseconds,
/// and `api.request_timeout_ms` (15 s by default) ends the slowest. 0.25 and 0.5 are bounds of
/// their own, the balance query's target and alert threshold (seed 001).
const HTTP_BUCKETS: &[f64] =
    &[0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 15.0, 30.0, 60.0];

/// Installs the process-wide Prometheus recorder (once) and returns the handle `/metrics` renders.
/// Histograms are kept trimmed by a background upkeep task. The ledger's alerting counters are
/// registered at 0 (see [`crate::ledger::register_metrics`]).
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let handle = PrometheusBuilder::new()
                .set_buckets(LATENCY_BUCKETS)
                .expect("static, non-empty bucket list")
                .set_buckets_for_metric(
                    Matcher::Full("gengate_http_request_duration_seconds".into()),
                    HTTP_BUCKETS,
                )
                .expect("static, non-empty bucket list")
                .install_recorder()
                .expect("the metrics recorder is installed once per process");
            let upkeep = handle.clone();
            std::thread::Builder::new()
                .name("metrics-upkeep".into())
                .spawn(move || {
                    loop {
                        std::thread::sleep(Duration::from_secs(5));
                        upkeep.run_upkeep();
                    }
                })
                .expect("spawn the metrics upkeep thread");
            crate::ledger::register_metrics();
            handle
        })
        .clone()
}
