//! `gengatectl webhooks …` against a running stack, as an operator uses it: a delivery that failed
//! for good is found, inspected and redelivered (same `webhook-id`, same body); a default endpoint
//! is registered, receives its user's jobs, and stops receiving them once disabled; bad input is
//! refused with exit code 2 and changes nothing.

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

/// Runs gengatectl, asserts it succeeded, and returns what it printed.
async fn ok(app: &TestApp, args: &[&str]) -> String {
    let output = app.ctl(args).await;
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "gengatectl {args:?} exited with {}: {stdout}{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

/// Runs gengatectl, asserts it refused (exit code 2, nothing on standard output), and returns
/// its error message.
async fn refused(app: &TestApp, args: &[&str]) -> String {
    let output = app.ctl(args).await;
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_eq!(
        output.status.code(),
        Some(2),
        "gengatectl {args:?} should refuse: {}{stderr}",
        String::from_utf8_lossy(&output.stdout)
    );
    assert!(
        output.stdout.is_empty(),
        "{args:?} printed {}",
        String::from_utf8_lossy(&output.stdout)
    );
    stderr
}

/// Whether the specification's own verifier accepts the delivery under `secret`.
fn verifies(secret: &str, delivery: &Received) -> bool {
    let verifier = standardwebhooks::Webhook::new(secret).expect("a whsec_ secret");
    verifier.verify(&delivery.body, &delivery.headers).is_ok()
}

/// `webhooks list --generation ID --json`'s rows.
async fn deliveries_of(app: &TestApp, generation: &str) -> Vec<Value> {
    let listed = app.ctl_json(&["webhooks", "list", "--generation", generation, "--json"]).await;
    listed["data"].as_array().expect("data").clone()
}

async fn count(app: &TestApp, table: &str) -> i64 {
    sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM {table}")))
        .fetch_one(&app.pool)
        .await
        .unwrap()
}

/// `msg_` + 32 hex digits as a hyphenated UUID.
fn as_uuid(webhook_id: &str) -> String {
    let hex = webhook_id.strip_prefix("msg_").expect("a msg_ id");
    uuid::Uuid::try_parse(hex).expect("32 hex digits").hyphenated().to_string()
}

#[tokio::test]
async fn a_failed_delivery_is_listed_shown_and_redelivered_with_the_same_id_and_body() {
    let app = TestApp::builder().workers(1).spawn().await;
    // 503 to the four attempts the harness's schedule allows (500, 1000, 1000 ms apart), then 204.
    let receiver = Receiver::scripted(vec![Reply::Status(503); 4]).await;
    let user = app.create_user(1_000).await;
    let mut body = job("a cat [[sim:fail]]", Some(&receiver.url("/hook")));
    body["webhook_events"] = json!(["generation.failed"]);
    let id = app.submit_ok(&user, &body).await;
    app.wait_for_status(&user, &id, "failed", WAIT).await;

    // The operator looks for failed deliveries.
    let listed = eventually("the delivery listed as failed", WAIT, || async {
        let listed = app
            .ctl_json(&["webhooks", "list", "--status", "failed", "--user", &user.id, "--json"])
            .await;
        let data = listed["data"].as_array().expect("data").clone();
        (!data.is_empty()).then_some(data)
    })
    .await;
    assert_eq!(listed.len(), 1, "{listed:?}");
    let failed = &listed[0];
    let webhook_id = failed["id"].as_str().unwrap().to_owned();
    assert!(webhook_id.starts_with("msg_"), "{webhook_id}");
    assert_eq!(failed["generation_id"], id);
    assert_eq!(failed["event"], "generation.failed");
    assert_eq!(failed["attempts"], 4);
    let log = failed["attempt_log"].as_array().unwrap();
    assert_eq!(log.len(), 4);
    assert!(log.iter().all(|a| a["status_code"] == 503), "{log:?}");
    assert!(failed["last_error"].as_str().unwrap().contains("gave up after 4 attempts"));
    let received = receiver.received();
    assert_eq!(received.len(), 4);
    assert!(received.iter().all(|d| d.id() == webhook_id), "the list names the webhook-id sent");
    // Other filters leave it out; the table shows it to a person.
    let delivered = app
        .ctl_json(&["webhooks", "list", "--status", "delivered", "--generation", &id, "--json"])
        .await;
    assert_eq!(delivered["data"], json!([]));
    let table = ok(&app, &["webhooks", "list", "--generation", &id]).await;
    let row =
        table.lines().find(|l| l.starts_with(&webhook_id)).unwrap_or_else(|| panic!("{table}"));
    for cell in ["generation.failed", "failed", "503", "127.0.0.1:"] {
        assert!(row.contains(cell), "{cell} in {row}");
    }

    // Every attempt, by its webhook-id or its UUID.
    let shown = app.ctl_json(&["webhooks", "show", &webhook_id, "--json"]).await;
    assert_eq!(shown["status"], "failed");
    assert_eq!(shown["attempts"], 4);
    let log = shown["attempt_log"].as_array().unwrap();
    assert_eq!(
        log.iter().map(|a| a["attempt"].as_i64().unwrap()).collect::<Vec<_>>(),
        [1, 2, 3, 4]
    );
    for attempt in log {
        assert_eq!(attempt["status_code"], 503, "{attempt}");
        assert_eq!(attempt["error"], "answered 503 Service Unavailable", "{attempt}");
        assert!(attempt["latency_ms"].is_number(), "{attempt}");
    }
    assert_eq!(app.ctl_json(&["webhooks", "show", &as_uuid(&webhook_id), "--json"]).await, shown);
    let text = ok(&app, &["webhooks", "show", &webhook_id]).await;
    assert!(text.contains("failed after 4 attempts"), "{text}");
    assert_eq!(
        text.matches("answered 503 Service Unavailable").count(),
        4 + 1,
        "4 attempts and the last error: {text}"
    );

    // One unknown id among several: nothing is redelivered.
    let unknown = format!("msg_{}", uuid::Uuid::now_v7().simple());
    let stderr = refused(&app, &["webhooks", "redeliver", &webhook_id, &unknown]).await;
    assert!(stderr.contains(&unknown) && stderr.contains("nothing redelivered"), "{stderr}");
    let unchanged = app.ctl_json(&["webhooks", "show", &webhook_id, "--json"]).await;
    assert_eq!(unchanged, shown, "the known delivery was left as it was");

    // Redelivered: the receiver, answering 204 now, gets the same delivery again.
    let said = ok(&app, &["webhooks", "redeliver", &webhook_id]).await;
    assert!(
        said.contains(&format!("{webhook_id}: due again now (was failed after 4 attempts")),
        "{said}"
    );
    let received = receiver.wait_for(5, WAIT).await;
    assert_eq!(received[4].id(), webhook_id, "the same webhook-id");
    assert_eq!(received[4].body, received[0].body, "the same body");
    let delivered = eventually("the redelivery recorded", WAIT, || async {
        let shown = app.ctl_json(&["webhooks", "show", &webhook_id, "--json"]).await;
        (shown["status"] == "delivered").then_some(shown)
    })
    .await;
    assert_eq!(delivered["attempts"], 5);
    assert_eq!(delivered["attempt_log"][4]["status_code"], 204);
    assert!(delivered["last_error"].is_null(), "{delivered}");
    assert_eq!(receiver.received().len(), 5, "delivered once more, not again");
}

#[tokio::test]
async fn an_endpoint_made_with_gengatectl_receives_the_users_jobs_until_it_is_disabled() {
    let app = TestApp::builder().workers(1).spawn().await;
    let receiver = Receiver::start().await;
    let user = app.create_user(1_000).await;
    let made = app
        .ctl_json(&[
            "webhooks",
            "endpoints",
            "create",
            "--user",
            &user.id,
            "--url",
            &receiver.url("/default"),
            "--event",
            "generation.completed",
            "--description",
            "ops ticket 7",
            "--json",
        ])
        .await;
    let secret = made["secret"].as_str().expect("the secret").to_owned();
    assert!(secret.starts_with("whsec_"), "{made}");
    let endpoint = made["id"].as_str().unwrap().to_owned();
    assert_eq!(made["user_id"], user.id);
    assert_eq!(made["events"], json!(["generation.completed"]));
    assert_eq!(made["description"], "ops ticket 7");
    assert!(made["disabled_at"].is_null());
    // One live endpoint per user: a second is refused, naming the first.
    let stderr = refused(
        &app,
        &["webhooks", "endpoints", "create", "--user", &user.id, "--url", &receiver.url("/other")],
    )
    .await;
    assert!(stderr.contains(&endpoint) && stderr.contains("disable it first"), "{stderr}");
    assert_eq!(count(&app, "webhook_endpoints").await, 1);

    // A job of the user that names no URL is delivered there, signed with the endpoint's secret.
    let first = app.submit_ok(&user, &job("a cat [[sim:ok]]", None)).await;
    app.wait_for_status(&user, &first, "completed", WAIT).await;
    let received = receiver.wait_for(1, WAIT).await;
    assert_eq!(received[0].path, "/default");
    assert_eq!(received[0].json()["data"]["id"], first);
    assert!(verifies(&secret, &received[0]), "signed with the secret gengatectl showed");
    let delivered = eventually("the delivery recorded", WAIT, || async {
        let data = deliveries_of(&app, &first).await;
        (data.len() == 1 && data[0]["status"] == "delivered").then(|| data[0].clone())
    })
    .await;
    assert_eq!(delivered["endpoint_id"], endpoint);
    assert_eq!(delivered["id"], received[0].id());
    let table = ok(&app, &["webhooks", "endpoints", "list", "--user", &user.id]).await;
    assert!(table.lines().any(|l| l.starts_with(&endpoint) && l.ends_with("live")), "{table}");

    // For people: the secret is printed with the warning that it is shown once.
    let other = app.create_user(0).await;
    let text = ok(
        &app,
        &["webhooks", "endpoints", "create", "--user", &other.id, "--url", &receiver.url("/o")],
    )
    .await;
    assert!(text.contains("shown once") && text.contains("whsec_"), "{text}");

    // Disabled: said so, idempotent, and its owner sees why.
    let said =
        ok(&app, &["webhooks", "endpoints", "disable", &endpoint, "--reason", "client asked"])
            .await;
    assert!(said.contains(&format!("disabled webhook endpoint {endpoint}")), "{said}");
    let again = ok(&app, &["webhooks", "endpoints", "disable", &endpoint]).await;
    assert!(again.contains("nothing to do"), "{again}");
    let listed =
        app.ctl_json(&["webhooks", "endpoints", "list", "--user", &user.id, "--json"]).await;
    assert_eq!(listed["data"][0]["id"], endpoint);
    assert_eq!(listed["data"][0]["disabled_reason"], "client asked");
    assert!(listed["data"][0]["disabled_at"].is_string());
    // A delivery to a disabled endpoint cannot be redelivered (it would not be sent).
    let webhook_id = delivered["id"].as_str().unwrap();
    let stderr = refused(&app, &["webhooks", "redeliver", webhook_id]).await;
    assert!(stderr.contains("is disabled"), "{stderr}");
    assert_eq!(deliveries_of(&app, &first).await[0]["status"], "delivered");

    // The user's next job has no delivery. A later job naming its own URL is delivered: by then
    // the worker has handled the messages the first one's end would have made.
    let second = app.submit_ok(&user, &job("a dog [[sim:ok]]", None)).await;
    app.wait_for_status(&user, &second, "completed", WAIT).await;
    let mut marker = job("a bird [[sim:ok]]", Some(&receiver.url("/marker")));
    marker["webhook_events"] = json!(["generation.completed"]);
    let third = app.submit_ok(&user, &marker).await;
    eventually("the marker delivery", WAIT, || async {
        receiver.received().iter().any(|d| d.path == "/marker").then_some(())
    })
    .await;
    app.wait_for_archive(&second).await;
    assert_eq!(deliveries_of(&app, &second).await, Vec::<Value>::new());
    let paths: Vec<String> = receiver.received().iter().map(|d| d.path.clone()).collect();
    assert_eq!(paths, ["/default", "/marker"], "nothing more went to the disabled endpoint");
    assert_eq!(deliveries_of(&app, &third).await.len(), 1);
}

#[tokio::test]
async fn bad_input_is_refused_with_exit_code_2_and_changes_nothing() {
    let app = TestApp::spawn().await;
    let user: TestUser = app.create_user(0).await;
    let nobody = uuid::Uuid::now_v7().to_string();
    let unknown = format!("msg_{}", uuid::Uuid::now_v7().simple());

    let stderr = refused(&app, &["webhooks", "show", &unknown]).await;
    assert!(stderr.contains(&format!("no webhook delivery {unknown}")), "{stderr}");
    let stderr = refused(&app, &["webhooks", "show", "msg_nonsense"]).await;
    assert!(stderr.contains("is not a delivery id"), "{stderr}");
    let stderr = refused(&app, &["webhooks", "redeliver", &unknown]).await;
    assert!(stderr.contains("nothing redelivered"), "{stderr}");
    let stderr = refused(&app, &["webhooks", "list", "--status", "bogus"]).await;
    assert!(stderr.contains("pending, delivered, failed"), "{stderr}");
    refused(&app, &["webhooks", "list", "--limit", "0"]).await;
    refused(&app, &["webhooks", "list", "--limit", "1001"]).await;

    let create = |extra: &'static [&'static str]| {
        let mut args = vec!["webhooks", "endpoints", "create", "--user", &user.id];
        args.extend_from_slice(extra);
        args
    };
    let stderr = refused(&app, &create(&["--url", "ftp://x"])).await;
    assert!(stderr.contains("--url must be an http or https URL"), "{stderr}");
    let stderr = refused(
        &app,
        &create(&[
            "--url",
            "http://127.0.0.1:9/x",
            "--event",
            "generation.done",
            "--event",
            "generation.failed",
            "--event",
            "generation.failed",
        ]),
    )
    .await;
    assert!(stderr.contains("--event \"generation.done\": one of"), "{stderr}");
    assert!(stderr.contains("--event \"generation.failed\": is listed twice"), "{stderr}");
    let stderr = refused(
        &app,
        &create(&[
            "--url",
            "http://127.0.0.1:9/x",
            "--key",
            "0190a0b0-0000-7000-8000-000000000000",
        ]),
    )
    .await;
    assert!(stderr.contains("with an API key"), "{stderr}");
    let stderr = refused(
        &app,
        &["webhooks", "endpoints", "create", "--user", &nobody, "--url", "http://127.0.0.1:9/x"],
    )
    .await;
    assert!(stderr.contains(&format!("no user {nobody}")), "{stderr}");
    let stderr = refused(&app, &["webhooks", "endpoints", "list", "--user", &nobody]).await;
    assert!(stderr.contains(&format!("no user {nobody}")), "{stderr}");
    let stderr = refused(&app, &["webhooks", "endpoints", "disable", &nobody]).await;
    assert!(stderr.contains(&format!("no webhook endpoint {nobody}")), "{stderr}");

    for table in ["webhook_endpoints", "webhook_secrets", "webhook_deliveries"] {
        assert_eq!(count(&app, table).await, 0, "{table}");
    }
    // The same arguments, put right, do register the endpoint.
    ok(&app, &create(&["--url", "http://127.0.0.1:9/x", "--event", "generation.failed"])).await;
    assert_eq!(count(&app, "webhook_endpoints").await, 1);
}
