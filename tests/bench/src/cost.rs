//! Cost per job: what one counted operation of a scenario costs the machine, from counters read
//! at both ends of the scenario's window ([`Snapshot`]) and divided by the operations counted in
//! it (accepted submits, completed jobs, answered reads).
//!
//! - CPU time of every process of the stack ([`super::cpu`]): the API, each worker, the provider
//!   simulator, all PostgreSQL processes, RabbitMQ and the bench itself.
//! - PostgreSQL: commits (`pg_stat_database.xact_commit`, in the stack's database and in all
//!   databases) and WAL written (`pg_current_wal_insert_lsn()`, which moves with every record;
//!   `pg_stat_wal.wal_bytes` is kept beside it). PostgreSQL's statistics are what each backend
//!   last flushed, at most once a second while it is busy (and within 10 s once it is idle), so
//!   commits near either end of a window may be counted in the neighbouring one.
//! - RabbitMQ: messages published to the stack's queues ([`super::broker`]).
//!
//! Between scenarios, [`Accounting::settle`] waits for the stack to finish the work an earlier
//! scenario left behind (queued jobs, scheduled polls), so that a window counts its own jobs'
//! work rather than an earlier scenario's.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::Serialize;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use super::broker::{self, BrokerCounters, BrokerMetrics, Waiting};
use super::cpu::{self, Group, GroupSample};

/// How long the stack must have been idle (no job of the run in flight, nothing in its work
/// queues, no more in its delay tiers than before the run) before a window starts: longer than
/// the 5 s between two reports of a quorum queue's depth.
pub const SETTLE_QUIET: Duration = Duration::from_secs(6);
/// How often [`Accounting::settle`] looks.
const SETTLE_POLL: Duration = Duration::from_millis(500);

/// PostgreSQL's counters at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PgCounters {
    /// `pg_stat_database.xact_commit` of the stack's database.
    pub commits: i64,
    /// … summed over every database.
    pub commits_all: i64,
    /// `pg_current_wal_insert_lsn()` as a byte position.
    pub wal_lsn: i64,
    /// `pg_stat_wal.wal_bytes`.
    pub wal_bytes_stat: Option<i64>,
}

const PG_COUNTERS: &str = "
SELECT (SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()),
       (SELECT sum(xact_commit) FROM pg_stat_database)::bigint,
       pg_wal_lsn_diff(pg_current_wal_insert_lsn(), '0/0')::bigint,
       (SELECT wal_bytes FROM pg_stat_wal)::bigint";

async fn read_pg(pool: &PgPool) -> anyhow::Result<PgCounters> {
    let (commits, commits_all, wal_lsn, wal_bytes_stat): (
        Option<i64>,
        Option<i64>,
        Option<i64>,
        Option<i64>,
    ) = sqlx::query_as(PG_COUNTERS).fetch_one(pool).await?;
    Ok(PgCounters {
        commits: commits.context("pg_stat_database has no row for the database")?,
        commits_all: commits_all.unwrap_or_default(),
        wal_lsn: wal_lsn.context("no WAL position")?,
        wal_bytes_stat,
    })
}

/// Every counter at one moment.
#[derive(Debug, Clone)]
pub struct Snapshot {
    at: Instant,
    cpu: Vec<GroupSample>,
    pg: Result<PgCounters, String>,
    broker: Result<BrokerCounters, String>,
}

/// A measured figure, or why there is none.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(untagged)]
pub enum Figure<T> {
    /// Measured.
    Measured(T),
    /// Not measured.
    Unavailable {
        /// Why.
        unavailable: String,
    },
}

impl<T> Figure<T> {
    fn unavailable(reason: impl Into<String>) -> Self {
        Figure::Unavailable { unavailable: reason.into() }
    }

    /// The figure, if measured.
    pub fn measured(&self) -> Option<&T> {
        match self {
            Figure::Measured(value) => Some(value),
            Figure::Unavailable { .. } => None,
        }
    }
}

/// CPU time of one group of processes over a window.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ProcessCpu {
    /// `api`, `worker1`, `sim`, `postgres`, `rabbitmq`, `bench`.
    pub name: String,
    /// Its processes at the end of the window.
    pub pids: Vec<u32>,
    /// CPU time used in the window, in ms.
    pub cpu_ms: f64,
    /// … per job.
    pub ms_per_job: Option<f64>,
}

