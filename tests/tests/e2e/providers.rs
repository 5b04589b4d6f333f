//! The worker's real provider clients against an embedded simulator: what they send (paths,
//! bodies, auth, callback URL, `external_task_id`), how they read the answers, and how they
//! classify the simulator's injected faults. Only the simulator is needed: no database, no
//! broker.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use gengate_shared::config::{ProvidersSettings, Settings};
use gengate_shared::generation::{GenerationParams, Mode};
use gengate_shared::ids::GenerationId;
use gengate_shared::providers::{
    self, ProviderError, ProviderKind, TaskRef, TaskRequest, TaskState, TaskUpdate, kie,
};
use gengate_sim::{RecordedRequest, SimConfig, SimHandle, Simulator};
use gengate_tests::harness::clock::unix_now;
use gengate_tests::harness::eventually;
use gengate_tests::harness::loopback::serve;
use gengate_worker::providers::{ProviderClient, Registry};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(10);

/// Short task lives; callbacks to nowhere give up at once.
fn fast() -> SimConfig {
    SimConfig { task_duration_ms: 100, callback_attempts: 1, ..SimConfig::default() }
}

/// The simulator and the worker's provider registry pointed at it.
struct Upstream {
    sim: SimHandle,
    registry: Registry,
}

impl Upstream {
    fn start(config: SimConfig) -> Self {
        Self::with_keys(
            config,
            Some(("sim-kling-access-key", "sim-kling-secret-key")),
            Some("sim-kie-api-key"),
        )
    }

    /// Keys as the environment gives them (`None`: not set at all).
    fn with_keys(config: SimConfig, kling: Option<(&str, &str)>, kie: Option<&str>) -> Self {
        Self::with_settings(config, kling, kie, 5000)
    }

    fn with_settings(
        config: SimConfig,
        kling: Option<(&str, &str)>,
        kie: Option<&str>,
        timeout_ms: u64,
    ) -> Self {
        gengate_shared::install_crypto_provider();
        let sim = Simulator::start(config).expect("simulator starts");
        let settings = settings(sim.url(), kling, kie, timeout_ms);
        let registry = Registry::from_settings(&settings).expect("clients");
        Self { sim, registry }
    }

    fn client(&self, kind: ProviderKind) -> Arc<dyn ProviderClient> {
        self.registry.get(kind).expect("every provider is registered")
    }

    /// The requests the simulator received on `path`.
    fn requests_to(&self, method: &str, path: &str) -> Vec<RecordedRequest> {
        self.sim.requests().into_iter().filter(|r| r.method == method && r.path == path).collect()
    }

    /// Queries a task until it is terminal.
    async fn until_terminal(&self, kind: ProviderKind, task: &TaskRef) -> TaskUpdate {
        let client = self.client(kind);
        eventually(&format!("{kind} task {} to end", task.remote_task_id), WAIT, || async {
            let update = client.query_task(task).await.expect("query answers");
            update.state.has_ended().then_some(update)
        })
        .await
    }
}

/// Provider settings through the documented environment variables.
fn settings(
    base_url: &str,
    kling: Option<(&str, &str)>,
    kie: Option<&str>,
    timeout_ms: u64,
) -> ProvidersSettings {
    let mut env = std::collections::BTreeMap::new();
    env.insert("GENGATE__PROVIDERS__KLING__BASE_URL".to_owned(), base_url.to_owned());
    env.insert("GENGATE__PROVIDERS__KIE__BASE_URL".to_owned(), base_url.to_owned());
    env.insert("GENGATE__PROVIDERS__KLING__TIMEOUT_MS".to_owned(), timeout_ms.to_string());
    env.insert("GENGATE__PROVIDERS__KIE__TIMEOUT_MS".to_owned(), timeout_ms.to_string());
    if let Some((access, secret)) = kling {
        env.insert("GENGATE__PROVIDERS__KLING__ACCESS_KEY".to_owned(), access.to_owned());
        env.insert("GENGATE__PROVIDERS__KLING__SECRET_KEY".to_owned(), secret.to_owned());
    }
    if let Some(key) = kie {
        env.insert("GENGATE__PROVIDERS__KIE__API_KEY".to_owned(), key.to_owned());
    }
    Settings::load_from(None, Some(env)).expect("settings load").providers
}

