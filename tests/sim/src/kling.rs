//! Kling's direct API: JWT auth, the four create endpoints, the query by task id or
//! `external_task_id`, and the task object its queries and callbacks carry.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{Value, json};
use uuid::Uuid;

use super::fate::{CreateRefusal, Directives, Fate};
use super::files::{self, Media};
use super::jwt::{self, JwtError};
use super::state::{Phase, Provider, Sim, Task, now_unix};
use super::{SimConfig, lifecycle};

pub(crate) fn routes() -> Router<Sim> {
    Router::new()
        .route("/v1/videos/{endpoint}", post(create))
        .route("/v1/videos/{endpoint}/{id}", get(query))
}

/// Kling's name for a phase. `queueing` is deliberately not one of its documented statuses.
pub(crate) fn status(phase: Phase) -> &'static str {
    match phase {
        Phase::Waiting | Phase::Queued => "submitted",
        Phase::Running { .. } => "processing",
        Phase::Unknown => "queueing",
        Phase::Succeeded => "succeed",
        Phase::Failed => "failed",
    }
}

/// The create endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(clippy::enum_variant_names, reason = "Kling's own names for its endpoints")]
enum Endpoint {
    Text2Video,
    Image2Video,
    MultiImage2Video,
    OmniVideo,
}

impl Endpoint {
    fn parse(segment: &str) -> Option<Self> {
        match segment {
            "text2video" => Some(Self::Text2Video),
            "image2video" => Some(Self::Image2Video),
            "multi-image2video" => Some(Self::MultiImage2Video),
            "omni-video" => Some(Self::OmniVideo),
            _ => None,
        }
    }

    fn default_model(self) -> &'static str {
        match self {
            Self::OmniVideo => "kling-video-o1",
            _ => "kling-v1",
        }
    }

    /// The one check per endpoint that a real client can get wrong: its required input.
    fn missing_input(self, body: &Value) -> Option<&'static str> {
        let text = |field| body.get(field).and_then(Value::as_str).is_some_and(|s| !s.is_empty());
        let list = |field| body.get(field).and_then(Value::as_array).is_some_and(|l| !l.is_empty());
        match self {
            Self::Text2Video => (!text("prompt")).then_some("prompt is required"),
            Self::Image2Video => {
                (!text("image") && !text("image_tail")).then_some("image or image_tail is required")
            }
            Self::MultiImage2Video => (!list("image_list")).then_some("image_list is required"),
            // Omni-video takes many shapes (prompt, images, videos); any is left to the caller.
            Self::OmniVideo => None,
        }
    }
}

/// Kling's rule for `camera_control`: a preset `type`, or `simple` with a `config` moving along
/// exactly one of its six axes (each −10 to 10).
fn camera_control_problem(body: &Value) -> Option<&'static str> {
    let control = body.get("camera_control")?;
    let presets = ["down_back", "forward_up", "right_turn_forward", "left_turn_forward"];
    match control.get("type").and_then(Value::as_str) {
        Some("simple") => {}
        Some(preset) if presets.contains(&preset) => {
            return control.get("config").is_some().then_some("only simple takes a config");
        }
        _ => return Some("camera_control.type is invalid"),
    }
    let Some(config) = control.get("config").and_then(Value::as_object) else {
        return Some("camera_control.config is required for simple");
    };
    let axes = ["horizontal", "vertical", "pan", "tilt", "roll", "zoom"];
    if config.keys().any(|k| !axes.contains(&k.as_str())) {
        return Some("camera_control.config has an unknown axis");
    }
    let amounts: Option<Vec<f64>> = config.values().map(Value::as_f64).collect();
    match amounts {
        Some(amounts)
            if amounts.iter().all(|a| a.abs() <= 10.0)
                && amounts.iter().filter(|a| **a != 0.0).count() == 1 =>
        {
            None
        }
        _ => Some("camera_control.config must move along exactly one axis, -10 to 10"),
    }
}