/// PostgreSQL's work over a window.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct PgCost {
    /// Commits in the stack's database.
    pub commits: i64,
    /// … per job.
    pub commits_per_job: Option<f64>,
    /// Commits in every database of the server.
    pub commits_all: i64,
    /// … per job.
    pub commits_all_per_job: Option<f64>,
    /// WAL written (bytes between the insert positions).
    pub wal_bytes: i64,
    /// … per job.
    pub wal_bytes_per_job: Option<f64>,
    /// The growth of `pg_stat_wal.wal_bytes` (lags like the commit counts).
    pub wal_bytes_pg_stat_wal: Option<i64>,
}

impl PgCost {
    /// Commits per job in the stack's database once `reads` read-only commits are taken off,
    /// over `jobs` jobs: for `e2e`, what a job costs PostgreSQL without its clients' status
    /// polls, whose number depends on the poll interval rather than on gengate. `None` without
    /// jobs.
    pub fn commits_per_job_without(&self, reads: u64, jobs: u64) -> Option<f64> {
        per_unit(self.commits as f64 - reads as f64, jobs as f64)
    }
}

/// RabbitMQ's work over a window.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct BrokerCost {
    /// Messages published to the stack's queues.
    pub published: u64,
    /// … per job.
    pub published_per_job: Option<f64>,
    /// … by queue.
    pub by_queue: BTreeMap<String, u64>,
    /// Channels that closed inside the window (what they published after its start is missing).
    pub channels_closed: u32,
}

/// The `per` of the idle stack's figures, which are per second rather than per job.
pub const IDLE: &str = "second";

/// What one counted operation of a scenario cost. For the idle stack (`per` = [`IDLE`]) the
/// `…_per_job` figures are per second.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct CostReport {
    /// What one job is here: `accepted submit`, `completed job`, `request`; `second` for the
    /// idle stack.
    pub per: &'static str,
    /// How many were counted in the window.
    pub jobs: u64,
    /// The window the counters cover, in seconds.
    pub seconds: f64,
    /// CPU time per group of processes.
    pub cpu: Vec<ProcessCpu>,
    /// CPU time of every group together, in ms.
    pub cpu_total_ms: f64,
    /// … per job.
    pub cpu_total_ms_per_job: Option<f64>,
    /// PostgreSQL's commits and WAL.
    pub postgres: Figure<PgCost>,
    /// Messages through RabbitMQ.
    pub broker: Figure<BrokerCost>,
    /// What the figures leave out.
    pub notes: Vec<String>,
}

impl CostReport {
    /// A group's CPU time per job, in ms.
    pub fn cpu_ms_per_job(&self, name: &str) -> Option<f64> {
        self.cpu.iter().find(|p| p.name == name).and_then(|p| p.ms_per_job)
    }
}

/// How the bench waited for the stack to go idle before a scenario.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SettleReport {
    /// The scenario that waited.
    pub before: &'static str,
    /// How long it waited, in seconds.
    pub waited_s: f64,
    /// The stack was idle at the end of the wait (false: the limit was reached first).
    pub settled: bool,
    /// Jobs of this run still queued or submitted at the end (without a database: `null`).
    pub in_flight: Option<i64>,
    /// Messages waiting in the stack's work queues at the end (without the broker's metrics:
    /// `null`).
    pub waiting_messages: Option<u64>,
    /// Messages in its delay tiers at the end.
    pub delayed_messages: Option<u64>,
}

/// Where the accounting's counters come from, as reported.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct AccountingSources {
    /// `sysconf(_SC_CLK_TCK)`.
    pub clock_ticks_per_s: u64,
    /// The groups of processes whose CPU time is counted, with their pids when the bench started.
    pub processes: Vec<ProcessGroupInfo>,
    /// PostgreSQL's counters: what is read, or why nothing is.
    pub postgres: String,
    /// RabbitMQ's counters: where they are read, or why nothing is.
    pub broker: String,
}

/// One group of processes.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ProcessGroupInfo {
    /// Its name.
    pub name: String,
    /// Its pids when the bench started.
    pub pids: Vec<u32>,
}

