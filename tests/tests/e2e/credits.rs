//! Credits over HTTP: admin users, keys and grants; balance, timeline and summary for API keys.

use gengate_shared::db;
use gengate_shared::generation::MediaType;
use gengate_shared::ids::UserId;
use gengate_shared::ledger::{self, LedgerError, LedgerGeneration};
use gengate_tests::{TestApp, fixtures};
use serde_json::{Value, json};

#[tokio::test]
async fn a_new_user_sees_granted_credits_and_the_grant_in_the_timeline() {
    let app = TestApp::spawn().await;
    let user = app.create_user(0).await;

    let grant = app
        .admin_post(
            &format!("/admin/users/{}/grants", user.id),
            json!({"source": "order_pay", "amount": 1000, "order_no": "ORD-42", "priority": 1,
                   "expires_at": "2099-01-01T00:00:00Z"}),
        )
        .await;
    assert_eq!(grant.status(), 201);
    let grant: Value = grant.json().await.unwrap();
    assert_eq!(grant["amount"], 1000);
    assert_eq!(grant["remaining"], 1000);
    assert_eq!(grant["source"], "order_pay");

    let credits: Value = app.user_get(&user, "/v1/credits").await.json().await.unwrap();
    assert_eq!(credits["balance"], 1000);
    assert_eq!(credits["debt"], 0);
    assert_eq!(credits["grants"][0]["id"], grant["id"]);
    assert_eq!(credits["grants"][0]["expired"], false);
    assert_eq!(credits["grants"][0]["expires_at"], "2099-01-01T00:00:00Z");

    let timeline: Value = app.user_get(&user, "/v1/credits/timeline").await.json().await.unwrap();
    assert_eq!(timeline["data"].as_array().unwrap().len(), 1);
    assert_eq!(timeline["data"][0]["trans_type"], "order_pay");
    assert_eq!(timeline["data"][0]["amount"], 1000);
    assert_eq!(timeline["next_cursor"], Value::Null);

    // The admin sees the same balance.
    let admin_view: Value =
        app.admin_get(&format!("/admin/users/{}/credits", user.id)).await.json().await.unwrap();
    assert_eq!(admin_view["balance"], 1000);
}

#[tokio::test]
async fn a_repeated_order_number_returns_the_first_grant_and_grants_nothing_more() {
    let app = TestApp::spawn().await;
    let user = app.create_user(0).await;
    let path = format!("/admin/users/{}/grants", user.id);
    let body = json!({"source": "order_pay", "amount": 300, "order_no": "ORD-7"});

    let first = app.admin_post(&path, body.clone()).await;
    assert_eq!(first.status(), 201);
    let first: Value = first.json().await.unwrap();
    let again = app.admin_post(&path, body).await;
    assert_eq!(again.status(), 200);
    let again: Value = again.json().await.unwrap();
    assert_eq!(first["id"], again["id"]);

    // The same order number for a different amount is not a replay: refused, nothing granted.
    let changed = app
        .admin_post(&path, json!({"source": "order_pay", "amount": 500, "order_no": "ORD-7"}))
        .await;
    assert_eq!(changed.status(), 409);
    let problem: Value = changed.json().await.unwrap();
    assert_eq!(problem["code"], "order_conflict");
    assert_eq!(problem["granted"], 300);

    let credits: Value = app.user_get(&user, "/v1/credits").await.json().await.unwrap();
    assert_eq!(credits["balance"], 300);

    let other = app.create_user(0).await;
    let stolen = app
        .admin_post(
            &format!("/admin/users/{}/grants", other.id),
            json!({"source": "order_pay", "amount": 300, "order_no": "ORD-7"}),
        )
        .await;
    assert_eq!(stolen.status(), 409);
    assert_eq!(stolen.json::<Value>().await.unwrap()["code"], "order_conflict");
}

