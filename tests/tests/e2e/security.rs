//! Attacks on a running gengate, and what each gets. Every test is one attack (or a family of
//! them) tried the way an attacker would, against the real binaries: what the attacker sends,
//! what they are answered, and that nothing moved (status, credits, stored URLs, the ledger).
//!
//! | attack | what it gets |
//! | --- | --- |
//! | a success webhook for a job that never got a provider task | recorded, ignored: the job stays failed, nothing charged |
//! | a success webhook with its own URL and usage | ignored until the provider says so; then the provider's URL and usage |
//! | a failure webhook for a running job | recorded, ignored: nothing refunded |
//! | a kie webhook without a valid, fresh signature (key configured) | 401 |
//! | a webhook token of a job that ended long ago | 401 |
//! | a result URL that parsers read differently (`\@`, CR/LF, `%2E`) | 400, nothing stored |
//! | input images inside a network (IP, localhost, metadata, odd port) | 422 |
//! | many postpaid jobs at once for more than the balance | only what the balance covers |
//! | control characters (NUL) in request strings | 422, nothing stored |
//! | a provider failure text with NUL | stored clean; the job fails, nothing dead-letters |
//! | reading internal fields or provider error text | not in the client's view |
//! | `/metrics` and the admin API on the public listener | 404 where an operator moved them |
//! | guessing credentials | 429 after a few, valid traffic from the address unharmed |
//! | flooding the API | 503 `overloaded` at once, no unbounded queue |
//! | using a revoked API key | 401 in every API process within a second |
//!
//! Each ends with the ledger reconciled where money was at stake.

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::join_all;
use gengate_shared::generation::failure::outside_text;
use gengate_sim::{DIRTY_FAILURE_MESSAGE, FAILURE_MESSAGE, Outcome, SimConfig};
use gengate_tests::harness::audit::events;
use gengate_tests::harness::eventually;
use gengate_tests::requests::{KLING_COST, SORA_COST, kling, sora};
use gengate_tests::{ADMIN_TOKEN, INTERNAL_TOKEN, TestApp, TestUser};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;

const WAIT: Duration = Duration::from_secs(30);

/// `kling-v1-6-gateway` (postpaid) text2video, defaults: 20 × 1.2.
const POSTPAID_COST: i64 = 24;

/// What an operator runs after an incident: `gengatectl ledger reconcile`, clean.
async fn reconciled_by_gengatectl(app: &TestApp) {
    let output = app.ctl(&["ledger", "reconcile"]).await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "gengatectl ledger reconcile: {stdout}");
    assert!(stdout.contains("ledger is consistent"), "{stdout}");
}

/// A Kling callback body (the bare task object) claiming success with `url` and `usage`.
fn kling_success(task_id: &str, generation: &str, url: &str, usage: &str) -> Value {
    json!({
        "task_id": task_id, "task_status": "succeed", "task_status_msg": "",
        "task_info": {"external_task_id": generation},
        "task_result": {"videos": [{"id": "v", "url": url, "duration": "5"}]},
        "final_unit_deduction": usage,
        "created_at": 1, "updated_at": 2,
    })
}

fn kie_success(task_id: &str, url: &str) -> Value {
    json!({"code": 200, "msg": "ok", "data": {
        "taskId": task_id, "state": "success",
        "resultJson": json!({"resultUrls": [url]}).to_string(),
    }})
}

fn kie_failure(task_id: &str) -> Value {
    json!({"code": 501, "msg": "failed", "data": {
        "taskId": task_id, "state": "fail", "failCode": "501", "failMsg": "forged", "resultJson": null,
    }})
}

// ---------------------------------------------------------------------------------------------
// Money moves only on the provider's own answer.

