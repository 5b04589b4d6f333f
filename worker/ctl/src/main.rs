//! `gengatectl`: the operator's tool for gengate. Run `gengatectl --help`, and see
//! docs/operations.md for the runbook.

use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use gengate_shared::accounts::NewUser;
use gengate_shared::client_webhooks::deliveries::{self, DeliveryStatus};
use gengate_shared::config::{ConfigArg, Settings};
use gengate_shared::ids::{ApiKeyId, GenerationId, UserId};
use gengatectl::{Refused, admin, archive, dlq, import, output, webhooks};
use sqlx::types::Uuid;
use time::OffsetDateTime;

#[derive(Debug, Parser)]
#[command(
    name = "gengatectl",
    version,
    about = "Operate gengate: dead letters, the ledger, users, credits, generations, client webhooks",
    after_help = "Exit codes: 0 done, 1 problems found (e.g. ledger mismatches), 2 refused (arguments, \
                  unconfirmed purge), 3 PostgreSQL or RabbitMQ unreachable or an operation failed."
)]
struct Cli {
    #[command(flatten)]
    config: ConfigArg,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Declare the RabbitMQ topology and apply database migrations (idempotent; for deploy scripts).
    Setup,
    /// The dead-letter queue: what could not be handled.
    #[command(subcommand)]
    Dlq(DlqCommand),
    /// The credits ledger.
    #[command(subcommand)]
    Ledger(LedgerCommand),
    /// Users.
    #[command(subcommand)]
    Users(UsersCommand),
    /// API keys.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// A user's credits.
    #[command(subcommand)]
    Credits(CreditsCommand),
    /// One generation: inspect it, or intervene.
    #[command(subcommand)]
    Generation(GenerationCommand),
    /// Result files in gengate's storage: copy failed ones again, delete old ones.
    #[command(subcommand)]
    Archive(ArchiveCommand),
    /// Webhooks to clients: deliveries (inspect, redeliver) and users' default endpoints.
    #[command(subcommand)]
    Webhooks(WebhooksCommand),
    /// Import a legacy system's data (seed 001's credits ledger), or roll an import back.
    #[command(subcommand)]
    Import(ImportCommand),
}

