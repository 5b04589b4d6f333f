//! The baseline: what the same PostgreSQL server does with nothing in front of it. `pgbench -N`
//! (the TPC-B-like script without the contended branch and teller updates) at the bench's
//! concurrency, in a database of its own, `gengate_pgbench`, created and initialized
//! (`pgbench -i -s 10`) on first use and reused after. Each scenario's rate is reported as a ratio
//! to its TPS: how much of the database's raw capacity a gateway operation costs.

use std::process::Stdio;
use std::time::Duration;

use anyhow::Context;
use serde::Serialize;
use sqlx::Connection;
use tokio::process::Command;

use super::progress::{self, Ticker};

/// The baseline database (also spelled out in `ensure_database`'s `CREATE DATABASE`).
pub const DATABASE: &str = "gengate_pgbench";
/// pgbench's scale factor (10 → 1,000,000 accounts).
pub const SCALE: u32 = 10;

/// What pgbench printed that the report uses.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct PgbenchOutput {
    /// Transactions per second, without the initial connection time.
    pub tps: f64,
    /// `latency average`, in ms.
    pub latency_avg_ms: Option<f64>,
    /// `number of transactions actually processed`.
    pub transactions: Option<u64>,
    /// `number of failed transactions` (PostgreSQL 15+).
    pub failed_transactions: Option<u64>,
}

/// Reads pgbench's summary. PostgreSQL 14+ prints one `tps = N (without initial connection
/// time)` line; older versions print `including` and `excluding connections establishing`, of
/// which the `excluding` one is the comparable figure.
pub fn parse_pgbench(output: &str) -> Option<PgbenchOutput> {
    let mut tps_any = None;
    let mut tps_net = None;
    let mut parsed = PgbenchOutput::default();
    for line in output.lines().map(str::trim) {
        if let Some(rest) = line.strip_prefix("tps = ") {
            let value: Option<f64> = rest.split_whitespace().next().and_then(|v| v.parse().ok());
            if rest.contains("without initial connection time") || rest.contains("excluding") {
                tps_net = tps_net.or(value);
            } else {
                tps_any = tps_any.or(value);
            }
        } else if let Some(rest) = line.strip_prefix("latency average = ") {
            parsed.latency_avg_ms = rest.strip_suffix(" ms").and_then(|v| v.trim().parse().ok());
        } else if let Some(rest) = line.strip_prefix("number of transactions actually processed: ")
        {
            // `12345` or `12345/12800` (with -t).
            parsed.transactions = rest.split('/').next().and_then(|v| v.trim().parse().ok());
        } else if let Some(rest) = line.strip_prefix("number of failed transactions: ") {
            parsed.failed_transactions =
                rest.split_whitespace().next().and_then(|v| v.parse().ok());
        }
    }
    parsed.tps = tps_net.or(tps_any)?;
    Some(parsed)
}

/// The baseline as reported.
#[derive(Debug, Clone, Serialize)]
pub struct BaselineReport {
    /// `ok`, `skipped` or `failed`.
    pub status: &'static str,
    /// Why it was skipped or failed.
    pub reason: Option<String>,
    /// Transactions per second.
    pub tps: Option<f64>,
    /// Average latency, in ms.
    pub latency_avg_ms: Option<f64>,
    /// Transactions processed.
    pub transactions: Option<u64>,
    /// Failed transactions.
    pub failed_transactions: Option<u64>,
    /// pgbench clients (`-c`).
    pub clients: usize,
    /// pgbench threads (`-j`).
    pub threads: usize,
    /// `-T`, in seconds.
    pub duration_s: u64,
    /// Scale factor of the database.
    pub scale: u32,
    /// The database.
    pub database: &'static str,
    /// This run initialized the database (`pgbench -i`), rather than reusing it.
    pub initialized: bool,
    /// `pgbench --version`.
    pub version: Option<String>,
}

impl BaselineReport {
    /// A baseline that did not run.
    pub fn skipped(reason: &str) -> Self {
        Self::empty("skipped", reason.to_owned(), 0, Duration::ZERO)
    }

    fn empty(status: &'static str, reason: String, clients: usize, duration: Duration) -> Self {
        Self {
            status,
            reason: Some(reason),
            tps: None,
            latency_avg_ms: None,
            transactions: None,
            failed_transactions: None,
            clients,
            threads: 0,
            duration_s: duration.as_secs(),
            scale: SCALE,
            database: DATABASE,
            initialized: false,
            version: None,
        }
    }
}