/// Why a create was refused.
#[derive(Debug, Clone, Copy)]
enum Refusal {
    /// The fate's answer to this attempt.
    Fated(CreateRefusal),
    DuplicateExternalId,
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        match self {
            Self::Fated(CreateRefusal::Retryable) => {
                error(StatusCode::TOO_MANY_REQUESTS, 1303, "concurrency limit")
            }
            Self::Fated(CreateRefusal::ServerError { alternate: false }) => {
                error(StatusCode::INTERNAL_SERVER_ERROR, 5000, "server error")
            }
            Self::Fated(CreateRefusal::ServerError { alternate: true }) => {
                error(StatusCode::SERVICE_UNAVAILABLE, 5001, "server unavailable")
            }
            Self::Fated(CreateRefusal::Reject) => {
                error(StatusCode::BAD_REQUEST, 1201, "rejected ([[sim:reject]])")
            }
            Self::DuplicateExternalId => {
                error(StatusCode::BAD_REQUEST, 1201, "external_task_id already exists")
            }
        }
    }
}

async fn create(
    State(sim): State<Sim>,
    Path(endpoint): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(kind) = Endpoint::parse(&endpoint) else {
        return error(StatusCode::NOT_FOUND, 1203, "no such endpoint");
    };
    let config = sim.config();
    if let Err(refusal) = authenticate(&headers, &config) {
        return unauthorized(refusal);
    }
    let request: Value = match serde_json::from_slice(&body) {
        Ok(request @ Value::Object(_)) => request,
        _ => return error(StatusCode::BAD_REQUEST, 1200, "the body must be a JSON object"),
    };
    if let Some(problem) = kind.missing_input(&request).or_else(|| camera_control_problem(&request))
    {
        return error(StatusCode::BAD_REQUEST, 1201, problem);
    }
    let field = |name| request.get(name).and_then(Value::as_str).filter(|s| !s.is_empty());
    let prompt = field("prompt").unwrap_or_default().to_owned();
    if prompt.chars().count() > 2500 {
        return error(StatusCode::BAD_REQUEST, 1201, "prompt must be at most 2500 characters");
    }
    let external_task_id = field("external_task_id").map(str::to_owned);
    let callback_url = field("callback_url").map(str::to_owned);
    let key = match (&external_task_id, &callback_url) {
        (Some(external), _) => format!("kling:external_task_id:{external}"),
        (None, Some(url)) => format!("kling:callback_url:{url}"),
        (None, None) => format!("kling:prompt:{prompt}"),
    };
    // Rates roll on the prompt, so a test that numbers its prompts gets the same fates from the
    // same seed on every run, whatever ids the gateway gave the jobs.
    let fate = Fate::decide(&Directives::parse(&prompt), &config, &prompt);

    let created = sim.with(|state| {
        if let Some(refusal) = fate.create_refusal(state.count_create_attempt(&key)) {
            return Err(Refusal::Fated(refusal));
        }
        if let Some(external) = &external_task_id
            && state.external_ids.contains_key(external)
        {
            return Err(Refusal::DuplicateExternalId);
        }
        // Kling task ids are 18-digit numbers sent as strings.
        let task_id = rand::random_range(100_000_000_000_000_000u64..1_000_000_000_000_000_000);
        let task = Task {
            endpoint: endpoint.clone(),
            external_task_id: external_task_id.clone(),
            model: field("model_name").unwrap_or(kind.default_model()).to_owned(),
            prompt: prompt.clone(),
            callback_url: callback_url.clone(),
            duration: match request.get("duration") {
                Some(Value::String(duration)) => duration.clone(),
                Some(Value::Number(duration)) => duration.to_string(),
                _ => "5".to_owned(),
            },
            ..Task::new(
                Provider::Kling,
                task_id.to_string(),
                key.clone(),
                request.clone(),
                fate.clone(),
            )
        };
        let data = created_object(&task);
        state.insert_task(task);
        Ok(data)
    });
    let data = match created {
        Ok(data) => data,
        Err(refusal) => return refusal.into_response(),
    };
    let task_id = data["task_id"].as_str().unwrap_or_default().to_owned();
    tracing::info!(%task_id, ?external_task_id, endpoint, ?fate, "kling task created");
    lifecycle::start(&sim, &task_id, &fate);
    // The task exists from here on; holding the answer back imitates a response lost or slowed
    // on its way to a client that may crash meanwhile.
    tokio::time::sleep(std::time::Duration::from_millis(fate.accept_delay_ms)).await;
    success(data)
}