#[tokio::test]
async fn a_forged_success_for_a_job_that_never_got_a_provider_task_completes_nothing() {
    let app = TestApp::builder().workers(1).spawn().await;
    let user = app.create_user(1000).await;
    let id = app.submit_ok(&user, &kling("a cat [[sim:reject]]")).await;
    let failed = app.wait_for_status(&user, &id, "failed", WAIT).await;
    assert_eq!(failed["failure"]["code"], "request_rejected");

    // The attacker holds the job's real callback URL (token included): the create request that
    // the provider refused carried it.
    let callback_url = app
        .sim
        .requests()
        .into_iter()
        .filter_map(|r| r.body)
        .find(|body| body["external_task_id"] == id.as_str())
        .and_then(|body| body["callback_url"].as_str().map(str::to_owned))
        .expect("the refused create carried the callback URL");
    assert!(callback_url.contains(&format!("/kling/callback/{id}?token=")));

    let seen = events(&app.admin_generation(&id).await).len();
    let forged = kling_success("999999", &id, "https://files.kie.ai/attacker.mp4", "1");
    assert_eq!(app.post_json(&callback_url, &forged).await, 200, "a hint is accepted");
    let generation = app.events_beyond(&id, seen).await;
    let recorded = events(&generation).last().unwrap().clone();
    assert!(recorded["to_status"].is_null(), "recorded, not applied: {recorded}");
    assert_eq!(recorded["detail"]["ignored"], "no provider task is recorded for this job");

    assert_eq!(generation["status"], "failed");
    assert_eq!(generation["charged"], 0);
    assert!(app.source_urls(&id).await.is_empty(), "the attacker's URL is not stored");
    assert_eq!(app.balance(&user).await, 1000);
    reconciled_by_gengatectl(&app).await;
}

#[tokio::test]
async fn a_success_webhook_counts_only_as_what_the_provider_itself_answers() {
    let app = TestApp::builder().webhook_only().workers(1).spawn().await;
    let user = app.create_user(1000).await;
    let id = app.submit_ok(&user, &kling("a slow cat [[sim:never]]")).await;
    app.wait_for_status(&user, &id, "submitted", WAIT).await;
    let task = app.sim_task(&id).await;
    let callback_url = task.callback_url.clone().unwrap();

    // The task still runs: a success naming it, with the attacker's URL and a usage of zero
    // (which would make the job free), is recorded and changes nothing.
    let seen = events(&app.admin_generation(&id).await).len();
    let forged = kling_success(&task.task_id, &id, "https://files.kie.ai/attacker.mp4", "0");
    assert_eq!(app.post_json(&callback_url, &forged).await, 200);
    let generation = app.events_beyond(&id, seen).await;
    let recorded = events(&generation).last().unwrap().clone();
    let ignored = recorded["detail"]["ignored"].as_str().unwrap();
    assert!(ignored.starts_with("the webhook said success, the provider says "), "{recorded}");
    assert!(recorded["to_status"].is_null());
    assert_eq!(generation["status"], "submitted");

    // Then the provider finishes it: its own URL and its own usage settle the job.
    assert!(app.sim.finish(&task.task_id, Outcome::Succeed));
    let done = app.wait_for_status(&user, &id, "completed", WAIT).await;
    let provider_url = format!("{}/files/{}.mp4", app.sim.url(), task.task_id);
    assert_eq!(app.source_urls(&id).await, std::slice::from_ref(&provider_url));
    assert_eq!(done["charged"], KLING_COST, "settled at the provider's usage, not the webhook's");

    // Replaying the forgery afterwards is recorded and changes nothing.
    assert_eq!(app.post_json(&callback_url, &forged).await, 200);
    let seen = events(&app.admin_generation(&id).await).len();
    assert_eq!(app.post_json(&callback_url, &forged).await, 200);
    app.events_beyond(&id, seen).await;
    assert_eq!(app.source_urls(&id).await, [provider_url]);
    assert_eq!(app.balance(&user).await, 1000 - KLING_COST);
    reconciled_by_gengatectl(&app).await;
}

