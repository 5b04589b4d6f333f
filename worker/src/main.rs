//! `gengate-worker`: consumes gengate's queues. See `gengate_worker` for what it runs.

use std::path::PathBuf;

use clap::Parser;
use gengate_shared::config::Settings;

#[derive(Debug, Parser)]
#[command(
    name = "gengate-worker",
    version,
    about = "gengate's worker: provider submission, settlement, polling"
)]
struct Cli {
    /// Config file (TOML); defaults to $GENGATE_CONFIG, then built-in defaults. Environment
    /// variables GENGATE__SECTION__KEY override single keys.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Once listening, write the health server's bound address (host:port) to this file.
    #[arg(long)]
    addr_file: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let settings = Settings::load(cli.config.as_deref())?;
    gengate_shared::telemetry::init_tracing(&settings.telemetry);
    gengate_shared::install_crypto_provider();
    gengate_worker::run(settings, cli.addr_file).await
}
