//! Webhooks to clients: a job's end is delivered to the URL its request named (or to a default
//! endpoint), signed as Standard Webhooks says (checked by the specification's own verifier),
//! retried with the same `webhook-id`, never sent to a private address unless allowed, stopped by
//! 410, and delivered even when the worker sending it dies; its start (`generation.processing`)
//! only to a request that names it.

use std::collections::BTreeMap;
use std::time::Duration;

use gengate_tests::harness::eventually;
use gengate_tests::harness::receiver::{Received, Receiver, Reply};
use gengate_tests::{TestApp, TestUser};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(60);

fn job(prompt: &str, webhook_url: Option<&str>) -> Value {
    let mut body = json!({"model": "kling-v1-6-std", "mode": "text2video", "prompt": prompt});
    if let Some(url) = webhook_url {
        body["webhook_url"] = json!(url);
    }
    body
}

/// The user's signing secret (`whsec_…`).
async fn secret_of(app: &TestApp, user: &TestUser) -> String {
    let response = app.user_get(user, "/v1/webhooks/secret").await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    body["secret"].as_str().expect("a secret").to_owned()
}

/// Whether the specification's own verifier accepts the delivery under `secret`.
fn verifies(secret: &str, delivery: &Received) -> bool {
    let verifier = standardwebhooks::Webhook::new(secret).expect("a whsec_ secret");
    verifier.verify(&delivery.body, &delivery.headers).is_ok()
}

async fn deliveries_of(app: &TestApp, user: &TestUser, id: &str) -> Vec<Value> {
    let response = app.user_get(user, &format!("/v1/generations/{id}/deliveries")).await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    body["data"].as_array().expect("data").clone()
}

/// Waits until the generation's deliveries have all ended (none pending) and `count` exist.
async fn settled_deliveries(app: &TestApp, user: &TestUser, id: &str, count: usize) -> Vec<Value> {
    eventually(&format!("{count} finished deliveries of {id}"), WAIT, || async {
        let data = deliveries_of(app, user, id).await;
        (data.len() == count && data.iter().all(|d| d["status"] != "pending")).then_some(data)
    })
    .await
}

fn by_event(received: &[Received]) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for delivery in received {
        *counts.entry(delivery.json()["type"].as_str().unwrap().to_owned()).or_default() += 1;
    }
    counts
}

#[tokio::test]
async fn a_completion_is_delivered_once_signed_and_logged() {
    let app = TestApp::builder().workers(1).spawn().await;
    let receiver = Receiver::start().await;
    let user = app.create_user(1_000).await;
    let secret = secret_of(&app, &user).await;
    assert!(secret.starts_with("whsec_"));
    assert_eq!(secret_of(&app, &user).await, secret, "the same secret on every read");

    let id = app.submit_ok(&user, &job("a cat [[sim:ok]]", Some(&receiver.url("/hooks/a")))).await;
    let done = app.wait_for_status(&user, &id, "completed", WAIT).await;
    // The completion, and once the result files are stored, the archive event.
    app.wait_for_archive(&id).await;
    let logged = settled_deliveries(&app, &user, &id, 2).await;
    let received = receiver.wait_for(2, WAIT).await;
    assert_eq!(
        by_event(&received),
        BTreeMap::from([("generation.archived".into(), 1), ("generation.completed".into(), 1)]),
        "each event delivered exactly once"
    );
    let completed = received.iter().find(|d| d.json()["type"] == "generation.completed").unwrap();
    assert_eq!(completed.path, "/hooks/a");
    assert!(verifies(&secret, completed), "the specification's verifier accepts the signature");
    assert!(completed.id().starts_with("msg_"));
    assert_eq!(completed.header("content-type"), "application/json");
    let payload = completed.json();
    assert_eq!(payload["data"]["id"], id);
    assert_eq!(payload["data"]["status"], "completed");
    for field in
        ["cost", "charged", "model", "mode", "params", "billing", "created_at", "completed_at"]
    {
        assert_eq!(
            payload["data"][field], done[field],
            "{field} as GET /v1/generations/{{id}} says"
        );
    }
    assert!(payload["data"]["result"]["videos"][0]["url"].is_string());
    assert!(payload["timestamp"].is_string());

    // A tampered body or another secret does not verify.
    let mut forged = completed.clone();
    forged.body = completed.body.slice(..completed.body.len() - 1);
    assert!(!verifies(&secret, &forged));
    let other = app.create_user(0).await;
    assert!(!verifies(&secret_of(&app, &other).await, completed));

    // The delivery log says the same.
    let logged_completed = logged.iter().find(|d| d["event"] == "generation.completed").unwrap();
    assert_eq!(logged_completed["id"], completed.id());
    assert_eq!(logged_completed["status"], "delivered");
    assert_eq!(logged_completed["attempts"], 1);
    assert_eq!(logged_completed["attempt_log"][0]["status_code"], 204);
    assert!(logged_completed["attempt_log"][0]["latency_ms"].is_number());
    // Nobody else sees it.
    let response = app.user_get(&other, &format!("/v1/generations/{id}/deliveries")).await;
    assert_eq!(response.status(), 404);
}

