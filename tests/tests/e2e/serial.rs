//! Tests that restart a shared service (RabbitMQ). Every other test on this machine would see the
//! restart, so these run alone: their names start with `serial_`, the default nextest filter
//! leaves them out, and `deploy/dev test` runs them in a second phase, one at a time. A restart
//! that cannot be done fails them, unless `GENGATE_TEST_SKIP_SERVICE_RESTARTS=1` says to skip it.

use std::time::Duration;

use gengate_tests::TestApp;
use gengate_tests::harness::{eventually, restart_rabbitmq, service_restarts_skipped};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(60);

#[tokio::test]
async fn serial_workers_and_the_api_carry_on_after_rabbitmq_restarts() {
    if service_restarts_skipped() {
        eprintln!(
            "SKIPPED: this test is a RabbitMQ restart (GENGATE_TEST_SKIP_SERVICE_RESTARTS=1)"
        );
        return;
    }
    let app = TestApp::builder().workers(2).spawn().await;
    let user = app.create_user(10_000).await;
    let body = |i: usize| json!({"model": "kling-v1-6-std", "mode": "text2video", "prompt": format!("before {i}")});
    let mut before = Vec::new();
    for i in 0..5 {
        before.push(app.submit_ok(&user, &body(i)).await);
    }
    for id in &before {
        app.wait_for_status(&user, id, "completed", WAIT).await;
    }

    // Jobs submitted while the broker is down wait in the outbox.
    let restart = tokio::spawn(restart_rabbitmq(Duration::from_secs(3)));
    eventually("the API to notice the broker is gone", WAIT, || async {
        (app.get("/readyz").await.status() == 503).then_some(())
    })
    .await;
    let mut during = Vec::new();
    for i in 0..5 {
        during.push(app.submit_ok(&user, &json!({"model": "kling-v1-6-std", "mode": "text2video", "prompt": format!("during {i}")})).await);
    }
    assert!(restart.await.unwrap(), "RabbitMQ was restarted");

    // No process was restarted: they reconnect by themselves.
    app.wait_ready().await;
    let mut after = Vec::new();
    for i in 0..5 {
        after.push(app.submit_ok(&user, &json!({"model": "kling-v1-6-std", "mode": "text2video", "prompt": format!("after {i}")})).await);
    }
    for id in during.iter().chain(&after) {
        app.wait_for_status(&user, id, "completed", WAIT).await;
    }
    app.assert_reconciled().await;
}
