//! What a run reports: the JSON document (`--json`) and the plain tables printed at the end.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use super::BenchConfig;
use super::baseline::BaselineReport;
use super::cost::{AccountingSources, CostReport, Figure, IDLE, SettleReport};
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
    /// One line per measured operation, with its ratio to the baseline and its cost per job.
    pub summary: Vec<SummaryLine>,
    /// `pgbench -N` against the same server; `null` with `--no-baseline`.
    pub baseline: Option<BaselineReport>,
    /// The `submit` scenario, if it ran.
    pub submit: Option<LoopReport>,
    /// The `api-alone` scenario (`submit` with the workers stopped), if it ran.
    pub api_alone: Option<LoopReport>,
    /// The `e2e` scenario, if it ran.
    pub e2e: Option<E2eReport>,
    /// The `reads` scenario, if it ran (and seeding succeeded).
    pub reads: Option<ReadsReport>,
    /// The `hot-user` scenario, if it ran.
    pub hot_user: Option<LoopReport>,
    /// The `one-client` scenario, if it ran.
    pub one_client: Option<LoopReport>,
    /// Where the cost figures come from.
    pub accounting: Option<AccountingSources>,
    /// How long each scenario waited for the stack to finish earlier work.
    pub settle: Vec<SettleReport>,
    /// What the stack cost per second while no scenario ran, measured for a few seconds before
    /// the first one (`…_per_job` fields are per second here).
    pub idle: Option<CostReport>,
    /// The cost of each measured operation, by its summary name (reported in the summary).
    #[serde(skip)]
    pub costs: BTreeMap<&'static str, CostReport>,
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
    /// `e2e`, `reads.credits`, `reads.generation`, `api-alone`, `submit`, `hot-user`,
    /// `one-client`.
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
    /// What one counted operation cost over the window (`null` when it was not measured).
    pub cost: Option<CostReport>,
}

impl Report {
    /// An empty report of a run of `config`.
    pub fn new(config: &BenchConfig, started_at: String, run_id: &str) -> Self {
        Self {
            tool: "gengate-bench",
            version: env!("CARGO_PKG_VERSION"),
            started_at,
            run_id: run_id.to_owned(),
            url: config.target.url.clone(),
            concurrency: config.concurrency,
            duration_s: config.duration.as_secs_f64(),
            scenarios: config.scenarios.iter().map(|s| s.name()).collect(),
            summary: Vec::new(),
            baseline: None,
            submit: None,
            api_alone: None,
            e2e: None,
            reads: None,
            hot_user: None,
            one_client: None,
            accounting: None,
            settle: Vec::new(),
            idle: None,
            costs: BTreeMap::new(),
            processes: Vec::new(),
            errors: Vec::new(),
            warnings: Vec::new(),
            interrupted: false,
        }
    }