#[tokio::test]
async fn processing_is_told_only_to_a_request_that_names_it() {
    let app = TestApp::builder().workers(1).spawn().await;
    let receiver = Receiver::start().await;
    let user = app.create_user(1_000).await;
    let secret = secret_of(&app, &user).await;
    // The tasks run 2 s: a processing delivery is made while its generation is `submitted`.
    let mut named = job("a cat [[sim:ok]] [[sim:delay=2000]]", Some(&receiver.url("/named")));
    named["webhook_events"] = json!(["generation.processing", "generation.completed"]);
    let asked = app.submit_ok(&user, &named).await;
    let unnamed = job("a dog [[sim:ok]] [[sim:delay=2000]]", Some(&receiver.url("/all")));
    let not_asked = app.submit_ok(&user, &unnamed).await;

    // Named: told that the provider took the task, then of its end.
    app.wait_for_status(&user, &asked, "completed", WAIT).await;
    let logged = settled_deliveries(&app, &user, &asked, 2).await;
    let events: Vec<&str> = logged.iter().map(|d| d["event"].as_str().unwrap()).collect();
    assert_eq!(events, ["generation.processing", "generation.completed"], "{logged:?}");
    assert!(logged.iter().all(|d| d["status"] == "delivered" && d["format"] == "standard"));
    let received = eventually("both deliveries of the named request", WAIT, || async {
        let named: Vec<Received> =
            receiver.received().into_iter().filter(|d| d.path == "/named").collect();
        (named.len() >= 2).then_some(named)
    })
    .await;
    assert_eq!(received.len(), 2, "each delivered once");
    let processing = &received[0];
    assert!(verifies(&secret, processing), "signed as every delivery is");
    assert_eq!(processing.id(), logged[0]["id"]);
    let payload = processing.json();
    assert_eq!(payload["type"], "generation.processing", "{payload:#}");
    assert!(payload["timestamp"].is_string());
    assert_eq!(payload["data"]["id"], asked);
    assert_eq!(payload["data"]["status"], "submitted", "{payload:#}");
    assert!(payload["data"]["result"].is_null());
    let completed = received[1].json();
    assert_eq!(completed["type"], "generation.completed", "then the end: {completed:#}");
    assert_eq!(completed["data"]["status"], "completed");
    assert!(verifies(&secret, &received[1]));

    // Not named (no event list: every event but processing): the end and the archive, never
    // processing, which the transition to `submitted` did not even write.
    app.wait_for_status(&user, &not_asked, "completed", WAIT).await;
    app.wait_for_archive(&not_asked).await;
    let logged = settled_deliveries(&app, &user, &not_asked, 2).await;
    let events: Vec<&str> = logged.iter().map(|d| d["event"].as_str().unwrap()).collect();
    assert_eq!(events, ["generation.completed", "generation.archived"], "{logged:?}");
    let to_all: Vec<Received> =
        receiver.received().into_iter().filter(|d| d.path == "/all").collect();
    assert_eq!(
        by_event(&to_all),
        BTreeMap::from([("generation.archived".into(), 1), ("generation.completed".into(), 1)])
    );
}

