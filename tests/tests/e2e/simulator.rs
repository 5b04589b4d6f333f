//! The provider simulator on its own: each test acts as the gateway (reqwest for the provider
//! APIs, a small axum server as the callback receiver) and checks that the simulator speaks the
//! documented wire formats and gives each marked task the fate `docs/simulator.md` promises.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use base64::Engine;
use gengate_sim::{Outcome, SimConfig, SimHandle, Simulator};
use gengate_tests::harness::clock::unix_now;
use gengate_tests::harness::eventually;
use gengate_tests::harness::loopback::serve;
use hmac::Mac;
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(10);

/// Short lives and quick callback retries keep the module fast.
fn fast() -> SimConfig {
    SimConfig {
        task_duration_ms: 150,
        recovery_delay_ms: 100,
        callback_retry_interval_ms: 50,
        ..SimConfig::default()
    }
}

/// The test in the gateway's seat: a simulator and an HTTP client that talks to it.
struct Gateway {
    sim: SimHandle,
    http: reqwest::Client,
}

impl Gateway {
    fn start(config: SimConfig) -> Self {
        gengate_shared::install_crypto_provider();
        let sim = Simulator::start(config).expect("simulator starts");
        let http =
            reqwest::Client::builder().timeout(Duration::from_secs(10)).build().expect("client");
        Self { sim, http }
    }

    async fn kling_create_with_token(&self, endpoint: &str, token: &str, body: &Value) -> Answer {
        let url = format!("{}/v1/videos/{endpoint}", self.sim.url());
        Answer::of(self.http.post(url).bearer_auth(token).json(body).send().await).await
    }

    async fn kling_create(&self, endpoint: &str, body: &Value) -> Answer {
        self.kling_create_with_token(endpoint, &self.sim.kling_token(), body).await
    }

    async fn text2video(&self, body: Value) -> Answer {
        self.kling_create("text2video", &body).await
    }

    async fn kling_query(&self, endpoint: &str, id: &str) -> Answer {
        let url = format!("{}/v1/videos/{endpoint}/{id}", self.sim.url());
        Answer::of(self.http.get(url).bearer_auth(self.sim.kling_token()).send().await).await
    }

    async fn kie_create_with_key(&self, key: &str, body: &Value) -> Answer {
        let url = format!("{}/api/v1/jobs/createTask", self.sim.url());
        Answer::of(self.http.post(url).bearer_auth(key).json(body).send().await).await
    }

    async fn kie_create(&self, body: Value) -> Answer {
        self.kie_create_with_key(&self.sim.config().kie_api_key, &body).await
    }

    async fn kie_record(&self, task_id: &str) -> Answer {
        let url = format!("{}/api/v1/jobs/recordInfo", self.sim.url());
        let request = self.http.get(url).query(&[("taskId", task_id)]);
        Answer::of(request.bearer_auth(self.sim.config().kie_api_key).send().await).await
    }

    /// Creates a Kling text2video task that must be accepted; returns its task id.
    async fn kling_task(&self, prompt: &str, external_task_id: &str, callback_url: &str) -> String {
        let answer = self
            .text2video(json!({
                "model_name": "kling-v2-1-master",
                "prompt": prompt,
                "duration": "5",
                "callback_url": callback_url,
                "external_task_id": external_task_id,
            }))
            .await;
        assert_eq!(answer.status, 200, "{}", answer.body);
        answer.body["data"]["task_id"].as_str().expect("task_id").to_owned()
    }

    /// Creates a kie task that must be accepted; returns its task id.
    async fn kie_task(&self, model: &str, prompt: &str, callback_url: &str) -> String {
        let answer = self
            .kie_create(json!({
                "model": model,
                "callBackUrl": callback_url,
                "input": {"prompt": prompt, "aspect_ratio": "landscape", "n_frames": "10"},
            }))
            .await;
        assert_eq!((answer.status, &answer.body["code"]), (200, &json!(200)), "{}", answer.body);
        answer.body["data"]["taskId"].as_str().expect("taskId").to_owned()
    }

    /// Polls a Kling task until it reports `status`.
    async fn kling_until(&self, id: &str, status: &str) -> Value {
        eventually(&format!("Kling task {id} to be {status}"), WAIT, || async {
            let answer = self.kling_query("text2video", id).await;
            (answer.body["data"]["task_status"] == status).then_some(answer.body["data"].clone())
        })
        .await
    }

    /// Polls a kie task until it reports `state`, collecting every (state, progress) seen.
    async fn kie_until(&self, task_id: &str, state: &str) -> (Value, Vec<(String, u64)>) {
        let seen = Mutex::new(Vec::new());
        let data = eventually(&format!("kie task {task_id} to be {state}"), WAIT, || async {
            let data = self.kie_record(task_id).await.body["data"].clone();
            let observed = (
                data["state"].as_str().unwrap_or("").to_owned(),
                data["progress"].as_u64().unwrap_or(0),
            );
            seen.lock().unwrap().push(observed);
            (data["state"] == state).then_some(data)
        })
        .await;
        (data, seen.into_inner().unwrap())
    }
}