#[tokio::test]
async fn a_forged_failure_webhook_refunds_nothing() {
    let app = TestApp::builder().webhook_only().workers(1).spawn().await;
    let user = app.create_user(1000).await;
    let id = app.submit_ok(&user, &sora("a slow lighthouse [[sim:never]]")).await;
    app.wait_for_status(&user, &id, "submitted", WAIT).await;
    let task = app.sim_task(&id).await;

    let seen = events(&app.admin_generation(&id).await).len();
    let url = task.callback_url.clone().unwrap();
    assert_eq!(app.post_json(&url, &kie_failure(&task.task_id)).await, 200);
    let generation = app.events_beyond(&id, seen).await;
    let recorded = events(&generation).last().unwrap().clone();
    let ignored = recorded["detail"]["ignored"].as_str().unwrap();
    assert!(ignored.starts_with("the webhook said failed, the provider says "), "{recorded}");
    assert_eq!(generation["status"], "submitted");
    assert_eq!(generation["charged"], SORA_COST, "the reservation stands");
    assert_eq!(app.balance(&user).await, 1000 - SORA_COST);
    reconciled_by_gengatectl(&app).await;
}

#[tokio::test]
async fn kie_webhooks_need_a_valid_fresh_signature_when_a_key_is_configured() {
    const KEY: &str = "kie-webhook-signing-key";
    let app = TestApp::builder()
        .webhook_only()
        .workers(1)
        .env("GENGATE__PROVIDERS__KIE__WEBHOOK_HMAC_KEY", KEY)
        .simulator(SimConfig { kie_webhook_hmac_key: Some(KEY.to_owned()), ..SimConfig::default() })
        .spawn()
        .await;
    let user = app.create_user(1000).await;
    let running = app.submit_ok(&user, &sora("a slow lighthouse [[sim:never]]")).await;
    app.wait_for_status(&user, &running, "submitted", WAIT).await;
    let task = app.sim_task(&running).await;
    let url = task.callback_url.clone().unwrap();
    let body = kie_failure(&task.task_id);
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let sign = |key: &str, task_id: &str, at: i64| {
        (at.to_string(), gengate_sim::kie_webhook_signature(key, task_id, at))
    };
    let cases = [
        ("unsigned", None),
        ("signed with another key", Some(sign("not-the-key", &task.task_id, now))),
        ("signed ten minutes ago", Some(sign(KEY, &task.task_id, now - 600))),
        ("signed for another task", Some(sign(KEY, "another-task", now))),
        ("garbage signature", Some((now.to_string(), "!!not base64".to_owned()))),
    ];
    for (what, signature) in cases {
        let mut request = app.http.post(&url).json(&body);
        if let Some((timestamp, signature)) = signature {
            request = request
                .header("X-Webhook-Timestamp", timestamp)
                .header("X-Webhook-Signature", signature);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 401, "{what}");
    }
    assert_eq!(app.admin_generation(&running).await["status"], "submitted");

    // The provider's own, signed callbacks are admitted and settle a job.
    let id = app.submit_ok(&user, &sora("a lighthouse")).await;
    let done = app.wait_for_status(&user, &id, "completed", WAIT).await;
    assert_eq!(done["charged"], SORA_COST);
    let generation = app.admin_generation(&id).await;
    let completion = events(&generation).into_iter().find(|e| e["to_status"] == "completed");
    assert_eq!(completion.unwrap()["cause"], "webhook");
    reconciled_by_gengatectl(&app).await;
}

#[tokio::test]
async fn a_webhook_token_opens_nothing_once_its_job_has_long_ended() {
    let app = TestApp::builder().workers(1).spawn().await;
    let user = app.create_user(1000).await;
    let id = app.submit_ok(&user, &sora("a lighthouse")).await;
    app.wait_for_status(&user, &id, "completed", WAIT).await;
    let task = app.sim_task(&id).await;
    let url = task.callback_url.clone().unwrap();
    let duplicate = kie_success(&task.task_id, &format!("{}/files/x.mp4", app.sim.url()));

    // Within the late-success window a provider's duplicate is still answered…
    assert_eq!(app.post_json(&url, &duplicate).await, 200);
    // …after it (24 h by default), the token is dead.
    sqlx::query(
        "UPDATE generations SET completed_at = now() - interval '2 days' WHERE id = $1::uuid",
    )
    .bind(&id)
    .execute(&app.pool)
    .await
    .unwrap();
    assert_eq!(app.post_json(&url, &duplicate).await, 401);
    assert_eq!(app.post_json(&url, &kie_failure(&task.task_id)).await, 401);
}

