//! `gengate-bench`, the load generator: throughput and latency of a running gengate stack, with
//! `pgbench` against the same PostgreSQL server as the yardstick, what each job costs the machine
//! (CPU time per process, PostgreSQL commits and WAL, broker messages), and the memory of the API
//! and worker processes alongside. See `docs/benchmarks.md`.
//!
//! One module per scenario: [`submit`] (accepted submits per second; also `api-alone`, with the
//! workers stopped by [`pause`], `hot-user` and `one-client`), [`e2e`] (submit to completed),
//! [`reads`] (balance and generation reads of a user with a long ledger); [`baseline`] runs
//! pgbench, [`cost`] reads the counters around each window (with [`cpu`] and [`broker`]), [`rss`]
//! watches memory, [`report`] writes the JSON document and the tables.

pub mod baseline;
pub mod broker;
pub mod client;
pub mod cost;
pub mod cpu;
pub mod e2e;
pub mod env_file;
pub mod load;
pub mod pause;
pub mod progress;
pub mod reads;
pub mod report;
pub mod rss;
pub mod setup;
pub mod stats;
pub mod submit;

use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tokio_util::sync::CancellationToken;

use self::client::Api;
use self::cost::{Accounting, AccountingTarget, Snapshot};
use self::env_file::Target;
use self::report::{Report, ScenarioError};
use self::setup::BenchUser;

/// The longest wait for the stack to finish an earlier scenario's work before the next one.
pub const SETTLE_LIMIT: Duration = Duration::from_secs(180);
/// How long the idle stack is measured, before the first scenario.
pub const IDLE_WINDOW: Duration = Duration::from_secs(5);

/// A scenario.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scenario {
    /// Accepted submits per second.
    Submit,
    /// Accepted submits per second with the workers stopped for the window: the API's submit
    /// path alone.
    ApiAlone,
    /// Submit to completed.
    E2e,
    /// Balance and generation reads.
    Reads,
    /// Accepted submits per second, every client submitting as one user.
    HotUser,
    /// Accepted submits of one client alone at a light, random pace
    /// ([`BenchConfig::one_client_rate`]), the workers stopped like `api-alone`: the latency of the
    /// submit path under light load (the batcher must not add to it).
    OneClient,
}

impl Scenario {
    /// Every scenario, in the order `all` runs them: `e2e` first, then `reads`, while the workers
    /// are idle, then the four that leave queued jobs behind (`api-alone`, `submit`, `hot-user`,
    /// `one-client`). Before each one the bench waits for the stack to finish what the earlier
    /// ones left (see [`cost::Accounting::settle`]); after `api-alone`, that is every job it
    /// accepted, worked off once the workers go on.
    pub const ALL: [Scenario; 6] = [
        Scenario::E2e,
        Scenario::Reads,
        Scenario::ApiAlone,
        Scenario::Submit,
        Scenario::HotUser,
        Scenario::OneClient,
    ];