/// An HTTP answer: status and JSON body.
#[derive(Debug)]
struct Answer {
    status: u16,
    body: Value,
}

impl Answer {
    async fn of(response: reqwest::Result<reqwest::Response>) -> Self {
        let response = response.expect("the simulator answers");
        let status = response.status().as_u16();
        Self { status, body: response.json().await.expect("a JSON body") }
    }
}

/// A callback the receiver got.
#[derive(Debug, Clone)]
struct Hit {
    path: String,
    headers: HeaderMap,
    body: Value,
}

#[derive(Debug, Default)]
struct Inbox {
    hits: Mutex<Vec<Hit>>,
    /// Statuses to answer before answering 200.
    refusals: Mutex<VecDeque<u16>>,
}

/// The gateway's webhook endpoint, on the test's own runtime: answers every POST 200 unless told
/// to refuse first.
struct Receiver {
    base: String,
    inbox: Arc<Inbox>,
}

impl Receiver {
    async fn start() -> Self {
        Self::refusing_first(&[]).await
    }

    async fn refusing_first(statuses: &[u16]) -> Self {
        let inbox = Arc::new(Inbox::default());
        inbox.refusals.lock().unwrap().extend(statuses);
        let app = Router::new().route("/{*path}", post(receive)).with_state(inbox.clone());
        Self { base: serve(app).await, inbox }
    }

    fn url(&self, path: &str) -> String {
        format!("{}/{path}", self.base)
    }

    fn hits(&self, path: &str) -> Vec<Hit> {
        self.inbox.hits.lock().unwrap().iter().filter(|hit| hit.path == path).cloned().collect()
    }

    /// The Kling statuses called back on `path`, in arrival order (bare or enveloped bodies).
    fn kling_statuses(&self, path: &str) -> Vec<String> {
        self.hits(path)
            .iter()
            .map(|hit| kling_object(&hit.body)["task_status"].to_string())
            .map(|quoted| quoted.trim_matches('"').to_owned())
            .collect()
    }

    /// Waits until `path` received `count` callbacks whose Kling status is `status`.
    async fn kling_until(&self, path: &str, status: &str, count: usize) -> Vec<String> {
        eventually(&format!("{count} {status:?} callback(s) on {path}"), WAIT, || async {
            let statuses = self.kling_statuses(path);
            (statuses.iter().filter(|s| *s == status).count() >= count).then_some(statuses)
        })
        .await
    }

    /// Waits until `path` received `count` callbacks.
    async fn until(&self, path: &str, count: usize) -> Vec<Hit> {
        eventually(&format!("{count} callback(s) on {path}"), WAIT, || async {
            let hits = self.hits(path);
            (hits.len() >= count).then_some(hits)
        })
        .await
    }
}