    /// Fills [`Report::summary`] from the scenario reports, the baseline and the costs.
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
                cost: None,
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
        for (name, counts, run) in [
            ("api-alone", "accepted submits (202), workers paused", &self.api_alone),
            ("submit", "accepted submits (202)", &self.submit),
            ("hot-user", "accepted submits (202), every client as one user", &self.hot_user),
            ("one-client", "accepted submits (202), one paced client alone", &self.one_client),
        ] {
            if let Some(run) = run {
                // A paced client's rate is its pace, not a throughput: it has no ratio.
                let vs = if name == "one-client" { None } else { ratio(run.ok_per_s) };
                lines.push(loop_line(name, counts, run, vs));
            }
        }
        for line in &mut lines {
            line.cost = self.costs.get(line.name).cloned();
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
                 {} abandoned; server-side created→completed p50 {:.1} ms p99 {:.1} ms; {} status \
                 reads ({} per completed job)",
                e2e.submitted,
                e2e.completed,
                e2e.completed_in_window,
                e2e.not_completed.failed,
                e2e.not_completed.timed_out,
                e2e.not_completed.abandoned,
                e2e.server_latency.p50_ms,
                e2e.server_latency.p99_ms,
                e2e.status_reads,
                decimals(e2e.status_reads_per_job, 2),
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

        self.cost_tables(&mut out);

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

    /// The cost per job of each measured operation: CPU time per process, then PostgreSQL and
    /// the broker; `n/a` where a figure could not be measured, with the reason below. The idle
    /// stack comes first, per second.
    fn cost_tables(&self, out: &mut String) {
        let costs: Vec<(&str, &CostReport)> = self
            .idle
            .as_ref()
            .map(|idle| ("idle, per second", idle))
            .into_iter()
            .chain(self.summary.iter().filter_map(|l| Some((l.name, l.cost.as_ref()?))))
            .collect();
        if !costs.is_empty() {
            let mut names: Vec<&str> = Vec::new();
            for (_, cost) in &costs {
                for process in &cost.cpu {
                    if !names.contains(&process.name.as_str()) {
                        names.push(&process.name);
                    }
                }
            }
            let width = |name: &str| name.len().max(8);
            let _ = writeln!(out);
            let _ = write!(out, "{:<18} {:>9}", "CPU ms per job", "jobs");
            for name in names.iter().copied().chain(["total"]) {
                let _ = write!(out, " {:>w$}", name, w = width(name));
            }
            let _ = writeln!(out);
            for (operation, cost) in &costs {
                let jobs = if cost.per == IDLE { "-".to_owned() } else { cost.jobs.to_string() };
                let _ = write!(out, "{operation:<18} {jobs:>9}");
                for name in names.iter().copied() {
                    let _ = write!(
                        out,
                        " {:>w$}",
                        decimals(cost.cpu_ms_per_job(name), 2),
                        w = width(name)
                    );
                }
                let _ = writeln!(out, " {:>8}", decimals(cost.cpu_total_ms_per_job, 2));
            }

            let _ = writeln!(out);
            let _ = writeln!(
                out,
                "{:<18} {:>9} {:>9} {:>11} {:>9}",
                "per job", "commits", "all dbs", "WAL bytes", "messages"
            );
            let mut reasons: Vec<String> = Vec::new();
            for (operation, cost) in &costs {
                let pg = cost.postgres.measured();
                let broker = cost.broker.measured();
                let _ = writeln!(
                    out,
                    "{:<18} {:>9} {:>9} {:>11} {:>9}",
                    operation,
                    or_na(pg.map(|p| decimals(p.commits_per_job, 2))),
                    or_na(pg.map(|p| decimals(p.commits_all_per_job, 2))),
                    or_na(pg.map(|p| decimals(p.wal_bytes_per_job, 0))),
                    or_na(broker.map(|b| decimals(b.published_per_job, 2))),
                );
                if *operation == "e2e"
                    && let Some(line) = self.e2e_without_status_reads(cost)
                {
                    let _ = writeln!(out, "{line}");
                }
                for (what, figure) in [
                    ("PostgreSQL", unavailable(&cost.postgres)),
                    ("messages", unavailable(&cost.broker)),
                ] {
                    if let Some(reason) = figure {
                        let line = format!("n/a {what}: {reason}");
                        if !reasons.contains(&line) {
                            reasons.push(line);
                        }
                    }
                }
                for note in &cost.notes {
                    reasons.push(format!("note {operation}: {note}"));
                }
            }
            for reason in reasons {
                let _ = writeln!(out, "{reason}");
            }
        }
        if !self.settle.is_empty() {
            let waits: Vec<String> = self
                .settle
                .iter()
                .map(|s| {
                    format!(
                        "{} {:.1} s{}",
                        s.before,
                        s.waited_s,
                        if s.settled { "" } else { " (!! busy)" }
                    )
                })
                .collect();
            let _ = writeln!(out);
            let _ = writeln!(out, "waited for an idle stack before: {}", waits.join(", "));
        }
    }

    /// The line under e2e's in the per-job table: its commits per job without the clients' status
    /// polls (one read-only commit each), which grow with the poll interval's shortness and the
    /// job's length rather than with what gengate does for a job. `None` without e2e's figures.
    fn e2e_without_status_reads(&self, cost: &CostReport) -> Option<String> {
        let e2e = self.e2e.as_ref()?;
        let pg = cost.postgres.measured()?;
        Some(format!(
            "{:<18} {:>9}   commits without the clients' {} status reads ({} per job)",
            "e2e - status reads",
            decimals(pg.commits_per_job_without(e2e.status_reads, cost.jobs), 2),
            e2e.status_reads,
            decimals(e2e.status_reads_per_job, 2),
        ))
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
        for (name, run) in [
            ("api-alone", &self.api_alone),
            ("submit", &self.submit),
            ("hot-user", &self.hot_user),
            ("one-client", &self.one_client),
        ] {
            if let Some(run) = run {
                add(
                    name,
                    &run.unexpected,
                    run.transport_errors,
                    run.first_transport_error.as_deref(),
                );
            }
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

/// `12.35`, or `-` without a value.
fn decimals(value: Option<f64>, places: usize) -> String {
    value.map_or("-".to_owned(), |v| format!("{v:.places$}"))
}

fn or_na(value: Option<String>) -> String {
    value.unwrap_or_else(|| "n/a".to_owned())
}

fn unavailable<T>(figure: &Figure<T>) -> Option<&str> {
    match figure {
        Figure::Measured(_) => None,
        Figure::Unavailable { unavailable } => Some(unavailable),
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
        cost: None,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::Scenario;
    use crate::cost::PgCost;
    use crate::env_file::Target;

    fn report() -> Report {
        let config = BenchConfig {
            target: Target {
                url: "http://127.0.0.1:8080".into(),
                admin_token: "admin".into(),
                sim_url: None,
                database_url: None,
                broker_metrics_url: None,
                queue_prefix: "gengate".into(),
            },
            concurrency: 32,
            duration: Duration::from_secs(20),
            scenarios: Scenario::ALL.to_vec(),
            baseline: true,
            job_timeout: Duration::from_secs(30),
            poll_interval: Duration::from_millis(50),
            one_client_rate: 10,
            pid_dir: None,
        };
        let mut report = Report::new(&config, "2026-01-01T00:00:00Z".into(), "1a2b3c4d");
        report.baseline =
            Some(BaselineReport { status: "ok", tps: Some(1000.0), ..BaselineReport::skipped("") });
        report
    }

    fn submits(ok: u64, rate_limited: u64) -> LoopReport {
        LoopReport {
            concurrency: 32,
            window_s: 20.0,
            elapsed_s: 20.0,
            requests: ok + rate_limited,
            ok,
            ok_per_s: ok as f64 / 20.0,
            latency: LatencySummary::from_samples(&mut [Duration::from_millis(9)]),
            unexpected: (rate_limited > 0)
                .then(|| UnexpectedLine {
                    status: 429,
                    code: "rate_limited".into(),
                    count: rate_limited,
                })
                .into_iter()
                .collect(),
            transport_errors: 0,
            first_transport_error: None,
            interrupted: false,
        }
    }

    fn cost(per: &'static str, jobs: u64, commits: i64) -> CostReport {
        CostReport {
            per,
            jobs,
            seconds: 20.0,
            cpu: vec![],
            cpu_total_ms: 0.0,
            cpu_total_ms_per_job: None,
            postgres: Figure::Measured(PgCost {
                commits,
                commits_per_job: Some(commits as f64 / jobs as f64),
                commits_all: commits,
                commits_all_per_job: Some(commits as f64 / jobs as f64),
                wal_bytes: 0,
                wal_bytes_per_job: Some(0.0),
                wal_bytes_pg_stat_wal: None,
            }),
            broker: Figure::Unavailable { unavailable: "no broker".into() },
            notes: vec![],
        }
    }

    #[test]
    fn api_alone_is_reported_like_submit() {
        let mut report = report();
        report.api_alone = Some(submits(6000, 2));
        report.submit = Some(submits(2000, 0));
        report.costs.insert("api-alone", cost("accepted submit", 6000, 18_000));
        report.costs.insert("submit", cost("accepted submit", 2000, 8000));
        report.summarize();

        let lines: Vec<(&str, f64, Option<f64>)> =
            report.summary.iter().map(|l| (l.name, l.per_s, l.vs_baseline)).collect();
        assert_eq!(lines, [("api-alone", 300.0, Some(0.3)), ("submit", 100.0, Some(0.1))]);
        let api_alone = &report.summary[0];
        assert_eq!(api_alone.unexpected, 2);
        assert_eq!(
            api_alone.cost.as_ref().map(|c| (c.per, c.jobs)),
            Some(("accepted submit", 6000))
        );
        assert!(!report.is_clean());

        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["api_alone"]["ok"], serde_json::json!(6000));
        assert_eq!(
            json["summary"][0]["cost"]["postgres"]["commits_per_job"],
            serde_json::json!(3.0)
        );

        let table = report.table();
        assert!(table.contains("\napi-alone               300.0"), "{table}");
        assert!(table.contains("\napi-alone               3.00"), "{table}");
        assert!(table.contains("!! api-alone: unexpected answers: 429 rate_limited ×2"), "{table}");
    }

    #[test]
    fn the_e2e_per_job_table_takes_the_status_reads_off_the_commits() {
        let mut report = report();
        // 90 completed jobs, 1230 status reads.
        report.e2e = Some(crate::e2e::tests::sample_report());
        report.costs.insert("e2e", cost("completed job", 90, 2700));
        report.summarize();
        let table = report.table();
        let lines: Vec<&str> = table.lines().collect();
        let e2e_row = lines.iter().position(|l| l.starts_with("e2e ") && l.contains("30.00"));
        let e2e_row = e2e_row.unwrap_or_else(|| panic!("no e2e row in\n{table}"));
        // (2700 − 1230) / 90, right under e2e's row, in its commits column.
        assert_eq!(
            lines[e2e_row + 1],
            "e2e - status reads     16.33   commits without the clients' 1230 status reads \
             (13.67 per job)"
        );
        assert!(table.contains("1230 status reads (13.67 per completed job)"), "{table}");
    }

    #[test]
    fn without_postgres_figures_there_is_no_status_read_line() {
        let mut report = report();
        report.e2e = Some(crate::e2e::tests::sample_report());
        let mut e2e_cost = cost("completed job", 90, 2700);
        e2e_cost.postgres = Figure::Unavailable { unavailable: "no database URL".into() };
        report.costs.insert("e2e", e2e_cost);
        report.summarize();
        let table = report.table();
        assert!(!table.contains("e2e - status reads"), "{table}");
        assert!(table.contains("n/a PostgreSQL: no database URL"), "{table}");
    }
}