/// A generation's request; its callback URL points at `callback_base` (nothing listens there
/// unless a test starts a receiver).
fn request(
    provider_model: &str,
    mode: Mode,
    prompt: &str,
    images: &[&str],
    callback_base: &str,
) -> TaskRequest {
    let generation_id = GenerationId::new();
    TaskRequest {
        generation_id,
        provider_model: provider_model.to_owned(),
        options: Default::default(),
        mode,
        params: GenerationParams {
            prompt: prompt.to_owned(),
            client_prompt: prompt.to_owned(),
            negative_prompt: None,
            duration: Some(5),
            aspect_ratio: Some("16:9".to_owned()),
            image_urls: images.iter().map(|s| s.to_string()).collect(),
            end_image_url: None,
            camera_control: None,
            quality: None,
            sub_type: None,
        },
        callback_url: format!("{callback_base}/cb/{generation_id}?token=per-generation-token"),
    }
}

/// Nothing listens here: the simulator's callbacks fail fast.
const NOWHERE: &str = "http://127.0.0.1:9";

fn task_ref(request: &TaskRequest, remote_task_id: &str) -> TaskRef {
    TaskRef {
        mode: request.mode,
        provider_model: request.provider_model.clone(),
        remote_task_id: remote_task_id.to_owned(),
    }
}

fn succeeded_files(update: &TaskUpdate) -> Vec<String> {
    match &update.state {
        TaskState::Succeeded { files, .. } => files.iter().map(|f| f.url.clone()).collect(),
        other => panic!("expected success, got {other:?}"),
    }
}

#[tokio::test]
async fn kling_text2video_is_signed_sent_queried_and_found_by_generation() {
    let up = Upstream::start(fast());
    let kling = up.client(ProviderKind::Kling);
    let mut request =
        request("kling-v2-1-master", Mode::Text2Video, "a cat on a boat", &[], NOWHERE);
    request.options.insert("mode".into(), "pro".into());
    request.params.negative_prompt = Some("blur".to_owned());

    let task_id = kling.create_task(&request).await.expect("Kling accepts the task");

    let sent = up.requests_to("POST", "/v1/videos/text2video");
    assert_eq!(sent.len(), 1);
    let body = sent[0].body.clone().expect("a JSON body");
    assert_eq!(
        body,
        json!({
            "model_name": "kling-v2-1-master",
            "prompt": "a cat on a boat",
            "negative_prompt": "blur",
            "mode": "pro",
            "aspect_ratio": "16:9",
            "duration": "5",
            "callback_url": request.callback_url,
            "external_task_id": request.generation_id.to_string(),
        })
    );
    let authorization = sent[0].headers.get("authorization").map(String::as_str);
    let config = up.sim.config();
    let now = unix_now();
    let claims = gengate_sim::jwt::verify_bearer(
        authorization,
        &config.kling_access_key,
        &config.kling_secret_key,
        now,
    )
    .expect("a valid Kling JWT");
    assert_eq!(claims["iss"], "sim-kling-access-key");
    let (exp, nbf) = (claims["exp"].as_i64().unwrap(), claims["nbf"].as_i64().unwrap());
    assert!((now + 1795..=now + 1800).contains(&exp), "exp {exp} vs now {now}");
    assert_eq!(exp - nbf, 1805);

    let done = up.until_terminal(ProviderKind::Kling, &task_ref(&request, &task_id)).await;
    assert_eq!(done.remote_task_id, task_id);
    assert_eq!(done.external_id, Some(request.generation_id.to_string()));
    let TaskState::Succeeded { files, usage } = &done.state else { panic!("{done:?}") };
    assert_eq!(files.len(), 1);
    assert!(files[0].url.starts_with(up.sim.url()), "{}", files[0].url);
    assert_eq!(files[0].duration_s, Some(5.0));
    assert_eq!(usage.as_deref(), Some("2"), "pro mode doubles the units");

    let found = kling
        .find_by_generation(Mode::Text2Video, "kling-v2-1-master", request.generation_id)
        .await
        .unwrap()
        .expect("the task is found by its external_task_id");
    assert_eq!((found.remote_task_id, found.state), (task_id, done.state));
    let lookup = up.requests_to("GET", &format!("/v1/videos/text2video/{}", request.generation_id));
    assert_eq!(lookup.len(), 1, "found by external id, on the creating endpoint");

    let unknown = kling
        .find_by_generation(Mode::Text2Video, "kling-v2-1-master", GenerationId::new())
        .await
        .unwrap();
    assert_eq!(unknown, None);

    // One token serves every call until it nears expiry.
    let tokens: std::collections::HashSet<_> =
        up.sim.requests().iter().filter_map(|r| r.headers.get("authorization").cloned()).collect();
    assert_eq!(tokens.len(), 1);
}