async fn receive(
    State(inbox): State<Arc<Inbox>>,
    Path(path): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> StatusCode {
    let body = serde_json::from_slice(&body).unwrap_or(Value::Null);
    inbox.hits.lock().unwrap().push(Hit { path, headers, body });
    let refusal = inbox.refusals.lock().unwrap().pop_front();
    refusal.map_or(StatusCode::OK, |status| StatusCode::from_u16(status).unwrap())
}

/// The task object of a Kling callback, whether bare or wrapped in `{code, data}`.
fn kling_object(body: &Value) -> &Value {
    if body.get("data").is_some() { &body["data"] } else { body }
}

#[tokio::test]
async fn kling_refuses_unsigned_forged_expired_premature_and_foreign_tokens() {
    let gw = Gateway::start(fast());
    let config = gw.sim.config();
    let (access, secret) = (config.kling_access_key.as_str(), config.kling_secret_key.as_str());
    let body = json!({"prompt": "a lighthouse at dusk"});
    let now = unix_now();

    let cases = [
        ("forged signature", gengate_sim::jwt::kling_token(access, "not-the-secret", now), 1000),
        ("expired", gengate_sim::jwt::kling_token(access, secret, now - 3600), 1004),
        ("not yet valid", gengate_sim::jwt::kling_token(access, secret, now + 600), 1003),
        ("foreign issuer", gengate_sim::jwt::kling_token("someone-else", secret, now), 1000),
        ("not a JWT", "garbage".to_owned(), 1002),
    ];
    for (case, token, code) in cases {
        let answer = gw.kling_create_with_token("text2video", &token, &body).await;
        assert_eq!(answer.status, 401, "{case}");
        assert_eq!(answer.body["code"], code, "{case}: {}", answer.body);
        assert!(answer.body["request_id"].as_str().is_some_and(|id| !id.is_empty()), "{case}");
    }
    let url = format!("{}/v1/videos/text2video", gw.sim.url());
    let anonymous = Answer::of(gw.http.post(url).json(&body).send().await).await;
    assert_eq!((anonymous.status, &anonymous.body["code"]), (401, &json!(1001)));

    let valid = gw.kling_create("text2video", &body).await;
    assert_eq!((valid.status, &valid.body["code"]), (200, &json!(0)));
    assert!(gw.sim.tasks().len() == 1, "only the well-signed create made a task");
}

#[tokio::test]
async fn kling_task_is_found_by_id_and_external_id_and_calls_back_every_status() {
    let gw = Gateway::start(fast());
    let receiver = Receiver::start().await;
    let answer = gw
        .text2video(json!({
            "model_name": "kling-v2-1-master",
            "prompt": "a red fox in fresh snow",
            "mode": "std",
            "aspect_ratio": "16:9",
            "duration": "5",
            "callback_url": receiver.url("gen-1"),
            "external_task_id": "gen-1",
        }))
        .await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.body["code"], 0);
    assert_eq!(answer.body["message"], "SUCCEED");
    assert!(answer.body["request_id"].is_string());
    let data = &answer.body["data"];
    let task_id = data["task_id"].as_str().unwrap().to_owned();
    assert!(task_id.len() >= 18 && task_id.bytes().all(|b| b.is_ascii_digit()), "{task_id}");
    assert_eq!(data["task_status"], "submitted");
    assert_eq!(data["task_info"]["external_task_id"], "gen-1");
    assert!(data["created_at"].is_i64() && data["updated_at"].is_i64());

    let by_id = gw.kling_query("text2video", &task_id).await;
    let by_external = gw.kling_query("text2video", "gen-1").await;
    assert_eq!(by_id.body["data"]["task_id"], task_id.as_str());
    assert_eq!(by_external.body["data"]["task_id"], task_id.as_str());
    let elsewhere = gw.kling_query("image2video", &task_id).await;
    assert_eq!((elsewhere.status, &elsewhere.body["code"]), (404, &json!(1203)));

    let statuses = receiver.kling_until("gen-1", "succeed", 1).await;
    assert_eq!(statuses, ["submitted", "processing", "succeed"]);
    let last = receiver.hits("gen-1").pop().unwrap().body;
    assert!(last.get("code").is_none(), "the documented callback is the bare task object");
    assert_eq!(last["task_id"], task_id.as_str());
    assert_eq!(last["task_info"]["external_task_id"], "gen-1");
    let video = &last["task_result"]["videos"][0];
    let files = format!("{}/files/", gw.sim.url());
    assert!(video["url"].as_str().unwrap().starts_with(&files), "{video}");

    let done = gw.kling_query("text2video", "gen-1").await.body["data"].clone();
    assert_eq!(done["task_status"], "succeed");
    assert_eq!(done["task_status_msg"], "");
    assert_eq!(done["final_unit_deduction"], "1");
    assert_eq!(done["task_result"]["videos"][0]["duration"], "5");
    assert_eq!(done["task_result"]["videos"][0]["url"], video["url"]);

    // What the gateway sent is on record, JWT claims included.
    let create = gw.sim.requests().into_iter().find(|r| r.method == "POST").unwrap();
    assert_eq!(create.path, "/v1/videos/text2video");
    assert_eq!(create.body.as_ref().unwrap()["external_task_id"], "gen-1");
    let claims = create.jwt_claims.unwrap();
    assert_eq!(claims["iss"], gw.sim.config().kling_access_key);
    assert!(claims["exp"].as_i64().unwrap() > claims["nbf"].as_i64().unwrap());
    assert!(create.headers["authorization"].starts_with("Bearer "));
    assert_eq!(create.response_status, Some(200));
}

#[tokio::test]
async fn kling_refuses_a_reused_external_task_id_and_missing_inputs() {
    let gw = Gateway::start(fast());
    gw.kling_task("a quiet harbour", "gen-dup", "http://127.0.0.1:1/cb").await;
    let again =
        gw.text2video(json!({"prompt": "a quiet harbour", "external_task_id": "gen-dup"})).await;
    assert_eq!((again.status, &again.body["code"]), (400, &json!(1201)));
    assert!(again.body["message"].as_str().unwrap().contains("external_task_id"));

    let refusals = [
        ("text2video", json!({"model_name": "kling-v1-6"})),
        ("image2video", json!({"prompt": "no image"})),
        ("multi-image2video", json!({"prompt": "no images", "image_list": []})),
    ];
    for (endpoint, body) in refusals {
        let answer = gw.kling_create(endpoint, &body).await;
        assert_eq!((answer.status, &answer.body["code"]), (400, &json!(1201)), "{endpoint}");
    }
    let accepted = [
        ("image2video", json!({"image": "https://example.com/cat.png"})),
        ("multi-image2video", json!({"image_list": [{"image": "https://example.com/a.png"}]})),
        ("omni-video", json!({"model_name": "kling-video-o1", "prompt": "a slow pan"})),
        (
            "omni-video",
            json!({"image_list": [{"image_url": "https://x/y.png", "type": "first_frame"}]}),
        ),
    ];
    for (endpoint, body) in accepted {
        let answer = gw.kling_create(endpoint, &body).await;
        assert_eq!((answer.status, &answer.body["code"]), (200, &json!(0)), "{endpoint}");
        let task_id = answer.body["data"]["task_id"].as_str().unwrap();
        assert_eq!(gw.kling_query(endpoint, task_id).await.status, 200, "{endpoint}");
    }
}