    /// Its name on the command line and in the report.
    pub fn name(self) -> &'static str {
        match self {
            Scenario::Submit => "submit",
            Scenario::ApiAlone => "api-alone",
            Scenario::E2e => "e2e",
            Scenario::Reads => "reads",
            Scenario::HotUser => "hot-user",
            Scenario::OneClient => "one-client",
        }
    }

    /// It runs with the workers stopped (its figures are the API's submit path alone).
    pub fn pauses_workers(self) -> bool {
        matches!(self, Scenario::ApiAlone | Scenario::OneClient)
    }

    /// It submits jobs as bench users.
    pub fn submits(self) -> bool {
        !matches!(self, Scenario::Reads)
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
    /// one-client: submits per second, on average (see `load::closed_loop`'s pace).
    pub one_client_rate: u32,
    /// Where `api.pid`, `worker*.pid` and `sim.pid` are (`deploy/dev` writes them next to
    /// `dev.env`).
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

    let mut report = Report::new(&config, started_at.format(&Rfc3339).unwrap_or_default(), &run_id);

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

    let accounting = Accounting::connect(AccountingTarget {
        pid_dir: config.pid_dir.as_deref(),
        database_url: config.target.database_url.as_deref(),
        broker_metrics_url: config.target.broker_metrics_url.as_deref(),
        queue_prefix: &config.target.queue_prefix,
    })
    .await;
    report.warnings.extend(accounting.unavailable());
    report.accounting = Some(accounting.sources().clone());

    if config.baseline {
        report.baseline = Some(run_baseline(&config).await);
    }

    let users = if config.scenarios.iter().any(|s| s.submits()) {
        match create_bench_users(&api, &config, &run_id).await {
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
    let user_ids: Vec<uuid::Uuid> = users.as_ref().map_or_else(Vec::new, |u| {
        u.clients.iter().chain(&u.hot).filter_map(|u| u.id.parse().ok()).collect()
    });

    // What waited in the stack's queues before this run (an earlier run's backlog): the work
    // queues are waited for before the first scenario; the delay tiers, whose messages can take
    // minutes to come out, are not, and only what this run adds to them is waited for.
    let before = accounting.waiting().await.unwrap_or_default();
    if before.work > 0 || before.delayed > 0 {
        report.warnings.push(format!(
            "an earlier run's backlog was in the stack's queues: {} messages in the work queues \
             (waited for before the first scenario) and {} in the delay tiers (not waited for: \
             whatever of them comes out during a window is worked off in it, and is in its figures; \
             `deploy/dev reset --yes` clears them)",
            before.work, before.delayed
        ));
    }

    for (i, scenario) in config.scenarios.iter().enumerate() {
        if stop.is_cancelled() {
            break;
        }
        let settled = accounting
            .settle(scenario.name(), &user_ids, before.delayed, SETTLE_LIMIT, &stop)
            .await;
        if !settled.settled && !stop.is_cancelled() {
            report.warnings.push(format!(
                "{}: the stack was still busy after {:.0} s ({} jobs of this run in flight, {} \
                 messages in the work queues, {} delayed): its figures include that work",
                scenario.name(),
                settled.waited_s,
                settled.in_flight.map_or("?".to_owned(), |n| n.to_string()),
                settled.waiting_messages.map_or("?".to_owned(), |n| n.to_string()),
                settled.delayed_messages.map_or("?".to_owned(), |n| n.to_string()),
            ));
        }
        report.settle.push(settled);
        if i == 0 && !stop.is_cancelled() {
            // What the stack costs doing nothing (or working off a backlog) for a few seconds.
            let (_, start, end) = measured(&accounting, tokio::time::sleep(IDLE_WINDOW)).await;
            report.idle = Some(accounting.cost(cost::IDLE, 0, &start, &end, false));
        }
        match scenario {
            Scenario::Submit | Scenario::ApiAlone | Scenario::HotUser | Scenario::OneClient => {
                let Some(users) = &users else { continue };
                let clients: Vec<BenchUser> = match scenario {
                    Scenario::Submit | Scenario::ApiAlone => users.clients.clone(),
                    Scenario::HotUser => match &users.hot {
                        Some(hot) => vec![hot.clone(); config.concurrency],
                        None => continue,
                    },
                    _ => users.clients[..1].to_vec(),
                };
                let name = scenario.name();
                // api-alone and one-client: the workers are stopped from before the first snapshot
                // until after the last, so that the window holds none of their work. Should the
                // scenario end any other way than through `resume` below, dropping `paused`
                // resumes them.
                let mut paused =
                    scenario.pauses_workers().then(|| pause_workers(name, &config, &mut report));
                let pace = (*scenario == Scenario::OneClient)
                    .then(|| Duration::from_secs(1) / config.one_client_rate.max(1));
                let (run, start, end) = measured(
                    &accounting,
                    submit::run(&api, name, &clients, config.duration, pace, &stop),
                )
                .await;
                if let Some(paused) = &mut paused {
                    for failure in paused.resume() {
                        report.warnings.push(format!(
                            "{name}: could not resume {failure}; `kill -CONT` it by hand"
                        ));
                    }
                }
                let cost = accounting.cost("accepted submit", run.ok, &start, &end, true);
                report.costs.insert(name, cost);
                match scenario {
                    Scenario::Submit => report.submit = Some(run),
                    Scenario::ApiAlone => report.api_alone = Some(run),
                    Scenario::HotUser => report.hot_user = Some(run),
                    _ => report.one_client = Some(run),
                }
            }
            Scenario::E2e => {
                if let Some(users) = &users {
                    let settings = e2e::E2eSettings {
                        window: config.duration,
                        job_timeout: config.job_timeout,
                        poll_interval: config.poll_interval,
                    };
                    let (e2e, start, end) = measured(
                        &accounting,
                        e2e::run(
                            &api,
                            config.target.sim_url.as_deref(),
                            &users.clients,
                            settings,
                            &stop,
                        ),
                    )
                    .await;
                    let cost = accounting.cost("completed job", e2e.completed, &start, &end, true);
                    report.costs.insert("e2e", cost);
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
            Scenario::Reads => match run_reads(&api, &config, &run_id, &accounting, &stop).await {
                Ok((reads, costs)) => {
                    report.costs.extend(costs);
                    report.reads = Some(reads);
                }
                Err(error) => report
                    .errors
                    .push(ScenarioError { scenario: "reads", message: format!("{error:#}") }),
            },
        }
    }

    report.processes = sampler.finish().await;
    report.interrupted = stop.is_cancelled();
    report.summarize();
    Ok(report)
}

/// Stops the workers for `scenario` (see [`Scenario::pauses_workers`]). Whatever worker could
/// not be stopped (none found, or the signal refused) is warned about: the scenario still runs,
/// but its figures include that worker's work.
fn pause_workers(
    scenario: &str,
    config: &BenchConfig,
    report: &mut Report,
) -> pause::PausedWorkers {
    let workers = config.pid_dir.as_deref().map(pause::find_workers).unwrap_or_default();
    if workers.is_empty() {
        report.warnings.push(format!(
            "{scenario}: the workers could not be paused (no running worker process found through \
             worker*.pid in {}): its figures include the workers' work",
            config
                .pid_dir
                .as_deref()
                .map_or("(no pid directory)".into(), |d| d.display().to_string())
        ));
    }
    let (paused, failures) = pause::PausedWorkers::pause(&workers);
    for failure in failures {
        report.warnings.push(format!(
            "{scenario}: could not pause {failure}: its figures include that worker's work"
        ));
    }
    paused
}

/// Runs `work` between two snapshots of the counters.
async fn measured<T>(
    accounting: &Accounting,
    work: impl Future<Output = T>,
) -> (T, Snapshot, Snapshot) {
    let start = accounting.snapshot().await;
    let result = work.await;
    let end = accounting.snapshot().await;
    (result, start, end)
}

/// The users the submitting scenarios act as.
struct Users {
    /// One per client.
    clients: Vec<BenchUser>,
    /// The one user of `hot-user`, if it runs.
    hot: Option<BenchUser>,
}

async fn create_bench_users(
    api: &Api,
    config: &BenchConfig,
    run_id: &str,
) -> anyhow::Result<Users> {
    let token = &config.target.admin_token;
    let clients = setup::create_users(api, token, run_id, config.concurrency).await?;
    let hot = if config.scenarios.contains(&Scenario::HotUser) {
        Some(
            setup::create_user(
                api,
                token,
                &format!("bench-{run_id}-hot@bench.gengate.local"),
                &format!("gengate-bench {run_id} hot user"),
                Some(setup::CREDITS_PER_USER),
            )
            .await?,
        )
    } else {
        None
    };
    Ok(Users { clients, hot })
}

/// Seeds the reads user, then measures each endpoint for half the window, each between its own
/// two snapshots (seeding is not counted).
async fn run_reads(
    api: &Api,
    config: &BenchConfig,
    run_id: &str,
    accounting: &Accounting,
    stop: &CancellationToken,
) -> anyhow::Result<(reads::ReadsReport, Vec<(&'static str, cost::CostReport)>)> {
    let database_url = config.target.database_url.as_deref().context(
        "no database URL (GENGATE__DATABASE__URL or --database-url) to seed the reads user",
    )?;
    let seeded = reads::prepare(api, &config.target.admin_token, database_url, run_id).await?;
    let half = config.duration / 2;
    let (credits, start, middle) =
        measured(accounting, reads::credits(api, &seeded, config.concurrency, half, stop)).await;
    let credits_cost = accounting.cost("request", credits.ok, &start, &middle, false);
    let (generation, start, end) =
        measured(accounting, reads::generation(api, &seeded, config.concurrency, half, stop)).await;
    let generation_cost = accounting.cost("request", generation.ok, &start, &end, false);
    Ok((
        reads::ReadsReport { seed: seeded.seed, credits, generation },
        vec![("reads.credits", credits_cost), ("reads.generation", generation_cost)],
    ))
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