#[tokio::test]
async fn kling_image_modes_reach_their_endpoints() {
    let up = Upstream::start(fast());
    let kling = up.client(ProviderKind::Kling);
    let images = ["https://img.example/1.png", "https://img.example/2.png"];

    let image2video = request("kling-v2-1-master", Mode::Image2Video, "it moves", &images, NOWHERE);
    let multi = request("kling-v1-6", Mode::MultiImage2Video, "they meet", &images, NOWHERE);
    let omni = request("kling-video-o1", Mode::OmniVideo, "a story", &images[..1], NOWHERE);
    for (request, path) in [
        (&image2video, "/v1/videos/image2video"),
        (&multi, "/v1/videos/multi-image2video"),
        (&omni, "/v1/videos/omni-video"),
    ] {
        let task_id = kling.create_task(request).await.expect("accepted");
        let sent = up.requests_to("POST", path);
        assert_eq!(sent.len(), 1, "{path}");
        let body = sent[0].body.clone().unwrap();
        assert_eq!(body["external_task_id"], request.generation_id.to_string(), "{path}");
        assert_eq!(body["callback_url"], request.callback_url.as_str(), "{path}");
        match request.mode {
            Mode::Image2Video => {
                assert_eq!(body["image"], images[0]);
                assert_eq!(body.get("aspect_ratio"), None);
            }
            Mode::MultiImage2Video => {
                assert_eq!(body["image_list"], json!([{"image": images[0]}, {"image": images[1]}]))
            }
            _ => {
                assert_eq!(body["model_name"], "kling-video-o1");
                assert_eq!(body["image_list"], json!([{"image_url": images[0]}]));
            }
        }
        let done = up.until_terminal(ProviderKind::Kling, &task_ref(request, &task_id)).await;
        assert_eq!(succeeded_files(&done).len(), 1, "{path}");
    }
}

