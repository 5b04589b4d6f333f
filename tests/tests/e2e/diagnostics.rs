//! What an operator has to go on when something is wrong: worker logs that name the job and the
//! message behind every line, and dead letters that say why at once.

use std::time::Duration;

use gengate_tests::TestApp;
use gengate_tests::harness::eventually;
use gengate_tests::requests::{KLING_COST, kling};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(60);

/// The worker's log lines (JSON, one object per line).
fn worker_log(app: &TestApp, index: usize) -> Vec<Value> {
    let path = app.log_dir().join(format!("worker{index}.log"));
    let text = std::fs::read_to_string(&path).expect("the worker's log");
    text.lines().filter_map(|line| serde_json::from_str(line).ok()).collect()
}

#[tokio::test]
async fn every_line_a_handler_logs_names_its_generation_and_message() {
    let app =
        TestApp::builder().workers(1).env("GENGATE__TELEMETRY__LOG_FORMAT", "json").spawn().await;
    let user = app.create_user(1000).await;
    let done = app.submit_ok(&user, &kling("a cat")).await;
    let rejected = app.submit_ok(&user, &kling("a cat [[sim:reject]]")).await;
    app.wait_for_status(&user, &done, "completed", WAIT).await;
    app.wait_for_status(&user, &rejected, "failed", WAIT).await;

    // The lines are written as they happen; the ones these two jobs end with must be there.
    let lines = eventually("the handlers' last lines in the worker log", WAIT, || async {
        let lines: Vec<Value> = worker_log(&app, 0)
            .into_iter()
            .filter(|line| {
                line["target"].as_str().is_some_and(|t| t.starts_with("gengate_worker::handlers"))
            })
            .collect();
        let says = |message: &str, id: &str| {
            lines.iter().any(|l| l["message"] == message && l["span"]["generation_id"] == id)
        };
        (says("completed", &done) && says("failed; credits returned", &rejected)).then_some(lines)
    })
    .await;
    for line in &lines {
        let span = &line["span"];
        assert_eq!(span["name"], "message", "a handler line outside the message's span: {line}");
        assert!(span["generation_id"].is_string(), "no generation_id: {line}");
        assert!(span["message_id"].is_string(), "no message_id: {line}");
    }
}

#[tokio::test]
async fn a_message_the_workers_settings_cannot_serve_is_dead_lettered_at_once_and_replays_once_fixed()
 {
    // No worker yet: the job waits in `gengate.jobs`, stamped with callback key version 1.
    let mut app = TestApp::builder().workers(0).spawn().await;
    let user = app.create_user(1000).await;
    let id = app.submit_ok(&user, &kling("a cat")).await;

    // A worker whose settings lost that key (rotated to version 2 without keeping version 1).
    app.start_worker_with(&[("GENGATE__WEBHOOK__KEY_VERSION", "2")]).await;
    let letter = eventually("the job message in the dead-letter queue", WAIT, || async {
        let listed = app.ctl_json(&["dlq", "list", "--json"]).await;
        listed["data"].as_array()?.iter().find(|l| l["generation_id"] == id.as_str()).cloned()
    })
    .await;
    assert_eq!(letter["reason"], "configuration", "{letter}");
    let error = letter["error"].as_str().unwrap_or_default();
    assert!(error.contains("callback key version 1"), "the error names what is missing: {letter}");
    // At once: the first delivery was the only one (no retries holding a slot).
    let redeliveries = letter["headers"]["x-delivery-count"].as_i64().unwrap_or(0);
    assert_eq!(redeliveries, 0, "dead-lettered on its first delivery: {letter}");
    // Nothing was asked of the provider and nothing moved: the job waits, its credits reserved.
    assert!(app.sim.tasks().is_empty(), "no upstream task was created");
    let generation = app.admin_generation(&id).await;
    assert_eq!(generation["status"], "queued", "{generation}");
    assert_eq!(generation["cost"], KLING_COST);

    // The operator fixes the settings (a worker with the key) and replays: the job runs.
    app.workers[0].process.kill().await;
    let fixed = app.start_worker().await;
    let replayed = app.ctl_json(&["dlq", "replay", "--json", "--generation", &id]).await;
    assert_eq!(replayed["replayed"], 1, "{replayed}");
    app.wait_for_status(&user, &id, "completed", WAIT).await;
    assert_eq!(fixed, 1);
    app.assert_reconciled().await;
}

#[tokio::test]
async fn the_api_serves_the_callback_urls_the_workers_build() {
    use gengate_shared::config::Settings;
    use gengate_shared::generation::callback_token::{CallbackKeys, callback_url};
    use gengate_shared::providers::ProviderKind;
    use gengate_tests::requests::sora;

    // No worker: the jobs stay queued and nobody else calls back.
    let app = TestApp::builder().workers(0).spawn().await;
    let user = app.create_user(1000).await;
    let settings = Settings::load_from(None, Some(app.env().clone())).expect("settings");
    let keys = CallbackKeys::required(&settings.webhook).expect("callback keys");
    for (provider, request) in
        [(ProviderKind::Kling, kling("a cat")), (ProviderKind::Kie, sora("a cat"))]
    {
        let id = app.submit_ok(&user, &request).await;
        let generation = id.parse().unwrap();
        let token = keys.token(keys.current_version(), generation).unwrap();
        let url = callback_url(&settings.api.public_base_url, provider, generation, &token);
        // The route exists and the token is the job's: only the (empty) body is refused.
        let status = app.post_json(&url, &serde_json::json!({})).await;
        assert_eq!(status, 400, "{provider}: {url}");
        let forged = callback_url(&settings.api.public_base_url, provider, generation, "0");
        assert_eq!(app.post_json(&forged, &serde_json::json!({})).await, 401, "{provider}");
    }
}