#[tokio::test]
async fn kling_callbacks_can_be_wrapped_in_the_query_envelope() {
    let gw = Gateway::start(SimConfig { kling_callback_envelope: true, ..fast() });
    let receiver = Receiver::start().await;
    gw.kling_task("a paper boat", "gen-env", &receiver.url("env")).await;
    receiver.kling_until("env", "succeed", 1).await;
    let body = receiver.hits("env").pop().unwrap().body;
    assert_eq!(body["code"], 0);
    assert_eq!(body["message"], "SUCCEED");
    assert!(body["request_id"].is_string());
    assert_eq!(body["data"]["task_status"], "succeed");
}

#[tokio::test]
async fn kie_task_reports_progress_and_calls_back_once_with_result_json_as_a_string() {
    let gw = Gateway::start(fast());
    let receiver = Receiver::start().await;
    let request = json!({
        "model": "sora-2-text-to-video",
        "callBackUrl": receiver.url("kie-1"),
        "input": {"prompt": "waves on a basalt shore [[sim:delay=1000]]", "n_frames": "10"},
    });
    let created = gw.kie_create(request.clone()).await;
    assert_eq!(created.status, 200);
    assert_eq!(created.body["code"], 200);
    assert_eq!(created.body["msg"], "success");
    let task_id = created.body["data"]["taskId"].as_str().unwrap().to_owned();

    let first = gw.kie_record(&task_id).await.body;
    assert_eq!(first["code"], 200);
    assert_eq!(first["message"], "success");
    let param: Value = serde_json::from_str(first["data"]["param"].as_str().unwrap()).unwrap();
    assert_eq!(param, request, "param is the create request as a JSON string");
    assert!(first["data"]["resultJson"].is_null());

    let (done, seen) = gw.kie_until(&task_id, "success").await;
    assert!(seen.iter().any(|(state, _)| state == "generating"), "{seen:?}");
    assert!(seen.windows(2).all(|pair| pair[0].1 <= pair[1].1), "progress only rises: {seen:?}");
    assert_eq!(done["progress"], 100);
    assert!(done["completeTime"].is_i64() && done["createTime"].is_i64());
    let history: Vec<_> =
        gw.sim.task(&task_id).unwrap().history.into_iter().map(|change| change.status).collect();
    assert_eq!(history, ["waiting", "queuing", "generating", "success"]);

    let hits = receiver.until("kie-1", 1).await;
    let body = &hits[0].body;
    assert_eq!(body["code"], 200);
    assert_eq!(body["data"]["taskId"], task_id.as_str());
    assert_eq!(body["data"]["state"], "success");
    let result_json = body["data"]["resultJson"].as_str().expect("resultJson is a string");
    let result: Value = serde_json::from_str(result_json).unwrap();
    let url = result["resultUrls"][0].as_str().unwrap();
    assert!(url.starts_with(&format!("{}/files/", gw.sim.url())) && url.ends_with(".mp4"));
    // kie calls back at the end only.
    assert_eq!(gw.sim.task(&task_id).unwrap().callbacks_queued, 1);
}

#[tokio::test]
async fn kie_refuses_a_wrong_key_and_incomplete_requests() {
    let gw = Gateway::start(fast());
    let body = json!({"model": "sora-2-text-to-video", "input": {"prompt": "x"}});
    let wrong = gw.kie_create_with_key("not-the-key", &body).await;
    assert_eq!((wrong.status, &wrong.body["code"]), (401, &json!(401)));
    for incomplete in [json!({"input": {"prompt": "x"}}), json!({"model": "sora-2-text-to-video"})]
    {
        let answer = gw.kie_create(incomplete).await;
        assert_eq!((answer.status, &answer.body["code"]), (200, &json!(422)));
    }
    let missing = gw.kie_record("no-such-task").await;
    assert_eq!((missing.status, &missing.body["code"]), (200, &json!(404)));
    assert!(gw.sim.tasks().is_empty());
}