/// Reads the counters of the stack.
#[derive(Debug)]
pub struct Accounting {
    clock_ticks: u64,
    groups: Vec<Group>,
    pg: Result<PgPool, String>,
    broker: Result<BrokerMetrics, String>,
    sources: AccountingSources,
}

/// What [`Accounting::connect`] needs.
#[derive(Debug, Clone, Default)]
pub struct AccountingTarget<'a> {
    /// Where `api.pid`, `worker*.pid` and `sim.pid` are.
    pub pid_dir: Option<&'a std::path::Path>,
    /// The stack's PostgreSQL.
    pub database_url: Option<&'a str>,
    /// The broker's Prometheus endpoint (`http://127.0.0.1:15692`).
    pub broker_metrics_url: Option<&'a str>,
    /// The stack's queue prefix (`gengate`).
    pub queue_prefix: &'a str,
}

impl Accounting {
    /// Finds the processes and checks that PostgreSQL's and the broker's counters can be read.
    /// What cannot be read is reported as unavailable, with the reason; it stops nothing.
    pub async fn connect(target: AccountingTarget<'_>) -> Self {
        let groups = cpu::stack_groups(target.pid_dir);
        let first = cpu::sample(&groups);
        let processes = groups
            .iter()
            .zip(&first)
            .map(|(group, sample)| ProcessGroupInfo {
                name: group.name.clone(),
                pids: sample.pids(),
            })
            .collect();

        let pg = match target.database_url {
            None => Err("no database URL (GENGATE__DATABASE__URL or --database-url)".to_owned()),
            Some(url) => connect_pg(url).await.map_err(|e| format!("{e:#}")),
        };
        let broker = match target.broker_metrics_url {
            None => Err("no broker metrics URL (--broker-metrics-url, or an amqp:// URL in \
                         GENGATE__AMQP__URL to derive it from)"
                .to_owned()),
            Some(url) => match BrokerMetrics::new(url, target.queue_prefix) {
                Err(e) => Err(format!("{e:#}")),
                Ok(metrics) => match metrics.read().await {
                    Ok(_) => Ok(metrics),
                    Err(e) => Err(format!(
                        "{e:#}; enable the plugin with `rabbitmq-plugins enable \
                         rabbitmq_prometheus` (deploy/dev does) and restart the stack"
                    )),
                },
            },
        };
        let sources = AccountingSources {
            clock_ticks_per_s: cpu::clock_ticks_per_second(),
            processes,
            postgres: match &pg {
                Ok(_) => "pg_stat_database.xact_commit, pg_current_wal_insert_lsn(), \
                          pg_stat_wal.wal_bytes"
                    .to_owned(),
                Err(e) => format!("unavailable: {e}"),
            },
            broker: match &broker {
                Ok(metrics) => metrics.url().to_owned(),
                Err(e) => format!("unavailable: {e}"),
            },
        };
        Self { clock_ticks: sources.clock_ticks_per_s, groups, pg, broker, sources }
    }

    /// Where the counters come from.
    pub fn sources(&self) -> &AccountingSources {
        &self.sources
    }

    /// A warning for each source of figures that cannot be read.
    pub fn unavailable(&self) -> Vec<String> {
        let mut warnings = Vec::new();
        if let Err(reason) = &self.pg {
            warnings.push(format!("cost per job: no PostgreSQL figures: {reason}"));
        }
        if let Err(reason) = &self.broker {
            warnings.push(format!("cost per job: no message counts: {reason}"));
        }
        warnings
    }

    /// Reads every counter now: the processes first (they move fastest), then PostgreSQL, then
    /// the broker.
    pub async fn snapshot(&self) -> Snapshot {
        let at = Instant::now();
        let groups = self.groups.clone();
        let cpu =
            tokio::task::spawn_blocking(move || cpu::sample(&groups)).await.unwrap_or_default();
        let pg = match &self.pg {
            Ok(pool) => read_pg(pool).await.map_err(|e| format!("reading the counters: {e:#}")),
            Err(e) => Err(e.clone()),
        };
        let broker = match &self.broker {
            Ok(metrics) => metrics.read().await.map_err(|e| format!("{e:#}")),
            Err(e) => Err(e.clone()),
        };
        Snapshot { at, cpu, pg, broker }
    }