#[tokio::test]
async fn kie_models_are_sent_with_their_inputs_and_queried_to_the_end() {
    let up = Upstream::start(fast());
    let kie = up.client(ProviderKind::Kie);
    let image = ["https://img.example/1.png"];
    let mut sora_pro = request("sora-2-pro", Mode::Image2Video, "a wave", &image, NOWHERE);
    sora_pro.params.quality = Some("high".to_owned());
    sora_pro.params.duration = Some(10);
    let mut kling26 = request("kling-2-6", Mode::Text2Video, "a drum", &[], NOWHERE);
    kling26.options.insert("sound".into(), "true".into());
    let mut banana = request("nano-banana", Mode::Text2Image, "a banana", &[], NOWHERE);
    banana.params.duration = None;
    banana.params.aspect_ratio = Some("1:1".to_owned());
    let cases = [
        (
            request("sora-2", Mode::Text2Video, "a boat", &[], NOWHERE),
            json!({"model": "sora-2-text-to-video", "input": {"prompt": "a boat",
                "aspect_ratio": "landscape", "n_frames": "5", "remove_watermark": true}}),
        ),
        (
            sora_pro,
            json!({"model": "sora-2-pro-image-to-video", "input": {"prompt": "a wave",
                "aspect_ratio": "landscape", "n_frames": "10", "remove_watermark": true,
                "size": "high", "image_urls": image}}),
        ),
        (
            request("wan-2-6", Mode::Text2Video, "a windmill", &[], NOWHERE),
            json!({"model": "wan/2-6-text-to-video", "input": {"prompt": "a windmill",
                "duration": "5", "resolution": "720p"}}),
        ),
        (
            kling26,
            json!({"model": "kling-2.6/text-to-video", "input": {"prompt": "a drum",
                "aspect_ratio": "16:9", "duration": "5", "sound": true}}),
        ),
        (
            banana,
            json!({"model": "google/nano-banana", "input": {"prompt": "a banana",
                "output_format": "png", "image_size": "1:1"}}),
        ),
    ];

    for (request, mut expected) in cases {
        up.sim.reset();
        let task_id = kie.create_task(&request).await.expect("kie accepts the task");
        let sent = up.requests_to("POST", "/api/v1/jobs/createTask");
        assert_eq!(sent.len(), 1);
        assert_eq!(
            sent[0].headers.get("authorization").map(String::as_str),
            Some("Bearer sim-kie-api-key")
        );
        expected["callBackUrl"] = json!(request.callback_url);
        assert_eq!(sent[0].body.clone().unwrap(), expected);

        let done = up.until_terminal(ProviderKind::Kie, &task_ref(&request, &task_id)).await;
        assert_eq!(done.remote_task_id, task_id);
        let files = succeeded_files(&done);
        let extension = if request.mode == Mode::Text2Image { ".png" } else { ".mp4" };
        assert!(files[0].ends_with(extension), "{files:?}");
        let polls = up.requests_to("GET", "/api/v1/jobs/recordInfo");
        assert!(polls.iter().all(|p| p.query.get("taskId") == Some(&task_id)));

        // kie cannot look a task up by the generation: the documented answer is None.
        let found = kie
            .find_by_generation(request.mode, &request.provider_model, request.generation_id)
            .await;
        assert_eq!(found, Ok(None));
    }
}

#[tokio::test]
async fn a_retryable_create_refusal_is_retryable_and_the_retry_succeeds() {
    let up = Upstream::start(fast());
    for (kind, model, code) in
        [(ProviderKind::Kling, "kling-v2-1-master", "1303"), (ProviderKind::Kie, "sora-2", "429")]
    {
        let client = up.client(kind);
        let request = request(model, Mode::Text2Video, "[[sim:create-retry=1]] busy", &[], NOWHERE);
        let first = client.create_task(&request).await;
        assert!(
            matches!(&first, Err(ProviderError::Retryable { code: c, .. }) if c == code),
            "{kind}: {first:?}"
        );
        let task_id = client.create_task(&request).await.expect("the retry is accepted");
        let done = up.until_terminal(kind, &task_ref(&request, &task_id)).await;
        assert!(matches!(done.state, TaskState::Succeeded { .. }), "{kind}: {done:?}");
    }
}

#[tokio::test]
async fn server_errors_on_create_are_retryable() {
    let up = Upstream::start(fast());
    for (kind, model) in
        [(ProviderKind::Kling, "kling-v2-1-master"), (ProviderKind::Kie, "wan-2-6")]
    {
        let client = up.client(kind);
        let request =
            request(model, Mode::Text2Video, "[[sim:create-5xx=1]] overload", &[], NOWHERE);
        let first = client.create_task(&request).await;
        assert!(matches!(first, Err(ProviderError::Retryable { .. })), "{kind}: {first:?}");
        client.create_task(&request).await.expect("the retry is accepted");
    }
}

#[tokio::test]
async fn a_rejected_create_is_permanent_and_no_account_problem() {
    let up = Upstream::start(fast());
    for (kind, model, code) in
        [(ProviderKind::Kling, "kling-v2-1-master", "1201"), (ProviderKind::Kie, "sora-2", "422")]
    {
        let client = up.client(kind);
        let request = request(model, Mode::Text2Video, "[[sim:reject]] no", &[], NOWHERE);
        let result = client.create_task(&request).await;
        assert!(
            matches!(&result, Err(ProviderError::Permanent { code: c, account_problem: false, .. }) if c == code),
            "{kind}: {result:?}"
        );
    }
}