#[tokio::test]
async fn kie_callbacks_are_signed_when_a_webhook_key_is_configured() {
    let key = "whsec-test";
    let gw = Gateway::start(SimConfig { kie_webhook_hmac_key: Some(key.to_owned()), ..fast() });
    let receiver = Receiver::start().await;
    let task_id = gw.kie_task("wan/2-6-text-to-video", "a windmill", &receiver.url("signed")).await;
    let hit = receiver.until("signed", 1).await.remove(0);
    let timestamp = hit.headers["x-webhook-timestamp"].to_str().unwrap();
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(key.as_bytes()).unwrap();
    mac.update(format!("{task_id}.{timestamp}").as_bytes());
    let expected = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    assert_eq!(hit.headers["x-webhook-signature"], expected.as_str());
    assert!((timestamp.parse::<i64>().unwrap() - unix_now()).abs() < 60);
}

#[tokio::test]
async fn fail_marker_ends_the_task_failed_with_a_reason() {
    let gw = Gateway::start(fast());
    let receiver = Receiver::start().await;
    gw.kling_task("a storm [[sim:fail]]", "gen-fail", &receiver.url("kling")).await;
    let kie_id =
        gw.kie_task("sora-2-text-to-video", "a storm [[sim:fail]]", &receiver.url("kie")).await;

    assert_eq!(
        receiver.kling_until("kling", "failed", 1).await,
        ["submitted", "processing", "failed"]
    );
    let failed = gw.kling_query("text2video", "gen-fail").await.body["data"].clone();
    assert_eq!(failed["task_status"], "failed");
    assert!(!failed["task_status_msg"].as_str().unwrap().is_empty());
    assert!(failed.get("task_result").is_none());

    let body = receiver.until("kie", 1).await.remove(0).body;
    assert_eq!(body["code"], 501);
    assert_eq!(body["data"]["taskId"], kie_id.as_str());
    assert_eq!(body["data"]["state"], "fail");
    assert!(!body["data"]["failCode"].as_str().unwrap().is_empty());
    assert!(!body["data"]["failMsg"].as_str().unwrap().is_empty());
    assert!(body["data"]["resultJson"].is_null());
}

#[tokio::test]
async fn no_callback_marker_leaves_polling_as_the_only_way_to_learn_the_outcome() {
    let gw = Gateway::start(fast());
    let receiver = Receiver::start().await;
    gw.kling_task("silence [[sim:no-callback]]", "gen-quiet", &receiver.url("quiet")).await;
    gw.kling_until("gen-quiet", "succeed").await;
    // Whether to call back is decided with each status change, under the same lock: once the
    // task reads `succeed`, nothing more will be sent.
    let task = gw.sim.task("gen-quiet").unwrap();
    assert_eq!(task.callbacks_queued, 0);
    assert!(task.callbacks.is_empty() && receiver.hits("quiet").is_empty());
}

#[tokio::test]
async fn dup_callback_marker_delivers_the_terminal_callback_three_times() {
    let gw = Gateway::start(fast());
    let receiver = Receiver::start().await;
    gw.kling_task("echo [[sim:dup-callback]]", "gen-dup", &receiver.url("dup")).await;
    let statuses = receiver.kling_until("dup", "succeed", 3).await;
    assert_eq!(statuses, ["submitted", "processing", "succeed", "succeed", "succeed"]);
    let task = gw.sim.task("gen-dup").unwrap();
    let mut copies: Vec<_> =
        task.callbacks.iter().filter(|c| c.status == "succeed").map(|c| c.copy).collect();
    copies.sort_unstable();
    assert_eq!(copies, [1, 2, 3]);
}

#[tokio::test]
async fn fail_then_success_marker_calls_back_failure_then_success() {
    let gw = Gateway::start(fast());
    let receiver = Receiver::start().await;
    gw.kling_task("phoenix [[sim:fail-then-success]]", "gen-phoenix", &receiver.url("p")).await;
    let statuses = receiver.kling_until("p", "succeed", 1).await;
    assert_eq!(statuses, ["submitted", "processing", "failed", "succeed"]);
    let last = gw.kling_query("text2video", "gen-phoenix").await.body["data"].clone();
    assert_eq!(last["task_status"], "succeed");
    assert!(last["task_result"]["videos"][0]["url"].is_string());
}

#[tokio::test]
async fn never_marker_keeps_the_task_running() {
    let gw = Gateway::start(fast());
    let receiver = Receiver::start().await;
    gw.kling_task("forever [[sim:never]]", "gen-never", &receiver.url("never")).await;
    gw.kling_task("a control task", "gen-control", &receiver.url("control")).await;
    // The control task was created later with the same life: once it is done, the other is past
    // its own end too.
    receiver.kling_until("control", "succeed", 1).await;
    let never = gw.kling_query("text2video", "gen-never").await.body["data"].clone();
    assert_eq!(never["task_status"], "processing");
    assert_eq!(receiver.kling_statuses("never"), ["submitted", "processing"]);
    assert_eq!(gw.sim.task("gen-never").unwrap().fate.outcome, Outcome::Never);
}

