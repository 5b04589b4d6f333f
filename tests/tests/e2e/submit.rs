//! Submitting generations: pricing, validation, idempotency, overdraft, the outbox, cancel.

use std::collections::HashMap;
use std::time::Duration;

use futures_util::future::join_all;
use gengate_shared::queue::WorkQueue;
use gengate_tests::harness::eventually;
use gengate_tests::{TestApp, TestUser};
use serde_json::{Value, json};

/// Jobs on `gengate.jobs`, counted by generation id (waits until `expected` distinct ids arrived,
/// then makes sure nothing more is on the way).
async fn jobs_by_generation(app: &TestApp, expected: usize) -> HashMap<String, usize> {
    let queue = app.broker.topology().queue(WorkQueue::Jobs);
    let mut counts: HashMap<String, usize> = HashMap::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while counts.len() < expected {
        assert!(
            tokio::time::Instant::now() < deadline,
            "only {} of {expected} jobs were queued",
            counts.len()
        );
        for message in app.broker.drain(&queue).await {
            assert_eq!(message["kind"], "job.submit");
            *counts.entry(message["generation_id"].as_str().unwrap().to_owned()).or_default() += 1;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Everything in the outbox is sent: no more messages can be coming.
    let unsent: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox WHERE sent_at IS NULL")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(unsent, 0);
    for message in app.broker.drain(&queue).await {
        *counts.entry(message["generation_id"].as_str().unwrap().to_owned()).or_default() += 1;
    }
    counts
}

async fn count(app: &TestApp, table: &str) -> i64 {
    let sql = format!("SELECT count(*) FROM {table}");
    sqlx::query_scalar(sqlx::AssertSqlSafe(sql)).fetch_one(&app.pool).await.unwrap()
}

#[tokio::test]
async fn accepted_jobs_are_priced_charged_and_queued() {
    let app = TestApp::spawn().await;
    let user = app.create_user(10_000).await;
    let image = "https://img.example.com/cat.png";
    // Expected prices worked out by hand from the formula:
    // base × ⌈duration/5⌉ × aspect (16:9 1.2, 1:1 1.0, 21:9 1.3) × mode (t2v 1.0, i2v 1.1,
    // omni 1.2, multi 1.3) × quality, rounded up.
    let cases = [
        (
            json!({"model": "kling-v1-6-pro", "mode": "text2video", "prompt": "a cat", "duration": 5, "aspect_ratio": "16:9"}),
            42,
        ),
        (
            json!({"model": "kling-v1-6-std", "mode": "image2video", "duration": 10, "aspect_ratio": "1:1", "image_urls": [image]}),
            44,
        ),
        (
            json!({"model": "kling-v1-6-std", "mode": "multi-image2video", "prompt": "two cats", "duration": 5, "aspect_ratio": "9:16", "image_urls": [image, image]}),
            32,
        ),
        (
            json!({"model": "kling-video-o1", "mode": "omni-video", "prompt": "a cat", "duration": 7, "aspect_ratio": "1:1"}),
            120,
        ),
        (
            json!({"model": "sora-2", "mode": "text2video", "prompt": "a cat", "duration": 15, "aspect_ratio": "9:16"}),
            108,
        ),
        (
            json!({"model": "sora-2-pro", "mode": "image2video", "prompt": "a cat", "duration": 10, "aspect_ratio": "16:9", "quality": "high", "image_urls": [image]}),
            317,
        ),
        (
            json!({"model": "wan-2-6", "mode": "text2video", "prompt": "a cat", "duration": 15, "aspect_ratio": "16:9", "quality": "1080p"}),
            135,
        ),
        (
            json!({"model": "nano-banana", "mode": "text2image", "prompt": "a cat", "aspect_ratio": "4:3"}),
            4,
        ),
    ];
    let mut spent = 0;
    let mut ids = Vec::new();
    for (body, cost) in &cases {
        let response = app.submit(&user, body).await;
        assert_eq!(response.status(), 202, "{body}: {}", response.text().await.unwrap());
        let generation: Value = response.json().await.unwrap();
        assert_eq!(generation["cost"], *cost, "{body}");
        assert_eq!(generation["status"], "queued");
        assert_eq!(generation["charged"], *cost);
        assert_eq!(generation["model"], body["model"]);
        assert_eq!(generation["result"], Value::Null);
        spent += cost;
        ids.push(generation["id"].as_str().unwrap().to_owned());
    }
    assert_eq!(app.balance(&user).await, 10_000 - spent);

    let queued = jobs_by_generation(&app, ids.len()).await;
    for id in &ids {
        assert_eq!(queued.get(id), Some(&1), "job {id} queued exactly once");
    }
    // A client reads its generation back; the prompt template and defaults are in the params.
    let fetched: Value =
        app.user_get(&user, &format!("/v1/generations/{}", ids[0])).await.json().await.unwrap();
    assert_eq!(fetched["params"]["prompt"], "a cat");
    assert_eq!(fetched["params"]["duration"], 5);
    assert_eq!(fetched["billing"], "prepaid");
    app.assert_reconciled().await;
}

#[tokio::test]
async fn each_invalid_request_names_its_field_and_changes_nothing() {
    let app = TestApp::spawn().await;
    let user = app.create_user(1000).await;
    let image = "https://img.example.com/cat.png";
    let cases: Vec<(Value, &[&str])> = vec![
        (json!({"mode": "text2video", "prompt": "x"}), &["model"]),
        (json!({"model": "veo-9", "mode": "text2video", "prompt": "x"}), &["model"]),
        (json!({"model": "sora-2", "prompt": "x"}), &["mode"]),
        (json!({"model": "sora-2", "mode": "multi-image2video", "prompt": "x"}), &["mode"]),
        (json!({"model": "sora-2", "mode": "text2video"}), &["prompt"]),
        (json!({"model": "sora-2", "mode": "text2video", "prompt": "   "}), &["prompt"]),
        (json!({"model": "sora-2", "mode": "text2video", "prompt": "x".repeat(5001)}), &["prompt"]),
        (
            json!({"model": "sora-2", "mode": "text2video", "prompt": "x", "duration": 5}),
            &["duration"],
        ),
        (
            json!({"model": "sora-2", "mode": "text2video", "prompt": "x", "duration": "10"}),
            &["duration"],
        ),
        (
            json!({"model": "sora-2", "mode": "text2video", "prompt": "x", "aspect_ratio": "1:1"}),
            &["aspect_ratio"],
        ),
        (
            json!({"model": "sora-2", "mode": "text2video", "prompt": "x", "quality": "high"}),
            &["quality"],
        ),
        (
            json!({"model": "sora-2-pro", "mode": "text2video", "prompt": "x", "quality": "ultra"}),
            &["quality"],
        ),
        (json!({"model": "sora-2", "mode": "image2video", "prompt": "x"}), &["image_urls"]),
        (
            json!({"model": "sora-2", "mode": "image2video", "image_urls": ["http://img.example.com/a.png"]}),
            &["image_urls[0]"],
        ),
        (
            json!({"model": "sora-2", "mode": "image2video", "image_urls": ["https://u:p@img.example.com/a.png"]}),
            &["image_urls[0]"],
        ),
        (
            json!({"model": "kling-v1-6-std", "mode": "multi-image2video", "prompt": "x", "image_urls": [image]}),
            &["image_urls"],
        ),
        (
            json!({"model": "kling-v1-6-std", "mode": "text2video", "prompt": "x", "image_urls": [image]}),
            &["image_urls"],
        ),
        (
            json!({"model": "sora-2", "mode": "text2video", "prompt": "x", "sub_type": "noir"}),
            &["sub_type"],
        ),
        (json!({"model": "sora-2", "mode": "text2video", "prompt": "x", "seed": 7}), &["seed"]),
        (
            json!({"model": "sora-2", "mode": "text2video", "prompt": "x", "metadata": "tag"}),
            &["metadata"],
        ),
        (
            json!({"model": "sora-2", "mode": "text2video", "prompt": "x", "negative_prompt": "n".repeat(2501)}),
            &["negative_prompt"],
        ),
        (
            json!({"model": "sora-2", "mode": "text2video", "duration": 5, "aspect_ratio": "1:1", "n": 2}),
            &["n", "prompt", "duration", "aspect_ratio"],
        ),
    ];
    for (body, fields) in &cases {
        let response = app.submit(&user, body).await;
        assert_eq!(response.status(), 422, "{body}");
        let problem: Value = response.json().await.unwrap();
        assert_eq!(problem["code"], "validation_failed");
        let mut named: Vec<&str> = problem["errors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["field"].as_str().unwrap())
            .collect();
        named.sort();
        let mut expected = fields.to_vec();
        expected.sort();
        assert_eq!(named, expected, "{body}");
    }
    // A bad Idempotency-Key is a validation failure too.
    let response = app
        .http
        .post(format!("{}/v1/generations", app.api_url))
        .bearer_auth(&user.key)
        .header("Idempotency-Key", "")
        .json(&json!({"model": "sora-2", "mode": "text2video", "prompt": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 422);
    assert_eq!(response.json::<Value>().await.unwrap()["errors"][0]["field"], "Idempotency-Key");

    for table in ["generations", "outbox", "generation_events"] {
        assert_eq!(count(&app, table).await, 0, "{table}");
    }
    assert_eq!(app.balance(&user).await, 1000);
}

#[tokio::test]
async fn wrong_content_type_oversized_bodies_and_malformed_json_are_refused() {
    let app = TestApp::builder().env("GENGATE__API__BODY_LIMIT_BYTES", "2048").spawn().await;
    let user = app.create_user(1000).await;
    let url = format!("{}/v1/generations", app.api_url);
    let text =
        app.http.post(&url).bearer_auth(&user.key).body("model=sora-2").send().await.unwrap();
    assert_eq!(text.status(), 415);
    assert_eq!(text.json::<Value>().await.unwrap()["code"], "unsupported_media_type");
    let big = json!({"model": "sora-2", "mode": "text2video", "prompt": "x".repeat(4096)});
    let response = app.submit(&user, &big).await;
    assert_eq!(response.status(), 413);
    assert_eq!(response.json::<Value>().await.unwrap()["code"], "payload_too_large");
    let broken = app
        .http
        .post(&url)
        .bearer_auth(&user.key)
        .header("content-type", "application/json")
        .body("{\"model\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(broken.status(), 400);
    assert_eq!(broken.json::<Value>().await.unwrap()["code"], "malformed_json");
    assert_eq!(count(&app, "generations").await, 0);
}

#[tokio::test]
async fn insufficient_credits_answer_402_with_balance_and_cost_and_queue_nothing() {
    let app = TestApp::spawn().await;
    let user = app.create_user(100).await;
    let response = app
        .submit(&user, &json!({"model": "sora-2-pro", "mode": "text2video", "prompt": "x", "duration": 15, "quality": "high"}))
        .await;
    assert_eq!(response.status(), 402);
    let problem: Value = response.json().await.unwrap();
    assert_eq!(problem["code"], "insufficient_credits");
    assert_eq!(problem["balance"], 100);
    assert_eq!(problem["cost"], 432, "80 × 3 × 1.2 × 1.0 × 1.5");
    for table in ["generations", "outbox", "generation_events"] {
        assert_eq!(count(&app, table).await, 0, "{table}");
    }
    assert!(app.broker.drain(&app.broker.topology().queue(WorkQueue::Jobs)).await.is_empty());
    assert_eq!(app.balance(&user).await, 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_concurrent_submits_with_one_idempotency_key_make_one_generation() {
    let app = TestApp::builder().env("GENGATE__LIMITS__RATE_LIMIT_PER_SECOND", "0").spawn().await;
    let user = app.create_user(1000).await;
    let body = json!({"model": "kling-v1-6-std", "mode": "text2video", "prompt": "one cat"});
    let responses = join_all((0..50).map(|_| {
        app.http
            .post(format!("{}/v1/generations", app.api_url))
            .bearer_auth(&user.key)
            .header("Idempotency-Key", "order-1234")
            .json(&body)
            .send()
    }))
    .await;
    let mut bodies = Vec::new();
    let mut replayed = 0;
    for response in responses {
        let response = response.unwrap();
        assert_eq!(response.status(), 202);
        if response.headers().get("idempotent-replayed").is_some_and(|v| v == "true") {
            replayed += 1;
        }
        bodies.push(response.json::<Value>().await.unwrap());
    }
    assert_eq!(replayed, 49, "all but the first are replays");
    assert!(bodies.iter().all(|b| *b == bodies[0]), "50 identical bodies");
    assert_eq!(count(&app, "generations").await, 1);
    assert_eq!(app.balance(&user).await, 1000 - 24);
    assert_eq!(jobs_by_generation(&app, 1).await.values().sum::<usize>(), 1);

    // Spelled-out defaults are the same request; a different request is a conflict.
    let same = app
        .http
        .post(format!("{}/v1/generations", app.api_url))
        .bearer_auth(&user.key)
        .header("Idempotency-Key", "order-1234")
        .json(&json!({"model": "kling-v1-6-std", "mode": "text2video", "prompt": "one cat", "duration": 5, "aspect_ratio": "16:9"}))
        .send()
        .await
        .unwrap();
    assert_eq!(same.status(), 202);
    assert_eq!(same.json::<Value>().await.unwrap(), bodies[0]);
    let conflict = app
        .http
        .post(format!("{}/v1/generations", app.api_url))
        .bearer_auth(&user.key)
        .header("Idempotency-Key", "order-1234")
        .json(&json!({"model": "kling-v1-6-std", "mode": "text2video", "prompt": "two cats"}))
        .send()
        .await
        .unwrap();
    assert_eq!(conflict.status(), 409);
    assert_eq!(conflict.json::<Value>().await.unwrap()["code"], "idempotency_conflict");
    // Keys are per user: another user may use the same key.
    let other = app.create_user(100).await;
    let theirs = app
        .http
        .post(format!("{}/v1/generations", app.api_url))
        .bearer_auth(&other.key)
        .header("Idempotency-Key", "order-1234")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(theirs.status(), 202);
    assert_ne!(theirs.json::<Value>().await.unwrap()["id"], bodies[0]["id"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_hundred_concurrent_submits_against_credits_for_forty_accept_exactly_forty() {
    let app = TestApp::builder()
        .env("GENGATE__LIMITS__RATE_LIMIT_PER_SECOND", "0")
        .env("GENGATE__LIMITS__DEFAULT_MAX_IN_FLIGHT", "1000")
        .env("GENGATE__DATABASE__MAX_CONNECTIONS", "16")
        // 200 requests at once wait for 16 connections; on a busy machine that takes a while.
        .env("GENGATE__DATABASE__ACQUIRE_TIMEOUT_MS", "60000")
        .spawn()
        .await;
    // kling-v1-6-std text2video 5 s 16:9 costs 24: credits for exactly 40 jobs, in two grants.
    let user = app.create_user(24 * 25).await;
    app.admin_post(
        &format!("/admin/users/{}/grants", user.id),
        json!({"source": "system_add", "amount": 24 * 15}),
    )
    .await;
    let body = json!({"model": "kling-v1-6-std", "mode": "text2video", "prompt": "a cat"});
    let responses = join_all((0..200).map(|_| app.submit(&user, &body))).await;
    let mut accepted = Vec::new();
    for response in responses {
        match response.status().as_u16() {
            202 => accepted
                .push(response.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned()),
            402 => {
                assert_eq!(response.json::<Value>().await.unwrap()["code"], "insufficient_credits")
            }
            other => panic!("unexpected {other}: {}", response.text().await.unwrap()),
        }
    }
    assert_eq!(accepted.len(), 40);
    assert_eq!(app.balance(&user).await, 0);
    assert_eq!(count(&app, "generations").await, 40);
    app.assert_reconciled().await;
    let queued = jobs_by_generation(&app, 40).await;
    assert!(accepted.iter().all(|id| queued.get(id) == Some(&1)));
}

#[tokio::test]
async fn submits_succeed_while_rabbitmq_is_unreachable_and_are_queued_once_when_it_returns() {
    let mut app = TestApp::builder()
        .env("GENGATE__AMQP__URL", "amqp://guest:guest@127.0.0.1:1/%2f")
        .without_waiting_for_ready()
        .spawn()
        .await;
    let user = app.create_user(1000).await;
    let mut ids = Vec::new();
    for i in 0..10 {
        let response = app.submit(&user, &json!({"model": "kling-v1-6-std", "mode": "text2video", "prompt": format!("cat {i}")})).await;
        assert_eq!(response.status(), 202);
        ids.push(response.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned());
    }
    let unsent: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox WHERE sent_at IS NULL")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(unsent, 10, "the jobs wait in the outbox");

    // The broker is back (the API restarts with a reachable broker).
    app.api.as_mut().unwrap().terminate().await;
    app.set_env("GENGATE__AMQP__URL", &gengate_tests::harness::broker::amqp_url());
    app.start_api().await;
    app.wait_ready().await;
    let queued = jobs_by_generation(&app, 10).await;
    assert_eq!(queued.len(), 10);
    for id in &ids {
        assert_eq!(queued.get(id), Some(&1), "job {id} queued exactly once");
    }
}

/// The raw body of another cancel, to count its members (a JSON parser keeps only one of two
/// members of the same name).
async fn again_text(app: &TestApp, user: &TestUser, path: &str) -> String {
    app.user_post(user, path, &json!({})).await.text().await.unwrap()
}

#[tokio::test]
async fn cancel_refunds_a_queued_job_once_and_only_for_its_owner() {
    let app = TestApp::spawn().await;
    let user = app.create_user(100).await;
    let stranger = app.create_user(100).await;
    let generation: Value = app
        .submit(&user, &json!({"model": "kling-v1-6-std", "mode": "text2video", "prompt": "a cat"}))
        .await
        .json()
        .await
        .unwrap();
    let id = generation["id"].as_str().unwrap();
    assert_eq!(app.balance(&user).await, 76);

    let path = format!("/v1/generations/{id}/cancel");
    let theirs = app.user_post(&stranger, &path, &json!({})).await;
    assert_eq!(theirs.status(), 404, "another user's generation does not exist for them");
    assert_eq!(app.user_get(&stranger, &format!("/v1/generations/{id}")).await.status(), 404);

    let canceled = app.user_post(&user, &path, &json!({})).await;
    assert_eq!(canceled.status(), 200);
    let canceled: Value = canceled.json().await.unwrap();
    assert_eq!(canceled["status"], "canceled");
    assert_eq!(canceled["charged"], 0);
    assert!(canceled["completed_at"].is_string());
    assert_eq!(app.balance(&user).await, 100);

    let again = app.user_post(&user, &path, &json!({})).await;
    assert_eq!(again.status(), 409);
    let problem: Value = again.json().await.unwrap();
    assert_eq!(problem["code"], "not_cancelable");
    // RFC 9457's `status` is the HTTP status; the generation's is an extension of its own.
    assert_eq!(problem["status"], 409);
    assert_eq!(problem["generation_status"], "canceled");
    let raw = again_text(&app, &user, &path).await;
    assert_eq!(raw.matches("\"status\"").count(), 1, "one `status` member: {raw}");
    assert_eq!(app.balance(&user).await, 100, "refunded once");

    // The cancel is queued for the workers (to cancel upstream), and the audit log has it all.
    let events = app.broker.topology().queue(WorkQueue::Events);
    let cancel_event = eventually("the cancel event", Duration::from_secs(10), || async {
        app.broker.drain(&events).await.into_iter().next()
    })
    .await;
    assert_eq!(cancel_event["kind"], "event.canceled");
    assert_eq!(cancel_event["generation_id"], id);
    let admin = app.admin_generation(id).await;
    let causes: Vec<&str> =
        admin["events"].as_array().unwrap().iter().map(|e| e["cause"].as_str().unwrap()).collect();
    assert_eq!(causes, ["submit", "cancel"], "the refused second cancel changed nothing");
    assert_eq!(admin["events"][1]["from_status"], "queued");
    assert_eq!(admin["events"][1]["to_status"], "canceled");
    let ledger_rows = admin["ledger"].as_array().unwrap();
    assert_eq!(ledger_rows.len(), 1);
    assert_eq!(ledger_rows[0]["voided_reason"], "canceled");
    app.assert_reconciled().await;
}

#[tokio::test]
async fn an_explicit_null_is_a_missing_field_and_every_refusal_names_its_field() {
    let app = TestApp::spawn().await;
    let user = app.create_user(1000).await;
    for (body, field) in [
        (json!({"model": "sora-2", "mode": "text2video", "prompt": null}), "prompt"),
        (json!({"model": null, "mode": "text2video", "prompt": "a cat"}), "model"),
        (json!({"model": "sora-2", "mode": null, "prompt": "a cat"}), "mode"),
    ] {
        let response = app.submit(&user, &body).await;
        assert_eq!(response.status(), 422, "{body}");
        let problem: Value = response.json().await.unwrap();
        let errors = problem["errors"].as_array().unwrap();
        assert!(!errors.is_empty(), "{problem}");
        assert!(errors.iter().any(|e| e["field"] == field), "{body}: {problem}");
    }
    assert_eq!(count(&app, "generations").await, 0);
    assert_eq!(app.balance(&user).await, 1000, "nothing charged");
    // Null optional fields take their defaults.
    let body = json!({"model": "sora-2", "mode": "text2video", "prompt": "a cat", "duration": null,
                      "negative_prompt": null, "metadata": null});
    let response = app.submit(&user, &body).await;
    assert_eq!(response.status(), 202);
    let accepted: Value = response.json().await.unwrap();
    assert_eq!(accepted["params"]["duration"], 10);
}

#[tokio::test]
async fn the_in_flight_limit_and_the_rate_limit_answer_429() {
    let app = TestApp::builder()
        .env("GENGATE__LIMITS__DEFAULT_MAX_IN_FLIGHT", "2")
        // One token per 50 s: the bucket cannot refill while the test runs.
        .env("GENGATE__LIMITS__RATE_LIMIT_PER_SECOND", "0.02")
        .env("GENGATE__LIMITS__RATE_LIMIT_BURST", "6")
        .spawn()
        .await;
    let user = app.create_user(1000).await;
    let body = json!({"model": "kling-v1-6-std", "mode": "text2video", "prompt": "a cat"});
    assert_eq!(app.submit(&user, &body).await.status(), 202);
    assert_eq!(app.submit(&user, &body).await.status(), 202);
    let third = app.submit(&user, &body).await;
    assert_eq!(third.status(), 429);
    let problem: Value = third.json().await.unwrap();
    assert_eq!(problem["code"], "too_many_in_flight");
    assert_eq!(problem["limit"], 2);
    assert_eq!(count(&app, "generations").await, 2);
    assert_eq!(app.balance(&user).await, 1000 - 48, "the refused job was not charged");

    // 4 requests used (3 submits, 1 balance); 2 more fit the burst of 6, then the key must slow down.
    for _ in 0..2 {
        assert_ne!(app.user_get(&user, "/v1/credits").await.status(), 429);
    }
    let limited = app.user_get(&user, "/v1/credits").await;
    assert_eq!(limited.status(), 429);
    let retry_after: u64 = limited.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=50).contains(&retry_after), "{retry_after}");
    assert_eq!(limited.json::<Value>().await.unwrap()["code"], "rate_limited");
}

#[tokio::test]
async fn generations_list_newest_first_with_a_status_filter_and_pages() {
    let app = TestApp::spawn().await;
    let user = app.create_user(1000).await;
    let mut ids = Vec::new();
    for i in 0..5 {
        let g: Value = app
            .submit(&user, &json!({"model": "kling-v1-6-std", "mode": "text2video", "prompt": format!("cat {i}")}))
            .await
            .json()
            .await
            .unwrap();
        ids.push(g["id"].as_str().unwrap().to_owned());
    }
    app.user_post(&user, &format!("/v1/generations/{}/cancel", ids[1]), &json!({})).await;

    let first: Value = app.user_get(&user, "/v1/generations?limit=3").await.json().await.unwrap();
    let listed: Vec<&str> =
        first["data"].as_array().unwrap().iter().map(|g| g["id"].as_str().unwrap()).collect();
    assert_eq!(listed, [&ids[4], &ids[3], &ids[2]]);
    let cursor = first["next_cursor"].as_str().unwrap();
    let rest: Value = app
        .user_get(&user, &format!("/v1/generations?limit=3&cursor={cursor}"))
        .await
        .json()
        .await
        .unwrap();
    let listed: Vec<&str> =
        rest["data"].as_array().unwrap().iter().map(|g| g["id"].as_str().unwrap()).collect();
    assert_eq!(listed, [&ids[1], &ids[0]]);
    assert_eq!(rest["next_cursor"], Value::Null);

    let canceled: Value =
        app.user_get(&user, "/v1/generations?status=canceled").await.json().await.unwrap();
    assert_eq!(canceled["data"].as_array().unwrap().len(), 1);
    assert_eq!(canceled["data"][0]["id"], ids[1].as_str());
    assert_eq!(app.user_get(&user, "/v1/generations?status=lost").await.status(), 422);

    let other = app.create_user(0).await;
    let theirs: Value = app.user_get(&other, "/v1/generations").await.json().await.unwrap();
    assert_eq!(theirs["data"], json!([]));
}

#[tokio::test]
async fn the_model_catalogue_lists_models_with_prices() {
    let app = TestApp::spawn().await;
    let catalogue: Value = app.get("/v1/models").await.json().await.unwrap();
    let models = catalogue["data"].as_array().unwrap();
    let names: Vec<&str> = models.iter().map(|m| m["name"].as_str().unwrap()).collect();
    for expected in [
        "kling-v1-6-std",
        "kling-v1-6-pro",
        "kling-video-o1",
        "kling-v1-6-gateway",
        "sora-2",
        "sora-2-pro",
        "wan-2-6",
        "kling-2-6",
        "nano-banana",
    ] {
        assert!(names.contains(&expected), "{expected} in {names:?}");
    }
    let pro = models.iter().find(|m| m["name"] == "kling-v1-6-pro").unwrap();
    assert_eq!(pro["base_price"], 35);
    assert_eq!(pro["provider"], "kling");
    assert_eq!(pro["billing"], "prepaid");
    assert_eq!(pro["default_prices"]["text2video"], 42);
    let gateway = models.iter().find(|m| m["name"] == "kling-v1-6-gateway").unwrap();
    assert_eq!(gateway["billing"], "postpaid");
    assert_eq!(catalogue["version"], "2026-11-01");
}
