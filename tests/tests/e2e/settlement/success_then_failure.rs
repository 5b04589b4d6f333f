//! A success, then a failure: the failure is recorded and changes nothing.

use gengate_tests::TestApp;
use gengate_tests::harness::audit::events;
use gengate_tests::harness::upstream::kie_failure;
use gengate_tests::requests::{SORA_COST, sora};

use super::WAIT;

#[tokio::test]
async fn a_failure_after_completion_changes_nothing() {
    let app = TestApp::builder().workers(1).spawn().await;
    let user = app.create_user(1000).await;
    let id = app.submit_ok(&user, &sora("done deal")).await;
    app.wait_for_status(&user, &id, "completed", WAIT).await;
    let task = app.sim_task(&id).await;
    // The archive copy records itself in the audit log after completion: wait for it, so that
    // what follows is all that adds to the log.
    let before = app.wait_for_archive(&id).await;
    let seen = events(&before).len();

    let url = task.callback_url.clone().unwrap();
    assert_eq!(app.post_json(&url, &kie_failure(&task.task_id)).await, 200);
    let after = app.events_beyond(&id, seen).await;
    let recorded = &events(&after)[seen];
    assert_eq!(recorded["cause"], "webhook");
    assert!(recorded["to_status"].is_null(), "recorded, not applied: {recorded}");
    assert_eq!(recorded["from_status"], "completed");

    assert_eq!(app.report_failure(&id, "too late").await, 202);
    let after = app.events_beyond(&id, seen + 1).await;
    assert_eq!(events(&after)[seen + 1]["cause"], "handle_failure");
    assert!(events(&after)[seen + 1]["to_status"].is_null());

    assert_eq!(after["status"], "completed");
    assert!(after["failure"].is_null());
    assert_eq!(after["updated_at"], before["updated_at"]);
    assert_eq!(after["ledger"], before["ledger"]);
    app.assert_charged_once(&id, SORA_COST).await;
    assert_eq!(app.credits(&user).await, (1000 - SORA_COST, 0));
    app.assert_reconciled().await;
}
