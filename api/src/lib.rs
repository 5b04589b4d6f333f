//! gengate's HTTP API: the client API, provider webhook ingress, the admin API, health and metrics.

pub mod auth;
pub mod error;
pub mod extract;
pub mod keys;
pub mod openapi;
pub mod rate_limit;
pub mod relay;
pub mod routes;
pub mod state;
pub mod submit_batch;
pub mod tls;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use axum::serve::ListenerExt;
use gengate_shared::config::Settings;
use gengate_shared::queue::Broker;
use gengate_shared::{db, shutdown, telemetry};

pub use state::ApiContext;

/// Applies pending migrations (`gengate-api migrate`).
pub async fn migrate(settings: &Settings) -> anyhow::Result<()> {
    let pool = db::lazy_pool(&settings.database, "gengate-api-migrate")?;
    db::migrate(&pool).await.context("applying migrations")?;
    tracing::info!("migrations applied");
    Ok(())
}

/// Runs the API until SIGTERM/SIGINT, then drains in-flight requests (up to the grace period).
pub async fn serve(settings: Settings, addr_file: Option<PathBuf>) -> anyhow::Result<()> {
    // HTTPS on the public listener when the certificate and key are set; bad files stop start-up.
    let tls = tls::server_config(&settings.api)?;
    let pool = db::lazy_pool(&settings.database, "gengate-api")?;
    let broker = Broker::new(&settings.amqp, "gengate-api");
    // Checked before anything starts: a misconfigured API refuses to run rather than to submit.
    let ctx = ApiContext::new(settings, pool.clone(), broker.clone(), telemetry::metrics_handle())?;
    let settings = ctx.settings.clone();
    if settings.database.migrate_on_start {
        db::migrate(&pool).await.context("applying migrations at start-up")?;
    }
    let shutdown = shutdown::on_signal();
    let supervisor = broker.spawn_supervisor(shutdown.clone());
    let relay = relay::spawn(pool.clone(), broker.clone(), ctx.relay.clone(), shutdown.clone());

    let keys = keys::spawn(
        ctx.keys.clone(),
        pool.clone(),
        Duration::from_millis(settings.api.key_usage_flush_ms),
        shutdown.clone(),
    );

    let listener = tokio::net::TcpListener::bind(settings.api.listen)
        .await
        .with_context(|| format!("binding {}", settings.api.listen))?;
    let ops_listener = tokio::net::TcpListener::bind(settings.api.ops_listen)
        .await
        .with_context(|| format!("binding the operations listener {}", settings.api.ops_listen))?;
    let local = listener.local_addr()?;
    let ops_local = ops_listener.local_addr()?;
    if let Some(path) = addr_file {
        // The public address, then the operations address, a line each.
        std::fs::write(&path, format!("{local}\n{ops_local}\n"))
            .with_context(|| format!("writing {}", path.display()))?;
    }
    tracing::info!(%local, ops = %ops_local, https = tls.is_some(), "gengate-api listening");

    let grace = Duration::from_millis(settings.api.shutdown_grace_ms);
    let public = routes::router(ctx.clone()).into_make_service_with_connect_info::<SocketAddr>();
    let ops = routes::ops_router(ctx).into_make_service_with_connect_info::<SocketAddr>();
    let drained = shutdown.clone();
    let server = match tls {
        None => tokio::spawn(
            axum::serve(listener, public)
                .with_graceful_shutdown(async move { drained.cancelled().await })
                .into_future(),
        ),
        // `tap_io` (doing nothing) only so that `ConnectInfo<SocketAddr>` is available for a
        // listener of our own.
        Some(config) => {
            let listener = tls::TlsListener::new(listener, config).tap_io(|_| ());
            tokio::spawn(
                axum::serve(listener, public)
                    .with_graceful_shutdown(async move { drained.cancelled().await })
                    .into_future(),
            )
        }
    };
    let drained = shutdown.clone();
    let ops_server = axum::serve(ops_listener, ops).with_graceful_shutdown(async move {
        drained.cancelled().await;
    });
    let ops_server = tokio::spawn(async move { ops_server.await });

    shutdown.cancelled().await;
    match tokio::time::timeout(grace, async { (server.await, ops_server.await) }).await {
        Ok((public, ops)) => {
            public??;
            ops??;
        }
        Err(_) => tracing::warn!(
            grace_ms = u64::try_from(grace.as_millis()).unwrap_or(u64::MAX),
            "in-flight requests did not finish within the grace period"
        ),
    }
    let _ = keys.await;
    let _ = relay.await;
    let _ = supervisor.await;
    pool.close().await;
    tracing::info!("gengate-api stopped");
    Ok(())
}
