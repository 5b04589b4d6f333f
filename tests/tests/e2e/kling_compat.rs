//! The Kling-compatible API (`/kling/v1/videos/…`), driven as a Kling client drives Kling: a JWT
//! signed with a Kling key pair, each endpoint, polling to `succeed`, a failure, refused
//! credentials and requests; every answer compared with Kling's documented format
//! (`tests/fixtures/kling/<mode>.json`); a `callback_url` told the task object when it is
//! processing and when it ends.

use std::collections::BTreeSet;
use std::time::Duration;

use gengate_shared::providers::kling::token;
use gengate_tests::harness::clock::unix_now;
use gengate_tests::harness::eventually;
use gengate_tests::harness::receiver::{Receiver, Reply};
use gengate_tests::{TestApp, TestUser};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(30);
const IMAGE: &str = "https://img.example.com/cat.png";

/// A user with a Kling key pair.
struct KlingClient {
    user: TestUser,
    key_id: String,
    access_key: String,
    secret_key: String,
}

impl KlingClient {
    /// A JWT as Kling's SDKs make it, at `now + offset` seconds.
    fn jwt_at(&self, offset: i64) -> String {
        token(&self.access_key, &self.secret_key, unix_now() + offset)
    }

    fn jwt(&self) -> String {
        self.jwt_at(0)
    }
}

async fn kling_client(app: &TestApp, credits: i64) -> KlingClient {
    let user = app.create_user(credits).await;
    let response =
        app.admin_post(&format!("/admin/users/{}/api-keys", user.id), json!({"kling": true})).await;
    assert_eq!(response.status(), 201);
    let key: Value = response.json().await.unwrap();
    assert!(key["key"].as_str().unwrap().starts_with("gg_"), "{key}");
    let access_key = key["kling_access_key"].as_str().unwrap().to_owned();
    let secret_key = key["kling_secret_key"].as_str().unwrap().to_owned();
    assert_eq!(access_key.len(), 32);
    assert_eq!(secret_key.len(), 64);
    // Never stored: no column of the key's row holds the secret.
    let row: String =
        sqlx::query_scalar("SELECT row_to_json(k)::text FROM api_keys k WHERE id = $1::uuid")
            .bind(key["id"].as_str().unwrap())
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert!(!row.contains(&secret_key) && row.contains(&access_key), "{row}");
    KlingClient { user, key_id: key["id"].as_str().unwrap().to_owned(), access_key, secret_key }
}

async fn send(request: reqwest::RequestBuilder, bearer: Option<&str>) -> (u16, Value) {
    let request = match bearer {
        Some(token) => request.bearer_auth(token),
        None => request,
    };
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    let body =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{status}: not JSON ({e}): {text}"));
    (status, body)
}

async fn create(app: &TestApp, bearer: Option<&str>, mode: &str, body: &Value) -> (u16, Value) {
    let url = format!("{}/kling/v1/videos/{mode}", app.api_url);
    send(app.http.post(url).json(body), bearer).await
}

async fn query(app: &TestApp, bearer: Option<&str>, path: &str) -> (u16, Value) {
    send(app.http.get(format!("{}/kling/v1/videos/{path}", app.api_url)), bearer).await
}

/// Asserts a Kling error answer: status, code, and the envelope's members.
fn assert_kling_error(answer: &(u16, Value), status: u16, code: i64) {
    let (got, body) = answer;
    assert_eq!((*got, body["code"].as_i64()), (status, Some(code)), "{body}");
    let members: BTreeSet<&str> = body.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(members, BTreeSet::from(["code", "message", "request_id"]), "{body}");
    assert!(!body["message"].as_str().unwrap().is_empty());
}