#[tokio::test]
async fn invalid_grants_are_refused_with_every_failing_field_and_change_nothing() {
    let app = TestApp::spawn().await;
    let user = app.create_user(0).await;
    let path = format!("/admin/users/{}/grants", user.id);

    for (body, fields) in [
        (json!({"source": "system_add", "amount": 0}), vec!["amount"]),
        (json!({"source": "system_add", "amount": -5}), vec!["amount"]),
        // Sums of a user's grants must not overflow.
        (json!({"source": "system_add", "amount": i64::MAX}), vec!["amount"]),
        (json!({"source": "order_pay", "amount": 10, "order_no": "ORD\u{0}1"}), vec!["order_no"]),
        (json!({"source": "lottery", "amount": 10}), vec!["source"]),
        (json!({"source": "lottery", "amount": -1}), vec!["source", "amount"]),
        (json!({"source": "order_pay", "amount": 10}), vec!["order_no"]),
        (json!({"source": "system_add", "amount": 10, "order_no": "X"}), vec!["order_no"]),
        (json!({"amount": 10}), vec!["source"]),
        (
            json!({"source": "system_add", "amount": 10, "expires_at": "2000-01-01T00:00:00Z"}),
            vec!["expires_at"],
        ),
    ] {
        let response = app.admin_post(&path, body.clone()).await;
        assert_eq!(response.status(), 422, "{body}");
        let problem: Value = response.json().await.unwrap();
        assert_eq!(problem["code"], "validation_failed");
        let named: Vec<&str> = problem["errors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["field"].as_str().unwrap())
            .collect();
        assert_eq!(named, fields, "{body}");
    }
    // Wrong types and unknown fields are named too.
    let response = app.admin_post(&path, json!({"source": "system_add", "amount": "ten"})).await;
    assert_eq!(response.status(), 422);
    assert_eq!(response.json::<Value>().await.unwrap()["errors"][0]["field"], "amount");
    let response =
        app.admin_post(&path, json!({"source": "system_add", "amount": 1, "bonus": 5})).await;
    assert_eq!(response.status(), 422);

    let credits: Value = app.user_get(&user, "/v1/credits").await.json().await.unwrap();
    assert_eq!(credits["balance"], 0);
    assert_eq!(credits["grants"], json!([]));
    let unknown = app
        .admin_post(
            "/admin/users/00000000-0000-7000-8000-000000000000/grants",
            json!({"source": "system_add", "amount": 5}),
        )
        .await;
    assert_eq!(unknown.status(), 404);
}

#[tokio::test]
async fn missing_malformed_wrong_and_revoked_keys_get_401_problems() {
    let app = TestApp::spawn().await;
    let user = app.create_user(10).await;
    let url = format!("{}/v1/credits", app.api_url);

    let mut attempts = vec![
        app.http.get(&url).send().await.unwrap(),
        app.http.get(&url).bearer_auth("not-a-key").send().await.unwrap(),
        app.http.get(&url).bearer_auth(format!("{}x", user.key)).send().await.unwrap(),
        app.http
            .get(&url)
            .header("authorization", format!("Basic {}", user.key))
            .send()
            .await
            .unwrap(),
    ];
    // Same prefix, different secret.
    let (head, tail) = user.key.split_at(user.key.len() - 4);
    let flipped: String = tail.chars().map(|c| if c == 'a' { 'b' } else { 'a' }).collect();
    attempts.push(app.http.get(&url).bearer_auth(format!("{head}{flipped}")).send().await.unwrap());
    // The admin token is not an API key, and an API key is not the admin token.
    attempts.push(app.http.get(&url).bearer_auth(gengate_tests::ADMIN_TOKEN).send().await.unwrap());
    attempts.push(
        app.http
            .get(format!("{}/admin/users/{}/credits", app.api_url, user.id))
            .bearer_auth(&user.key)
            .send()
            .await
            .unwrap(),
    );
    // A key that worked, then revoked by an operator.
    assert_eq!(app.http.get(&url).bearer_auth(&user.key).send().await.unwrap().status(), 200);
    let keys: Value =
        app.admin_get(&format!("/admin/users/{}/api-keys", user.id)).await.json().await.unwrap();
    let key_id = keys["data"][0]["id"].as_str().unwrap();
    let revoked = app
        .http
        .delete(format!("{}/admin/users/{}/api-keys/{key_id}", app.api_url, user.id))
        .bearer_auth(gengate_tests::ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(revoked.status(), 200);
    attempts.push(app.http.get(&url).bearer_auth(&user.key).send().await.unwrap());

    for (i, response) in attempts.into_iter().enumerate() {
        assert_eq!(response.status(), 401, "attempt {i}");
        assert_eq!(response.headers()["content-type"], "application/problem+json");
        let problem: Value = response.json().await.unwrap();
        assert_eq!(problem["code"], "unauthorized", "attempt {i}");
    }
}

/// A cursor as the API makes them (nanoseconds since 1970, big-endian, then an id), for a time
/// the API never handed out.
fn forged_cursor(nanos: i128) -> String {
    use base64::Engine;
    let mut raw = nanos.to_be_bytes().to_vec();
    raw.extend_from_slice(uuid::Uuid::now_v7().as_bytes());
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
}

#[tokio::test]
async fn forged_cursors_of_years_postgresql_cannot_store_answer_422() {
    let app = TestApp::spawn().await;
    let user = app.create_user(10).await;
    // The year -9999: a valid time to the API's clock, out of PostgreSQL's range.
    let ancient = time::Date::MIN.midnight().assume_utc().unix_timestamp_nanos();
    for path in ["/v1/generations", "/v1/credits/timeline"] {
        for nanos in [ancient, -1] {
            let response =
                app.user_get(&user, &format!("{path}?cursor={}", forged_cursor(nanos))).await;
            assert_eq!(response.status(), 422, "{path}");
            let problem: Value = response.json().await.unwrap();
            assert_eq!(problem["errors"][0]["field"], "cursor", "{problem}");
        }
    }
    // The summary's bounds are RFC 3339 times, years 0 to 9999, all of which PostgreSQL can
    // compare with: answered, never a 500.
    let response = app
        .user_get(&user, "/v1/credits/summary?from=0001-01-01T00:00:00Z&to=9999-12-31T00:00:00Z")
        .await;
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn the_timeline_pages_newest_first_and_shows_voided_entries_only_when_asked() {
    let app = TestApp::spawn().await;
    let user = app.create_user(500).await;
    let user_id: UserId = user.id.parse().unwrap();
    // Three jobs charge credits; the middle one is refunded.
    let mut jobs: Vec<LedgerGeneration> = Vec::new();
    for cost in [10, 20, 30] {
        jobs.push(fixtures::reserved_generation(&app.pool, user_id, cost).await.unwrap());
    }
    assert_eq!(jobs[0].media, MediaType::Video);
    let refunded = jobs[1];
    db::transaction!(&app.pool, LedgerError, |tx| ledger::refund(tx, &refunded, "provider_failed")
        .await?)
    .await
    .unwrap();

    let page: Value =
        app.user_get(&user, "/v1/credits/timeline?limit=2").await.json().await.unwrap();
    let amounts: Vec<i64> =
        page["data"].as_array().unwrap().iter().map(|e| e["amount"].as_i64().unwrap()).collect();
    assert_eq!(amounts, vec![-30, -10], "newest first, voided entry hidden");
    let cursor = page["next_cursor"].as_str().expect("a second page");
    let rest: Value = app
        .user_get(&user, &format!("/v1/credits/timeline?limit=2&cursor={cursor}"))
        .await
        .json()
        .await
        .unwrap();
    let amounts: Vec<i64> =
        rest["data"].as_array().unwrap().iter().map(|e| e["amount"].as_i64().unwrap()).collect();
    assert_eq!(amounts, vec![500]);
    assert_eq!(rest["next_cursor"], Value::Null);

    let all: Value =
        app.user_get(&user, "/v1/credits/timeline?include_voided=true").await.json().await.unwrap();
    let data = all["data"].as_array().unwrap();
    assert_eq!(data.len(), 4);
    let voided: Vec<&Value> = data.iter().filter(|e| !e["voided_at"].is_null()).collect();
    assert_eq!(voided.len(), 1);
    assert_eq!(voided[0]["amount"], -20);
    assert_eq!(voided[0]["voided_reason"], "provider_failed");
    assert_eq!(voided[0]["generation_id"], json!(refunded.id));

    let summary: Value = app.user_get(&user, "/v1/credits/summary").await.json().await.unwrap();
    let totals: Vec<(String, i64)> = summary["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| (l["trans_type"].as_str().unwrap().to_owned(), l["total"].as_i64().unwrap()))
        .collect();
    assert_eq!(totals, vec![("system_add".to_owned(), 500), ("video_generation".to_owned(), -40)]);
    let future: Value = app
        .user_get(&user, "/v1/credits/summary?from=2099-01-01T00:00:00Z")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(future["data"], json!([]));

    for bad in [
        "/v1/credits/timeline?limit=0",
        "/v1/credits/timeline?cursor=garbage",
        "/v1/credits/summary?from=yesterday",
    ] {
        let response = app.user_get(&user, bad).await;
        assert_eq!(response.status(), 422, "{bad}");
    }
}

#[tokio::test]
async fn users_get_the_configured_welcome_grant() {
    let app = TestApp::builder()
        .env("GENGATE__ACCOUNTS__NEW_USER_CREDITS", "150")
        .env("GENGATE__ACCOUNTS__NEW_USER_CREDITS_DAYS", "7")
        .spawn()
        .await;
    let user = app.create_user(0).await;
    let credits: Value = app.user_get(&user, "/v1/credits").await.json().await.unwrap();
    assert_eq!(credits["balance"], 150);
    assert_eq!(credits["grants"][0]["source"], "new_user");
    assert!(credits["grants"][0]["expires_at"].is_string());

    let duplicate = app.admin_post("/admin/users", json!({"email": "a@example.com"})).await;
    assert_eq!(duplicate.status(), 201);
    let duplicate = app.admin_post("/admin/users", json!({"email": "a@example.com"})).await;
    assert_eq!(duplicate.status(), 409);
    assert_eq!(duplicate.json::<Value>().await.unwrap()["code"], "email_taken");
}
