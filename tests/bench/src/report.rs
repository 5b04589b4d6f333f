//! What a run reports: the JSON document (`--json`) and the plain table printed at the end.

use std::fmt::Write as _;

use serde::Serialize;

use super::baseline::BaselineReport;
use super::e2e::E2eReport;
use super::load::LoopReport;
use super::reads::ReadsReport;
use super::rss::ProcessMemory;
use super::stats::{LatencySummary, UnexpectedLine};

/// The whole run.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// `gengate-bench`.
    pub tool: &'static str,
    /// Its version.
    pub version: &'static str,
    /// When the run started (RFC 3339, UTC).
    pub started_at: String,
    /// Names the bench users and data of this run.
    pub run_id: String,
    /// The API under test.
    pub url: String,
    /// Concurrent clients of every scenario (and pgbench's `-c`).
    pub concurrency: usize,
    /// The window of each scenario, in seconds.
    pub duration_s: f64,
    /// Scenarios run, in order.
    pub scenarios: Vec<&'static str>,
    /// One line per measured operation, with its ratio to the baseline.
    pub summary: Vec<SummaryLine>,
    /// `pgbench -N` against the same server; `null` with `--no-baseline`.
    pub baseline: Option<BaselineReport>,
    /// The `submit` scenario, if it ran.
    pub submit: Option<LoopReport>,
    /// The `e2e` scenario, if it ran.
    pub e2e: Option<E2eReport>,
    /// The `reads` scenario, if it ran (and seeding succeeded).
    pub reads: Option<ReadsReport>,
    /// Memory of the API and worker processes over the run.
    pub processes: Vec<ProcessMemory>,
    /// Scenarios that failed, and why.
    pub errors: Vec<ScenarioError>,
    /// Things worth knowing that did not stop a scenario.
    pub warnings: Vec<String>,
    /// Stopped early by Ctrl-C.
    pub interrupted: bool,
}

/// A scenario that did not produce figures, or whose figures are not usable.
#[derive(Debug, Clone, Serialize)]
pub struct ScenarioError {
    /// The scenario.
    pub scenario: &'static str,
    /// What went wrong.
    pub message: String,
}

/// One measured operation.
#[derive(Debug, Clone, Serialize)]
pub struct SummaryLine {
    /// `submit`, `e2e`, `reads.credits`, `reads.generation`.
    pub name: &'static str,
    /// What one counted operation is.
    pub counts: &'static str,
    /// Counted operations per second.
    pub per_s: f64,
    /// Their latency.
    pub latency: LatencySummary,
    /// Unexpected answers and transport errors. Should be 0.
    pub unexpected: u64,
    /// `per_s` divided by the baseline's TPS.
    pub vs_baseline: Option<f64>,
}

impl Report {
    /// Fills [`Report::summary`] from the scenario reports and the baseline.
    pub fn summarize(&mut self) {
        let tps = self.baseline.as_ref().and_then(|b| b.tps).filter(|tps| *tps > 0.0);
        let ratio = |per_s: f64| tps.map(|tps| per_s / tps);
        let mut lines = Vec::new();
        if let Some(e2e) = &self.e2e {
            lines.push(SummaryLine {
                name: "e2e",
                counts: "completed jobs (submit to completed)",
                per_s: e2e.completed_per_s,
                latency: e2e.latency,
                unexpected: e2e.unexpected_total(),
                vs_baseline: ratio(e2e.completed_per_s),
            });
        }
        if let Some(reads) = &self.reads {
            for (name, counts, run) in [
                ("reads.credits", "GET /v1/credits", &reads.credits),
                ("reads.generation", "GET /v1/generations/{id}", &reads.generation),
            ] {
                lines.push(loop_line(name, counts, run, ratio(run.ok_per_s)));
            }
        }
        if let Some(submit) = &self.submit {
            lines.push(loop_line(
                "submit",
                "accepted submits (202)",
                submit,
                ratio(submit.ok_per_s),
            ));
        }
        self.summary = lines;
    }

    /// Unexpected answers over every scenario.
    pub fn unexpected_total(&self) -> u64 {
        self.summary.iter().map(|l| l.unexpected).sum()
    }

    /// No scenario failed and every answer was the expected one.
    pub fn is_clean(&self) -> bool {
        self.errors.is_empty() && self.unexpected_total() == 0 && !self.interrupted
    }