    /// What `jobs` counted operations (each a `per`) cost between two snapshots.
    /// `expects_messages`: every counted operation publishes (a submit does), so a broker that
    /// counted nothing is not counting (its statistics are off for the stack's channels).
    pub fn cost(
        &self,
        per: &'static str,
        jobs: u64,
        start: &Snapshot,
        end: &Snapshot,
        expects_messages: bool,
    ) -> CostReport {
        let names: Vec<&str> = self.groups.iter().map(|g| g.name.as_str()).collect();
        cost_between(&names, self.clock_ticks, per, jobs, start, end, expects_messages)
    }

    /// Messages waiting in the stack's queues now (but the dead-letter queue); `None` without
    /// the broker's metrics.
    pub async fn waiting(&self) -> Option<Waiting> {
        match &self.broker {
            Ok(metrics) => metrics.read().await.ok().map(|c| c.waiting()),
            Err(_) => None,
        }
    }

    /// Waits until the stack has finished the work in hand — no job of `user_ids` queued or
    /// submitted, no message waiting in a work queue, and no more in the delay tiers than
    /// `delayed_backlog` (what they held before the run: delayed messages can take minutes to come
    /// out) — and has stayed so for [`SETTLE_QUIET`]; at most `limit`.
    pub async fn settle(
        &self,
        before: &'static str,
        user_ids: &[uuid::Uuid],
        delayed_backlog: u64,
        limit: Duration,
        stop: &CancellationToken,
    ) -> SettleReport {
        let start = Instant::now();
        let mut busy_at = start;
        loop {
            let in_flight = match &self.pg {
                Ok(pool) if !user_ids.is_empty() => sqlx::query_scalar::<_, i64>(
                    "SELECT count(*) FROM generations
                     WHERE user_id = ANY($1) AND status IN ('queued', 'submitted')",
                )
                .bind(user_ids)
                .fetch_one(pool)
                .await
                .ok(),
                _ => None,
            };
            let waiting = self.waiting().await;
            let now = Instant::now();
            let (work, delayed) = waiting.map_or((0, 0), |w| (w.work, w.delayed));
            if in_flight.unwrap_or(0) > 0 || work > 0 || delayed > delayed_backlog {
                busy_at = now;
            }
            let settled = now.duration_since(busy_at) >= SETTLE_QUIET;
            if settled || now.duration_since(start) >= limit || stop.is_cancelled() {
                return SettleReport {
                    before,
                    waited_s: now.duration_since(start).as_secs_f64(),
                    settled,
                    in_flight,
                    waiting_messages: waiting.map(|w| w.work),
                    delayed_messages: waiting.map(|w| w.delayed),
                };
            }
            tokio::select! {
                _ = stop.cancelled() => {}
                _ = tokio::time::sleep(SETTLE_POLL) => {}
            }
        }
    }
}

async fn connect_pg(url: &str) -> anyhow::Result<PgPool> {
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(Duration::from_secs(10))
        .connect(url)
        .await
        .context("connecting to the stack's PostgreSQL")?;
    read_pg(&pool).await.context("reading pg_stat_database and the WAL position")?;
    Ok(pool)
}

fn per_unit(value: f64, units: f64) -> Option<f64> {
    (units > 0.0).then(|| value / units)
}

