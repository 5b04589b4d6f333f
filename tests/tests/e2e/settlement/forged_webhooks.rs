//! Forged and malformed webhooks: refused, and nothing changes.

use gengate_tests::TestApp;
use gengate_tests::harness::audit::events;
use gengate_tests::harness::upstream::{kie_failure, kie_success, kie_success_with_url, token_of};
use gengate_tests::requests::{kling, sora};
use serde_json::json;

use super::WAIT;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn forged_or_malformed_webhooks_are_refused_and_change_nothing() {
    let app = TestApp::builder().workers(1).spawn().await;
    let user = app.create_user(1000).await;
    let id = app.submit_ok(&user, &sora("target [[sim:never]]")).await;
    let other = app.submit_ok(&user, &sora("bystander [[sim:never]]")).await;
    let kling_id = app.submit_ok(&user, &kling("kling target [[sim:never]]")).await;
    for id in [&id, &other, &kling_id] {
        app.wait_for_status(&user, id, "submitted", WAIT).await;
    }
    let task = app.sim_task(&id).await;
    let kling_task = app.sim_task(&kling_id).await;
    let url = task.callback_url.clone().unwrap();
    let token = token_of(&url);
    let other_token = token_of(&app.sim_task(&other).await.callback_url.unwrap());
    let kling_url = kling_task.callback_url.clone().unwrap();
    let base = format!("{}/api/generation/webhook", app.api_url);

    let before = app.admin_generation(&id).await;
    let kling_before = app.admin_generation(&kling_id).await;
    let balance_before = app.credits(&user).await;

    let good_body = kie_success_with_url(&task.task_id, "https://files.kie.ai/v/1.mp4");
    let unknown = uuid::Uuid::now_v7();
    let unauthorized = [
        (format!("{base}?generation_id={id}&token=wrong"), "wrong token"),
        (format!("{base}?generation_id={id}"), "no token"),
        (format!("{base}?generation_id={id}&token="), "empty token"),
        (format!("{base}?token={token}"), "no generation"),
        (format!("{base}?generation_id=not-a-uuid&token={token}"), "malformed generation"),
        (format!("{base}?generation_id={unknown}&token={token}"), "unknown generation"),
        (format!("{base}?generation_id={id}&token={other_token}"), "another generation's token"),
        (format!("{base}?generation_id={id}&token={}", token.to_uppercase()), "token case"),
        (format!("{}/kling/callback/{kling_id}?token={token}", app.api_url), "kie token on kling"),
        (format!("{}/kling/callback/{kling_id}", app.api_url), "kling without token"),
    ];
    for (forged, what) in &unauthorized {
        let status = app.post_json(forged, &good_body).await;
        assert_eq!(status, 401, "{what}: {forged}");
    }

    let bad_urls = [
        ("http://files.kie.ai/v/1.mp4", "plain http"),
        ("https://files.kie.ai@evil.com/v/1.mp4", "userinfo trick"),
        ("https://user:pw@files.kie.ai/v/1.mp4", "credentials"),
        ("https://127.0.0.1/v/1.mp4", "IPv4 literal"),
        ("https://[::1]/v/1.mp4", "IPv6 literal"),
        ("https://2130706433/v/1.mp4", "integer IPv4"),
        ("https://kie.ai.evil.com/v/1.mp4", "look-alike suffix"),
        ("https://evilkie.ai/v/1.mp4", "look-alike prefix"),
        ("https://files.kie.ai:8443/v/1.mp4", "other port"),
        ("https://tempfile.aiquickdraw.com.evil.com/x.mp4", "look-alike of the file host"),
        ("https://evil.example.com/v/1.mp4", "foreign host"),
        ("http://127.0.0.1:1/files/x.mp4", "loopback, not the allowed origin"),
        ("not a url", "not a URL"),
        ("javascript:alert(1)", "script URL"),
    ];
    for (bad, what) in bad_urls {
        let body = kie_success_with_url(&task.task_id, bad);
        assert_eq!(app.post_json(&url, &body).await, 400, "{what}: {bad}");
    }
    // Several results: one bad one spoils the lot.
    let mixed = kie_success(&json!({
        "taskId": task.task_id, "state": "success",
        "resultJson": json!({"resultUrls": ["https://files.kie.ai/ok.mp4", "https://evilkie.ai/x.mp4"]}).to_string(),
    }));
    assert_eq!(app.post_json(&url, &mixed).await, 400, "one bad URL among good ones");
    // The Kling ingress applies the same allowlist.
    let mut kling_body = app.kling_object(&kling_task).await;
    kling_body["task_status"] = json!("succeed");
    kling_body["task_result"] =
        json!({"videos": [{"id": "v", "url": "https://kie.ai.evil.com/v.mp4", "duration": "5"}]});
    assert_eq!(app.post_json(&kling_url, &kling_body).await, 400, "Kling look-alike host");

    let unparsable: [(&str, &str); 7] = [
        ("not json", "not JSON"),
        ("", "empty"),
        ("{}", "empty object"),
        ("[]", "an array"),
        (r#"{"code": 200}"#, "no data"),
        (r#"{"code": 200, "data": {"state": "success"}}"#, "no task id"),
        (r#"{"code": 200, "data": "oops"}"#, "data not an object"),
    ];
    for (body, what) in unparsable {
        assert_eq!(app.post_raw(&url, body).await, 400, "{what}");
    }
    for (body, what) in
        [("not json", "Kling not JSON"), (r#"{"task_status": "succeed"}"#, "no task id")]
    {
        assert_eq!(app.post_raw(&kling_url, body).await, 400, "{what}");
    }
    // Bodies over `webhook.max_body_bytes` (64 KiB by default) are not read.
    let mut huge = kie_success_with_url(&task.task_id, "https://files.kie.ai/v/1.mp4");
    huge["data"]["padding"] = json!("x".repeat(70 * 1024));
    assert_eq!(app.post_json(&url, &huge).await, 413, "oversized body");
    let enveloped_error = json!({"code": 1201, "message": "bad", "data": {"task_id": kling_task.task_id, "task_status": "succeed"}});
    assert_eq!(app.post_json(&kling_url, &enveloped_error).await, 400, "Kling error envelope");

    // A well-formed, allowlisted success with the right token is accepted as a hint; the provider
    // says the task still runs, so it is recorded and nothing moves. Once it is in the audit log,
    // everything sent before it has been answered and nothing else was queued.
    assert_eq!(app.post_json(&url, &good_body).await, 200);
    let after = app.events_beyond(&id, events(&before).len()).await;
    let new_events = &events(&after)[events(&before).len()..];
    assert_eq!(new_events.len(), 1, "{new_events:?}");
    assert_eq!(new_events[0]["cause"], "webhook");
    assert!(new_events[0]["to_status"].is_null());
    // (The task is queued or running by now, as the provider's own answer says.)
    let ignored = new_events[0]["detail"]["ignored"].as_str().unwrap();
    assert!(ignored.starts_with("the webhook said success, the provider says "), "{ignored}");
    // With the right token, a failure that names another task is recorded and ignored too.
    let elsewhere = kie_failure(&app.sim_task(&other).await.task_id);
    assert_eq!(app.post_json(&url, &elsewhere).await, 200);
    let after = app.events_beyond(&id, events(&before).len() + 1).await;
    let last = events(&after).last().unwrap().clone();
    assert_eq!(last["detail"]["ignored"], "the update names another task", "{last}");
    assert!(last["to_status"].is_null());

    for (before, id) in [(&before, &id), (&kling_before, &kling_id)] {
        let mut after = app.admin_generation(id).await;
        let mut before = before.clone();
        for view in [&mut before, &mut after] {
            view.as_object_mut().unwrap().remove("events");
            view.as_object_mut().unwrap().remove("progress");
        }
        assert_eq!(after, before, "generation {id} changed");
        assert_eq!(after["status"], "submitted");
    }
    assert_eq!(events(&app.admin_generation(&kling_id).await).len(), events(&kling_before).len());
    assert_eq!(app.admin_generation(&other).await["status"], "submitted");
    assert_eq!(app.credits(&user).await, balance_before);
    assert_eq!(app.video_rows(&id).await, 0);
    app.assert_reconciled().await;
}