    /// The plain table printed at the end of a run.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "gengate-bench {}: {} clients, {:.0} s per scenario, against {}",
            self.run_id, self.concurrency, self.duration_s, self.url
        );
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "{:<18} {:>10} {:>9} {:>9} {:>9} {:>9} {:>9} {:>10} {:>10}",
            "operation",
            "per s",
            "p50 ms",
            "p90 ms",
            "p99 ms",
            "max ms",
            "count",
            "unexpected",
            "vs pgbench"
        );
        for line in &self.summary {
            let _ = writeln!(
                out,
                "{:<18} {:>10.1} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>9} {:>10} {:>10}",
                line.name,
                line.per_s,
                line.latency.p50_ms,
                line.latency.p90_ms,
                line.latency.p99_ms,
                line.latency.max_ms,
                line.latency.count,
                if line.unexpected == 0 {
                    "0".to_owned()
                } else {
                    format!("!! {}", line.unexpected)
                },
                line.vs_baseline.map_or("-".to_owned(), |r| format!("{r:.3}")),
            );
        }
        match &self.baseline {
            Some(b) if b.status == "ok" => {
                let _ = writeln!(
                    out,
                    "{:<18} {:>10.1} {:>9} {:>9} {:>9} {:>9} {:>9} {:>10} {:>10}",
                    "pgbench -N",
                    b.tps.unwrap_or_default(),
                    b.latency_avg_ms.map_or("-".to_owned(), |l| format!("avg {l:.2}")),
                    "",
                    "",
                    "",
                    b.transactions.map_or("-".to_owned(), |t| t.to_string()),
                    b.failed_transactions.unwrap_or_default(),
                    "1.000"
                );
            }
            Some(b) => {
                let _ = writeln!(
                    out,
                    "pgbench -N         {}: {}",
                    b.status,
                    b.reason.as_deref().unwrap_or("")
                );
            }
            None => {
                let _ = writeln!(out, "pgbench -N         not run (--no-baseline)");
            }
        }

        if let Some(e2e) = &self.e2e {
            let _ = writeln!(out);
            let _ = writeln!(
                out,
                "e2e: {} submitted, {} completed ({} in the window), {} failed, {} timed out, \
                 {} abandoned; server-side created→completed p50 {:.1} ms p99 {:.1} ms",
                e2e.submitted,
                e2e.completed,
                e2e.completed_in_window,
                e2e.not_completed.failed,
                e2e.not_completed.timed_out,
                e2e.not_completed.abandoned,
                e2e.server_latency.p50_ms,
                e2e.server_latency.p99_ms,
            );
        }
        if let Some(reads) = &self.reads {
            let seed = &reads.seed;
            let _ = writeln!(
                out,
                "reads: user {} with {} grants, {} ledger entries, {} generations (seeded in \
                 {:.1} s, reconcile {})",
                seed.user_id,
                seed.grants,
                seed.ledger_entries,
                seed.generations,
                seed.seconds,
                if seed.reconcile_clean { "clean" } else { "NOT clean" }
            );
        }

        if !self.processes.is_empty() {
            let _ = writeln!(out);
            let _ = writeln!(
                out,
                "{:<10} {:>8} {:>16} {:>16}",
                "process", "pid", "peak RSS (MiB)", "VmHWM (MiB)"
            );
            for p in &self.processes {
                let mib = |kib: Option<u64>| {
                    kib.map_or("-".to_owned(), |k| format!("{:.1}", k as f64 / 1024.0))
                };
                let _ = writeln!(
                    out,
                    "{:<10} {:>8} {:>16} {:>16}{}",
                    p.name,
                    p.pid,
                    mib(p.peak_rss_kib),
                    mib(p.vm_hwm_kib),
                    if p.alive_at_end { "" } else { "  (gone by the end)" }
                );
            }
        }

        let unexpected = self.unexpected_details();
        if !unexpected.is_empty() || !self.errors.is_empty() || !self.warnings.is_empty() {
            let _ = writeln!(out);
        }
        for line in unexpected {
            let _ = writeln!(out, "!! {line}");
        }
        for error in &self.errors {
            let _ = writeln!(out, "!! {} failed: {}", error.scenario, error.message);
        }
        for warning in &self.warnings {
            let _ = writeln!(out, "warning: {warning}");
        }
        if self.interrupted {
            let _ = writeln!(out, "!! interrupted: the figures cover part of the run");
        }
        out
    }

    /// `submit: 429 rate_limited ×12`, one line per scenario with unexpected answers.
    fn unexpected_details(&self) -> Vec<String> {
        let mut details = Vec::new();
        let mut add =
            |name: &str, lines: &[UnexpectedLine], transport: u64, first: Option<&str>| {
                let mut parts: Vec<String> =
                    lines.iter().map(|l| format!("{} {} ×{}", l.status, l.code, l.count)).collect();
                if transport > 0 {
                    parts.push(format!(
                        "no answer ×{transport} ({})",
                        first.unwrap_or("transport error")
                    ));
                }
                if !parts.is_empty() {
                    details.push(format!("{name}: unexpected answers: {}", parts.join(", ")));
                }
            };
        if let Some(submit) = &self.submit {
            add(
                "submit",
                &submit.unexpected,
                submit.transport_errors,
                submit.first_transport_error.as_deref(),
            );
        }
        if let Some(e2e) = &self.e2e {
            add("e2e submits", &e2e.submit_unexpected, 0, None);
            add("e2e polls", &e2e.poll_unexpected, e2e.transport_errors, None);
        }
        if let Some(reads) = &self.reads {
            for (name, run) in
                [("reads.credits", &reads.credits), ("reads.generation", &reads.generation)]
            {
                add(
                    name,
                    &run.unexpected,
                    run.transport_errors,
                    run.first_transport_error.as_deref(),
                );
            }
        }
        details
    }
}

fn loop_line(
    name: &'static str,
    counts: &'static str,
    run: &LoopReport,
    vs_baseline: Option<f64>,
) -> SummaryLine {
    SummaryLine {
        name,
        counts,
        per_s: run.ok_per_s,
        latency: run.latency,
        unexpected: run.unexpected_total(),
        vs_baseline,
    }
}