#[tokio::test]
async fn reject_marker_refuses_the_create_permanently() {
    let gw = Gateway::start(fast());
    let body = json!({"prompt": "forbidden [[sim:reject]]", "external_task_id": "gen-no"});
    for _ in 0..2 {
        let answer = gw.text2video(body.clone()).await;
        assert_eq!((answer.status, &answer.body["code"]), (400, &json!(1201)));
    }
    let kie = gw
        .kie_create(
            json!({"model": "sora-2-text-to-video", "input": {"prompt": "no [[sim:reject]]"}}),
        )
        .await;
    assert_eq!((kie.status, &kie.body["code"]), (200, &json!(422)));
    assert!(gw.sim.tasks().is_empty());
}

#[tokio::test]
async fn create_retry_marker_answers_retryable_errors_then_accepts() {
    let gw = Gateway::start(fast());
    let body = json!({"prompt": "busy [[sim:create-retry=2]]", "external_task_id": "gen-retry"});
    let codes = [gw.text2video(body.clone()).await, gw.text2video(body.clone()).await];
    for answer in codes {
        assert_eq!((answer.status, &answer.body["code"]), (429, &json!(1303)));
    }
    assert_eq!(gw.text2video(body).await.status, 200);
    assert_eq!(gw.sim.task("gen-retry").unwrap().create_attempts, 3);

    let kie = json!({
        "model": "sora-2-text-to-video",
        "callBackUrl": "http://127.0.0.1:1/gen-retry",
        "input": {"prompt": "busy [[sim:create-retry=2]]"},
    });
    let codes = [
        gw.kie_create(kie.clone()).await.body["code"].clone(),
        gw.kie_create(kie.clone()).await.body["code"].clone(),
        gw.kie_create(kie).await.body["code"].clone(),
    ];
    assert_eq!(codes, [json!(429), json!(429), json!(200)]);
}

#[tokio::test]
async fn create_5xx_marker_answers_server_errors_then_accepts() {
    let gw = Gateway::start(fast());
    let body = json!({"prompt": "flaky [[sim:create-5xx=2]]", "external_task_id": "gen-5xx"});
    let first = gw.text2video(body.clone()).await;
    let second = gw.text2video(body.clone()).await;
    assert_eq!((first.status, &first.body["code"]), (500, &json!(5000)));
    assert_eq!((second.status, &second.body["code"]), (503, &json!(5001)));
    assert_eq!(gw.text2video(body).await.status, 200);

    let kie =
        json!({"model": "sora-2-text-to-video", "input": {"prompt": "flaky [[sim:create-5xx=2]]"}});
    let statuses = [
        gw.kie_create(kie.clone()).await.status,
        gw.kie_create(kie.clone()).await.status,
        gw.kie_create(kie).await.status,
    ];
    assert_eq!(statuses, [500, 503, 200]);
}

#[tokio::test]
async fn unknown_status_marker_reports_an_undocumented_status_before_succeeding() {
    let gw = Gateway::start(fast());
    let receiver = Receiver::start().await;
    gw.kling_task("odd [[sim:unknown-status]]", "gen-odd", &receiver.url("odd")).await;
    let kie_id = gw
        .kie_task("sora-2-text-to-video", "odd [[sim:unknown-status]] [[sim:delay=800]]", "")
        .await;

    let statuses = receiver.kling_until("odd", "succeed", 1).await;
    assert_eq!(statuses, ["submitted", "processing", "queueing", "succeed"]);
    let (_, seen) = gw.kie_until(&kie_id, "success").await;
    assert!(seen.iter().any(|(state, _)| state == "pending_review"), "{seen:?}");
}

#[tokio::test]
async fn evil_url_marker_points_the_result_at_a_foreign_host() {
    let gw = Gateway::start(fast());
    gw.kling_task("loot [[sim:evil-url]]", "gen-evil", "").await;
    let kie_id = gw.kie_task("sora-2-text-to-video", "loot [[sim:evil-url]]", "").await;

    let kling = gw.kling_until("gen-evil", "succeed").await;
    let url = kling["task_result"]["videos"][0]["url"].as_str().unwrap();
    assert!(url.starts_with("https://evil.example.com/"), "{url}");
    let (kie, _) = gw.kie_until(&kie_id, "success").await;
    let result: Value = serde_json::from_str(kie["resultJson"].as_str().unwrap()).unwrap();
    assert!(result["resultUrls"][0].as_str().unwrap().starts_with(gengate_sim::EVIL_ORIGIN));
}

