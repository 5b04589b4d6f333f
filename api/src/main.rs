//! `gengate-api`: the HTTP API process. See `gengate_api` for what it serves.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use gengate_shared::config::Settings;

#[derive(Debug, Parser)]
#[command(
    name = "gengate-api",
    version,
    about = "gengate's HTTP API: clients, provider webhooks, admin, health"
)]
struct Cli {
    /// Config file (TOML); defaults to $GENGATE_CONFIG, then built-in defaults. Environment
    /// variables GENGATE__SECTION__KEY override single keys.
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve HTTP (the default).
    Serve {
        /// Once listening, write the bound address (host:port) to this file, for supervisors and
        /// tests that start the API on port 0.
        #[arg(long)]
        addr_file: Option<PathBuf>,
    },
    /// Apply pending database migrations and exit.
    Migrate,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let settings = Settings::load(cli.config.as_deref())?;
    gengate_shared::telemetry::init_tracing(&settings.telemetry);
    gengate_shared::install_crypto_provider();
    match cli.command.unwrap_or(Command::Serve { addr_file: None }) {
        Command::Serve { addr_file } => gengate_api::serve(settings, addr_file).await,
        Command::Migrate => gengate_api::migrate(&settings).await,
    }
}
