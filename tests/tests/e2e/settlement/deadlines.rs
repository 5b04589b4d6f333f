//! Deadlines: a job past its deadline fails, and a late success restores it.

use gengate_sim::Outcome;
use gengate_tests::TestApp;
use gengate_tests::harness::audit::{assert_restored, events, transitions};
use gengate_tests::harness::upstream::kie_success_with_url;
use gengate_tests::requests::{SORA_COST, sora};

use super::WAIT;

#[tokio::test]
async fn a_job_past_its_deadline_fails_and_a_late_success_restores_it() {
    let app = TestApp::builder()
        .workers(1)
        .env("GENGATE__MODELS__SORA-2__DEADLINE_SECONDS", "3")
        .spawn()
        .await;
    let user = app.create_user(1000).await;
    let stuck = app.submit_ok(&user, &sora("forever [[sim:never]]")).await;
    let late = app.submit_ok(&user, &sora("late [[sim:delay=7000]]")).await;

    // The environment override reached the model: a 3-second deadline.
    let deadline: f64 = sqlx::query_scalar(
        "SELECT extract(epoch FROM deadline_at - created_at)::float8 FROM generations WHERE id = $1::uuid",
    )
    .bind(&stuck)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert!((deadline - 3.0).abs() < 0.5, "deadline {deadline} s after submit");

    for id in [&stuck, &late] {
        let failed = app.wait_for_status(&user, id, "failed", WAIT).await;
        assert_eq!(failed["failure"]["code"], "deadline_exceeded", "{failed}");
        assert_eq!(failed["charged"], 0);
    }
    assert_eq!(app.credits(&user).await, (1000, 0));
    app.assert_reconciled().await;

    // The slow one finishes upstream after all: the late success restores the charge.
    let done = app.wait_for_status(&user, &late, "completed", WAIT).await;
    assert_eq!(done["charged"], SORA_COST);
    let generation = app.assert_charged_once(&late, SORA_COST).await;
    let moves = transitions(&generation);
    assert_eq!(moves[2], ("submitted".into(), "failed".into(), "deadline".into()), "{moves:?}");
    assert_eq!(moves[3].0, "failed");
    assert_eq!(moves[3].1, "completed");
    assert_restored(&generation, SORA_COST);

    // The stuck one: a success callback with its right token is only a hint. The provider still
    // reports it running, so nothing moves.
    let task = app.sim_task(&stuck).await;
    let seen = events(&app.admin_generation(&stuck).await).len();
    let claim = kie_success_with_url(&task.task_id, &format!("{}/files/x.mp4", app.sim.url()));
    assert_eq!(app.post_json(task.callback_url.as_deref().unwrap(), &claim).await, 200);
    let generation = app.events_beyond(&stuck, seen).await;
    assert_eq!(generation["status"], "failed");
    assert_eq!(generation["charged"], 0);
    assert_eq!(app.credits(&user).await, (1000 - SORA_COST, 0));
    app.assert_reconciled().await;
}

#[tokio::test]
async fn a_never_finishing_job_restores_when_the_provider_finally_reports_success() {
    let app = TestApp::builder()
        .workers(1)
        .env("GENGATE__MODELS__SORA-2__DEADLINE_SECONDS", "3")
        .spawn()
        .await;
    let user = app.create_user(1000).await;
    let id = app.submit_ok(&user, &sora("forever [[sim:never]]")).await;
    let failed = app.wait_for_status(&user, &id, "failed", WAIT).await;
    assert_eq!(failed["failure"]["code"], "deadline_exceeded");
    assert_eq!(app.credits(&user).await, (1000, 0));

    // Long after the deadline, the provider finishes the task after all (and calls back).
    let task = app.sim_task(&id).await;
    let file = format!("{}/files/{}.mp4", app.sim.url(), task.task_id);
    assert!(app.sim.finish(&task.task_id, Outcome::Succeed));
    app.wait_for_status(&user, &id, "completed", WAIT).await;
    assert_eq!(app.source_urls(&id).await, [file]);
    let generation = app.assert_charged_once(&id, SORA_COST).await;
    assert_restored(&generation, SORA_COST);
    assert_eq!(app.credits(&user).await, (1000 - SORA_COST, 0));
    app.assert_reconciled().await;
}
