//! Building blocks of a test: database, broker namespace, child processes, the assembled app.

pub mod app;
pub mod audit;
pub mod broker;
pub mod clock;
pub mod cluster;
pub mod credits;
pub mod db;
pub mod loopback;
pub mod metrics;
pub mod outages;
pub mod process;
pub mod receiver;
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

/// Whether `GENGATE_TEST_SKIP_SERVICE_RESTARTS=1` is set: on a machine where the tests may not
/// restart RabbitMQ or PostgreSQL (a shared server, a user without `rabbitmqctl`), the tests then
/// run without restarting them (saying so), or are skipped where the restart is the whole test.
/// Unset, a restart that cannot be done fails the test: a restart test that silently did not
/// restart would prove nothing.
pub fn service_restarts_skipped() -> bool {
    std::env::var("GENGATE_TEST_SKIP_SERVICE_RESTARTS").is_ok_and(|v| v == "1")
}

fn cannot_restart(service: &str, why: &str) -> ! {
    panic!(
        "cannot restart {service}: {why} (set GENGATE_TEST_SKIP_SERVICE_RESTARTS=1 to run the \
         tests without restarting services)"
    )
}

fn skipping_restart(service: &str) -> bool {
    let skip = service_restarts_skipped();
    if skip {
        eprintln!("SKIPPED the {service} restart (GENGATE_TEST_SKIP_SERVICE_RESTARTS=1)");
    }
    skip
}

/// Restarts the RabbitMQ application on this machine (`rabbitmqctl stop_app`, `start_app`): every
/// connection drops and is refused until it is back; durable queues and their messages survive.
/// Returns `true` once it is back, `false` if [`service_restarts_skipped`]; fails where this
/// process cannot control the broker.
pub async fn restart_rabbitmq(down_for: Duration) -> bool {
    if skipping_restart("RabbitMQ") {
        return false;
    }
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
        cannot_restart("RabbitMQ", "`rabbitmqctl stop_app` is not available to this user");
    }
    tokio::time::sleep(down_for).await;
    assert!(ctl(&["start_app"]).await, "rabbitmqctl start_app failed; RabbitMQ is down");
    assert!(ctl(&["await_startup"]).await, "RabbitMQ did not come back");
    true
}

/// Restarts the local PostgreSQL cluster serving 127.0.0.1:5432 (`pg_ctlcluster … restart`): every
/// connection drops. Returns `true` once it is back, `false` if [`service_restarts_skipped`];
/// fails where this process cannot control it.
pub async fn restart_postgres() -> bool {
    if skipping_restart("PostgreSQL") {
        return false;
    }
    let url = db::admin_url();
    if !(url.contains("@127.0.0.1:5432/") || url.contains("@localhost:5432/")) {
        let server = url.split('@').next_back().unwrap_or("").to_owned();
        cannot_restart(
            "PostgreSQL",
            &format!("the tests use a server this machine does not run ({server})"),
        );
    }
    let clusters = tokio::process::Command::new("pg_lsclusters").arg("--no-header").output().await;
    let Some(cluster) = clusters.ok().and_then(|out| {
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| l.split_whitespace().map(str::to_owned).collect::<Vec<_>>())
            .find(|f| f.len() > 2 && f[2] == "5432")
            .map(|f| (f[0].clone(), f[1].clone()))
    }) else {
        cannot_restart("PostgreSQL", "no pg_lsclusters cluster on port 5432");
    };
    let restarted = tokio::process::Command::new("pg_ctlcluster")
        .args(["--skip-systemctl-redirect", &cluster.0, &cluster.1, "restart"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .await
        .is_ok_and(|s| s.success());
    if !restarted {
        cannot_restart(
            "PostgreSQL",
            &format!(
                "`pg_ctlcluster {} {} restart` is not permitted to this user",
                cluster.0, cluster.1
            ),
        );
    }
    true
}
