//! A failure, then a success: refunded once, then restored and charged once.

use gengate_sim::SimConfig;
use gengate_tests::TestApp;
use gengate_tests::harness::audit::{assert_restored, count_to, ledger, transitions};
use gengate_tests::requests::{KLING_COST, SORA_COST, kling, sora};
use serde_json::json;

use super::WAIT;

#[tokio::test]
async fn a_failure_then_a_success_completes_and_charges_once() {
    let app = TestApp::builder()
        .workers(1)
        // Far enough apart that the failure is surely applied before the success comes.
        .simulator(SimConfig { recovery_delay_ms: 1500, ..SimConfig::default() })
        .spawn()
        .await;
    let user = app.create_user(1000).await;
    let id = app.submit_ok(&user, &sora("second wind [[sim:fail-then-success]]")).await;

    app.wait_for_status(&user, &id, "failed", WAIT).await;
    assert_eq!(app.credits(&user).await, (1000, 0));
    let done = app.wait_for_status(&user, &id, "completed", WAIT).await;
    assert_eq!(done["charged"], SORA_COST);
    assert!(done["failure"].is_null(), "a completed job carries no failure: {done}");

    let generation = app.assert_charged_once(&id, SORA_COST).await;
    let moves: Vec<_> = transitions(&generation).into_iter().map(|(f, t, _)| (f, t)).collect();
    assert_eq!(
        moves[2..],
        [("submitted".into(), "failed".into()), ("failed".into(), "completed".into())],
        "{moves:?}"
    );
    assert_restored(&generation, SORA_COST);
    assert_eq!(app.credits(&user).await, (1000 - SORA_COST, 0));
    app.assert_reconciled().await;
}