/// How pgbench reaches the server: libpq's variables, from the stack's database URL.
#[derive(Clone, PartialEq, Eq)]
pub struct PgTarget {
    host: String,
    port: u16,
    user: String,
    password: Option<String>,
    /// The URL of the baseline database, for sqlx.
    baseline_url: String,
}

impl std::fmt::Debug for PgTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgTarget")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

impl PgTarget {
    /// From `postgres://user:password@host:port/db`.
    pub fn from_url(database_url: &str) -> anyhow::Result<Self> {
        let url = url::Url::parse(database_url).context("GENGATE__DATABASE__URL is not a URL")?;
        anyhow::ensure!(
            matches!(url.scheme(), "postgres" | "postgresql"),
            "GENGATE__DATABASE__URL is not a postgres:// URL"
        );
        let mut baseline = url.clone();
        baseline.set_path(DATABASE);
        Ok(Self {
            host: url.host_str().unwrap_or("localhost").to_owned(),
            port: url.port().unwrap_or(5432),
            user: if url.username().is_empty() {
                "postgres".to_owned()
            } else {
                percent_decode(url.username())
            },
            password: url.password().map(percent_decode),
            baseline_url: baseline.to_string(),
        })
    }

    fn command(&self) -> Command {
        let mut command = Command::new("pgbench");
        command
            .env("PGHOST", &self.host)
            .env("PGPORT", self.port.to_string())
            .env("PGUSER", &self.user)
            .env("PGDATABASE", DATABASE)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        // In the environment, not the argument list, where `ps` would show it.
        if let Some(password) = &self.password {
            command.env("PGPASSWORD", password);
        }
        command
    }
}

