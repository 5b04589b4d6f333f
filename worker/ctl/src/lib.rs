//! The commands behind `gengatectl` (its arguments are parsed in `main.rs`). It reaches
//! PostgreSQL and RabbitMQ through `gengate-shared` alone, not through the worker's code.
//!
//! Exit codes scripts can rely on: 0 done, 1 the command ran and found a problem (ledger
//! mismatches), 2 refused (bad arguments, an unconfirmed purge, nothing to act on), 3 an
//! operational failure (PostgreSQL or RabbitMQ unreachable, a publish not confirmed).

pub mod admin;
pub mod archive;
pub mod dlq;
pub mod import;
pub mod output;
pub mod webhooks;

use anyhow::Context;
use gengate_shared::config::{Settings, redact_url};
use gengate_shared::db;
use gengate_shared::ids::UserId;
use gengate_shared::ledger;
use gengate_shared::queue::Broker;

/// A command refused to act (exit code 2): the message says what to do instead.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Refused(pub String);

/// PostgreSQL, with the reason spelled out when it cannot be reached.
pub async fn connect_db(settings: &Settings) -> anyhow::Result<sqlx::PgPool> {
    db::connect(&settings.database, "gengatectl")
        .await
        .with_context(|| format!("connecting to {}", redact_url(&settings.database.url)))
}

/// RabbitMQ (declaring the topology), with the reason spelled out when it cannot be reached.
pub async fn connect_broker(settings: &Settings) -> anyhow::Result<Broker> {
    let broker = Broker::new(&settings.amqp, "gengatectl");
    broker.connect().await.with_context(|| {
        let nodes: Vec<String> = settings.amqp.node_urls().iter().map(redact_url).collect();
        format!("connecting to {}", nodes.join(" or "))
    })?;
    Ok(broker)
}

/// `gengatectl setup`: declares the topology and applies migrations.
pub async fn setup(settings: &Settings) -> anyhow::Result<()> {
    let broker = connect_broker(settings).await?;
    println!("RabbitMQ topology declared (prefix {:?})", settings.amqp.prefix);
    broker.close().await;

    let pool = connect_db(settings).await?;
    db::migrate(&pool)
        .await
        .with_context(|| format!("migrating {}", redact_url(&settings.database.url)))?;
    println!("database migrations applied");
    pool.close().await;
    Ok(())
}

/// `gengatectl ledger reconcile`: checks every grant, generation and debt (or one user's) and
/// prints a summary and every mismatch. Returns whether the ledger is clean.
pub async fn reconcile(
    settings: &Settings,
    user: Option<UserId>,
    json: bool,
) -> anyhow::Result<bool> {
    let pool = connect_db(settings).await?;
    let report = ledger::reconcile(&pool, user).await.context("reading the ledger")?;
    pool.close().await;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(report.is_clean());
    }
    println!(
        "checked {} grants, {} generations, {} users, {} postpaid holds{}",
        report.grants,
        report.generations,
        report.users,
        report.holds,
        user.map(|u| format!(" (user {u})")).unwrap_or_default()
    );
    if report.is_clean() {
        println!("ledger is consistent: no mismatches");
    } else {
        println!("{} mismatches:", report.mismatches.len());
        println!(
            "{:<11} {:<36} {:<36} {:>10} {:>10}  what",
            "kind", "id", "user", "expected", "actual"
        );
        for m in &report.mismatches {
            println!(
                "{:<11} {:<36} {:<36} {:>10} {:>10}  {}",
                m.kind, m.id, m.user_id, m.expected, m.actual, m.detail
            );
        }
    }
    Ok(report.is_clean())
}