fn fixture(mode: &str) -> Value {
    let path = format!("{}/fixtures/kling/{mode}.json", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

/// Compares an answer with Kling's documented one member by member: the same members at every
/// level, each of the same JSON type (whole numbers stay whole), arrays of the same shape.
fn assert_same_shape(at: &str, documented: &Value, ours: &Value) {
    match (documented, ours) {
        (Value::Object(d), Value::Object(o)) => {
            let documented: BTreeSet<&String> = d.keys().filter(|k| !k.starts_with('_')).collect();
            let answered: BTreeSet<&String> = o.keys().collect();
            assert_eq!(documented, answered, "{at}: members differ\n{ours:#}");
            for key in documented {
                assert_same_shape(&format!("{at}.{key}"), &d[key], &o[key]);
            }
        }
        (Value::Array(d), Value::Array(o)) => {
            assert_eq!(d.is_empty(), o.is_empty(), "{at}: {ours}");
            for item in o {
                assert_same_shape(&format!("{at}[]"), &d[0], item);
            }
        }
        (Value::String(_), Value::String(_)) | (Value::Bool(_), Value::Bool(_)) => {}
        (Value::Number(d), Value::Number(o)) => {
            assert_eq!(d.is_i64(), o.is_i64(), "{at}: {documented} vs {ours}")
        }
        _ => panic!("{at}: documented {documented}, answered {ours}"),
    }
}

/// [`assert_same_shape`] plus the values Kling fixes: code 0, `SUCCEED`, the status, timestamps
/// in milliseconds.
fn assert_kling_answer(documented: &Value, ours: &Value) {
    assert_same_shape("answer", documented, ours);
    assert_eq!(ours["code"], 0);
    assert_eq!(ours["message"], "SUCCEED");
    assert!(!ours["request_id"].as_str().unwrap().is_empty());
    let data = &ours["data"];
    assert_eq!(data["task_status"], documented["data"]["task_status"], "{ours:#}");
    let now_ms = unix_now() * 1000;
    for field in ["created_at", "updated_at"] {
        let at = data[field].as_i64().unwrap();
        assert!((now_ms - 600_000..=now_ms + 60_000).contains(&at), "{field} {at} is not in ms");
    }
    for video in data["task_result"]["videos"].as_array().into_iter().flatten() {
        let duration: f64 = video["duration"].as_str().unwrap().parse().unwrap();
        assert!(duration > 0.0, "{video}");
        assert!(video["url"].as_str().unwrap().starts_with("http"), "{video}");
    }
}

async fn wait_for_task(app: &TestApp, jwt: &str, path: &str, status: &str) -> Value {
    eventually(&format!("task {path} {status}"), WAIT, || async {
        let (code, body) = query(app, Some(jwt), path).await;
        assert_eq!(code, 200, "{body}");
        (body["data"]["task_status"] == status).then_some(body)
    })
    .await
}

#[tokio::test]
async fn every_endpoint_runs_to_succeed_and_answers_in_klings_shape() {
    let app = TestApp::builder().workers(1).spawn().await;
    let client = kling_client(&app, 10_000).await;
    let cases = [
        (
            "text2video",
            json!({"model_name": "kling-v1-6", "mode": "pro", "prompt": "a cat",
            "negative_prompt": "blur", "cfg_scale": 0.5, "aspect_ratio": "16:9", "duration": "5",
            "external_task_id": "my-t2v-0001", "callback_url": ""}),
            "kling-v1-6-pro",
        ),
        (
            "image2video",
            json!({"model_name": "kling-v1-6", "mode": "std", "prompt": "it moves",
            "image": IMAGE, "duration": "10", "external_task_id": "my-i2v-0001"}),
            "kling-v1-6-std",
        ),
        (
            "multi-image2video",
            json!({"model_name": "kling-v1-6", "prompt": "two cats",
            "image_list": [{"image": IMAGE}, {"image": IMAGE}], "aspect_ratio": "9:16",
            "external_task_id": "my-mi2v-0001"}),
            "kling-v1-6-std",
        ),
        (
            "omni-video",
            json!({"model_name": "kling-video-o1", "prompt": "a cat",
            "image_list": [{"image_url": IMAGE}], "duration": "7", "aspect_ratio": "1:1",
            "external_task_id": "my-omni-0001"}),
            "kling-video-o1",
        ),
    ];
    let mut spent = 0;
    for (mode, body, model) in &cases {
        let documented = fixture(mode);
        let (status, created) = create(&app, Some(&client.jwt()), mode, body).await;
        assert_eq!(status, 200, "{mode}: {created}");
        assert_kling_answer(&documented["create"], &created);
        let id = created["data"]["task_id"].as_str().unwrap().to_owned();
        assert_eq!(created["data"]["task_info"]["external_task_id"], body["external_task_id"]);

        let done = wait_for_task(&app, &client.jwt(), &format!("{mode}/{id}"), "succeed").await;
        assert_kling_answer(&documented["query"], &done);
        assert_eq!(done["data"]["task_id"], id.as_str());
        assert_eq!(done["data"]["task_result"]["videos"].as_array().unwrap().len(), 1);

        // The same task through gengate's own API: same model, charged its price.
        let generation: Value = app
            .user_get(&client.user, &format!("/v1/generations/{id}"))
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(generation["model"], *model, "{generation}");
        assert_eq!(generation["mode"], *mode);
        assert_eq!(generation["status"], "completed");
        assert_eq!(generation["charged"], generation["cost"]);
        spent += generation["cost"].as_i64().unwrap();
        let video = &generation["result"]["videos"][0];
        assert_eq!(done["data"]["task_result"]["videos"][0]["url"], video["url"]);

        // By external_task_id too, and with the gengate API key instead of a JWT.
        let ext = body["external_task_id"].as_str().unwrap();
        let (status, by_ext) = query(&app, Some(&client.jwt()), &format!("{mode}/{ext}")).await;
        assert_eq!((status, &by_ext["data"]["task_id"]), (200, &json!(id)), "{by_ext}");
        let (status, by_key) = query(&app, Some(&client.user.key), &format!("{mode}/{id}")).await;
        assert_eq!((status, &by_key["data"]["task_status"]), (200, &json!("succeed")));
        // Another endpoint's path does not find it.
        let other = if *mode == "text2video" { "omni-video" } else { "text2video" };
        assert_kling_error(
            &query(&app, Some(&client.jwt()), &format!("{other}/{id}")).await,
            404,
            1203,
        );
    }
    // The provider received Kling's own fields, as gengate's catalogue maps them.
    let creates: Vec<_> = app
        .sim
        .requests()
        .into_iter()
        .filter(|r| r.method == "POST" && r.path == "/v1/videos/text2video")
        .collect();
    assert_eq!(creates.len(), 1);
    let sent = creates[0].body.as_ref().unwrap();
    assert_eq!((&sent["model_name"], &sent["mode"]), (&json!("kling-v1-6"), &json!("pro")));
    assert_eq!(sent["negative_prompt"], "blur");
    assert_eq!(app.balance(&client.user).await, 10_000 - spent);

    // Replaying a create with the same external_task_id answers the same task, charged once;
    // another request with it is refused.
    let (status, again) = create(&app, Some(&client.jwt()), "text2video", &cases[0].1).await;
    assert_eq!(status, 200, "{again}");
    let (_, first) = query(&app, Some(&client.jwt()), "text2video/my-t2v-0001").await;
    assert_eq!(again["data"]["task_id"], first["data"]["task_id"]);
    let mut changed = cases[0].1.clone();
    changed["prompt"] = json!("a dog");
    assert_kling_error(&create(&app, Some(&client.jwt()), "text2video", &changed).await, 400, 1201);
    assert_eq!(app.balance(&client.user).await, 10_000 - spent);

    // The list: this endpoint's tasks, newest first, a page at a time.
    let (status, page) = query(&app, Some(&client.jwt()), "text2video?pageNum=1&pageSize=10").await;
    assert_eq!(status, 200, "{page}");
    let tasks = page["data"].as_array().unwrap();
    assert_eq!(tasks.len(), 1, "{page}");
    assert_same_shape("list[]", &fixture("text2video")["query"]["data"], &tasks[0]);
    let (_, empty) = query(&app, Some(&client.jwt()), "text2video?pageNum=2&pageSize=10").await;
    assert_eq!(empty["data"], json!([]));
    assert_kling_error(&query(&app, Some(&client.jwt()), "text2video?pageSize=0").await, 400, 1201);
    assert_kling_error(&query(&app, Some(&client.jwt()), "text2video?page=1").await, 400, 1201);
    app.assert_reconciled().await;
}

#[tokio::test]
async fn a_task_the_provider_fails_is_failed_and_refunded() {
    let app = TestApp::builder().workers(1).spawn().await;
    let client = kling_client(&app, 1000).await;
    let body = json!({"model_name": "kling-v1-6", "mode": "pro", "prompt": "[[sim:fail]] a cat"});
    let (status, created) = create(&app, Some(&client.jwt()), "text2video", &body).await;
    assert_eq!(status, 200, "{created}");
    assert_eq!(created["data"]["task_info"], json!({}));
    let id = created["data"]["task_id"].as_str().unwrap();
    let failed = wait_for_task(&app, &client.jwt(), &format!("text2video/{id}"), "failed").await;
    let documented = fixture("text2video");
    assert_same_shape("answer", &documented["query"]["code"], &failed["code"]);
    assert!(!failed["data"]["task_status_msg"].as_str().unwrap().is_empty(), "{failed}");
    assert_eq!(failed["data"]["task_result"], json!({"videos": []}));
    assert_eq!(failed["data"]["final_unit_deduction"], "0", "refunded: it costs nothing");
    assert_eq!(app.balance(&client.user).await, 1000);
    app.assert_reconciled().await;
}

#[tokio::test]
async fn every_kling_model_name_is_served_by_its_catalogue_model_and_sent_upstream_as_itself() {
    let app = TestApp::builder().workers(2).spawn().await;
    let client = kling_client(&app, 10_000).await;
    // (endpoint, model_name (None: Kling's default), mode, the catalogue model, what Kling gets).
    let cases = [
        ("text2video", None, "std", "kling-v1-std", ("kling-v1", "std")),
        ("text2video", Some("kling-v1"), "pro", "kling-v1-pro", ("kling-v1", "pro")),
        ("text2video", Some("kling-v1-5"), "std", "kling-v1-5-std", ("kling-v1-5", "std")),
        ("text2video", Some("kling-v1-5"), "pro", "kling-v1-5-pro", ("kling-v1-5", "pro")),
        (
            "text2video",
            Some("kling-v2-master"),
            "pro",
            "kling-v2-master",
            ("kling-v2-master", "std"),
        ),
        ("image2video", Some("kling-v2-1"), "std", "kling-v2-1-std", ("kling-v2-1", "std")),
        ("image2video", Some("kling-v2-1"), "pro", "kling-v2-1-pro", ("kling-v2-1", "pro")),
        (
            "image2video",
            Some("kling-v2-1-master"),
            "std",
            "kling-v2-1-master",
            ("kling-v2-1-master", "std"),
        ),
        (
            "text2video",
            Some("kling-v2-5-turbo"),
            "std",
            "kling-v2-5-turbo-std",
            ("kling-v2-5-turbo", "std"),
        ),
        (
            "image2video",
            Some("kling-v2-5-turbo"),
            "pro",
            "kling-v2-5-turbo-pro",
            ("kling-v2-5-turbo", "pro"),
        ),
    ];
    let mut tasks = Vec::new();
    for (i, (endpoint, model_name, mode, _, _)) in cases.iter().enumerate() {
        let mut body =
            json!({"mode": mode, "prompt": "a cat", "external_task_id": format!("names-{i}")});
        if let Some(name) = model_name {
            body["model_name"] = json!(name);
        }
        if *endpoint == "image2video" {
            body["image"] = json!(IMAGE);
        }
        let (status, created) = create(&app, Some(&client.jwt()), endpoint, &body).await;
        assert_eq!(status, 200, "{body}: {created}");
        tasks.push(created["data"]["task_id"].as_str().unwrap().to_owned());
    }
    let mut charged = 0;
    for ((endpoint, _, _, model, upstream), id) in cases.iter().zip(&tasks) {
        let done = wait_for_task(&app, &client.jwt(), &format!("{endpoint}/{id}"), "succeed").await;
        let generation: Value = app
            .user_get(&client.user, &format!("/v1/generations/{id}"))
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(generation["model"], *model, "{id}");
        // What the task cost, in Kling's field.
        assert_eq!(done["data"]["final_unit_deduction"], generation["cost"].to_string(), "{done}");
        charged += generation["cost"].as_i64().unwrap();
        let sent = app
            .sim
            .requests()
            .into_iter()
            .filter(|r| r.method == "POST" && r.path == format!("/v1/videos/{endpoint}"))
            .map(|r| r.body.unwrap())
            .find(|body| body["external_task_id"] == id.as_str())
            .expect("sent upstream");
        assert_eq!((&sent["model_name"], &sent["mode"]), (&json!(upstream.0), &json!(upstream.1)));
    }
    // 5 s at 16:9: base price × 1.2 rounded up; Kling 1.5 (17 → 21, 29 → 35) as an example.
    let v1_5: Vec<Value> = app
        .user_get(&client.user, "/v1/generations?limit=100")
        .await
        .json::<Value>()
        .await
        .unwrap()["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|g| g["model"].as_str().unwrap().starts_with("kling-v1-5"))
        .map(|g| g["cost"].clone())
        .collect();
    assert_eq!(
        BTreeSet::from_iter(v1_5.iter().map(|c| c.as_i64().unwrap())),
        BTreeSet::from([21, 35])
    );
    // Kling 1.5 makes no multi-image videos: Kling's unknown-resource error, nothing charged.
    let body = json!({"model_name": "kling-v1-5", "mode": "std", "prompt": "two cats",
                      "image_list": [{"image": IMAGE}, {"image": IMAGE}]});
    assert_kling_error(
        &create(&app, Some(&client.jwt()), "multi-image2video", &body).await,
        404,
        1203,
    );
    assert_eq!(app.balance(&client.user).await, 10_000 - charged);
    app.assert_reconciled().await;
}

#[tokio::test]
async fn a_last_frame_and_a_camera_movement_reach_kling_where_the_model_takes_them() {
    let app = TestApp::builder().workers(1).spawn().await;
    let client = kling_client(&app, 1000).await;
    const LAST: &str = "https://img.example.com/last.png";
    let body = json!({"model_name": "kling-v1", "mode": "pro", "prompt": "it turns",
        "image": IMAGE, "image_tail": LAST,
        "camera_control": {"type": "simple", "config": {"zoom": 5}}});
    let (status, created) = create(&app, Some(&client.jwt()), "image2video", &body).await;
    assert_eq!(status, 200, "{created}");
    let id = created["data"]["task_id"].as_str().unwrap().to_owned();
    wait_for_task(&app, &client.jwt(), &format!("image2video/{id}"), "succeed").await;
    let sent = app
        .sim
        .requests()
        .into_iter()
        .find(|r| r.method == "POST" && r.path == "/v1/videos/image2video")
        .and_then(|r| r.body)
        .expect("sent upstream");
    let camera = json!({"type": "simple", "config": {"horizontal": 0.0, "vertical": 0.0,
        "pan": 0.0, "tilt": 0.0, "roll": 0.0, "zoom": 5.0}});
    assert_eq!((&sent["image"], &sent["image_tail"]), (&json!(IMAGE), &json!(LAST)));
    assert_eq!(sent["camera_control"], camera);
    // The generation shows them as the client's request.
    let generation: Value =
        app.user_get(&client.user, &format!("/v1/generations/{id}")).await.json().await.unwrap();
    assert_eq!(generation["params"]["end_image_url"], LAST);
    assert_eq!(generation["params"]["camera_control"], camera);

    // Where the model does not take them, or they are malformed: Kling's 1201, nothing made.
    for (endpoint, body, field) in [
        (
            "image2video",
            json!({"model_name": "kling-v1", "mode": "std", "image": IMAGE,
            "image_tail": LAST}),
            "image_tail",
        ),
        (
            "image2video",
            json!({"model_name": "kling-v1", "mode": "pro", "image": IMAGE,
            "image_tail": "bGFzdA=="}),
            "image_tail",
        ),
        (
            "text2video",
            json!({"model_name": "kling-v2-master", "prompt": "a cat",
            "camera_control": {"type": "down_back"}}),
            "camera_control",
        ),
        (
            "text2video",
            json!({"model_name": "kling-v1", "prompt": "a cat",
            "camera_control": {"type": "simple", "config": {"pan": 2, "tilt": 2}}}),
            "camera_control.config",
        ),
    ] {
        let answer = create(&app, Some(&client.jwt()), endpoint, &body).await;
        assert_kling_error(&answer, 400, 1201);
        assert!(answer.1["message"].as_str().unwrap().contains(field), "{field}: {}", answer.1);
    }
    let generations: i64 =
        sqlx::query_scalar("SELECT count(*) FROM generations").fetch_one(&app.pool).await.unwrap();
    assert_eq!(generations, 1);
    app.assert_reconciled().await;
}

#[tokio::test]
async fn bad_credentials_are_refused_with_klings_codes() {
    let app = TestApp::spawn().await;
    let client = kling_client(&app, 1000).await;
    let body = json!({"model_name": "kling-v1-6", "mode": "pro", "prompt": "a cat"});
    let forged = token(&client.access_key, &"0".repeat(64), unix_now());
    let unknown = token("NoSuchAccessKeyNoSuchAccessKey00", &client.secret_key, unix_now());
    let cases: [(Option<String>, i64); 7] = [
        (None, 1001),
        (Some("not-a-jwt".into()), 1002),
        (Some(forged), 1002),
        (Some(unknown), 1002),
        // Kling's tokens live 30 minutes: this one was made 31 minutes ago.
        (Some(client.jwt_at(-31 * 60)), 1004),
        // Not valid before now + 10 minutes − 5 s.
        (Some(client.jwt_at(600)), 1003),
        (Some("gg_AAAAAAAAAAAA_bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb".into()), 1002),
    ];
    for (bearer, code) in &cases {
        assert_kling_error(&create(&app, bearer.as_deref(), "text2video", &body).await, 401, *code);
        assert_kling_error(
            &query(&app, bearer.as_deref(), "text2video?pageNum=1").await,
            401,
            *code,
        );
    }
    // A valid one passes; the gengate API key too.
    let (status, answer) = query(&app, Some(&client.jwt()), "text2video").await;
    assert_eq!((status, answer["data"].clone()), (200, json!([])));
    let (status, _) = query(&app, Some(&client.user.key), "text2video").await;
    assert_eq!(status, 200);
    // gengatectl issues pairs too.
    let issued = app.ctl_json(&["keys", "create", &client.user.id, "--kling", "--json"]).await;
    let from_ctl = token(
        issued["kling_access_key"].as_str().unwrap(),
        issued["kling_secret_key"].as_str().unwrap(),
        unix_now(),
    );
    assert_eq!(query(&app, Some(&from_ctl), "omni-video").await.0, 200);
    // Revoking the API key revokes its pair.
    let output = app.ctl(&["keys", "revoke", &client.key_id]).await;
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert_kling_error(&query(&app, Some(&client.jwt()), "text2video").await, 401, 1002);
    assert_eq!(query(&app, Some(&from_ctl), "omni-video").await.0, 200);
    // Nothing was created by any of it.
    let generations: i64 =
        sqlx::query_scalar("SELECT count(*) FROM generations").fetch_one(&app.pool).await.unwrap();
    assert_eq!(generations, 0);
}

#[tokio::test]
async fn unknown_models_bad_requests_and_insufficient_credits_change_nothing() {
    let app = TestApp::spawn().await;
    let client = kling_client(&app, 30).await;
    let jwt = client.jwt();
    let ok = json!({"model_name": "kling-v1-6", "mode": "pro", "prompt": "a cat"});
    let mut cases = Vec::new();
    // A name Kling does not have, and models on endpoints they do not offer.
    for (mode, body) in [
        ("text2video", json!({"model_name": "kling-v9", "prompt": "a cat"})),
        ("text2video", json!({"model_name": "kling-v2-1", "prompt": "a cat"})),
        ("text2video", json!({"model_name": "kling-video-o1", "prompt": "a cat"})),
        (
            "multi-image2video",
            json!({"model_name": "kling-v2-5-turbo", "prompt": "two cats",
            "image_list": [{"image": IMAGE}, {"image": IMAGE}]}),
        ),
    ] {
        cases.push((create(&app, Some(&jwt), mode, &body).await, 404, 1203));
    }
    let bad = [
        json!({"model_name": "kling-v1-6", "mode": "ultra", "prompt": "a cat"}),
        json!({"model_name": "kling-v1-6", "prompt": "a cat", "duration": "7"}),
        json!({"model_name": "kling-v1-6", "prompt": "a cat", "duration": 5.5}),
        json!({"model_name": "kling-v1-6", "prompt": "a cat", "cfg_scale": 3}),
        json!({"model_name": "kling-v1-6", "prompt": "a cat", "callback_url": "ftp://x.example/cb"}),
        json!({"model_name": "kling-v1-6", "prompt": "a cat", "camera_control": {"type": "simple"}}),
        json!({"model_name": "kling-v1-6", "prompt": "a cat", "colour": "red"}),
        json!({"model_name": "kling-v1-6"}),
        json!({"model_name": "kling-v1-6", "prompt": "x".repeat(2501)}),
        json!(["not", "an", "object"]),
    ];
    for body in &bad {
        cases.push((create(&app, Some(&jwt), "text2video", body).await, 400, 1201));
    }
    cases.push((
        create(
            &app,
            Some(&jwt),
            "image2video",
            &json!({"model_name": "kling-v1-6", "image": "aGVsbG8="}),
        )
        .await,
        400,
        1201,
    ));
    let not_json = app
        .http
        .post(format!("{}/kling/v1/videos/text2video", app.api_url))
        .bearer_auth(&jwt)
        .header("content-type", "application/json")
        .body("{not json");
    cases.push((send(not_json, None).await, 400, 1200));
    cases.push((create(&app, Some(&jwt), "text2image", &ok).await, 404, 1202));
    // 42 credits for kling-v1-6-pro text2video 5 s 16:9; the user has 30.
    cases.push((create(&app, Some(&jwt), "text2video", &ok).await, 429, 1102));
    for (answer, status, code) in &cases {
        assert_kling_error(answer, *status, *code);
    }
    let generations: i64 =
        sqlx::query_scalar("SELECT count(*) FROM generations").fetch_one(&app.pool).await.unwrap();
    assert_eq!(generations, 0);
    assert_eq!(app.balance(&client.user).await, 30);
    app.assert_reconciled().await;
}

#[tokio::test]
async fn concurrency_and_rate_limits_answer_klings_codes() {
    // No workers: an accepted task stays in flight. Three requests per key at once, then 429.
    let app = TestApp::builder()
        .env("GENGATE__LIMITS__RATE_LIMIT_PER_SECOND", "0.001")
        .env("GENGATE__LIMITS__RATE_LIMIT_BURST", "3")
        .spawn()
        .await;
    let user = app.create_user_with(1000, json!({"max_in_flight": 1})).await;
    let response =
        app.admin_post(&format!("/admin/users/{}/api-keys", user.id), json!({"kling": true})).await;
    assert_eq!(response.status(), 201);
    let key: Value = response.json().await.unwrap();
    let client = KlingClient {
        user,
        key_id: key["id"].as_str().unwrap().to_owned(),
        access_key: key["kling_access_key"].as_str().unwrap().to_owned(),
        secret_key: key["kling_secret_key"].as_str().unwrap().to_owned(),
    };
    let body = json!({"model_name": "kling-v1-6", "mode": "pro", "prompt": "a cat"});
    let (status, first) = create(&app, Some(&client.jwt()), "text2video", &body).await;
    assert_eq!(status, 200, "{first}");
    for _ in 0..2 {
        assert_kling_error(
            &create(&app, Some(&client.jwt()), "text2video", &body).await,
            429,
            1303,
        );
    }
    // The fourth request of the key.
    let url = format!("{}/kling/v1/videos/text2video", app.api_url);
    let response = app.http.post(&url).bearer_auth(client.jwt()).json(&body).send().await.unwrap();
    assert!(response.headers().get("retry-after").is_some());
    let status = response.status().as_u16();
    let answer = (status, response.json::<Value>().await.unwrap());
    assert_kling_error(&answer, 429, 1302);
    // One task, charged once.
    assert_eq!(app.balance(&client.user).await, 1000 - 42);
    assert!(!client.key_id.is_empty());
}

/// Compares a Kling callback's body with the task's query answer `data`, member by member. The
/// video links alone may differ: the callback's were made when it was first sent, and the query
/// answers gengate's own signed links once the files are archived.
fn assert_callback_is_the_task(callback: &Value, task: &Value) {
    let members = |v: &Value| v.as_object().unwrap().keys().cloned().collect::<BTreeSet<_>>();
    assert_eq!(members(callback), members(task), "{callback:#}\n{task:#}");
    for member in members(task) {
        if member == "task_result" {
            let (ours, queried) = (&callback[&member]["videos"], &task[&member]["videos"]);
            assert_eq!(members(&callback[&member]), BTreeSet::from(["videos".to_owned()]));
            assert_eq!(ours.as_array().unwrap().len(), queried.as_array().unwrap().len());
            for (a, b) in ours.as_array().unwrap().iter().zip(queried.as_array().unwrap()) {
                assert_eq!(members(a), members(b), "{a} vs {b}");
                assert_eq!((&a["id"], &a["duration"]), (&b["id"], &b["duration"]));
                assert!(a["url"].as_str().unwrap().starts_with("http"), "{a}");
            }
        } else {
            assert_eq!(callback[&member], task[&member], "{member}");
        }
    }
}

#[tokio::test]
async fn a_callback_url_gets_the_task_object_when_it_succeeds_retried_with_the_same_id() {
    let app = TestApp::builder().workers(1).spawn().await;
    let receiver = Receiver::scripted(vec![Reply::Status(500)]).await;
    let client = kling_client(&app, 10_000).await;
    // The task runs 2 s: the `processing` callback is made while the task is processing.
    let body = json!({"model_name": "kling-v1-6", "mode": "pro",
        "prompt": "a cat [[sim:ok]] [[sim:delay=2000]]", "duration": "5",
        "external_task_id": "my-cb-0001", "callback_url": receiver.url("/cb")});
    let (status, created) = create(&app, Some(&client.jwt()), "text2video", &body).await;
    assert_eq!(status, 200, "{created}");
    let id = created["data"]["task_id"].as_str().unwrap().to_owned();
    let path = format!("text2video/{id}");
    let done = wait_for_task(&app, &client.jwt(), &path, "succeed").await;
    // Two callbacks, logged like any delivery: `processing` (the provider took the task; not
    // `submitted`, at creation) and the end.
    let logged = eventually("both callbacks delivered", WAIT, || async {
        let response =
            app.user_get(&client.user, &format!("/v1/generations/{id}/deliveries")).await;
        assert_eq!(response.status(), 200);
        let body: Value = response.json().await.unwrap();
        let data = body["data"].as_array().unwrap().clone();
        (data.len() == 2 && data.iter().all(|d| d["status"] == "delivered")).then_some(data)
    })
    .await;
    let events: Vec<&str> = logged.iter().map(|d| d["event"].as_str().unwrap()).collect();
    assert_eq!(events, ["generation.processing", "generation.completed"], "{logged:#?}");
    assert!(logged.iter().all(|d| d["format"] == "kling"), "{logged:#?}");
    // The first to arrive got the 500, and was sent again after the schedule's first pause.
    let received = receiver.wait_for(3, WAIT).await;
    assert_eq!(received.len(), 3);
    assert!(received.iter().all(|r| r.path == "/cb"));
    assert!(received[0].id().starts_with("msg_"), "{:?}", received[0].headers);
    let retried: Vec<&Value> = logged.iter().filter(|d| d["attempts"] == 2).collect();
    assert_eq!(retried.len(), 1, "{logged:#?}");
    assert_eq!(retried[0]["attempt_log"][0]["status_code"], 500);
    assert_eq!(retried[0]["id"], received[0].id());
    assert_eq!(received[0].id(), received[1].id(), "one webhook-id");
    assert_eq!(received[0].body, received[1].body, "the same bytes");
    assert!(received.iter().all(|r| r.header("webhook-signature").starts_with("v1,")), "signed");
    assert_eq!(received[0].header("content-type"), "application/json");
    let arrived = |delivery: &Value| {
        received.iter().find(|r| r.id() == delivery["id"]).expect("the logged delivery arrived")
    };

    // `processing`: the same task object, before its result.
    let processing = arrived(&logged[0]).json();
    assert_eq!(processing["task_status"], "processing", "{processing:#}");
    assert_eq!(processing["task_id"], id);
    assert_eq!(processing["task_status_msg"], "");
    assert_eq!(processing["task_info"], json!({"external_task_id": "my-cb-0001"}));
    assert_eq!(processing["task_result"], json!({"videos": []}));
    assert_eq!(processing["created_at"], done["data"]["created_at"]);
    let update = gengate_shared::providers::kling::parse_callback(&arrived(&logged[0]).body)
        .expect("read as Kling's");
    assert_eq!(update.remote_task_id, id);
    assert!(!update.state.has_ended(), "{:?}", update.state);

    // `succeed`: the task as a query answers it.
    let callback = arrived(&logged[1]).json();
    assert_eq!(callback["task_status"], "succeed", "{callback:#}");
    assert_eq!(callback["task_info"], json!({"external_task_id": "my-cb-0001"}));
    assert_callback_is_the_task(&callback, &done["data"]);
    // What gengate itself accepts from Kling (its provider adapter) reads it as Kling's.
    let update = gengate_shared::providers::kling::parse_callback(&arrived(&logged[1]).body)
        .expect("read as Kling's");
    assert_eq!(update.remote_task_id, id);
    assert_eq!(update.external_id.as_deref(), Some("my-cb-0001"));
    assert!(update.state.has_ended(), "{:?}", update.state);
    assert_same_shape("callback", &fixture("text2video")["query"]["data"], &callback);
    // Not told of the archive copy.
    app.wait_for_archive(&id).await;
    let response = app.user_get(&client.user, &format!("/v1/generations/{id}/deliveries")).await;
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["data"].as_array().unwrap().len(), 2, "{body:#}");
    assert_eq!(receiver.received().len(), 3);
    app.assert_reconciled().await;
}

#[tokio::test]
async fn a_failed_task_calls_back_failed() {
    let app = TestApp::builder().workers(1).spawn().await;
    let receiver = Receiver::start().await;
    let client = kling_client(&app, 1000).await;
    let body = json!({"model_name": "kling-v1-6", "mode": "pro", "prompt": "[[sim:fail]] a cat",
        "callback_url": receiver.url("/failed")});
    let (status, created) = create(&app, Some(&client.jwt()), "text2video", &body).await;
    assert_eq!(status, 200, "{created}");
    let id = created["data"]["task_id"].as_str().unwrap();
    let failed = wait_for_task(&app, &client.jwt(), &format!("text2video/{id}"), "failed").await;
    // `processing` and `failed` (in either order: the task ran 200 ms, and deliveries are not
    // ordered).
    let logged = eventually("both callbacks delivered", WAIT, || async {
        let response =
            app.user_get(&client.user, &format!("/v1/generations/{id}/deliveries")).await;
        let body: Value = response.json().await.unwrap();
        let data = body["data"].as_array().unwrap().clone();
        (data.len() == 2 && data.iter().all(|d| d["status"] == "delivered")).then_some(data)
    })
    .await;
    let events: BTreeSet<&str> = logged.iter().map(|d| d["event"].as_str().unwrap()).collect();
    assert_eq!(events, BTreeSet::from(["generation.processing", "generation.failed"]));
    let received = receiver.wait_for(2, WAIT).await;
    assert_eq!(received.len(), 2);
    let failure = logged.iter().find(|d| d["event"] == "generation.failed").unwrap();
    let end = received.iter().find(|r| r.id() == failure["id"]).expect("the end arrived");
    let callback = end.json();
    assert_eq!(callback["task_status"], "failed", "{callback:#}");
    assert!(!callback["task_status_msg"].as_str().unwrap().is_empty(), "{callback:#}");
    assert_eq!(callback["task_result"], json!({"videos": []}));
    assert_callback_is_the_task(&callback, &failed["data"]);
    assert_eq!(app.balance(&client.user).await, 1000);
}

#[tokio::test]
async fn a_callback_url_the_address_rules_refuse_is_1201_and_creates_nothing() {
    let app = TestApp::builder()
        .env("GENGATE__CLIENT_WEBHOOKS__ALLOW_PRIVATE_ADDRESSES", "false")
        .spawn()
        .await;
    let receiver = Receiver::start().await;
    let client = kling_client(&app, 1000).await;
    for url in [
        receiver.url("/cb"),
        "http://localhost:9/cb".to_owned(),
        "http://169.254.169.254/latest/meta-data".to_owned(),
        "ftp://hooks.example.com/cb".to_owned(),
        "not a url".to_owned(),
    ] {
        let body = json!({"model_name": "kling-v1-6", "mode": "pro", "prompt": "a cat",
            "callback_url": url});
        let answer = create(&app, Some(&client.jwt()), "text2video", &body).await;
        assert_kling_error(&answer, 400, 1201);
        let message = answer.1["message"].as_str().unwrap();
        assert!(message.starts_with("callback_url: "), "{url}: {message}");
    }
    let created: i64 =
        sqlx::query_scalar("SELECT count(*) FROM generations WHERE user_id = $1::uuid")
            .bind(&client.user.id)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(created, 0);
    assert_eq!(app.balance(&client.user).await, 1000);
    assert!(receiver.received().is_empty());
}