/// The installed pgbench's version, or `None` when there is none.
pub async fn pgbench_version() -> Option<String> {
    let output = Command::new("pgbench").arg("--version").output().await.ok()?;
    output.status.success().then(|| String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

/// Runs the baseline for `duration` with `clients` connections against the server of
/// `database_url`.
pub async fn run(
    database_url: &str,
    clients: usize,
    duration: Duration,
    version: String,
) -> BaselineReport {
    let seconds = (duration.as_secs() + u64::from(duration.subsec_nanos() > 0)).max(1);
    let threads = clients.min(std::thread::available_parallelism().map_or(1, |n| n.get())).max(1);
    let mut report = BaselineReport::empty("failed", String::new(), clients, duration);
    report.duration_s = seconds;
    report.threads = threads;
    report.version = Some(version);
    let result = async {
        let connection = PgTarget::from_url(database_url)?;
        ensure_database(database_url).await?;
        if !initialized(&connection.baseline_url).await {
            initialize(&connection).await?;
            report.initialized = true;
        }
        run_pgbench(&connection, clients, threads, seconds).await
    }
    .await;
    match result {
        Ok(output) => {
            report.status = "ok";
            report.reason = None;
            report.tps = Some(output.tps);
            report.latency_avg_ms = output.latency_avg_ms;
            report.transactions = output.transactions;
            report.failed_transactions = output.failed_transactions;
        }
        Err(error) => report.reason = Some(format!("{error:#}")),
    }
    report
}

async fn ensure_database(database_url: &str) -> anyhow::Result<()> {
    let mut conn = sqlx::PgConnection::connect(database_url)
        .await
        .context("connecting to the stack's PostgreSQL")?;
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(DATABASE)
            .fetch_one(&mut conn)
            .await?;
    if !exists {
        // CREATE DATABASE takes no bind parameters; the name is the constant above.
        sqlx::query("CREATE DATABASE gengate_pgbench")
            .execute(&mut conn)
            .await
            .with_context(|| format!("creating database {DATABASE} (the role needs CREATEDB)"))?;
    }
    conn.close().await?;
    Ok(())
}

/// The baseline database holds pgbench's tables at [`SCALE`].
async fn initialized(baseline_url: &str) -> bool {
    let Ok(mut conn) = sqlx::PgConnection::connect(baseline_url).await else {
        return false;
    };
    let branches: Result<i64, _> =
        sqlx::query_scalar("SELECT count(*) FROM pgbench_branches").fetch_one(&mut conn).await;
    let accounts: Result<bool, _> =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pgbench_accounts WHERE aid = $1)")
            .bind(i64::from(SCALE) * 100_000)
            .fetch_one(&mut conn)
            .await;
    let _ = conn.close().await;
    matches!((branches, accounts), (Ok(n), Ok(true)) if n == i64::from(SCALE))
}

async fn initialize(connection: &PgTarget) -> anyhow::Result<()> {
    let bar = progress::timed_bar("pgbench -i", Duration::from_secs(30));
    let ticker = Ticker::start(bar, None, "");
    let output = connection
        .command()
        .args(["-i", "-q", "-s", &SCALE.to_string()])
        .output()
        .await
        .context("running pgbench -i");
    ticker.finish().await;
    let output = output?;
    anyhow::ensure!(
        output.status.success(),
        "pgbench -i failed: {}",
        last_lines(&String::from_utf8_lossy(&output.stderr))
    );
    Ok(())
}

async fn run_pgbench(
    connection: &PgTarget,
    clients: usize,
    threads: usize,
    seconds: u64,
) -> anyhow::Result<PgbenchOutput> {
    let bar = progress::timed_bar("pgbench -N", Duration::from_secs(seconds));
    let ticker = Ticker::start(bar, None, "");
    let output = connection
        .command()
        .args(["-N", "-c", &clients.to_string(), "-j", &threads.to_string()])
        .args(["-T", &seconds.to_string()])
        .output()
        .await
        .context("running pgbench");
    ticker.finish().await;
    let output = output?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    anyhow::ensure!(
        output.status.success(),
        "pgbench failed ({}): {}",
        output.status,
        last_lines(&String::from_utf8_lossy(&output.stderr))
    );
    parse_pgbench(&stdout).with_context(|| format!("no tps in pgbench's output: {stdout}"))
}

/// Undoes the percent-encoding of a URL's user or password.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok());
        match (bytes[i], hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn last_lines(text: &str) -> String {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(3)..].join(" | ")
}

#[cfg(test)]
mod tests {
    use super::*;

    const PG15: &str = "pgbench (15.20 (Debian 15.20-0+deb12u1))
starting vacuum...end.
transaction type: <builtin: simple update>
scaling factor: 10
query mode: simple
number of clients: 32
number of threads: 2
maximum number of tries: 1
duration: 20 s
number of transactions actually processed: 61234
number of failed transactions: 0 (0.000%)
latency average = 10.452 ms
initial connection time = 38.113 ms
tps = 3061.571924 (without initial connection time)
";

    const PG13: &str = "starting vacuum...end.
transaction type: <builtin: simple update>
scaling factor: 10
query mode: simple
number of clients: 8
number of threads: 2
duration: 5 s
number of transactions actually processed: 9000
latency average = 4.444 ms
tps = 1790.123456 (including connections establishing)
tps = 1800.654321 (excluding connections establishing)
";

    #[test]
    fn reads_a_postgresql_15_summary() {
        assert_eq!(
            parse_pgbench(PG15),
            Some(PgbenchOutput {
                tps: 3061.571924,
                latency_avg_ms: Some(10.452),
                transactions: Some(61_234),
                failed_transactions: Some(0),
            })
        );
    }

    #[test]
    fn prefers_the_figure_without_connection_time_on_old_versions() {
        let parsed = parse_pgbench(PG13).unwrap();
        assert_eq!(parsed.tps, 1800.654321);
        assert_eq!(parsed.latency_avg_ms, Some(4.444));
        assert_eq!(parsed.failed_transactions, None);
    }

    #[test]
    fn a_single_plain_tps_line_is_enough() {
        assert_eq!(parse_pgbench("tps = 12.5\n").map(|p| p.tps), Some(12.5));
    }

    #[test]
    fn no_tps_no_baseline() {
        assert_eq!(parse_pgbench("pgbench: error: connection to server failed\n"), None);
        assert_eq!(parse_pgbench("tps = fast (without initial connection time)\n"), None);
    }

    #[test]
    fn connection_comes_from_the_database_url() {
        let c = PgTarget::from_url("postgres://gengate:p%40ss+1@127.0.0.1:5433/gengate").unwrap();
        assert_eq!(
            (c.host.as_str(), c.port, c.user.as_str(), c.password.as_deref()),
            ("127.0.0.1", 5433, "gengate", Some("p@ss+1"))
        );
        assert_eq!(c.baseline_url, "postgres://gengate:p%40ss+1@127.0.0.1:5433/gengate_pgbench");
        let bare = PgTarget::from_url("postgresql://db.internal/app").unwrap();
        assert_eq!((bare.port, bare.user.as_str(), bare.password), (5432, "postgres", None));
        assert!(PgTarget::from_url("mysql://x/y").is_err());
        // The password stays out of debug output.
        assert!(!format!("{c:?}").contains("p@ss"));
        assert_eq!(percent_decode("a%2Fb%zz%4"), "a/b%zz%4");
    }
}