#[tokio::test]
async fn a_kling_create_whose_answer_was_lost_is_not_created_twice() {
    // Kling accepts the task but its answer arrives after the client's 1 s timeout (the margins
    // are wide so that a busy machine still delivers the request well inside the timeout).
    let up = Upstream::with_settings(
        fast(),
        Some(("sim-kling-access-key", "sim-kling-secret-key")),
        Some("sim-kie-api-key"),
        1000,
    );
    let kling = up.client(ProviderKind::Kling);
    let prompt = "once only [[sim:accept-delay=4000]]";
    let request = request("kling-v2-1-master", Mode::Text2Video, prompt, &[], NOWHERE);
    let lost = kling.create_task(&request).await;
    assert!(
        matches!(&lost, Err(ProviderError::Retryable { code, .. }) if code == "timeout"),
        "{lost:?}"
    );
    let external_id = request.generation_id.to_string();
    let exists =
        eventually("Kling to have the task", WAIT, || async { up.sim.task(&external_id) }).await;

    // The job is retried: Kling refuses the duplicate external_task_id, and the client answers
    // with the task that exists instead of failing the job or making a second one.
    let retried = kling.create_task(&request).await.expect("the retry finds the task");
    assert_eq!(retried, exists.task_id);
    assert_eq!(up.sim.tasks().len(), 1);
    let found = kling
        .find_by_generation(request.mode, &request.provider_model, request.generation_id)
        .await
        .unwrap()
        .expect("found by generation");
    assert_eq!(found.remote_task_id, exists.task_id);
}

#[tokio::test]
async fn wrong_or_missing_keys_are_account_problems() {
    let wrong = Upstream::with_keys(
        fast(),
        Some(("sim-kling-access-key", "wrong-secret")),
        Some("wrong-key"),
    );
    for (kind, model, code) in
        [(ProviderKind::Kling, "kling-v2-1-master", "1000"), (ProviderKind::Kie, "sora-2", "401")]
    {
        let request = request(model, Mode::Text2Video, "a cat", &[], NOWHERE);
        let result = wrong.client(kind).create_task(&request).await;
        assert!(
            matches!(&result, Err(ProviderError::Permanent { code: c, account_problem: true, .. }) if c == code),
            "{kind}: {result:?}"
        );
        let task = task_ref(&request, "123456789012345678");
        let query = wrong.client(kind).query_task(&task).await;
        assert!(
            matches!(&query, Err(ProviderError::Permanent { account_problem: true, .. })),
            "{kind}: {query:?}"
        );
    }

    let unset = Upstream::with_keys(fast(), None, None);
    for (kind, model) in [(ProviderKind::Kling, "kling-v2-1-master"), (ProviderKind::Kie, "sora-2")]
    {
        let request = request(model, Mode::Text2Video, "a cat", &[], NOWHERE);
        let result = unset.client(kind).create_task(&request).await;
        assert!(
            matches!(&result, Err(ProviderError::Permanent { code, account_problem: true, .. }) if code == "not_configured"),
            "{kind}: {result:?}"
        );
    }
    assert!(unset.sim.requests().is_empty(), "nothing is sent without keys");
}

/// Callbacks as the simulator delivers them, received and parsed by the shared adapters.
#[derive(Debug, Default)]
struct Inbox {
    hits: Mutex<Vec<(HeaderMap, Vec<u8>)>>,
}

