//! More endings: found only by polling, off the allowlist, after a cancel, postpaid, a lost poll
//! and a queued job past its deadline.

use gengate_shared::config::Settings;
use gengate_shared::queue::{Broker, WorkQueue};
use gengate_sim::SimConfig;
use gengate_tests::TestApp;
use gengate_tests::harness::audit::{assert_restored, events, transitions};
use gengate_tests::harness::eventually;
use gengate_tests::harness::upstream::kie_success;
use gengate_tests::requests::{SORA_COST, kling, sora};
use gengate_worker::context::WorkerContext;
use gengate_worker::sweeper::sweep;
use serde_json::json;

use super::WAIT;

#[tokio::test]
async fn a_polled_failure_that_later_turns_into_a_success_restores() {
    // No callbacks at all: polling must see the failure, and later the success.
    let app = TestApp::builder()
        .workers(1)
        .simulator(SimConfig { recovery_delay_ms: 4000, ..SimConfig::default() })
        .spawn()
        .await;
    let user = app.create_user(1000).await;
    let id = app
        .submit_ok(&user, &sora("quiet comeback [[sim:fail-then-success]] [[sim:no-callback]]"))
        .await;

    let failed = app.wait_for_status(&user, &id, "failed", WAIT).await;
    assert_eq!(failed["failure"]["code"], "generation_failed");
    assert_eq!(app.credits(&user).await, (1000, 0));
    let task = app.sim_task(&id).await;
    app.task_in_state(&task.task_id, "success").await;

    let done = app.wait_for_status(&user, &id, "completed", WAIT).await;
    assert_eq!(done["charged"], SORA_COST);
    let generation = app.assert_charged_once(&id, SORA_COST).await;
    let moves = transitions(&generation);
    assert_eq!(moves[2], ("submitted".into(), "failed".into(), "poll".into()), "{moves:?}");
    assert_eq!(moves[3], ("failed".into(), "completed".into(), "poll".into()), "{moves:?}");
    assert_restored(&generation, SORA_COST);
    assert_eq!(app.credits(&user).await, (1000 - SORA_COST, 0));
    app.assert_reconciled().await;
}

#[tokio::test]
async fn a_success_whose_result_is_off_the_allowlist_fails_and_refunds() {
    let app = TestApp::builder().workers(1).spawn().await;
    let user = app.create_user(1000).await;
    let kie = app.submit_ok(&user, &sora("elsewhere [[sim:evil-url]]")).await;
    let kling_id = app.submit_ok(&user, &kling("elsewhere [[sim:evil-url]]")).await;

    for id in [&kie, &kling_id] {
        let failed = app.wait_for_status(&user, id, "failed", WAIT).await;
        assert_eq!(failed["failure"]["code"], "result_rejected", "{failed}");
        assert_eq!(failed["charged"], 0);
        assert!(failed["result"].is_null());
        assert_eq!(app.video_rows(id).await, 0);
        // The provider's callbacks carrying it were refused at the door.
        let task = app.sim_task(id).await;
        assert!(
            task.callbacks
                .iter()
                .all(|c| c.http_status != Some(200) || !c.status.contains("succe")),
            "{:?}",
            task.callbacks
        );
    }
    assert_eq!(app.credits(&user).await, (1000, 0));
    app.assert_reconciled().await;
}