#[tokio::test]
async fn a_failed_attempt_and_a_timeout_are_retried_with_the_same_id_and_body() {
    let app = TestApp::builder().workers(1).spawn().await;
    // A 500, then an answer after the sender's 3 s timeout, then 204.
    let receiver =
        Receiver::scripted(vec![Reply::Status(500), Reply::After(Duration::from_secs(6))]).await;
    let user = app.create_user(1_000).await;
    let secret = secret_of(&app, &user).await;
    let mut body = job("a cat [[sim:ok]]", Some(&receiver.url("/hook")));
    body["webhook_events"] = json!(["generation.completed"]);
    let id = app.submit_ok(&user, &body).await;
    app.wait_for_status(&user, &id, "completed", WAIT).await;
    let logged = settled_deliveries(&app, &user, &id, 1).await;
    let received = receiver.wait_for(3, WAIT).await;
    assert_eq!(received.len(), 3, "delivered on the third attempt, and not again");
    assert!(received.iter().all(|d| d.id() == received[0].id()), "one webhook-id");
    assert!(received.iter().all(|d| d.body == received[0].body), "the same bytes");
    assert!(received.iter().all(|d| verifies(&secret, d)), "every attempt signed");
    let delivery = &logged[0];
    assert_eq!(delivery["status"], "delivered");
    assert_eq!(delivery["attempts"], 3);
    let log = delivery["attempt_log"].as_array().unwrap();
    assert_eq!(log[0]["status_code"], 500);
    assert_eq!(log[0]["error"], "answered 500 Internal Server Error");
    assert!(log[1]["status_code"].is_null());
    assert!(log[1]["error"].as_str().unwrap().contains("no answer within 3000 ms"), "{log:?}");
    assert_eq!(log[2]["status_code"], 204);
    // Only the event asked for: the archive event was not wanted.
    app.wait_for_archive(&id).await;
    assert_eq!(deliveries_of(&app, &user, &id).await.len(), 1);
}

#[tokio::test]
async fn a_delivery_that_keeps_failing_ends_failed_after_the_schedule() {
    let app = TestApp::builder().workers(1).spawn().await;
    let receiver = Receiver::scripted(vec![Reply::Status(503); 10]).await;
    let user = app.create_user(1_000).await;
    let mut body = job("a cat [[sim:fail]]", Some(&receiver.url("/hook")));
    body["webhook_events"] = json!(["generation.failed"]);
    let id = app.submit_ok(&user, &body).await;
    app.wait_for_status(&user, &id, "failed", WAIT).await;
    let logged = settled_deliveries(&app, &user, &id, 1).await;
    // The harness's schedule has three pauses: four attempts, then it gives up.
    assert_eq!(receiver.received().len(), 4);
    assert_eq!(logged[0]["status"], "failed");
    assert_eq!(logged[0]["attempts"], 4);
    assert!(logged[0]["last_error"].as_str().unwrap().contains("gave up after 4 attempts"));
    assert!(receiver.received()[0].json()["data"]["failure"]["code"].is_string());
}