#[tokio::test]
async fn delay_marker_sets_the_time_to_finish() {
    let gw = Gateway::start(fast());
    gw.kling_task("slow [[sim:delay=700]]", "gen-slow", "").await;
    gw.kling_task("quick", "gen-quick", "").await;
    gw.kling_until("gen-slow", "succeed").await;

    let finished = |id: &str| {
        let task = gw.sim.task(id).unwrap();
        let end = task.history.iter().find(|c| c.status == "succeed").unwrap().at_ms;
        (task.fate.duration_ms, end - task.created_at_ms, end)
    };
    let (slow_fate, slow_took, slow_end) = finished("gen-slow");
    let (quick_fate, _, quick_end) = finished("gen-quick");
    assert_eq!((slow_fate, quick_fate), (700, 150));
    assert!(slow_took >= 700, "finished after {slow_took} ms");
    assert!(quick_end < slow_end, "the default-delay task created later finished first");
}

#[tokio::test]
async fn accept_delay_marker_records_the_task_before_answering() {
    let gw = Arc::new(Gateway::start(fast()));
    let body = json!({"prompt": "lost reply [[sim:accept-delay=800]]", "external_task_id": "gen-slow-ack"});
    let started = Instant::now();
    let create = tokio::spawn({
        let gw = gw.clone();
        let body = body.clone();
        async move { gw.text2video(body).await }
    });

    // The provider holds the task while its answer is still on the way: a worker that crashed
    // now must find it by its external id instead of creating it again.
    let recorded =
        eventually("the task to be recorded", WAIT, || async { gw.sim.task("gen-slow-ack") }).await;
    assert!(!create.is_finished(), "the create answer is still held back");
    let found = gw.kling_query("text2video", "gen-slow-ack").await;
    assert_eq!(found.body["data"]["task_id"], recorded.task_id.as_str());
    let again = gw.text2video(body).await;
    assert_eq!((again.status, &again.body["code"]), (400, &json!(1201)));

    let answer = create.await.unwrap();
    assert_eq!(answer.status, 200);
    assert_eq!(answer.body["data"]["task_id"], recorded.task_id.as_str());
    assert!(started.elapsed() >= Duration::from_millis(800));
}

#[tokio::test]
async fn failed_callbacks_are_retried_until_the_receiver_accepts() {
    let gw = Gateway::start(fast());
    let receiver = Receiver::refusing_first(&[503, 503]).await;
    let task_id = gw.kie_task("sora-2-text-to-video", "persist", &receiver.url("retry")).await;
    let hits = receiver.until("retry", 3).await;
    assert!(hits.iter().all(|hit| hit.body == hits[0].body), "every attempt carries the same body");
    let attempts = eventually("the third attempt to be recorded", WAIT, || async {
        let callbacks = gw.sim.task(&task_id).unwrap().callbacks;
        (callbacks.len() == 3).then_some(callbacks)
    })
    .await;
    let statuses: Vec<_> = attempts.iter().map(|a| (a.attempt, a.http_status)).collect();
    assert_eq!(statuses, [(1, Some(503)), (2, Some(503)), (3, Some(200))]);

    // Nobody listening: every attempt fails with a connection error, then delivery gives up.
    gw.sim.update_config(|config| config.callback_attempts = 3);
    let lost = gw.kie_task("sora-2-text-to-video", "unheard", "http://127.0.0.1:1/gone").await;
    let attempts = eventually("three failed attempts", WAIT, || async {
        let callbacks = gw.sim.task(&lost).unwrap().callbacks;
        (callbacks.len() == 3).then_some(callbacks)
    })
    .await;
    assert!(attempts.iter().all(|a| a.http_status.is_none() && a.error.is_some()));
}

#[tokio::test]
async fn rates_with_a_seed_give_the_same_fates_on_every_run() {
    let rates = gengate_sim::Rates {
        create_retry: 0.5,
        fail: 0.5,
        no_callback: 0.3,
        ..gengate_sim::Rates::default()
    };
    let config = SimConfig { seed: 42, rates, ..fast() };

    async fn fates(config: SimConfig) -> Vec<(u16, Outcome, bool)> {
        let gw = Gateway::start(config);
        let mut fates = Vec::new();
        for i in 0..16 {
            let body = json!({"prompt": format!("an unmarked prompt {i}"), "external_task_id": format!("gen-{i}")});
            let first = gw.text2video(body.clone()).await.status;
            if first != 200 {
                assert_eq!(
                    gw.text2video(body).await.status,
                    200,
                    "one retryable error, then accepted"
                );
            }
            let fate = gw.sim.task(&format!("gen-{i}")).unwrap().fate;
            fates.push((first, fate.outcome, fate.callbacks));
        }
        fates
    }

    let first_run = fates(config.clone()).await;
    assert_eq!(first_run, fates(config.clone()).await);
    assert_ne!(first_run, fates(SimConfig { seed: 43, ..config.clone() }).await);
    let refused = first_run.iter().filter(|(status, ..)| *status == 429).count();
    let failed = first_run.iter().filter(|(_, outcome, _)| *outcome == Outcome::Fail).count();
    assert!((1..16).contains(&refused) && (1..16).contains(&failed), "{first_run:?}");

    // A marker takes the task out of the rates.
    let gw = Gateway::start(SimConfig {
        rates: gengate_sim::Rates { fail: 1.0, ..gengate_sim::Rates::default() },
        ..fast()
    });
    gw.kling_task("[[sim:ok]] spared", "gen-marked", "").await;
    gw.kling_task("doomed", "gen-unmarked", "").await;
    assert_eq!(gw.sim.task("gen-marked").unwrap().fate.outcome, Outcome::Succeed);
    assert_eq!(gw.sim.task("gen-unmarked").unwrap().fate.outcome, Outcome::Fail);
}

