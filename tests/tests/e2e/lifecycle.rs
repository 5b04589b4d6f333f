//! A job's whole life against the simulator: submission, webhooks, polling, settlement.

use std::time::Duration;

use gengate_tests::TestApp;
use gengate_tests::harness::audit::ledger;
use serde_json::json;

const WAIT: Duration = Duration::from_secs(30);

#[tokio::test]
async fn a_kling_job_is_submitted_completed_by_webhook_and_charged_once() {
    let app = TestApp::builder().workers(1).spawn().await;
    let user = app.create_user(1000).await;
    let id = app
        .submit_ok(
            &user,
            &json!({"model": "kling-v1-6-pro", "mode": "text2video", "prompt": "a cat"}),
        )
        .await;

    let done = app.wait_for_status(&user, &id, "completed", WAIT).await;
    assert_eq!(done["charged"], 42);
    assert_eq!(done["cost"], 42);
    let videos = done["result"]["videos"].as_array().unwrap();
    assert_eq!(videos.len(), 1);
    let sources = app.source_urls(&id).await;
    assert!(sources[0].starts_with(app.sim.url()), "{sources:?}");
    assert!(done["completed_at"].is_string());

    // The simulator received exactly one create, with our id, callback and a valid JWT.
    let tasks = app.sim.tasks();
    assert_eq!(tasks.len(), 1);
    let task = &tasks[0];
    assert_eq!(task.external_task_id.as_deref(), Some(id.as_str()));
    let callback = task.callback_url.as_deref().unwrap();
    assert!(
        callback.starts_with(&format!("{}/kling/callback/{id}?token=", app.api_url)),
        "{callback}"
    );
    let creates: Vec<_> = app
        .sim
        .requests()
        .into_iter()
        .filter(|r| r.method == "POST" && r.path == "/v1/videos/text2video")
        .collect();
    assert_eq!(creates.len(), 1);
    let claims = creates[0].jwt_claims.as_ref().expect("a JWT");
    assert_eq!(claims["iss"], "sim-kling-access-key");
    let body = creates[0].body.as_ref().expect("a JSON body");
    assert_eq!(body["model_name"], "kling-v1-6");
    assert_eq!(body["mode"], "pro");

    assert_eq!(app.balance(&user).await, 1000 - 42);
    app.assert_reconciled().await;
}

#[tokio::test]
async fn a_job_the_provider_reports_at_less_usage_is_charged_less() {
    let app = TestApp::builder().workers(1).spawn().await;
    let user = app.create_user(1000).await;
    // kling-v1-6-pro, 10 s, 16:9: 35 × 2 × 1.2 = 84 credits, expected to use 2 units per 5 s = 4.
    let body = |prompt: &str| json!({"model": "kling-v1-6-pro", "mode": "text2video", "prompt": prompt, "duration": 10});
    let half = app.submit_ok(&user, &body("a cat [[sim:usage=2]]")).await;
    let full = app.submit_ok(&user, &body("a dog")).await;

    let half_done = app.wait_for_status(&user, &half, "completed", WAIT).await;
    let full_done = app.wait_for_status(&user, &full, "completed", WAIT).await;
    assert_eq!(half_done["cost"], 84);
    assert_eq!(half_done["charged"], 42, "2 of 4 expected units: half the price");
    assert_eq!(full_done["charged"], 84);
    assert_eq!(app.balance(&user).await, 1000 - 42 - 84);
    let admin = app.admin_generation(&half).await;
    let returned: i64 = ledger(&admin)
        .iter()
        .filter(|e| e["trans_type"] == "video_generation_refund")
        .map(|e| e["amount"].as_i64().unwrap())
        .sum();
    assert_eq!(returned, 42, "the difference went back as a partial refund");
    app.assert_reconciled().await;
}