#[tokio::test]
async fn a_default_endpoint_signs_with_its_own_secret_and_410_disables_it() {
    let app = TestApp::builder().workers(1).spawn().await;
    let receiver = Receiver::scripted(vec![Reply::Status(410)]).await;
    let user = app.create_user(1_000).await;
    let created = app
        .admin_post(
            &format!("/admin/users/{}/webhook-endpoints", user.id),
            json!({"url": receiver.url("/default"), "events": ["generation.completed"]}),
        )
        .await;
    assert_eq!(created.status(), 201);
    let endpoint: Value = created.json().await.unwrap();
    let endpoint_secret = endpoint["secret"].as_str().unwrap().to_owned();
    assert!(endpoint_secret.starts_with("whsec_"));
    // A second live endpoint for the same user is refused.
    let again = app
        .admin_post(
            &format!("/admin/users/{}/webhook-endpoints", user.id),
            json!({"url": receiver.url("/other")}),
        )
        .await;
    assert_eq!(again.status(), 409);

    let first = app.submit_ok(&user, &job("a cat [[sim:ok]]", None)).await;
    app.wait_for_status(&user, &first, "completed", WAIT).await;
    let logged = settled_deliveries(&app, &user, &first, 1).await;
    let received = receiver.received();
    assert_eq!(received.len(), 1, "410 is not retried");
    assert_eq!(received[0].path, "/default");
    assert!(verifies(&endpoint_secret, &received[0]), "signed with the endpoint's secret");
    assert!(!verifies(&secret_of(&app, &user).await, &received[0]), "not the user's");
    assert_eq!(logged[0]["status"], "failed");
    assert_eq!(logged[0]["attempt_log"][0]["status_code"], 410);

    // The owner sees the endpoint disabled, and why.
    let response = app.user_get(&user, "/v1/webhooks/endpoints").await;
    let endpoints: Value = response.json().await.unwrap();
    let shown = &endpoints["data"][0];
    assert_eq!(shown["id"], endpoint["id"]);
    assert!(shown["disabled_at"].is_string());
    assert!(shown["disabled_reason"].as_str().unwrap().contains("410"));

    // Nothing more is sent there.
    let second = app.submit_ok(&user, &job("a dog [[sim:ok]]", None)).await;
    app.wait_for_status(&user, &second, "completed", WAIT).await;
    app.wait_for_archive(&second).await;
    assert!(deliveries_of(&app, &user, &second).await.is_empty());
    assert_eq!(receiver.received().len(), 1);
}

#[tokio::test]
async fn private_addresses_are_refused_unless_allowed() {
    let app = TestApp::builder()
        .workers(1)
        .env("GENGATE__CLIENT_WEBHOOKS__ALLOW_PRIVATE_ADDRESSES", "false")
        .spawn()
        .await;
    let receiver = Receiver::start().await;
    let user = app.create_user(1_000).await;
    // At submit: an address or a name that is private by its form.
    for url in [
        receiver.url("/x"),
        "http://localhost:9/x".to_owned(),
        "http://169.254.169.254/latest/meta-data".to_owned(),
        "http://[::1]:9/x".to_owned(),
    ] {
        let response = app.submit(&user, &job("a cat", Some(&url))).await;
        assert_eq!(response.status(), 422, "{url}");
        let problem: Value = response.json().await.unwrap();
        assert_eq!(problem["errors"][0]["field"], "webhook_url", "{url}");
    }
    // At delivery: a host that resolves to a private address (here registered while the rules
    // were off, as an endpoint whose name later resolves inside the network would be).
    let port = receiver.url("").rsplit(':').next().unwrap().to_owned();
    for (n, host) in ["localhost", "127.0.0.1"].into_iter().enumerate() {
        sqlx::query("UPDATE webhook_endpoints SET disabled_at = now(), disabled_reason = 'next' WHERE disabled_at IS NULL")
            .execute(&app.pool)
            .await
            .unwrap();
        sqlx::query(
            "INSERT INTO webhook_endpoints (id, user_id, url, events)
             VALUES (gen_random_uuid(), $1::uuid, $2, '{generation.completed}')",
        )
        .bind(&user.id)
        .bind(format!("http://{host}:{port}/private"))
        .execute(&app.pool)
        .await
        .unwrap();
        let id = app.submit_ok(&user, &job(&format!("job {n} [[sim:ok]]"), None)).await;
        app.wait_for_status(&user, &id, "completed", WAIT).await;
        let logged = settled_deliveries(&app, &user, &id, 1).await;
        assert_eq!(logged[0]["status"], "failed", "{host}");
        assert_eq!(logged[0]["attempts"], 1, "a refusal is not retried");
        let error = logged[0]["last_error"].as_str().unwrap();
        let loopback = error.contains("127.0.0.1") || error.contains("::1");
        assert!(error.starts_with("refused:") && loopback, "{host}: {error}");
    }
    assert!(receiver.received().is_empty(), "nothing reached the private address");
}

