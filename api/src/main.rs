//! `gengate-api`: the HTTP API process. See `gengate_api` for what it serves.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use gengate_shared::config::ConfigArg;

#[derive(Debug, Parser)]
#[command(
    name = "gengate-api",
    version,
    about = "gengate's HTTP API: clients, provider webhooks, admin, health"
)]
struct Cli {
    #[command(flatten)]
    config: ConfigArg,
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
    let settings = gengate_shared::start_process(&cli.config)?;
    match cli.command.unwrap_or(Command::Serve { addr_file: None }) {
        Command::Serve { addr_file } => gengate_api::serve(settings, addr_file).await,
        Command::Migrate => gengate_api::migrate(&settings).await,
    }
}
