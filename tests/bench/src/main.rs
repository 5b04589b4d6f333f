//! `gengate-bench`: the load generator. Reads where the stack is from `.run/dev.env` (as
//! `deploy/dev up` writes it), runs the scenarios, prints a table and writes a JSON report.
//! `deploy/dev bench` runs it against a stack started with bench settings. See
//! `docs/benchmarks.md`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, ValueEnum};
use gengate_bench::env_file::{self, Overrides, Target};
use gengate_bench::{BenchConfig, Scenario, parse_duration};
use tokio_util::sync::CancellationToken;

/// Load generator for gengate: submit throughput, submit-to-completed latency, read latency,
/// against pgbench on the same PostgreSQL server.
#[derive(Debug, Parser)]
#[command(name = "gengate-bench", version)]
struct Args {
    /// Env file with GENGATE_URL, GENGATE_ADMIN_TOKEN, GENGATE_SIM_URL and
    /// GENGATE__DATABASE__URL (`deploy/dev up` writes it). Pid files are looked for next to it.
    #[arg(long, default_value = ".run/dev.env")]
    env: PathBuf,
    /// Concurrent clients (each its own bench user); also pgbench's `-c`.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u16).range(1..=1024))]
    concurrency: u16,
    /// How long each scenario runs (e2e: how long jobs are submitted); also pgbench's `-T`.
    #[arg(long, default_value = "20s", value_parser = parse_duration)]
    duration: Duration,
    /// Write the report as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Which scenario to run; `all` runs e2e, reads, api-alone, submit, hot-user, then
    /// one-client. `api-alone` is `submit` with the worker processes (worker*.pid) stopped with
    /// SIGSTOP for the window and resumed with SIGCONT after it; `one-client` is one client at a
    /// light random pace (--one-client-rate), the workers stopped the same way.
    #[arg(long, value_enum, default_value_t = Which::All)]
    scenario: Which,
    /// Skip the pgbench baseline.
    #[arg(long)]
    no_baseline: bool,
    /// e2e: how long one job may take from submit to its end (and how long to wait for a first
    /// completion before giving up).
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    job_timeout: Duration,
    /// e2e: pause between polls of a job.
    #[arg(long, default_value = "50ms", value_parser = parse_duration)]
    poll_interval: Duration,
    /// The API's base URL (overrides GENGATE_URL from the env file).
    #[arg(long)]
    url: Option<String>,
    /// The admin token (overrides GENGATE_ADMIN_TOKEN).
    #[arg(long)]
    admin_token: Option<String>,
    /// The provider simulator's base URL (overrides GENGATE_SIM_URL).
    #[arg(long)]
    sim_url: Option<String>,
    /// The stack's PostgreSQL (overrides GENGATE__DATABASE__URL).
    #[arg(long)]
    database_url: Option<String>,
    /// The broker's Prometheus endpoint (plugin rabbitmq_prometheus), for the messages per job
    /// (default: port 15692 of the host in GENGATE__AMQP__URL).
    #[arg(long)]
    broker_metrics_url: Option<String>,
    /// one-client: submits per second of its one client, on average (at random times, a Poisson
    /// process): a light load, so that the latency it measures is a lone submit's, not the
    /// machine's saturation.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    one_client_rate: u32,
    /// Where api.pid, worker*.pid and sim.pid are (default: the env file's directory).
    #[arg(long)]
    pid_dir: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Which {
    Submit,
    ApiAlone,
    E2e,
    Reads,
    HotUser,
    OneClient,
    All,
}

impl Which {
    fn scenarios(self) -> Vec<Scenario> {
        match self {
            Which::Submit => vec![Scenario::Submit],
            Which::ApiAlone => vec![Scenario::ApiAlone],
            Which::E2e => vec![Scenario::E2e],
            Which::Reads => vec![Scenario::Reads],
            Which::HotUser => vec![Scenario::HotUser],
            Which::OneClient => vec![Scenario::OneClient],
            Which::All => Scenario::ALL.to_vec(),
        }
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    match run(Args::parse()).await {
        Ok(true) => ExitCode::SUCCESS,
        // Figures were produced, but a scenario failed or answers were not all as expected.
        Ok(false) => ExitCode::from(1),
        Err(error) => {
            eprintln!("gengate-bench: {error:#}");
            ExitCode::from(2)
        }
    }
}

async fn run(args: Args) -> anyhow::Result<bool> {
    gengate_shared::install_crypto_provider();
    let vars = if args.env.exists() {
        env_file::load(&args.env)?
    } else {
        // Without the file, flags (or an environment that sourced it) must say everything.
        std::env::vars().filter(|(k, _)| k.starts_with("GENGATE")).collect()
    };
    let target = Target::resolve(
        &vars,
        Overrides {
            url: args.url,
            admin_token: args.admin_token,
            sim_url: args.sim_url,
            database_url: args.database_url,
            broker_metrics_url: args.broker_metrics_url,
        },
    )?;
    let pid_dir = args.pid_dir.or_else(|| {
        args.env.parent().map(|p| if p.as_os_str().is_empty() { ".".into() } else { p.to_owned() })
    });
    let config = BenchConfig {
        target,
        concurrency: usize::from(args.concurrency),
        duration: args.duration,
        scenarios: args.scenario.scenarios(),
        baseline: !args.no_baseline,
        job_timeout: args.job_timeout,
        poll_interval: args.poll_interval,
        one_client_rate: args.one_client_rate,
        pid_dir,
    };

    let stop = CancellationToken::new();
    tokio::spawn({
        let stop = stop.clone();
        async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                eprintln!("gengate-bench: stopping (Ctrl-C again to quit at once)");
                stop.cancel();
                if tokio::signal::ctrl_c().await.is_ok() {
                    // `exit` runs no destructors: resume the workers a scenario stopped first.
                    let resumed = gengate_bench::pause::resume_all();
                    if resumed > 0 {
                        eprintln!("gengate-bench: resumed {resumed} paused worker processes");
                    }
                    std::process::exit(130);
                }
            }
        }
    });

    let report = gengate_bench::run(config, stop).await?;
    print!("{}", report.table());
    if let Some(path) = &args.json {
        let json = serde_json::to_string_pretty(&report).context("serializing the report")?;
        std::fs::write(path, json + "\n").with_context(|| format!("writing {}", path.display()))?;
        println!("\nreport written to {}", path.display());
    }
    Ok(report.is_clean())
}