// ---------------------------------------------------------------------------------------------
// Result URLs: what is checked is what is stored.

#[tokio::test]
async fn result_urls_that_parsers_read_differently_are_refused() {
    let app = TestApp::builder().webhook_only().workers(1).spawn().await;
    let user = app.create_user(1000).await;
    let id = app.submit_ok(&user, &sora("a slow lighthouse [[sim:never]]")).await;
    app.wait_for_status(&user, &id, "submitted", WAIT).await;
    let task = app.sim_task(&id).await;
    let url = task.callback_url.clone().unwrap();
    for tricky in [
        // files.kie.ai to a WHATWG parser, evil.com to others.
        "https://files.kie.ai\\@evil.com/x.mp4",
        // Header injection into whoever serves or logs the URL.
        "https://files.kie.ai/x.mp4\r\nSet-Cookie: session=evil",
        // A host that is only files.kie.ai once decoded.
        "https://files%2Ekie.ai/x.mp4",
        "https://FILES.kie.ai/x.mp4",
        "https://files.kie.ai/x\t.mp4",
    ] {
        assert_eq!(
            app.post_json(&url, &kie_success(&task.task_id, tricky)).await,
            400,
            "{tricky:?}"
        );
    }
    assert_eq!(app.admin_generation(&id).await["status"], "submitted");
    assert!(app.source_urls(&id).await.is_empty());
}

#[tokio::test]
async fn input_images_cannot_point_inside_a_network() {
    let app = TestApp::spawn().await;
    let user = app.create_user(1000).await;
    for inside in [
        "https://127.0.0.1/cat.png",
        "https://10.1.2.3/cat.png",
        "https://169.254.169.254/latest/meta-data/iam",
        "https://[::1]/cat.png",
        "https://[fd00::1]/cat.png",
        "https://2130706433/cat.png",
        "https://localhost/cat.png",
        "https://admin.localhost/cat.png",
        "https://metadata.google.internal/computeMetadata/v1/",
        "https://intranet/cat.png",
        "https://img.example.com:8443/cat.png",
        "https://img.example.com:22/cat.png",
        "http://img.example.com/cat.png",
    ] {
        let body =
            json!({"model": "kling-v1-6-std", "mode": "image2video", "image_urls": [inside]});
        let response = app.submit(&user, &body).await;
        assert_eq!(response.status(), 422, "{inside}");
        let problem: Value = response.json().await.unwrap();
        assert_eq!(problem["errors"][0]["field"], "image_urls[0]", "{inside}: {problem}");
    }
    let count: i64 =
        sqlx::query_scalar("SELECT count(*) FROM generations").fetch_one(&app.pool).await.unwrap();
    assert_eq!(count, 0);
    assert_eq!(app.balance(&user).await, 1000);
}

