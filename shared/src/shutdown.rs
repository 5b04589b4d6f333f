//! Graceful shutdown: SIGTERM or SIGINT cancels one token that every task of the process watches.

use tokio_util::sync::CancellationToken;

/// A token cancelled on the first SIGTERM or SIGINT. A second signal exits at once.
pub fn on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let cancel = token.clone();
    tokio::spawn(async move {
        let mut terminate =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                .expect("install the SIGTERM handler");
        for round in 0..2 {
            tokio::select! {
                _ = terminate.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            if round == 0 {
                tracing::info!(
                    "shutdown requested; finishing in-flight work (signal again to exit now)"
                );
                cancel.cancel();
            } else {
                tracing::warn!("second signal; exiting immediately");
                std::process::exit(130);
            }
        }
    });
    token
}