#[tokio::test]
async fn a_success_after_a_cancel_is_recorded_and_not_charged() {
    let app = TestApp::builder().webhook_only().workers(1).spawn().await;
    let user = app.create_user(1000).await;
    let id = app.submit_ok(&user, &sora("never mind [[sim:delay=2000]]")).await;
    app.wait_for_status(&user, &id, "submitted", WAIT).await;
    let canceled = app.user_post(&user, &format!("/v1/generations/{id}/cancel"), &json!({})).await;
    assert_eq!(canceled.status(), 200);
    assert_eq!(app.credits(&user).await, (1000, 0));

    let task = app.sim_task(&id).await;
    let task = eventually("the success callback delivered", WAIT, || async {
        let task = app.sim.task(&task.task_id)?;
        task.callbacks.iter().any(|c| c.status == "success" && c.delivered()).then_some(task)
    })
    .await;
    let generation = eventually("the success in the audit log", WAIT, || async {
        let generation = app.admin_generation(&id).await;
        let recorded =
            events(&generation).iter().any(|e| e["cause"] == "webhook" && e["to_status"].is_null());
        recorded.then_some(generation)
    })
    .await;
    assert_eq!(generation["status"], "canceled");
    assert_eq!(generation["charged"], 0);
    assert!(generation["result"].is_null());
    assert_eq!(app.video_rows(&id).await, 0);
    // A repeat of it, and a failure report, change nothing either.
    let url = task.callback_url.clone().unwrap();
    let body = kie_success(&app.kie_record(&task.task_id).await);
    assert_eq!(app.post_json(&url, &body).await, 200);
    assert_eq!(app.report_failure(&id, "late").await, 202);
    let seen = events(&generation).len();
    let generation = app.events_beyond(&id, seen + 1).await;
    assert_eq!(generation["status"], "canceled");
    assert_eq!(generation["charged"], 0);
    assert_eq!(app.credits(&user).await, (1000, 0));
    app.assert_reconciled().await;
}

#[tokio::test]
async fn a_postpaid_job_is_charged_once_on_success_and_never_on_failure() {
    let app = TestApp::builder()
        .workers(1)
        .simulator(SimConfig { recovery_delay_ms: 1500, ..SimConfig::default() })
        .spawn()
        .await;
    let user = app.create_user(1000).await;
    let gateway = |prompt: &str| json!({"model": "kling-v1-6-gateway", "mode": "text2video", "prompt": prompt});
    let ok = app.submit_ok(&user, &gateway("plain [[sim:dup-callback]]")).await;
    let failed = app.submit_ok(&user, &gateway("doomed [[sim:fail]]")).await;
    let back = app.submit_ok(&user, &gateway("comeback [[sim:fail-then-success]]")).await;

    let done = app.wait_for_status(&user, &ok, "completed", WAIT).await;
    let cost = done["cost"].as_i64().unwrap();
    assert_eq!(done["billing"], "postpaid");
    assert_eq!(done["charged"], cost);
    let failed = app.wait_for_status(&user, &failed, "failed", WAIT).await;
    assert_eq!(failed["charged"], 0);
    app.wait_for_status(&user, &back, "failed", WAIT).await;
    let back_done = app.wait_for_status(&user, &back, "completed", WAIT).await;
    assert_eq!(back_done["charged"], cost);
    for id in [&ok, &back] {
        app.assert_charged_once(id, cost).await;
    }
    assert_eq!(app.credits(&user).await, (1000 - 2 * cost, 0));
    app.assert_reconciled().await;
}