fn cost_between(
    names: &[&str],
    clock_ticks: u64,
    per: &'static str,
    jobs: u64,
    start: &Snapshot,
    end: &Snapshot,
    expects_messages: bool,
) -> CostReport {
    let seconds = end.at.duration_since(start.at).as_secs_f64();
    // Per job; or, for the idle stack, per second.
    let units = if per == IDLE { seconds } else { jobs as f64 };
    let mut notes = Vec::new();
    let mut cpu = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let (Some(before), Some(after)) = (start.cpu.get(i), end.cpu.get(i)) else {
            continue;
        };
        let ticks = cpu::group_ticks(before, after);
        if ticks.lost > 0 {
            notes.push(format!(
                "{name}: {} processes ended in the window unreaped by a watched process; their \
                 CPU time after its start is not counted",
                ticks.lost
            ));
        }
        let cpu_ms = cpu::ticks_to_ms(ticks.ticks, clock_ticks);
        cpu.push(ProcessCpu {
            name: (*name).to_owned(),
            pids: after.pids(),
            cpu_ms,
            ms_per_job: per_unit(cpu_ms, units),
        });
    }
    let cpu_total_ms: f64 = cpu.iter().map(|p| p.cpu_ms).sum();

    let postgres = match (&start.pg, &end.pg) {
        (Ok(a), Ok(b)) => {
            let commits = b.commits - a.commits;
            let commits_all = b.commits_all - a.commits_all;
            let wal_bytes = b.wal_lsn - a.wal_lsn;
            Figure::Measured(PgCost {
                commits,
                commits_per_job: per_unit(commits as f64, units),
                commits_all,
                commits_all_per_job: per_unit(commits_all as f64, units),
                wal_bytes,
                wal_bytes_per_job: per_unit(wal_bytes as f64, units),
                wal_bytes_pg_stat_wal: b.wal_bytes_stat.zip(a.wal_bytes_stat).map(|(b, a)| b - a),
            })
        }
        (Err(e), _) | (_, Err(e)) => Figure::unavailable(e.clone()),
    };

    let broker = match (&start.broker, &end.broker) {
        (Ok(a), Ok(b)) => {
            let published = broker::published_between(a, b);
            if expects_messages && jobs > 0 && b.published.is_empty() {
                Figure::unavailable(
                    "the broker counts no publish to the stack's queues: its per-message \
                     statistics are off for the stack's channels (they were opened before \
                     rabbitmq_prometheus was enabled: restart the stack)",
                )
            } else {
                if published.channels_closed > 0 {
                    notes.push(format!(
                        "broker: {} channels closed in the window; what they published after its \
                         start is not counted",
                        published.channels_closed
                    ));
                }
                let total = published.total();
                Figure::Measured(BrokerCost {
                    published: total,
                    published_per_job: per_unit(total as f64, units),
                    by_queue: published.by_queue,
                    channels_closed: published.channels_closed,
                })
            }
        }
        (Err(e), _) | (_, Err(e)) => Figure::unavailable(e.clone()),
    };

    CostReport {
        per,
        jobs,
        seconds,
        cpu,
        cpu_total_ms,
        cpu_total_ms_per_job: per_unit(cpu_total_ms, units),
        postgres,
        broker,
        notes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::ProcStat;

    fn proc_(pid: u32, own: u64) -> ProcStat {
        ProcStat {
            pid,
            comm: "x".into(),
            ppid: 1,
            utime: own,
            stime: 0,
            cutime: 0,
            cstime: 0,
            starttime: 7,
        }
    }

    fn snapshot(
        at: Instant,
        api: u64,
        pg: u64,
        commits: i64,
        lsn: i64,
        published: u64,
    ) -> Snapshot {
        let key = ("<0.1.0>".to_owned(), "gengate.jobs".to_owned(), "gengate".to_owned());
        Snapshot {
            at,
            cpu: vec![
                GroupSample::of([proc_(10, api)]),
                GroupSample::of([proc_(20, pg), proc_(21, pg)]),
            ],
            pg: Ok(PgCounters {
                commits,
                commits_all: commits + 5,
                wal_lsn: lsn,
                wal_bytes_stat: None,
            }),
            broker: Ok(BrokerCounters {
                published: BTreeMap::from([(key, published)]),
                depth: BTreeMap::new(),
            }),
        }
    }

    #[test]
    fn divides_every_counter_by_the_jobs() {
        let t0 = Instant::now();
        let start = snapshot(t0, 100, 1000, 50, 4096, 10);
        let end = snapshot(t0 + Duration::from_secs(10), 150, 1100, 250, 4096 + 80_000, 410);
        let cost =
            cost_between(&["api", "postgres"], 100, "accepted submit", 100, &start, &end, true);
        assert_eq!(cost.seconds, 10.0);
        // 50 ticks of the API = 500 ms; 2 × 100 ticks of PostgreSQL = 2000 ms.
        assert_eq!(cost.cpu_ms_per_job("api"), Some(5.0));
        assert_eq!(cost.cpu_ms_per_job("postgres"), Some(20.0));
        assert_eq!(cost.cpu_total_ms_per_job, Some(25.0));
        let pg = cost.postgres.measured().unwrap();
        assert_eq!((pg.commits, pg.commits_per_job, pg.commits_all), (200, Some(2.0), 200));
        assert_eq!(pg.wal_bytes_per_job, Some(800.0));
        let broker = cost.broker.measured().unwrap();
        assert_eq!((broker.published, broker.published_per_job), (400, Some(4.0)));
        assert!(cost.notes.is_empty(), "{:?}", cost.notes);
    }

    #[test]
    fn status_reads_come_off_the_commits_before_dividing() {
        let t0 = Instant::now();
        let start = snapshot(t0, 100, 1000, 50, 0, 10);
        // 1,650 commits over 100 completed jobs, of which 250 the clients' polls.
        let end = snapshot(t0 + Duration::from_secs(10), 150, 1100, 1700, 80_000, 610);
        let cost =
            cost_between(&["api", "postgres"], 100, "completed job", 100, &start, &end, true);
        let pg = cost.postgres.measured().unwrap();
        assert_eq!(pg.commits_per_job, Some(16.5));
        assert_eq!(pg.commits_per_job_without(250, cost.jobs), Some(14.0));
        assert_eq!(pg.commits_per_job_without(0, cost.jobs), pg.commits_per_job);
        assert_eq!(pg.commits_per_job_without(250, 0), None);
    }

    #[test]
    fn the_idle_stack_is_counted_per_second() {
        let t0 = Instant::now();
        let start = snapshot(t0, 100, 1000, 50, 0, 10);
        let end = snapshot(t0 + Duration::from_secs(5), 110, 1005, 60, 5000, 20);
        let idle = cost_between(&["api", "postgres"], 100, IDLE, 0, &start, &end, false);
        assert_eq!(idle.cpu_ms_per_job("api"), Some(20.0));
        assert_eq!(idle.cpu_total_ms_per_job, Some(40.0));
        let pg = idle.postgres.measured().unwrap();
        assert_eq!((pg.commits_per_job, pg.wal_bytes_per_job), (Some(2.0), Some(1000.0)));
        assert_eq!(idle.broker.measured().unwrap().published_per_job, Some(2.0));
    }

    #[test]
    fn no_jobs_no_per_job_figures() {
        let t0 = Instant::now();
        let start = snapshot(t0, 100, 1000, 50, 0, 0);
        let end = snapshot(t0, 110, 1000, 52, 100, 0);
        let cost = cost_between(&["api", "postgres"], 100, "request", 0, &start, &end, false);
        assert_eq!(cost.cpu_total_ms, 100.0);
        assert_eq!(cost.cpu_total_ms_per_job, None);
        assert_eq!(cost.postgres.measured().unwrap().commits_per_job, None);
    }

    #[test]
    fn what_cannot_be_read_is_unavailable_with_its_reason() {
        let t0 = Instant::now();
        let mut start = snapshot(t0, 1, 1, 1, 1, 0);
        let end = snapshot(t0, 2, 2, 2, 2, 0);
        start.pg = Err("no database URL".into());
        start.broker = Err("connection refused".into());
        let cost = cost_between(&["api", "postgres"], 100, "request", 3, &start, &end, false);
        assert_eq!(cost.postgres, Figure::unavailable("no database URL"));
        assert_eq!(
            serde_json::to_value(&cost.broker).unwrap(),
            serde_json::json!({"unavailable": "connection refused"})
        );
    }

    #[test]
    fn a_broker_that_counts_nothing_for_submits_is_not_counting() {
        let t0 = Instant::now();
        let mut start = snapshot(t0, 1, 1, 1, 1, 0);
        let mut end = snapshot(t0, 2, 2, 2, 2, 0);
        start.broker = Ok(BrokerCounters::default());
        end.broker = Ok(BrokerCounters::default());
        let submits = cost_between(&["api"], 100, "accepted submit", 50, &start, &end, true);
        assert!(submits.broker.measured().is_none());
        // Reads publish nothing: zero is the measurement.
        let reads = cost_between(&["api"], 100, "request", 50, &start, &end, false);
        assert_eq!(reads.broker.measured().unwrap().published, 0);
    }
}