async fn receive(
    State(inbox): State<Arc<Inbox>>,
    Path(_path): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> StatusCode {
    inbox.hits.lock().unwrap().push((headers, body.to_vec()));
    StatusCode::OK
}

async fn start_receiver() -> (String, Arc<Inbox>) {
    let inbox = Arc::new(Inbox::default());
    let app = Router::new().route("/{*path}", post(receive)).with_state(inbox.clone());
    (serve(app).await, inbox)
}

/// Waits for a terminal callback and returns every update parsed so far, with its headers.
async fn terminal_callback(kind: ProviderKind, inbox: &Inbox) -> Vec<(HeaderMap, TaskUpdate)> {
    eventually(&format!("a terminal {kind} callback"), WAIT, || async {
        let parsed: Vec<_> = inbox
            .hits
            .lock()
            .unwrap()
            .iter()
            .map(|(headers, body)| {
                let update = providers::parse_callback(kind, body).expect("callback parses");
                (headers.clone(), update)
            })
            .collect();
        parsed.iter().any(|(_, update)| update.state.has_ended()).then_some(parsed)
    })
    .await
}

#[tokio::test]
async fn simulator_callbacks_parse_bare_wrapped_and_signed() {
    for envelope in [false, true] {
        let up = Upstream::start(SimConfig { kling_callback_envelope: envelope, ..fast() });
        let (base, inbox) = start_receiver().await;
        let request = request("kling-v2-1-master", Mode::Text2Video, "a kite", &[], &base);
        let task_id = up.client(ProviderKind::Kling).create_task(&request).await.unwrap();
        let updates = terminal_callback(ProviderKind::Kling, &inbox).await;
        let (_, last) = updates.last().unwrap();
        assert_eq!(last.remote_task_id, task_id, "envelope {envelope}");
        assert_eq!(last.external_id, Some(request.generation_id.to_string()));
        assert_eq!(succeeded_files(last).len(), 1);
    }

    let hmac_key = "kie-webhook-key";
    let up =
        Upstream::start(SimConfig { kie_webhook_hmac_key: Some(hmac_key.to_owned()), ..fast() });
    let (base, inbox) = start_receiver().await;
    let request = request("sora-2", Mode::Text2Video, "a fox [[sim:fail]]", &[], &base);
    let task_id = up.client(ProviderKind::Kie).create_task(&request).await.unwrap();
    let updates = terminal_callback(ProviderKind::Kie, &inbox).await;
    let (headers, update) = updates.last().unwrap();
    assert_eq!(update.remote_task_id, task_id);
    assert!(matches!(&update.state, TaskState::Failed { code, .. } if code == "501"), "{update:?}");
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).unwrap().to_owned();
    let (timestamp, signature) = (header(kie::TIMESTAMP_HEADER), header(kie::SIGNATURE_HEADER));
    assert!(kie::verify_webhook_signature(hmac_key, &task_id, &timestamp, &signature));
    assert!(!kie::verify_webhook_signature("another-key", &task_id, &timestamp, &signature));
    assert!(kie::webhook_timestamp_is_fresh(&timestamp, unix_now(), 300));
    let sim_signature =
        gengate_sim::kie_webhook_signature(hmac_key, &task_id, timestamp.parse().unwrap());
    assert_eq!(kie::webhook_signature(hmac_key, &task_id, &timestamp), sim_signature);
    // The poll agrees with the callback.
    let polled = up.until_terminal(ProviderKind::Kie, &task_ref(&request, &task_id)).await;
    assert_eq!(&polled.state, &update.state);
}

/// A "provider" that answers every query with `size` bytes of a JSON string, and counts what it
/// was asked.
async fn start_oversized_provider(size: usize) -> String {
    let app = Router::new().fallback(move || async move {
        let body = format!("{{\"code\":200,\"msg\":\"{}\"}}", "x".repeat(size));
        ([("content-type", "application/json")], body)
    });
    serve(app).await
}

#[tokio::test]
async fn an_answer_larger_than_the_limit_is_not_read_and_is_retryable() {
    gengate_shared::install_crypto_provider();
    let base = start_oversized_provider(5 * 1024 * 1024).await;
    let mut settings = settings(&base, None, Some("sim-kie-api-key"), 5000);
    settings.kie.limits.max_response_bytes = 64 * 1024;
    let registry = Registry::from_settings(&settings).expect("clients");
    let task = TaskRef {
        mode: Mode::Text2Video,
        provider_model: "sora-2".to_owned(),
        remote_task_id: "t1".to_owned(),
    };
    let answer = registry.get(ProviderKind::Kie).unwrap().query_task(&task).await;
    assert!(
        matches!(&answer, Err(ProviderError::Retryable { code, .. }) if code == "response_too_large"),
        "{answer:?}"
    );
    // Within the limit, the same provider's answer is read (and found wanting for other reasons).
    settings.kie.limits.max_response_bytes = 8 * 1024 * 1024;
    let registry = Registry::from_settings(&settings).expect("clients");
    let answer = registry.get(ProviderKind::Kie).unwrap().query_task(&task).await;
    assert!(
        !matches!(&answer, Err(ProviderError::Retryable { code, .. }) if code == "response_too_large"),
        "{answer:?}"
    );
}