#[derive(Debug, Subcommand)]
enum ImportCommand {
    /// Import a legacy credits ledger; checks every user's balance, exits 1 on a mismatch or a
    /// row it could not import. Re-runs import nothing twice.
    LegacyCredits {
        /// The legacy PostgreSQL database (users, credits, orders, generations).
        #[arg(long)]
        source: String,
        /// Only the legacy users listed in this file (one uuid a line).
        #[arg(long)]
        users: Option<std::path::PathBuf>,
        /// Do everything, report, and roll it all back.
        #[arg(long)]
        dry_run: bool,
        /// Legacy rows per transaction (1 to 100000).
        #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u32).range(1..=100_000))]
        batch: u32,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Remove exactly what an import run wrote.
    Rollback {
        /// The run id the import printed.
        run: Uuid,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
enum WebhooksCommand {
    /// List deliveries, newest first.
    List {
        /// Only deliveries that are pending, delivered or failed.
        #[arg(long, value_parser = webhooks::parse_status)]
        status: Option<DeliveryStatus>,
        /// Only this user's.
        #[arg(long)]
        user: Option<UserId>,
        /// Only this generation's.
        #[arg(long)]
        generation: Option<GenerationId>,
        /// Show at most this many (1 to 1000).
        #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(i64).range(1..=1000))]
        limit: i64,
        /// Print JSON (every delivery with its attempts).
        #[arg(long)]
        json: bool,
    },
    /// Show one delivery and every attempt of it.
    Show {
        /// The delivery: its webhook-id (msg_…) or its UUID.
        id: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Send deliveries again now (same webhook-id, same body); all or nothing: an id that cannot
    /// be redelivered refuses the whole call.
    Redeliver {
        /// The deliveries: webhook-ids (msg_…) or UUIDs.
        #[arg(required = true, value_name = "ID")]
        ids: Vec<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Default endpoints: where a user's (or an API key's) events go when a request names none.
    #[command(subcommand)]
    Endpoints(EndpointsCommand),
}

#[derive(Debug, Subcommand)]
enum EndpointsCommand {
    /// A user's endpoints, live and disabled (with why).
    List {
        /// The user.
        #[arg(long)]
        user: UserId,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Register an endpoint; its signing secret is printed once.
    Create {
        /// The user.
        #[arg(long)]
        user: UserId,
        /// Where deliveries go (https, a public host, unless client_webhooks allows otherwise).
        #[arg(long)]
        url: String,
        /// Only the requests of this API key of the user (default: every request of the user).
        #[arg(long)]
        key: Option<ApiKeyId>,
        /// An event it receives (repeatable; default: all but generation.processing):
        /// generation.processing, generation.completed, generation.failed, generation.canceled,
        /// generation.archived.
        #[arg(long = "event", value_name = "EVENT")]
        events: Vec<String>,
        /// A note for operators.
        #[arg(long)]
        description: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Disable an endpoint: nothing more is sent to it.
    Disable {
        /// The endpoint's id (see `webhooks endpoints list`).
        endpoint: Uuid,
        /// Why (its owner sees it).
        #[arg(long)]
        reason: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
enum ArchiveCommand {
    /// Copy failed result files again: one generation's, or every failed one (`--failed`).
    Retry {
        /// The generation.
        #[arg(required_unless_present = "failed", conflicts_with = "failed")]
        generation: Option<GenerationId>,
        /// Every generation with a failed file.
        #[arg(long)]
        failed: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Delete the stored files of generations that ended before a time (their records stay).
    Purge {
        /// How old: "90d", "12h", …
        #[arg(long, value_parser = parse_age)]
        older_than: std::time::Duration,
        /// Only say what would be deleted.
        #[arg(long)]
        dry_run: bool,
        /// Do not ask for confirmation.
        #[arg(long)]
        yes: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

fn parse_age(text: &str) -> Result<std::time::Duration, String> {
    output::parse_duration(text)
}

#[derive(Debug, Args)]
struct DlqFilter {
    /// Only dead letters from this queue: jobs, events, poll or archive.
    #[arg(long)]
    queue: Option<String>,
    /// Only this message kind (job.submit, event.provider_update, event.failure, event.canceled, poll.task, generation.archive).
    #[arg(long)]
    kind: Option<String>,
    /// Only dead letters about this generation.
    #[arg(long)]
    generation: Option<String>,
    /// Only dead letters younger than this (30s, 15m, 2h, 3d).
    #[arg(long, value_parser = output::parse_duration)]
    since: Option<std::time::Duration>,
}

impl DlqFilter {
    fn into_filter(self, messages: Vec<String>) -> dlq::Filter {
        dlq::Filter {
            queue: self.queue,
            kind: self.kind,
            generation: self.generation,
            since: self.since,
            messages,
        }
    }
}

/// Which dead letters a replay or purge takes: every one, or those the ids and filters name.
#[derive(Debug, Args)]
struct DlqSelection {
    /// Every dead letter.
    #[arg(long)]
    all: bool,
    /// Only these message ids (repeatable).
    #[arg(long = "message")]
    messages: Vec<String>,
    #[command(flatten)]
    filter: DlqFilter,
}

impl DlqSelection {
    fn into_filter(self) -> dlq::Filter {
        self.filter.into_filter(self.messages)
    }
}

#[derive(Debug, Subcommand)]
enum DlqCommand {
    /// List dead letters (the queue is left exactly as it was).
    List {
        #[command(flatten)]
        filter: DlqFilter,
        /// Show at most this many.
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show one dead letter: its envelope and every header (JSON).
    Show {
        /// The message id (from `dlq list`).
        message_id: String,
    },
    /// Send dead letters back to their original routing key (removed from the DLQ once confirmed).
    Replay {
        #[command(flatten)]
        chosen: DlqSelection,
        /// Say what would be replayed, and replay nothing.
        #[arg(long)]
        dry_run: bool,
        /// At most this many messages per second.
        #[arg(long)]
        rate: Option<u32>,
        /// Print the summary as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Delete dead letters for good (asks first unless --yes).
    Purge {
        #[command(flatten)]
        chosen: DlqSelection,
        /// Do not ask.
        #[arg(long)]
        yes: bool,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Counts by kind and by reason.
    Stats {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
enum LedgerCommand {
    /// Check that every grant, generation and debt adds up; exits 1 if anything does not.
    Reconcile {
        /// Only this user.
        #[arg(long)]
        user: Option<UserId>,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
enum UsersCommand {
    /// Create a user (with the configured new_user grant).
    Create {
        /// Email address (unique).
        #[arg(long)]
        email: Option<String>,
        /// Display name.
        #[arg(long)]
        name: Option<String>,
        /// Jobs this user may have in flight at once.
        #[arg(long)]
        max_in_flight: Option<i32>,
        /// Print the user as JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
enum KeysCommand {
    /// Create an API key for a user; the key is printed once.
    Create {
        /// The user.
        user: UserId,
        /// A label for the key.
        #[arg(long)]
        name: Option<String>,
        /// Also issue a Kling access key / secret key pair (for `/kling/v1/…`), printed once.
        #[arg(long)]
        kling: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// List a user's API keys (ids, prefixes, last use, revocation; never the keys).
    List {
        /// The user.
        user: UserId,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Revoke an API key: every API process refuses it within a second.
    Revoke {
        /// The key's id (see `keys list`).
        key: ApiKeyId,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
enum CreditsCommand {
    /// Grant credits.
    Grant {
        /// The user.
        user: UserId,
        /// Credits.
        amount: i64,
        /// system_add, order_pay (needs --order-no) or new_user.
        #[arg(long, default_value = "system_add")]
        source: String,
        /// When the credits expire: an RFC 3339 time, or a duration from now (30d).
        #[arg(long)]
        expires: Option<String>,
        /// The payment's order number; granting the same order twice grants once.
        #[arg(long)]
        order_no: Option<String>,
        /// Lower is drawn first.
        #[arg(long, default_value_t = 0)]
        priority: i32,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Balance, grants and recent ledger entries.
    Show {
        /// The user.
        user: UserId,
        /// How many recent entries.
        #[arg(long, default_value_t = 20)]
        limit: i64,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
enum GenerationCommand {
    /// Status, params, ledger entries (voided too) and the audit log.
    Show {
        /// The generation.
        id: GenerationId,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Fail a queued or submitted job and refund it (a later success still completes it).
    Fail {
        /// The generation.
        id: GenerationId,
        /// Why (goes into the audit log).
        #[arg(long)]
        reason: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Give a job's credits back: fails it if in flight; settles a completed job at 0.
    Refund {
        /// The generation.
        id: GenerationId,
        /// Why (goes into the audit log).
        #[arg(long)]
        reason: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

fn parse_expiry(text: &str) -> Result<OffsetDateTime, Refused> {
    if let Ok(at) = OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339) {
        return Ok(at);
    }
    output::parse_duration(text).map(|d| OffsetDateTime::now_utc() + d).map_err(|_| {
        Refused(format!("--expires {text:?} is neither an RFC 3339 time nor a duration like 30d"))
    })
}

async fn run(cli: Cli, settings: Settings) -> anyhow::Result<bool> {
    match cli.command {
        Command::Setup => gengatectl::setup(&settings).await?,
        Command::Ledger(LedgerCommand::Reconcile { user, json }) => {
            return gengatectl::reconcile(&settings, user, json).await;
        }
        Command::Dlq(command) => match command {
            DlqCommand::List { filter, limit, json } => {
                dlq::list(&settings, &filter.into_filter(vec![]), limit, json).await?
            }
            DlqCommand::Show { message_id } => dlq::show(&settings, &message_id).await?,
            DlqCommand::Replay { chosen, dry_run, rate, json } => {
                let all = chosen.all;
                dlq::replay(&settings, &chosen.into_filter(), all, dry_run, rate, json).await?
            }
            DlqCommand::Purge { chosen, yes, json } => {
                let all = chosen.all;
                dlq::purge(&settings, &chosen.into_filter(), all, yes, json).await?
            }
            DlqCommand::Stats { json } => dlq::stats(&settings, json).await?,
        },
        Command::Users(UsersCommand::Create { email, name, max_in_flight, json }) => {
            admin::create_user(&settings, NewUser { email, name, max_in_flight }, json).await?
        }
        Command::Keys(KeysCommand::Create { user, name, kling, json }) => {
            admin::create_key(&settings, user, name, kling, json).await?
        }
        Command::Keys(KeysCommand::List { user, json }) => {
            admin::list_keys(&settings, user, json).await?
        }
        Command::Keys(KeysCommand::Revoke { key, json }) => {
            admin::revoke_key(&settings, key, json).await?
        }
        Command::Credits(CreditsCommand::Grant {
            user,
            amount,
            source,
            expires,
            order_no,
            priority,
            json,
        }) => {
            let expires_at = expires.as_deref().map(parse_expiry).transpose()?;
            let args = admin::GrantArgs { user, amount, source, expires_at, order_no, priority };
            admin::grant(&settings, args, json).await?
        }
        Command::Credits(CreditsCommand::Show { user, limit, json }) => {
            admin::show_credits(&settings, user, limit, json).await?
        }
        Command::Archive(ArchiveCommand::Retry { generation, failed: _, json }) => {
            archive::retry(&settings, generation, json).await?
        }
        Command::Archive(ArchiveCommand::Purge { older_than, dry_run, yes, json }) => {
            archive::purge(&settings, older_than, dry_run, yes, json).await?
        }
        Command::Webhooks(command) => match command {
            WebhooksCommand::List { status, user, generation, limit, json } => {
                let filter = deliveries::Filter { status, user, generation, limit };
                webhooks::list(&settings, &filter, json).await?
            }
            WebhooksCommand::Show { id, json } => webhooks::show(&settings, &id, json).await?,
            WebhooksCommand::Redeliver { ids, json } => {
                webhooks::redeliver(&settings, &ids, json).await?
            }
            WebhooksCommand::Endpoints(EndpointsCommand::List { user, json }) => {
                webhooks::list_endpoints(&settings, user, json).await?
            }
            WebhooksCommand::Endpoints(EndpointsCommand::Create {
                user,
                url,
                key,
                events,
                description,
                json,
            }) => {
                let args = webhooks::EndpointArgs { user, url, key, events, description };
                webhooks::create_endpoint(&settings, args, json).await?
            }
            WebhooksCommand::Endpoints(EndpointsCommand::Disable { endpoint, reason, json }) => {
                webhooks::disable_endpoint(&settings, endpoint, reason, json).await?
            }
        },
        Command::Import(ImportCommand::LegacyCredits { source, users, dry_run, batch, json }) => {
            let batch = batch as usize;
            let args = import::LegacyCreditsArgs { source, users, dry_run, batch, json };
            return import::legacy_credits(&settings, args).await;
        }
        Command::Import(ImportCommand::Rollback { run, json }) => {
            import::rollback(&settings, run, json).await?
        }
        Command::Generation(command) => match command {
            GenerationCommand::Show { id, json } => {
                admin::show_generation(&settings, id, json).await?
            }
            GenerationCommand::Fail { id, reason, json } => {
                admin::intervene(&settings, id, &reason, false, json).await?
            }
            GenerationCommand::Refund { id, reason, json } => {
                admin::intervene(&settings, id, &reason, true, json).await?
            }
        },
    }
    Ok(true)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let settings = match cli.config.load() {
        Ok(settings) => settings,
        Err(err) => {
            eprintln!("gengatectl: {err}");
            return ExitCode::from(2);
        }
    };
    gengate_shared::install_crypto_provider();
    match run(cli, settings).await {
        Ok(true) => ExitCode::SUCCESS,
        // The command ran and found a problem (e.g. ledger mismatches).
        Ok(false) => ExitCode::from(1),
        Err(err) if err.downcast_ref::<Refused>().is_some() => {
            eprintln!("gengatectl: {err:#}");
            ExitCode::from(2)
        }
        Err(err) => {
            eprintln!("gengatectl: {err:#}");
            ExitCode::from(3)
        }
    }
}
