//! `gengate-bench`, the load generator: throughput and latency of a running gengate stack, with
//! `pgbench` against the same PostgreSQL server as the yardstick and the memory of the API and
//! worker processes alongside. See `docs/benchmarks.md`.
//!
//! One module per scenario: [`submit`] (accepted submits per second), [`e2e`] (submit to
//! completed), [`reads`] (balance and generation reads of a user with a long ledger); [`baseline`]
//! runs pgbench, [`rss`] watches memory, [`report`] writes the JSON document and the table.

pub mod baseline;
pub mod broker;
pub mod client;
pub mod cost;
pub mod cpu;
pub mod e2e;
pub mod env_file;
pub mod load;
pub mod progress;
pub mod reads;
pub mod report;
pub mod rss;
pub mod setup;
pub mod stats;
pub mod submit;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tokio_util::sync::CancellationToken;

use self::client::Api;
use self::env_file::Target;
use self::report::{Report, ScenarioError};

/// A scenario.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scenario {
    /// Accepted submits per second.
    Submit,
    /// Submit to completed.
    E2e,
    /// Balance and generation reads.
    Reads,
}

impl Scenario {
    /// Every scenario, in the order `all` runs them: `e2e` before `submit`, whose thousands of
    /// queued jobs would otherwise sit in front of e2e's jobs once workers consume them, and
    /// `reads` in between, while the workers are still idle.
    pub const ALL: [Scenario; 3] = [Scenario::E2e, Scenario::Reads, Scenario::Submit];

    /// Its name on the command line and in the report.
    pub fn name(self) -> &'static str {
        match self {
            Scenario::Submit => "submit",
            Scenario::E2e => "e2e",
            Scenario::Reads => "reads",
        }
    }
}

/// What to run, against what.
#[derive(Debug, Clone)]
pub struct BenchConfig {
    /// The stack.
    pub target: Target,
    /// Concurrent clients (and bench users).
    pub concurrency: usize,
    /// Window of each scenario, and pgbench's duration.
    pub duration: Duration,
    /// Scenarios, in order.
    pub scenarios: Vec<Scenario>,
    /// Run pgbench first.
    pub baseline: bool,
    /// e2e: how long one job may take.
    pub job_timeout: Duration,
    /// e2e: pause between polls of a job.
    pub poll_interval: Duration,
    /// Where `api.pid` and `worker*.pid` are (`deploy/dev` writes them next to `dev.env`).
    pub pid_dir: Option<PathBuf>,
}