#[tokio::test]
async fn a_worker_killed_mid_delivery_still_delivers_with_the_same_id() {
    let mut app = TestApp::builder().workers(1).spawn().await;
    let receiver = Receiver::scripted(vec![Reply::Hold]).await;
    let user = app.create_user(1_000).await;
    let mut body = job("a cat [[sim:ok]]", Some(&receiver.url("/hook")));
    body["webhook_events"] = json!(["generation.completed"]);
    let id = app.submit_ok(&user, &body).await;
    // The first attempt is in flight, unanswered: the worker dies.
    let first = receiver.wait_for(1, WAIT).await;
    app.workers[0].process.kill().await;
    app.start_worker().await;
    // Its lease lapses (3 s timeout + 5 s) and another worker sends it again.
    let received = receiver.wait_for(2, WAIT).await;
    assert_eq!(received[1].id(), first[0].id(), "the same webhook-id");
    assert_eq!(received[1].body, first[0].body, "the same body");
    let logged = settled_deliveries(&app, &user, &id, 1).await;
    assert_eq!(logged[0]["status"], "delivered");
    assert_eq!(logged[0]["attempts"], 2);
    let cut_short = &logged[0]["attempt_log"][0];
    assert!(cut_short["status_code"].is_null() && cut_short["error"].is_null(), "{cut_short}");
    receiver.release();
}

#[tokio::test]
async fn a_rotated_secret_signs_beside_the_new_one_until_its_grace_ends() {
    let app = TestApp::builder().workers(1).spawn().await;
    let receiver = Receiver::start().await;
    let user = app.create_user(1_000).await;
    let old = secret_of(&app, &user).await;
    let rotated = app.user_post(&user, "/v1/webhooks/secret/rotate", &json!({})).await;
    assert_eq!(rotated.status(), 200);
    let rotated: Value = rotated.json().await.unwrap();
    let new = rotated["secret"].as_str().unwrap().to_owned();
    assert_ne!(new, old);
    assert!(rotated["previous_retires_at"].is_string());
    assert_eq!(secret_of(&app, &user).await, new);

    let mut body = job("a cat [[sim:ok]]", Some(&receiver.url("/hook")));
    body["webhook_events"] = json!(["generation.completed"]);
    let id = app.submit_ok(&user, &body).await;
    let received = receiver.wait_for(1, WAIT).await;
    assert_eq!(received[0].header("webhook-signature").split(' ').count(), 2);
    assert!(verifies(&old, &received[0]) && verifies(&new, &received[0]));
    settled_deliveries(&app, &user, &id, 1).await;

    // Rotated again without a grace period: only the newest signs.
    let newest = app
        .user_post(&user, "/v1/webhooks/secret/rotate", &json!({"grace_seconds": 0}))
        .await
        .json::<Value>()
        .await
        .unwrap()["secret"]
        .as_str()
        .unwrap()
        .to_owned();
    let id = app.submit_ok(&user, &body).await;
    let received = receiver.wait_for(2, WAIT).await;
    settled_deliveries(&app, &user, &id, 1).await;
    assert!(verifies(&newest, &received[1]));
    assert!(!verifies(&new, &received[1]) && !verifies(&old, &received[1]));
    let bad =
        app.user_post(&user, "/v1/webhooks/secret/rotate", &json!({"grace_seconds": -1})).await;
    assert_eq!(bad.status(), 422);
}

#[tokio::test]
async fn bad_webhook_fields_are_refused_and_change_nothing() {
    let app = TestApp::builder().env("GENGATE__CLIENT_WEBHOOKS__ALLOW_HTTP", "false").spawn().await;
    let user = app.create_user(1_000).await;
    let cases = [
        (json!({"webhook_url": "http://hooks.example.com/x"}), "webhook_url"),
        (json!({"webhook_url": "ftp://hooks.example.com/x"}), "webhook_url"),
        (json!({"webhook_url": 42}), "webhook_url"),
        (json!({"webhook_events": ["generation.completed"]}), "webhook_events"),
        (
            json!({"webhook_url": "https://hooks.example.com/x", "webhook_events": ["nope"]}),
            "webhook_events[0]",
        ),
    ];
    for (extra, field) in cases {
        let mut body = job("a cat", None);
        body.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        let response = app.submit(&user, &body).await;
        assert_eq!(response.status(), 422, "{body}");
        let problem: Value = response.json().await.unwrap();
        let fields: Vec<&str> = problem["errors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["field"].as_str().unwrap())
            .collect();
        assert_eq!(fields, [field], "{body}");
    }
    let generations: i64 =
        sqlx::query_scalar("SELECT count(*) FROM generations").fetch_one(&app.pool).await.unwrap();
    assert_eq!(generations, 0);
    // The same idempotency key with another webhook URL is another request.
    let key = "hook-key";
    let first = json!({"model": "kling-v1-6-std", "mode": "text2video", "prompt": "a cat",
                       "webhook_url": "https://hooks.example.com/a"});
    let mut second = first.clone();
    second["webhook_url"] = json!("https://hooks.example.com/b");
    for (body, status) in [(&first, 202), (&first, 202), (&second, 409)] {
        let response = app
            .http
            .post(format!("{}/v1/generations", app.api_url))
            .bearer_auth(&user.key)
            .header("Idempotency-Key", key)
            .json(body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), status, "{body}");
    }
}