async fn query(
    State(sim): State<Sim>,
    Path((endpoint, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    if let Err(refusal) = authenticate(&headers, &sim.config()) {
        return unauthorized(refusal);
    }
    // Like Kling, a task is found only under the endpoint that created it.
    let found = sim.with(|state| {
        state
            .find_task(&id)
            .filter(|task| task.provider == Provider::Kling && task.endpoint == endpoint)
            .map(|task| task_object(task, sim.base_url()))
    });
    match found {
        Some(data) => success(data),
        None => error(StatusCode::NOT_FOUND, 1203, "task not found"),
    }
}

fn authenticate(headers: &HeaderMap, config: &SimConfig) -> Result<(), JwtError> {
    let authorization = headers.get(header::AUTHORIZATION).and_then(|value| value.to_str().ok());
    let (access_key, secret_key) = (&config.kling_access_key, &config.kling_secret_key);
    jwt::verify_bearer(authorization, access_key, secret_key, now_unix()).map(drop)
}

fn unauthorized(refusal: JwtError) -> Response {
    error(StatusCode::UNAUTHORIZED, refusal.code(), refusal.message())
}

/// The `data` of a create answer: the task as just submitted.
fn created_object(task: &Task) -> Value {
    json!({
        "task_id": task.task_id,
        "task_status": status(task.phase),
        "task_info": task_info(task),
        "created_at": task.created_at_ms,
        "updated_at": task.updated_at_ms,
    })
}

/// The task object of queries and callbacks.
pub(crate) fn task_object(task: &Task, base_url: &str) -> Value {
    let mut object = created_object(task);
    object["updated_at"] = json!(task.updated_at_ms);
    object["task_status_msg"] = json!(match task.phase {
        Phase::Failed => task.failure_message(),
        _ => "",
    });
    if task.phase == Phase::Succeeded {
        let url = files::result_url(base_url, &task.task_id, Media::Video, task.fate.evil_url);
        object["task_result"] = json!({
            "videos": [{"id": format!("{}-0", task.task_id), "url": url, "duration": task.duration}],
        });
        object["final_unit_deduction"] = json!(unit_deduction(task).to_string());
    }
    object
}

/// The body POSTed to `callback_url`: the bare task object as documented, or wrapped in the
/// query envelope as some copies of the documentation show it.
pub(crate) fn callback_body(task: &Task, base_url: &str, envelope: bool) -> Value {
    let object = task_object(task, base_url);
    if envelope {
        json!({"code": 0, "message": "SUCCEED", "request_id": request_id(), "data": object})
    } else {
        object
    }
}

fn task_info(task: &Task) -> Value {
    match &task.external_task_id {
        Some(external) => json!({"external_task_id": external}),
        None => json!({}),
    }
}

/// Units charged: one per started 5 seconds, twice that in `pro` mode.
fn unit_deduction(task: &Task) -> u64 {
    if let Some(units) = super::fate::Directives::parse(&task.prompt).usage {
        return units;
    }
    let seconds = task.duration.parse::<f64>().unwrap_or(5.0).max(1.0);
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        reason = "at least 1; an absurd duration saturates, which is what a provider would bill"
    )]
    let units = (seconds / 5.0).ceil() as u64;
    let pro = task.request.get("mode").and_then(Value::as_str) == Some("pro");
    if pro { units * 2 } else { units }
}

fn request_id() -> String {
    Uuid::now_v7().to_string()
}

fn success(data: Value) -> Response {
    Json(json!({"code": 0, "message": "SUCCEED", "request_id": request_id(), "data": data}))
        .into_response()
}

fn error(status: StatusCode, code: u32, message: &str) -> Response {
    let body = json!({"code": code, "message": message, "request_id": request_id()});
    (status, Json(body)).into_response()
}
