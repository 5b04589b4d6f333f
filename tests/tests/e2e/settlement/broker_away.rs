//! The broker away at ingress: a webhook that cannot be queued gets 503, the provider's
//! retry lands.

use gengate_sim::SimConfig;
use gengate_tests::TestApp;
use gengate_tests::harness::audit::transitions;
use gengate_tests::harness::eventually;
use gengate_tests::requests::{SORA_COST, sora};

use super::WAIT;

#[tokio::test]
async fn a_webhook_that_cannot_be_queued_gets_503_and_the_providers_retry_lands() {
    let mut app = TestApp::builder()
        .webhook_only()
        .workers(1)
        .simulator(SimConfig {
            callback_attempts: 60,
            callback_retry_interval_ms: 250,
            ..SimConfig::default()
        })
        .spawn()
        .await;
    let user = app.create_user(1000).await;
    let id = app.submit_ok(&user, &sora("patient [[sim:delay=3000]]")).await;
    app.wait_for_status(&user, &id, "submitted", WAIT).await;
    let real_amqp = app.env()["GENGATE__AMQP__URL"].clone();

    // The API loses RabbitMQ before the provider calls back.
    app.set_env("GENGATE__AMQP__URL", "amqp://guest:guest@127.0.0.1:1/%2f");
    app.restart_api(true).await;
    let task = app.sim_task(&id).await;
    eventually("a callback answered 503", WAIT, || async {
        let task = app.sim.task(&task.task_id)?;
        task.callbacks.iter().any(|c| c.http_status == Some(503)).then_some(())
    })
    .await;
    let generation = app.admin_generation(&id).await;
    assert_eq!(generation["status"], "submitted");
    assert_eq!(generation["charged"], SORA_COST, "still reserved, nothing settled");

    app.set_env("GENGATE__AMQP__URL", &real_amqp);
    app.restart_api(true).await;
    app.wait_for_status(&user, &id, "completed", WAIT).await;
    let task = app.sim.task(&task.task_id).unwrap();
    let refused = task.callbacks.iter().filter(|c| c.http_status == Some(503)).count();
    let delivered = task.callbacks.iter().filter(|c| c.delivered()).count();
    assert!(refused >= 1, "{:?}", task.callbacks);
    assert_eq!(delivered, 1, "{:?}", task.callbacks);
    let generation = app.assert_charged_once(&id, SORA_COST).await;
    let (_, _, cause) = transitions(&generation).pop().unwrap();
    assert_eq!(cause, "webhook");
    assert_eq!(app.credits(&user).await, (1000 - SORA_COST, 0));
    app.assert_reconciled().await;
}