// ---------------------------------------------------------------------------------------------
// Postpaid jobs cannot overdraw.

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_hundred_parallel_postpaid_submits_promise_no_more_than_the_balance() {
    const AFFORDABLE: i64 = 5;
    let mut app = TestApp::builder()
        .env("GENGATE__LIMITS__RATE_LIMIT_PER_SECOND", "0")
        .env("GENGATE__DATABASE__MAX_CONNECTIONS", "16")
        .spawn()
        .await;
    let response = app.admin_post("/admin/users", json!({"max_in_flight": 1000})).await;
    let user_id = response.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned();
    let key: Value = app
        .admin_post(&format!("/admin/users/{user_id}/api-keys"), json!({}))
        .await
        .json()
        .await
        .unwrap();
    let grant = json!({"source": "system_add", "amount": AFFORDABLE * POSTPAID_COST});
    assert_eq!(
        app.admin_post(&format!("/admin/users/{user_id}/grants"), grant).await.status(),
        201
    );
    let user = TestUser { id: user_id, key: key["key"].as_str().unwrap().to_owned() };

    // No worker runs yet: every accepted job stays in flight, holding its price.
    let app_ref = Arc::new(app);
    let submits = (0..200).map(|n| {
        let app = app_ref.clone();
        let user = user.clone();
        tokio::spawn(async move {
            let fate = if n % 2 == 0 { "" } else { " [[sim:fail]]" };
            let body = json!({"model": "kling-v1-6-gateway", "mode": "text2video",
                              "prompt": format!("job {n}{fate}")});
            let response = app.submit(&user, &body).await;
            let status = response.status();
            (n, status, response.json::<Value>().await.unwrap())
        })
    });
    let answers: Vec<(usize, StatusCode, Value)> =
        join_all(submits).await.into_iter().map(Result::unwrap).collect();
    let accepted: Vec<&(usize, StatusCode, Value)> =
        answers.iter().filter(|(_, s, _)| *s == StatusCode::ACCEPTED).collect();
    assert_eq!(
        i64::try_from(accepted.len()).unwrap(),
        AFFORDABLE,
        "exactly what the balance covers"
    );
    for (_, status, body) in answers.iter().filter(|(_, s, _)| *s != StatusCode::ACCEPTED) {
        assert_eq!(*status, StatusCode::PAYMENT_REQUIRED, "{body}");
        assert_eq!(body["code"], "insufficient_credits");
        assert_eq!(body["available"], 0, "{body}");
    }
    app = Arc::try_unwrap(app_ref).expect("submits are done");
    let held = app.credits_view(&user).await;
    assert_eq!(held["balance"], AFFORDABLE * POSTPAID_COST, "nothing is charged yet");
    assert_eq!(held["held"], AFFORDABLE * POSTPAID_COST);
    assert_eq!(held["available"], 0);
    // A prepaid job cannot take the held credits either.
    assert_eq!(app.submit(&user, &kling("a cat")).await.status(), 402);
    reconciled_by_gengatectl(&app).await;

    // The jobs run: successes are charged (consuming their holds), failures release theirs.
    app.start_worker().await;
    let ids: Vec<String> =
        accepted.iter().map(|(_, _, body)| body["id"].as_str().unwrap().to_owned()).collect();
    let mut succeeded = 0;
    for ((n, _, _), id) in accepted.iter().zip(&ids) {
        let ending = if n % 2 == 0 { "completed" } else { "failed" };
        let view = app.wait_for_status(&user, id, ending, WAIT).await;
        if ending == "completed" {
            succeeded += 1;
            assert_eq!(view["charged"], POSTPAID_COST);
        } else {
            assert_eq!(view["charged"], 0);
        }
    }
    let after = app.credits_view(&user).await;
    assert_eq!(after["balance"], (AFFORDABLE - succeeded) * POSTPAID_COST);
    assert_eq!(after["held"], 0);
    assert_eq!(after["debt"], 0, "no postpaid success ended in debt");
    reconciled_by_gengatectl(&app).await;
}

// ---------------------------------------------------------------------------------------------
// Bad input never reaches the database; bad provider text is stored clean.

