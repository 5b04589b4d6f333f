//! gengate's worker process: consumes the work queues, talks to providers, settles credits.
//! Several workers may run at once on one or many machines; nothing here assumes it is alone.
//!
//! - `gengate.jobs` → [`handlers`] `job.submit`: create the upstream task;
//! - `gengate.events` → provider updates (webhooks, polls), failures, cancels: the transitions;
//! - `gengate.poll` → ask a provider how a task is doing (published when due by the
//!   [`poll_scheduler`]);
//! - `gengate.archive` → copy a completed generation's result files into storage ([`archive`]);
//! - `gengate.notify` → webhooks to clients (`handlers::notify`; retries published when due by
//!   [`notify::scheduler`]);
//! - the [`sweeper`] re-enqueues what the message flow lost;
//! - the [`ledger_audit`] reconciles the whole ledger now and then.

pub mod accepts;
pub mod archive;
pub mod commits;
pub mod consumer;
pub mod context;
pub mod handlers;
pub mod ledger_audit;
pub mod notify;
pub mod poll_scheduler;
pub mod providers;
pub mod queue_depths;
pub mod retry;
pub mod sweeper;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use gengate_http::ops::{self, Readiness};
use gengate_shared::config::Settings;
use gengate_shared::queue::{Broker, WorkQueue};
use gengate_shared::{db, shutdown, telemetry};

use crate::context::WorkerContext;

/// Runs the worker until SIGTERM/SIGINT: consumers stop taking messages, the messages in hand get
/// the grace period to finish, and whatever is still unacknowledged then goes back to its queue
/// when the connection closes.
pub async fn run(settings: Settings, addr_file: Option<PathBuf>) -> anyhow::Result<()> {
    let pool = db::lazy_pool(&settings.database, "gengate-worker")?;
    let broker = Broker::new(&settings.amqp, "gengate-worker");
    let ctx = Arc::new(WorkerContext::new(settings, pool.clone(), broker.clone())?);
    let shutdown = shutdown::on_signal();
    let supervisor = broker.spawn_supervisor(shutdown.clone());

    let listen = ctx.settings.worker.listen;
    let listener =
        tokio::net::TcpListener::bind(listen).await.with_context(|| format!("binding {listen}"))?;
    let local = listener.local_addr()?;
    if let Some(path) = addr_file {
        // A line, so a reader knows it has all of it.
        std::fs::write(&path, format!("{local}\n"))
            .with_context(|| format!("writing {}", path.display()))?;
    }
    tracing::info!(%local, "gengate-worker health server listening");
    let readiness = Readiness { pool: pool.clone(), broker: broker.clone() };
    let ops = ops::router(readiness, telemetry::metrics_handle());
    let stop_ops = shutdown.clone();
    let ops_server = tokio::spawn(async move {
        axum::serve(listener, ops)
            .with_graceful_shutdown(async move { stop_ops.cancelled().await })
            .await
    });

    let grace = Duration::from_millis(ctx.settings.worker.shutdown_grace_ms);
    let mut tasks = tokio::task::JoinSet::new();
    for queue in WorkQueue::ALL {
        // Copies are long and heavy (a file each): few at a time; everything else many.
        let in_hand = match queue {
            WorkQueue::Archive => ctx.settings.archive.concurrency,
            _ => ctx.settings.worker.prefetch,
        };
        tasks.spawn(consumer::run(ctx.clone(), queue, in_hand, shutdown.clone(), grace));
    }
    tasks.spawn(sweeper::run(ctx.clone(), shutdown.clone()));
    tasks.spawn(ledger_audit::run(ctx.clone(), shutdown.clone()));
    tasks.spawn(poll_scheduler::run(ctx.clone(), shutdown.clone()));
    tasks.spawn(notify::scheduler::run(ctx.clone(), shutdown.clone()));
    tasks.spawn(queue_depths::run(ctx.clone(), shutdown.clone()));

    shutdown.cancelled().await;
    while tasks.join_next().await.is_some() {}
    let _ = ops_server.await;
    let _ = supervisor.await;
    pool.close().await;
    tracing::info!("gengate-worker stopped");
    Ok(())
}
