//! Duplicates: the same success delivered many times, at once or replayed, settles once.

use futures_util::future::join_all;
use gengate_tests::TestApp;
use gengate_tests::harness::audit::events;
use gengate_tests::harness::eventually;
use gengate_tests::harness::upstream::kie_success;
use gengate_tests::requests::{KLING_COST, SORA_COST, kling, sora};

use super::WAIT;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_same_success_delivered_five_times_at_once_settles_once() {
    let app = TestApp::builder().webhook_only().workers(2).spawn().await;
    let user = app.create_user(1000).await;
    // The provider never calls back by itself: the test delivers its success, five times at once.
    let id = app.submit_ok(&user, &sora("echo [[sim:no-callback]]")).await;
    app.wait_for_status(&user, &id, "submitted", WAIT).await;
    let task = app.sim_task(&id).await;
    app.task_in_state(&task.task_id, "success").await;
    let body = kie_success(&app.kie_record(&task.task_id).await).to_string();
    let url = task.callback_url.clone().unwrap();

    let answers = join_all((0..5).map(|_| app.post_raw(&url, body.clone()))).await;
    assert!(answers.iter().all(|s| *s == 200), "{answers:?}");

    app.wait_for_status(&user, &id, "completed", WAIT).await;
    // Every copy reaches the audit log; only one of them moves the generation.
    let generation = eventually("five webhook rows in the audit log", WAIT, || async {
        let generation = app.admin_generation(&id).await;
        let rows = events(&generation).iter().filter(|e| e["cause"] == "webhook").count();
        (rows >= 5).then_some(generation)
    })
    .await;
    let webhook_rows = events(&generation).iter().filter(|e| e["cause"] == "webhook").count();
    assert_eq!(webhook_rows, 5, "{:?}", events(&generation));
    app.assert_charged_once(&id, SORA_COST).await;
    assert_eq!(app.credits(&user).await, (1000 - SORA_COST, 0));
    app.assert_reconciled().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_duplicated_kling_callback_and_replays_of_it_settle_once() {
    let app = TestApp::builder().webhook_only().workers(2).spawn().await;
    let user = app.create_user(1000).await;
    let id = app.submit_ok(&user, &kling("twice [[sim:dup-callback]]")).await;
    app.wait_for_status(&user, &id, "completed", WAIT).await;
    let task = app.sim_task(&id).await;
    let task = eventually("three delivered success callbacks", WAIT, || async {
        let task = app.sim.task(&task.task_id)?;
        let delivered = task.callbacks.iter().filter(|c| c.status == "succeed" && c.delivered());
        (delivered.count() == 3).then_some(task)
    })
    .await;

    // And a provider retrying the same success five more times, concurrently.
    let body = app.kling_object(&task).await;
    assert_eq!(body["task_status"], "succeed");
    let url = task.callback_url.clone().unwrap();
    let answers = join_all((0..5).map(|_| app.post_json(&url, &body))).await;
    assert!(answers.iter().all(|s| *s == 200), "{answers:?}");

    let before = events(&app.admin_generation(&id).await).len();
    eventually("the replays in the audit log", WAIT, || async {
        let generation = app.admin_generation(&id).await;
        let succeed_rows = events(&generation)
            .iter()
            .filter(|e| e["cause"] == "webhook" && e["to_status"].is_null())
            .count();
        (succeed_rows >= 2 + 5 && events(&generation).len() >= before).then_some(())
    })
    .await;
    app.assert_charged_once(&id, KLING_COST).await;
    assert_eq!(app.credits(&user).await, (1000 - KLING_COST, 0));
    app.assert_reconciled().await;
}