#[tokio::test]
async fn control_characters_in_request_strings_are_refused_before_the_database() {
    let app = TestApp::spawn().await;
    let user = app.create_user(1000).await;
    let cases = [
        (json!({"model": "sora-2", "mode": "text2video", "prompt": "a\u{0}cat"}), "prompt"),
        (
            json!({"model": "sora-2", "mode": "text2video", "prompt": "x", "negative_prompt": "\u{0}"}),
            "negative_prompt",
        ),
        (
            json!({"model": "sora-2", "mode": "text2video", "prompt": "x", "metadata": {"tag": "a\u{0}"}}),
            "metadata.tag",
        ),
        (
            json!({"model": "sora-2", "mode": "text2video", "prompt": "x", "metadata": {"k\u{0}": 1}}),
            "metadata.k\u{0}",
        ),
        (json!({"model": "sora-2\u{0}", "mode": "text2video", "prompt": "x"}), "model"),
        (json!({"model": "sora-2", "mode": "text2video", "prompt": "bell\u{7}"}), "prompt"),
    ];
    for (body, field) in cases {
        let response = app.submit(&user, &body).await;
        assert_eq!(response.status(), 422, "{body}");
        let problem: Value = response.json().await.unwrap();
        assert_eq!(problem["code"], "validation_failed");
        assert_eq!(problem["errors"][0]["field"], field, "{problem}");
    }
    // The operator side too.
    let response = app.admin_post("/admin/users", json!({"name": "eve\u{0}"})).await;
    assert_eq!(response.status(), 422);
    let response = app
        .http
        .post(format!("{}/api/generation/handle-failure", app.api_url))
        .bearer_auth(INTERNAL_TOKEN)
        .json(&json!({"generation_id": uuid::Uuid::now_v7(), "reason": "x\u{0}"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 422);
    let count: i64 =
        sqlx::query_scalar("SELECT count(*) FROM generations").fetch_one(&app.pool).await.unwrap();
    assert_eq!(count, 0);
    assert_eq!(app.balance(&user).await, 1000);
}

#[tokio::test]
async fn a_providers_failure_text_with_control_characters_is_stored_clean() {
    let app = TestApp::builder().workers(1).spawn().await;
    let user = app.create_user(1000).await;
    let id = app.submit_ok(&user, &sora("doomed [[sim:fail]] [[sim:dirty-failure]]")).await;
    let failed = app.wait_for_status(&user, &id, "failed", WAIT).await;
    assert_eq!(failed["failure"]["code"], "generation_failed");
    assert!(!failed["failure"]["message"].as_str().unwrap().contains("forged"));
    let generation = app.admin_generation(&id).await;
    let failure = events(&generation).into_iter().find(|e| e["to_status"] == "failed").unwrap();
    assert_eq!(failure["detail"]["message"], outside_text(DIRTY_FAILURE_MESSAGE));
    let dead: i64 = app.ctl_json(&["dlq", "stats", "--json"]).await["total"].as_i64().unwrap_or(0);
    assert_eq!(dead, 0, "nothing dead-lettered");
    assert_eq!(app.balance(&user).await, 1000);
    reconciled_by_gengatectl(&app).await;
}

// ---------------------------------------------------------------------------------------------
// What clients see.

#[tokio::test]
async fn clients_see_their_own_request_and_gengates_words_never_internals() {
    let app = TestApp::builder().workers(1).spawn().await;
    let user = app.create_user(1000).await;
    let body = json!({"model": "kling-v1-6-pro", "mode": "text2video", "prompt": "a cat",
                      "sub_type": "anime_video", "metadata": {"order": 7}});
    let id = app.submit_ok(&user, &body).await;
    let view: Value =
        app.user_get(&user, &format!("/v1/generations/{id}")).await.json().await.unwrap();
    assert_eq!(
        view["params"],
        json!({"prompt": "a cat", "duration": 5, "aspect_ratio": "16:9", "sub_type": "anime_video",
               "metadata": {"order": 7}}),
        "the client's request after defaults, nothing else"
    );
    // Operators see what was stored: the built prompt and the adapter's options.
    let stored = app.admin_generation(&id).await["params"].clone();
    assert!(stored["prompt"].as_str().unwrap().starts_with("anime style"));
    assert_eq!(stored["provider_options"]["mode"], "pro");
    assert!(stored["expected_units"].is_number());

    let doomed = app.submit_ok(&user, &sora("doomed [[sim:fail]]")).await;
    let failed = app.wait_for_status(&user, &doomed, "failed", WAIT).await;
    assert_eq!(
        failed["failure"],
        json!({"code": "generation_failed", "message": "the provider could not generate this request"})
    );
    let list: Value = app.user_get(&user, "/v1/generations").await.json().await.unwrap();
    let text = list.to_string();
    assert!(!text.contains(FAILURE_MESSAGE) && !text.contains("provider_options"), "{text}");
    assert!(!text.contains("anime style"), "templates are the operator's: {text}");
}

// ---------------------------------------------------------------------------------------------
// Exposure and limits.

#[tokio::test]
async fn metrics_and_if_configured_the_admin_api_live_on_the_operations_listener() {
    let app = TestApp::builder().env("GENGATE__API__ADMIN_ON_OPS_LISTENER", "true").spawn().await;
    assert_eq!(app.get("/metrics").await.status(), 404);
    // Served, with a 200, on the operations listener (api_metrics asserts it).
    app.api_metrics().await;

    let public = app.admin_post("/admin/users", json!({})).await;
    assert_eq!(public.status(), 404, "the admin API is not on the public listener");
    let failure_report = app
        .http
        .post(format!("{}/api/generation/handle-failure", app.api_url))
        .bearer_auth(INTERNAL_TOKEN)
        .json(&json!({"generation_id": uuid::Uuid::now_v7(), "reason": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(failure_report.status(), 404);
    let ops = app
        .http
        .post(format!("{}/admin/users", app.ops_url))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(ops.status(), 201);
}

#[tokio::test]
async fn the_api_refuses_to_start_with_a_short_admin_or_internal_token() {
    let app = TestApp::spawn().await;
    for key in ["GENGATE__API__ADMIN_TOKEN", "GENGATE__API__INTERNAL_TOKEN"] {
        // Refused: a 7-character token.
        let stderr = app.api_refusing_to_start(&[(key, "hunter2")]).await;
        assert!(stderr.contains("at least 32 characters"), "{key}: {stderr}");
    }
}

#[tokio::test]
async fn guessing_credentials_is_throttled_per_address_and_valid_traffic_is_not() {
    let app = TestApp::builder()
        .webhook_only()
        .workers(1)
        .env("GENGATE__LIMITS__AUTH_FAILURE_BURST", "5")
        .env("GENGATE__LIMITS__AUTH_FAILURES_PER_MINUTE", "6")
        .spawn()
        .await;
    let user = app.create_user(1000).await;
    let id = app.submit_ok(&user, &sora("a slow lighthouse [[sim:never]]")).await;
    app.wait_for_status(&user, &id, "submitted", WAIT).await;
    let task = app.sim_task(&id).await;
    let callback_url = task.callback_url.clone().unwrap();

    // Five wrong keys are answered 401…
    let wrong_key = format!("gg_{}_{}", "Z".repeat(12), "z".repeat(40));
    let credits_url = format!("{}/v1/credits", app.api_url);
    for attempt in 0..5 {
        let response = app.http.get(&credits_url).bearer_auth(&wrong_key).send().await.unwrap();
        assert_eq!(response.status(), 401, "attempt {attempt}");
    }
    // …then this address is answered 429 with Retry-After, whatever it guesses.
    let response = app.http.get(&credits_url).bearer_auth(&wrong_key).send().await.unwrap();
    assert_eq!(response.status(), 429);
    let retry_after: u64 = response.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=10).contains(&retry_after), "Retry-After {retry_after}");
    let problem: Value = response.json().await.unwrap();
    assert_eq!(problem["code"], "rate_limited");
    let wrong_admin = app
        .http
        .post(format!("{}/admin/users", app.api_url))
        .bearer_auth("wrong-admin-token-wrong-admin-token")
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong_admin.status(), 429);
    let wrong_token = callback_url.replace("token=", "token=0");
    assert_eq!(app.post_json(&wrong_token, &kie_failure(&task.task_id)).await, 429);

    // Valid traffic from the same address is not slowed: the user's key (in use, so in memory),
    // the admin token, and the provider's webhook with its token.
    assert_eq!(app.user_get(&user, "/v1/credits").await.status(), 200);
    assert_eq!(app.admin_post("/admin/users", json!({})).await.status(), 201);
    assert_eq!(app.post_json(&callback_url, &kie_failure(&task.task_id)).await, 200);
    assert_eq!(app.admin_generation(&id).await["status"], "submitted");
}

#[tokio::test]
async fn past_the_in_flight_cap_requests_are_shed_with_503_at_once() {
    let app = TestApp::builder().env("GENGATE__API__MAX_IN_FLIGHT_REQUESTS", "1").spawn().await;
    let user = app.create_user(10).await;
    assert_eq!(app.user_get(&user, "/v1/credits").await.status(), 200);

    // One request whose body never comes holds the only slot.
    let address = app.api_url.trim_start_matches("http://").to_owned();
    let hold = || async {
        let mut held = tokio::net::TcpStream::connect(&address).await.unwrap();
        let head = format!(
            "POST /api/generation/webhook?generation_id={}&token=x HTTP/1.1\r\nHost: {address}\r\n\
             Content-Type: application/json\r\nContent-Length: 100\r\n\r\n",
            uuid::Uuid::now_v7()
        );
        held.write_all(head.as_bytes()).await.unwrap();
        held
    };
    let mut held = hold().await;
    let deadline = tokio::time::Instant::now() + WAIT;
    let shed = loop {
        let response = app.user_get(&user, "/v1/credits").await;
        if response.status() == 503 {
            break response;
        }
        // The held request may have come in while this one had the slot, and been shed itself
        // (answered, or closed): hold the slot again.
        let mut byte = [0u8; 1];
        if !matches!(held.try_read(&mut byte), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
        {
            held = hold().await;
        }
        assert!(tokio::time::Instant::now() < deadline, "no request was shed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(shed.headers()["retry-after"], "1");
    let problem: Value = shed.json().await.unwrap();
    assert_eq!(problem["code"], "overloaded");
    // Operators can still see what is going on.
    assert!(app.api_metrics().await.contains("gengate_requests_shed_total"));

    drop(held);
    eventually("the slot to be free again", WAIT, || async {
        (app.user_get(&user, "/v1/credits").await.status() == 200).then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_revoked_api_key_stops_working_in_every_api_process() {
    let app = TestApp::builder().env("GENGATE__API__KEY_USAGE_FLUSH_MS", "200").spawn().await;
    let user = app.create_user(10).await;
    let (_other_api, other_url) = app.start_another_api("api2").await;
    let get = |base: &str, key: &str| {
        app.http.get(format!("{base}/v1/credits")).bearer_auth(key.to_owned()).send()
    };
    // Both processes have checked the key, so both hold it in memory.
    for base in [&app.api_url, &other_url] {
        assert_eq!(get(base, &user.key).await.unwrap().status(), 200, "{base}");
    }
    let keys: Value =
        app.admin_get(&format!("/admin/users/{}/api-keys", user.id)).await.json().await.unwrap();
    let key_id = keys["data"][0]["id"].as_str().unwrap().to_owned();
    // Its use was recorded, without a write per request.
    eventually("last_used_at to be recorded", WAIT, || async {
        let keys: Value = app
            .admin_get(&format!("/admin/users/{}/api-keys", user.id))
            .await
            .json()
            .await
            .unwrap();
        keys["data"][0]["last_used_at"].is_string().then_some(())
    })
    .await;

    let revoked = app
        .http
        .delete(format!("{}/admin/users/{}/api-keys/{key_id}", app.api_url, user.id))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(revoked.status(), 200);
    let revoked: Value = revoked.json().await.unwrap();
    assert!(revoked["revoked_at"].is_string());
    assert!(revoked.get("key").is_none() && revoked.get("key_hash").is_none());
    assert_eq!(get(&app.api_url, &user.key).await.unwrap().status(), 401, "at once, here");
    // The other process hears of it by NOTIFY (its memory would keep the key for a minute).
    eventually("the other API process to refuse the key", Duration::from_secs(5), || async {
        (get(&other_url, &user.key).await.unwrap().status() == 401).then_some(())
    })
    .await;

    // The operator's CLI revokes the same way.
    let second: Value = app
        .admin_post(&format!("/admin/users/{}/api-keys", user.id), json!({}))
        .await
        .json()
        .await
        .unwrap();
    let second_key = second["key"].as_str().unwrap();
    assert_eq!(get(&other_url, second_key).await.unwrap().status(), 200);
    let id = second["id"].as_str().unwrap();
    let ctl = app.ctl_json(&["keys", "revoke", id, "--json"]).await;
    assert!(ctl["revoked_at"].is_string(), "{ctl}");
    eventually("the key revoked by gengatectl to be refused", Duration::from_secs(5), || async {
        (get(&other_url, second_key).await.unwrap().status() == 401).then_some(())
    })
    .await;
    assert_eq!(get(&app.api_url, second_key).await.unwrap().status(), 401);

    // Unknown keys and other users' keys are not found.
    let unknown = app
        .http
        .delete(format!(
            "{}/admin/users/{}/api-keys/{}",
            app.api_url,
            user.id,
            uuid::Uuid::now_v7()
        ))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 404);
}
