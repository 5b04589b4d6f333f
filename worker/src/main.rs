//! `gengate-worker`: consumes gengate's queues. See `gengate_worker` for what it runs.

use std::path::PathBuf;

use clap::Parser;
use gengate_shared::config::ConfigArg;

#[derive(Debug, Parser)]
#[command(
    name = "gengate-worker",
    version,
    about = "gengate's worker: provider submission, settlement, polling"
)]
struct Cli {
    #[command(flatten)]
    config: ConfigArg,
    /// Once listening, write the health server's bound address (host:port) to this file.
    #[arg(long)]
    addr_file: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let settings = gengate_shared::start_process(&cli.config)?;
    gengate_worker::run(settings, cli.addr_file).await
}