/// Waits until the provider (the simulator) reports generation `id`'s task succeeded.
async fn provider_done(app: &TestApp, id: &str) {
    eventually("the provider's task to succeed", WAIT, || async {
        (app.sim_task(id).await.state == "success").then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_job_whose_poll_was_lost_is_polled_again_once_its_lease_runs_out() {
    let app = TestApp::builder().webhook_only().workers(1).spawn().await;
    let user = app.create_user(1000).await;
    let id = app.submit_ok(&user, &sora("forgotten [[sim:no-callback]]")).await;
    app.wait_for_status(&user, &id, "submitted", WAIT).await;
    // Once the task is done, a single poll settles the job (polls are a minute apart here).
    provider_done(&app, &id).await;
    // Its next poll is a minute away; make it look published and lost (its lease long run out),
    // as after a broker loss: the poll scheduler publishes it again.
    sqlx::query(
        "UPDATE generations SET next_poll_at = now() - interval '10 minutes' WHERE id = $1::uuid",
    )
    .bind(&id)
    .execute(&app.pool)
    .await
    .unwrap();
    let done = app.wait_for_status(&user, &id, "completed", WAIT).await;
    assert_eq!(done["charged"], SORA_COST);
    app.assert_charged_once(&id, SORA_COST).await;
    app.assert_reconciled().await;
}

#[tokio::test]
async fn a_submitted_job_whose_poll_chain_broke_is_polled_again_by_the_sweeper() {
    let app = TestApp::builder().webhook_only().workers(1).spawn().await;
    let user = app.create_user(1000).await;
    let id = app.submit_ok(&user, &sora("orphaned [[sim:no-callback]]")).await;
    app.wait_for_status(&user, &id, "submitted", WAIT).await;
    provider_done(&app, &id).await;
    // No poll scheduled any more, for a while, as when a poll stopped for a success whose event
    // never settled the job. Its next poll message (a minute away) will find its number taken.
    sqlx::query(
        "UPDATE generations SET next_poll_at = NULL, polls = polls + 1,
                updated_at = now() - interval '10 minutes' WHERE id = $1::uuid",
    )
    .bind(&id)
    .execute(&app.pool)
    .await
    .unwrap();
    let done = app.wait_for_status(&user, &id, "completed", WAIT).await;
    assert_eq!(done["charged"], SORA_COST);
    app.assert_charged_once(&id, SORA_COST).await;
    app.assert_reconciled().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queued_job_past_its_deadline_is_failed_once_however_often_the_sweeper_runs() {
    // No workers yet: nothing consumes, as when every worker is down or far behind.
    let mut app = TestApp::spawn().await;
    let user = app.create_user(1000).await;
    let id = app.submit_ok(&user, &kling("lost in the queue")).await;
    // The job message is lost (taken off the queue once the relay published it) and the deadline
    // has passed: only the sweeper can settle this job.
    eventually("the job message published", WAIT, || async {
        let unsent: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox WHERE sent_at IS NULL")
            .fetch_one(&app.pool)
            .await
            .unwrap();
        (unsent == 0).then_some(())
    })
    .await;
    let topology = app.broker.topology().clone();
    assert_eq!(app.broker.drain(&topology.queue(WorkQueue::Jobs)).await.len(), 1);
    sqlx::query(
        "UPDATE generations SET deadline_at = now() - interval '1 second' WHERE id = $1::uuid",
    )
    .bind(&id)
    .execute(&app.pool)
    .await
    .unwrap();

    // Sweeps, two at once and then more, with nobody consuming what they send.
    let settings = Settings::load_from(None, Some(app.env().clone())).expect("settings");
    let broker = Broker::new(&settings.amqp, "gengate-test-sweeper");
    broker.connect().await.expect("connect to RabbitMQ");
    let ctx = WorkerContext::new(settings, app.pool.clone(), broker.clone()).expect("context");
    let (first, second) = tokio::join!(sweep(&ctx), sweep(&ctx));
    let mut sent = first.unwrap().failures + second.unwrap().failures;
    for _ in 0..3 {
        sent += sweep(&ctx).await.unwrap().failures;
    }
    assert_eq!(sent, 1, "one failure sent for the one stuck job");
    let channel = broker.channel().await.unwrap();
    let passive = lapin::options::QueueDeclareOptions { passive: true, ..Default::default() };
    let events = channel
        .queue_declare(topology.queue(WorkQueue::Events).into(), passive, Default::default())
        .await
        .unwrap();
    assert_eq!(events.message_count(), 1, "gengate.events holds one failure, not one per sweep");

    // A worker comes back: the job fails and its credits come back, once.
    app.start_worker().await;
    let failed = app.wait_for_status(&user, &id, "failed", WAIT).await;
    assert_eq!(failed["failure"]["code"], "deadline_exceeded", "{failed}");
    assert_eq!(failed["charged"], 0);
    assert_eq!(app.credits(&user).await, (1000, 0));
    app.assert_reconciled().await;
}