#[tokio::test]
async fn a_reported_failure_then_a_success_completes_and_charges_once() {
    let app = TestApp::builder().workers(1).spawn().await;
    let user = app.create_user(1000).await;
    let id = app.submit_ok(&user, &sora("slow [[sim:delay=4000]]")).await;
    app.wait_for_status(&user, &id, "submitted", WAIT).await;

    assert_eq!(app.report_failure(&id, "the poller gave up").await, 202);
    let failed = app.wait_for_status(&user, &id, "failed", WAIT).await;
    assert_eq!(failed["charged"], 0);
    assert_eq!(failed["failure"]["code"], "polling_failed");
    assert_eq!(failed["failure"]["message"], "the job was reported failed");
    assert_eq!(app.credits(&user).await, (1000, 0));
    // Reporting it again changes nothing.
    assert_eq!(app.report_failure(&id, "the poller gave up").await, 202);

    let done = app.wait_for_status(&user, &id, "completed", WAIT).await;
    assert_eq!(done["charged"], SORA_COST);
    let generation = app.assert_charged_once(&id, SORA_COST).await;
    assert_eq!(count_to(&generation, "failed"), 1);
    let (from, to, cause) = transitions(&generation)[2].clone();
    assert_eq!(
        (from.as_str(), to.as_str(), cause.as_str()),
        ("submitted", "failed", "handle_failure")
    );
    assert_restored(&generation, SORA_COST);
    assert!(
        ledger(&generation)
            .iter()
            .filter(|e| e["voided_at"].is_string())
            .all(|e| e["voided_reason"] == "handle_failure: polling_failed"),
        "{:?}",
        ledger(&generation)
    );
    assert_eq!(app.credits(&user).await, (1000 - SORA_COST, 0));
    app.assert_reconciled().await;

    // Unknown generations, malformed reports and missing credentials are refused.
    let unknown = uuid::Uuid::now_v7().to_string();
    assert_eq!(app.report_failure(&unknown, "x").await, 404);
    assert_eq!(app.report_failure("not-an-id", "x").await, 422);
    assert_eq!(app.report_failure(&id, " ").await, 422);
    assert_eq!(app.report_failure(&id, &"x".repeat(1001)).await, 422);
    let anonymous = app
        .http
        .post(format!("{}/api/generation/handle-failure", app.api_url))
        .json(&json!({"generation_id": id, "reason": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_duplicated_failure_then_duplicated_success_refunds_once_and_restores_once() {
    let app = TestApp::builder()
        .workers(2)
        .simulator(SimConfig { recovery_delay_ms: 1500, ..SimConfig::default() })
        .spawn()
        .await;
    let user = app.create_user(1000).await;
    let kie =
        app.submit_ok(&user, &sora("echoes [[sim:fail-then-success]] [[sim:dup-callback]]")).await;
    let kling_id =
        app.submit_ok(&user, &kling("echoes [[sim:fail-then-success]] [[sim:dup-callback]]")).await;

    for (id, cost) in [(&kie, SORA_COST), (&kling_id, KLING_COST)] {
        app.wait_for_status(&user, id, "completed", WAIT).await;
        let generation = app.assert_charged_once(id, cost).await;
        assert_eq!(count_to(&generation, "failed"), 1, "{:?}", transitions(&generation));
        assert_restored(&generation, cost);
    }
    assert_eq!(app.credits(&user).await, (1000 - SORA_COST - KLING_COST, 0));
    app.assert_reconciled().await;
}

#[tokio::test]
async fn callbacks_that_arrive_before_the_submission_is_recorded_settle_right() {
    // The provider starts each task, then holds its create answer: every callback reaches
    // gengate while the generation is still queued.
    let app = TestApp::builder()
        .workers(1)
        .simulator(SimConfig { accept_delay_ms: 1500, ..SimConfig::default() })
        .spawn()
        .await;
    let user = app.create_user(1000).await;
    let ok = app.submit_ok(&user, &kling("eager")).await;
    let failed = app.submit_ok(&user, &sora("eager [[sim:fail]]")).await;
    let back = app.submit_ok(&user, &kling("eager [[sim:fail-then-success]]")).await;

    app.wait_for_status(&user, &ok, "completed", WAIT).await;
    app.assert_charged_once(&ok, KLING_COST).await;
    let generation = app.wait_for_status(&user, &failed, "failed", WAIT).await;
    assert_eq!(generation["charged"], 0);
    app.wait_for_status(&user, &back, "completed", WAIT).await;
    app.assert_charged_once(&back, KLING_COST).await;
    for id in [&ok, &failed, &back] {
        // Exactly one upstream task each, and the operator can see which.
        let tasks = app.sim.tasks();
        let task = app.sim_task(id).await;
        assert_eq!(tasks.iter().filter(|t| t.task_id == task.task_id).count(), 1);
        let remote: Option<String> =
            sqlx::query_scalar("SELECT remote_task_id FROM generations WHERE id = $1::uuid")
                .bind(id)
                .fetch_one(&app.pool)
                .await
                .unwrap();
        assert_eq!(remote.as_deref(), Some(task.task_id.as_str()), "generation {id}");
    }
    assert_eq!(app.credits(&user).await, (1000 - 2 * KLING_COST, 0));
    app.assert_reconciled().await;
}

#[tokio::test]
async fn a_callback_that_beats_its_task_record_waits_for_it_instead_of_a_delayed_retry() {
    // The provider holds its create answer for 300 ms, and the task ends before that: each
    // callback reaches a worker while the worker that creates the task is still waiting to record
    // it. With two workers, a callback lands on the creating worker (woken by its record's
    // commit) or on the other one (which looks again after short pauses); either way the job is
    // settled in the same handling, with no retry through the delay tiers (a second more).
    let app = TestApp::builder()
        .workers(2)
        .simulator(SimConfig { accept_delay_ms: 300, ..SimConfig::default() })
        .spawn()
        .await;
    let user = app.create_user(1000).await;
    let mut jobs = Vec::new();
    for i in 0..8 {
        jobs.push(if i % 2 == 0 {
            (app.submit_ok(&user, &kling(&format!("quick {i}"))).await, KLING_COST)
        } else {
            (app.submit_ok(&user, &sora(&format!("quick {i}"))).await, SORA_COST)
        });
    }
    for (id, cost) in &jobs {
        app.wait_for_status(&user, id, "completed", WAIT).await;
        let generation = app.assert_charged_once(id, *cost).await;
        let moves = transitions(&generation);
        assert_eq!(
            moves.last().map(|(from, to, cause)| (from.as_str(), to.as_str(), cause.as_str())),
            Some(("submitted", "completed", "webhook")),
            "settled by its callback: {moves:?}"
        );
    }
    for worker in 0..2 {
        let metrics = app.worker_metrics(worker).await;
        let retried: Vec<&str> = metrics
            .lines()
            .filter(|line| line.starts_with("gengate_messages_handled_total{"))
            .filter(|line| line.contains(r#"outcome="retry""#) && !line.ends_with(" 0"))
            .collect();
        assert!(
            retried.is_empty(),
            "worker {worker} sent messages to the delay tiers: {retried:?}"
        );
    }
    app.assert_reconciled().await;
}
