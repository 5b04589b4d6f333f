//! The periodic ledger audit: every `worker.ledger_audit_interval_ms`, one worker of the
//! deployment reconciles the whole ledger (the check `gengatectl ledger reconcile` makes, from one
//! snapshot) and records the run in `ledger_audits`. A mismatch is logged and counted
//! (`gengate_ledger_audits_total{outcome="mismatch"}`), which the alert
//! `GengateLedgerReconcileMismatch` watches: money that does not add up is found within an
//! interval, not when someone thinks of running reconcile.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use gengate_shared::ledger;
use tokio_util::sync::CancellationToken;

use crate::context::WorkerContext;

/// Most often a worker asks whether an audit is due (a lock attempt and one indexed read).
const ASK_AT_MOST_EVERY: Duration = Duration::from_secs(60);

/// Mismatches written to the log per run (all are counted; `ledger_audits.sample` keeps 20).
const LOGGED: usize = 5;

/// Audits until `shutdown`, if audits are on.
pub async fn run(ctx: Arc<WorkerContext>, shutdown: CancellationToken) {
    let every = Duration::from_millis(ctx.settings.worker.ledger_audit_interval_ms);
    if every.is_zero() {
        return;
    }
    let ask = every.min(ASK_AT_MOST_EVERY);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(ask) => {}
        }
        match ledger::audit_if_due(&ctx.pool, every).await {
            Ok(None) => {}
            Ok(Some(audit)) => record(&audit),
            Err(err) => {
                metrics::counter!("gengate_ledger_audits_total", "outcome" => "error").increment(1);
                tracing::warn!(error = %err, "ledger audit failed");
            }
        }
    }
}

fn record(audit: &ledger::Audit) {
    let report = &audit.report;
    let found = report.mismatches.len();
    let outcome = if report.is_clean() { "clean" } else { "mismatch" };
    metrics::counter!("gengate_ledger_audits_total", "outcome" => outcome).increment(1);
    #[allow(clippy::cast_precision_loss, reason = "a count of rows, far below 2^52")]
    metrics::gauge!("gengate_ledger_audit_mismatches").set(found as f64);
    metrics::gauge!("gengate_ledger_audit_seconds").set(audit.took.as_secs_f64());
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    metrics::gauge!("gengate_ledger_audit_last_run_timestamp_seconds").set(now.as_secs_f64());
    if report.is_clean() {
        tracing::info!(
            grants = report.grants,
            generations = report.generations,
            users = report.users,
            took_ms = audit.took.as_millis(),
            "ledger audit: clean"
        );
        return;
    }
    for mismatch in report.mismatches.iter().take(LOGGED) {
        tracing::error!(
            kind = mismatch.kind,
            id = %mismatch.id,
            user_id = %mismatch.user_id,
            expected = mismatch.expected,
            actual = mismatch.actual,
            detail = %mismatch.detail,
            "ledger audit: does not add up"
        );
    }
    tracing::error!(
        mismatches = found,
        "ledger audit found mismatches; see `gengatectl ledger reconcile`"
    );
}
