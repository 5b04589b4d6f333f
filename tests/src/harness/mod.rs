//! Building blocks of a test: database, broker namespace, child processes, the assembled app.

pub mod app;
pub mod audit;
pub mod broker;
pub mod clock;
pub mod credits;
pub mod db;
pub mod loopback;
pub mod process;
pub mod s3;
pub mod upstream;

use std::time::Duration;

/// Polls `check` every 50 ms until it returns `Some`, or panics with `what` after `timeout`.
/// For waiting on a condition the system under test must reach, never for "long enough".
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Restarts the RabbitMQ application on this machine (`rabbitmqctl stop_app`, `start_app`): every
/// connection drops and is refused until it is back; durable queues and their messages survive.
/// Returns `false` (after saying why) where this process cannot control the broker.
pub async fn restart_rabbitmq(down_for: Duration) -> bool {
    let ctl = |args: &[&str]| {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        async move {
            tokio::process::Command::new("rabbitmqctl")
                .args(&args)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status()
                .await
                .map(|s| s.success())
                .unwrap_or(false)
        }
    };
    if !ctl(&["stop_app"]).await {
        eprintln!(
            "SKIPPED the RabbitMQ restart: `rabbitmqctl stop_app` is not available to this user"
        );
        return false;
    }
    tokio::time::sleep(down_for).await;
    assert!(ctl(&["start_app"]).await, "rabbitmqctl start_app failed; RabbitMQ is down");
    assert!(ctl(&["await_startup"]).await, "RabbitMQ did not come back");
    true
}

/// Restarts the local PostgreSQL cluster serving 127.0.0.1:5432 (`pg_ctlcluster … restart`): every
/// connection drops. Returns `false` (after saying why) where this process cannot control it.
pub async fn restart_postgres() -> bool {
    let url = db::admin_url();
    if !(url.contains("@127.0.0.1:5432/") || url.contains("@localhost:5432/")) {
        eprintln!(
            "SKIPPED the PostgreSQL restart: the tests use a server this machine does not run ({})",
            url.split('@').next_back().unwrap_or("")
        );
        return false;
    }
    let clusters = tokio::process::Command::new("pg_lsclusters").arg("--no-header").output().await;
    let Some(cluster) = clusters.ok().and_then(|out| {
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| l.split_whitespace().map(str::to_owned).collect::<Vec<_>>())
            .find(|f| f.len() > 2 && f[2] == "5432")
            .map(|f| (f[0].clone(), f[1].clone()))
    }) else {
        eprintln!("SKIPPED the PostgreSQL restart: no pg_lsclusters cluster on port 5432");
        return false;
    };
    let restarted = tokio::process::Command::new("pg_ctlcluster")
        .args(["--skip-systemctl-redirect", &cluster.0, &cluster.1, "restart"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .await
        .is_ok_and(|s| s.success());
    if !restarted {
        eprintln!(
            "SKIPPED the PostgreSQL restart: `pg_ctlcluster {} {} restart` is not permitted to this user",
            cluster.0, cluster.1
        );
        return false;
    }
    true
}