/// Runs the configured scenarios; `stop` (Ctrl-C) ends the run early with what was measured.
/// An error only when nothing can run at all (the API is not there).
pub async fn run(config: BenchConfig, stop: CancellationToken) -> anyhow::Result<Report> {
    let started_at = OffsetDateTime::now_utc();
    let run_id = uuid::Uuid::new_v4().simple().to_string()[..8].to_owned();
    let api = Api::new(&config.target.url, config.concurrency)?;
    let ready = api
        .get("", "/readyz")
        .await
        .with_context(|| format!("the API at {} does not answer", config.target.url))?;
    anyhow::ensure!(
        ready.status == 200,
        "the API at {} is not ready ({}): {}",
        config.target.url,
        ready.status,
        String::from_utf8_lossy(&ready.body)
    );

    let mut report = Report {
        tool: "gengate-bench",
        version: env!("CARGO_PKG_VERSION"),
        started_at: started_at.format(&Rfc3339).unwrap_or_default(),
        run_id: run_id.clone(),
        url: config.target.url.clone(),
        concurrency: config.concurrency,
        duration_s: config.duration.as_secs_f64(),
        scenarios: config.scenarios.iter().map(|s| s.name()).collect(),
        summary: Vec::new(),
        baseline: None,
        submit: None,
        e2e: None,
        reads: None,
        processes: Vec::new(),
        errors: Vec::new(),
        warnings: Vec::new(),
        interrupted: false,
    };

    let processes = config.pid_dir.as_deref().map(rss::find_processes).unwrap_or_default();
    if processes.is_empty() {
        report.warnings.push(format!(
            "no running api/worker processes found through pid files in {}: no memory figures",
            config
                .pid_dir
                .as_deref()
                .map_or("(no pid directory)".into(), |d| d.display().to_string())
        ));
    }
    let sampler = rss::Sampler::start(&processes);

    if config.baseline {
        report.baseline = Some(run_baseline(&config).await);
    }

    let needs_users =
        config.scenarios.iter().any(|s| matches!(s, Scenario::Submit | Scenario::E2e));
    let users = if needs_users {
        match setup::create_users(&api, &config.target.admin_token, &run_id, config.concurrency)
            .await
        {
            Ok(users) => Some(users),
            Err(error) => {
                report.errors.push(ScenarioError {
                    scenario: "setup",
                    message: format!("creating bench users: {error:#}"),
                });
                None
            }
        }
    } else {
        None
    };

    for scenario in &config.scenarios {
        if stop.is_cancelled() {
            break;
        }
        match scenario {
            Scenario::Submit => {
                if let Some(users) = &users {
                    report.submit = Some(submit::run(&api, users, config.duration, &stop).await);
                }
            }
            Scenario::E2e => {
                if let Some(users) = &users {
                    let settings = e2e::E2eSettings {
                        window: config.duration,
                        job_timeout: config.job_timeout,
                        poll_interval: config.poll_interval,
                    };
                    let e2e =
                        e2e::run(&api, config.target.sim_url.as_deref(), users, settings, &stop)
                            .await;
                    if let Some(error) = &e2e.error {
                        report
                            .errors
                            .push(ScenarioError { scenario: "e2e", message: error.clone() });
                    }
                    report.warnings.extend(e2e.warnings.iter().map(|w| format!("e2e: {w}")));
                    if let Some(note) = &e2e.simulator.note {
                        report.warnings.push(format!("e2e: {note}"));
                    }
                    report.e2e = Some(e2e);
                }
            }
            Scenario::Reads => match &config.target.database_url {
                None => report.errors.push(ScenarioError {
                    scenario: "reads",
                    message: "no database URL (GENGATE__DATABASE__URL or --database-url) to seed \
                              the reads user"
                        .into(),
                }),
                Some(database_url) => {
                    match reads::run(
                        &api,
                        &config.target.admin_token,
                        database_url,
                        &run_id,
                        config.concurrency,
                        config.duration,
                        &stop,
                    )
                    .await
                    {
                        Ok(reads) => report.reads = Some(reads),
                        Err(error) => report.errors.push(ScenarioError {
                            scenario: "reads",
                            message: format!("{error:#}"),
                        }),
                    }
                }
            },
        }
    }

    report.processes = sampler.finish().await;
    report.interrupted = stop.is_cancelled();
    report.summarize();
    Ok(report)
}

/// Parses `20s`, `500ms`, `2m`, `1.5s` or a bare number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: f64 = number.parse().map_err(|_| format!("`{text}` is not a duration"))?;
    let seconds = match unit.trim() {
        "" | "s" => number,
        "ms" => number / 1000.0,
        "m" | "min" => number * 60.0,
        other => return Err(format!("unknown unit `{other}` in `{text}` (use ms, s or m)")),
    };
    Duration::try_from_secs_f64(seconds).map_err(|e| format!("`{text}`: {e}"))
}

async fn run_baseline(config: &BenchConfig) -> baseline::BaselineReport {
    let Some(database_url) = &config.target.database_url else {
        return baseline::BaselineReport::skipped(
            "no database URL (GENGATE__DATABASE__URL or --database-url)",
        );
    };
    let Some(version) = baseline::pgbench_version().await else {
        return baseline::BaselineReport::skipped(
            "pgbench is not installed (on Debian it comes with the postgresql-NN server package)",
        );
    };
    baseline::run(database_url, config.concurrency, config.duration, version).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_like_people_write_them() {
        assert_eq!(parse_duration("20s"), Ok(Duration::from_secs(20)));
        assert_eq!(parse_duration("20"), Ok(Duration::from_secs(20)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("fast").is_err());
        assert!(parse_duration("3h").is_err());
    }
}