#[tokio::test]
async fn an_endpoint_failing_for_too_long_is_disabled_and_its_owner_sees_why() {
    // Disabled after failing for a second here (5 days by default).
    let app = TestApp::builder()
        .workers(1)
        .env("GENGATE__CLIENT_WEBHOOKS__DISABLE_AFTER_MS", "1000")
        .spawn()
        .await;
    let receiver = Receiver::scripted(vec![Reply::Status(502); 10]).await;
    let user = app.create_user(1_000).await;
    let created = app
        .admin_post(
            &format!("/admin/users/{}/webhook-endpoints", user.id),
            json!({"url": receiver.url("/flaky"), "events": ["generation.completed"]}),
        )
        .await;
    assert_eq!(created.status(), 201);
    let id = app.submit_ok(&user, &job("a cat [[sim:ok]]", None)).await;
    app.wait_for_status(&user, &id, "completed", WAIT).await;
    let logged = settled_deliveries(&app, &user, &id, 1).await;
    assert_eq!(logged[0]["status"], "failed");
    let error = logged[0]["last_error"].as_str().unwrap();
    assert!(error.starts_with("endpoint disabled: every attempt failed for 1 s"), "{error}");
    let endpoints: Value =
        app.user_get(&user, "/v1/webhooks/endpoints").await.json().await.unwrap();
    let endpoint = &endpoints["data"][0];
    assert!(endpoint["disabled_at"].is_string());
    let reason = endpoint["disabled_reason"].as_str().unwrap();
    assert!(reason.contains("every attempt failed") && reason.contains("502"), "{reason}");
    let attempts = receiver.received().len();
    assert!((2..=4).contains(&attempts), "a few attempts within the second, then none: {attempts}");
}

#[tokio::test]
async fn the_most_specific_target_receives_the_request_url_then_the_key_then_the_user() {
    let app = TestApp::builder().workers(1).spawn().await;
    let receiver = Receiver::start().await;
    let user = app.create_user(1_000).await;
    let second: Value = app
        .admin_post(&format!("/admin/users/{}/api-keys", user.id), json!({"name": "second"}))
        .await
        .json()
        .await
        .unwrap();
    let by_second_key =
        TestUser { id: user.id.clone(), key: second["key"].as_str().unwrap().into() };
    for (body, path) in [
        (json!({"url": receiver.url("/user")}), "user"),
        (json!({"url": receiver.url("/key"), "api_key_id": second["id"]}), "key"),
    ] {
        let created =
            app.admin_post(&format!("/admin/users/{}/webhook-endpoints", user.id), body).await;
        assert_eq!(created.status(), 201, "{path}");
    }
    let events = json!(["generation.completed"]);
    let cases = [
        (&user, None, "/user"),
        (&by_second_key, None, "/key"),
        (&by_second_key, Some(receiver.url("/request")), "/request"),
    ];
    for (n, (client, url, expected)) in cases.into_iter().enumerate() {
        let mut body = job(&format!("job {n} [[sim:ok]]"), url.as_deref());
        if url.is_some() {
            body["webhook_events"] = events.clone();
        }
        let id = app.submit_ok(client, &body).await;
        app.wait_for_status(client, &id, "completed", WAIT).await;
        // Default endpoints take every event: the completion, then the archive.
        let count = if url.is_some() { 1 } else { 2 };
        if url.is_none() {
            app.wait_for_archive(&id).await;
        }
        let logged = settled_deliveries(&app, client, &id, count).await;
        assert!(
            logged.iter().all(|d| d["url"] == receiver.url(expected)),
            "{expected}: {logged:?}"
        );
    }
}