#[tokio::test]
async fn result_urls_serve_real_files() {
    let gw = Gateway::start(fast());
    gw.kling_task("a film", "gen-file", "").await;
    let image_id = gw.kie_task("google/nano-banana", "a picture", "").await;

    let video = gw.kling_until("gen-file", "succeed").await;
    let url = video["task_result"]["videos"][0]["url"].as_str().unwrap();
    let response = gw.http.get(url).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "video/mp4");
    let bytes = response.bytes().await.unwrap();
    assert_eq!(&bytes[4..8], b"ftyp");

    let (image, _) = gw.kie_until(&image_id, "success").await;
    let result: Value = serde_json::from_str(image["resultJson"].as_str().unwrap()).unwrap();
    let url = result["resultUrls"][0].as_str().unwrap();
    assert!(url.ends_with(".png"), "{url}");
    let bytes = gw.http.get(url).send().await.unwrap().bytes().await.unwrap();
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");

    let missing = gw.http.get(format!("{}/files/0.mp4", gw.sim.url())).send().await.unwrap();
    assert_eq!(missing.status(), 404);
}

#[tokio::test]
async fn admin_api_shows_requests_and_tasks_and_takes_config_changes() {
    let gw = Gateway::start(fast());
    let admin = |path: &str| format!("{}{path}", gw.sim.url());
    assert_eq!(gw.http.get(admin("/healthz")).send().await.unwrap().status(), 200);

    let patch = json!({"task_duration_ms": 60, "rates": {"fail": 1.0}});
    let updated: Value = gw
        .http
        .post(admin("/_sim/config"))
        .json(&patch)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(updated["task_duration_ms"], 60);
    assert_eq!(updated["rates"]["fail"], 1.0);
    assert_eq!(updated["rates"]["no_callback"], 0.0, "a partial update keeps the rest");
    let typo = gw.http.post(admin("/_sim/config")).json(&json!({"task_duration": 1})).send().await;
    assert_eq!(typo.unwrap().status(), 400);

    gw.kling_task("admin", "gen-admin", "").await;
    let tasks: Value =
        gw.http.get(admin("/_sim/tasks")).send().await.unwrap().json().await.unwrap();
    assert_eq!(tasks[0]["external_task_id"], "gen-admin");
    assert_eq!(tasks[0]["fate"]["outcome"], "fail");
    assert_eq!(tasks[0]["fate"]["duration_ms"], 60);
    let one = gw.http.get(admin("/_sim/tasks/gen-admin")).send().await.unwrap();
    let one: Value = one.json().await.unwrap();
    assert_eq!(one["provider"], "kling");
    assert_eq!(one["create_attempts"], 1);
    assert_eq!(one["key"], "kling:external_task_id:gen-admin");

    let requests: Value =
        gw.http.get(admin("/_sim/requests")).send().await.unwrap().json().await.unwrap();
    let requests = requests.as_array().unwrap();
    assert_eq!(requests.len(), 1, "admin calls are not recorded: {requests:?}");
    assert_eq!(requests[0]["body"]["external_task_id"], "gen-admin");
    assert!(requests[0]["headers"]["authorization"].as_str().unwrap().starts_with("Bearer "));

    let reset = gw.http.post(admin("/_sim/reset")).send().await.unwrap();
    assert!(reset.status().is_success());
    assert!(gw.sim.tasks().is_empty() && gw.sim.requests().is_empty());
    assert_eq!(gw.http.get(admin("/_sim/tasks/gen-admin")).send().await.unwrap().status(), 404);
}

#[tokio::test]
async fn the_simulator_keeps_serving_while_the_tests_runtime_is_blocked() {
    use std::io::{Read, Write};

    let gw = Gateway::start(fast());
    // A synchronous request from inside this current-thread runtime: only a simulator with its
    // own threads can answer it.
    let mut stream = std::net::TcpStream::connect(gw.sim.addr()).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    stream.write_all(b"GET /healthz HTTP/1.1\r\nHost: sim\r\nConnection: close\r\n\r\n").unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}