#[tokio::test]
async fn duplicate_messages_never_send_a_delivery_twice_at_once_nor_after_it_was_delivered() {
    use gengate_shared::queue::{Envelope, payloads};

    let app = TestApp::builder().workers(2).spawn().await;
    let receiver = Receiver::scripted(vec![Reply::Hold]).await;
    let user = app.create_user(1_000).await;
    let mut body = job("a cat [[sim:ok]]", Some(&receiver.url("/hook")));
    body["webhook_events"] = json!(["generation.completed"]);
    let id = app.submit_ok(&user, &body).await;
    receiver.wait_for(1, WAIT).await;
    let (delivery, event): (uuid::Uuid, String) =
        sqlx::query_as("SELECT id, event FROM webhook_deliveries WHERE generation_id = $1::uuid")
            .bind(&id)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    let copy = Envelope::of(
        id.parse().unwrap(),
        &payloads::Notify { event: event.parse().unwrap(), delivery },
    );
    // While the first attempt is held open: copies of its message, to both workers.
    let before = notify_messages_handled(&app).await;
    for _ in 0..6 {
        app.broker.publish(&copy).await;
    }
    eventually("the copies to be handled", WAIT, || async {
        (notify_messages_handled(&app).await >= before + 6).then_some(())
    })
    .await;
    assert_eq!(receiver.received().len(), 1, "no second attempt while the first runs");
    receiver.release();
    let logged = settled_deliveries(&app, &user, &id, 1).await;
    assert_eq!(logged[0]["status"], "delivered");
    assert_eq!(logged[0]["attempts"], 1);
    // Once delivered: copies change nothing.
    let before = notify_messages_handled(&app).await;
    for _ in 0..6 {
        app.broker.publish(&copy).await;
    }
    eventually("the late copies to be handled", WAIT, || async {
        (notify_messages_handled(&app).await >= before + 6).then_some(())
    })
    .await;
    assert_eq!(receiver.received().len(), 1);
    assert_eq!(deliveries_of(&app, &user, &id).await[0]["attempts"], 1);
}

/// Messages the workers took off `gengate.notify` and finished with (any outcome).
async fn notify_messages_handled(app: &TestApp) -> u64 {
    let queue = app.broker.topology().queue(gengate_shared::queue::WorkQueue::Notify);
    let prefix = format!("gengate_messages_handled_total{{queue=\"{queue}\"");
    let mut total = 0;
    for index in 0..app.workers.len() {
        let text = app.worker_metrics(index).await;
        total += text
            .lines()
            .filter(|line| line.starts_with(&prefix))
            .filter_map(|line| line.rsplit(' ').next()?.parse::<u64>().ok())
            .sum::<u64>();
    }
    total
}

#[tokio::test]
async fn a_redirect_is_not_followed_but_tried_again_at_the_same_url() {
    let app = TestApp::builder().workers(1).spawn().await;
    let elsewhere = Receiver::start().await;
    let receiver = Receiver::scripted(vec![Reply::Redirect(elsewhere.url("/moved"))]).await;
    let user = app.create_user(1_000).await;
    let mut body = job("a cat [[sim:ok]]", Some(&receiver.url("/hook")));
    body["webhook_events"] = json!(["generation.completed"]);
    let id = app.submit_ok(&user, &body).await;
    let logged = settled_deliveries(&app, &user, &id, 1).await;
    assert_eq!(logged[0]["status"], "delivered");
    let log = logged[0]["attempt_log"].as_array().unwrap();
    assert_eq!(log[0]["status_code"], 302);
    assert!(log[0]["error"].as_str().unwrap().contains("redirects are not followed"), "{log:?}");
    assert_eq!(log[1]["status_code"], 204);
    assert_eq!(receiver.received().len(), 2, "both attempts at the URL the request named");
    assert!(elsewhere.received().is_empty(), "the redirect's target was never called");
}
