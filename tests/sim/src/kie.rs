//! kie.ai's jobs API: `createTask`, `recordInfo`, and the terminal callbacks.
//!
//! kie answers errors with HTTP 200 and the error in the body's `code`; the simulator does the
//! same, except for authentication failures (HTTP 401 with `code: 401`, so a client that checks
//! either sees them) and `[[sim:create-5xx]]` (real HTTP 500/503, which is what an overloaded
//! front end does).

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use uuid::Uuid;

use super::fate::{CreateRefusal, Directives, Fate};
use super::files::{self, Media};
use super::lifecycle;
use super::state::{Phase, Provider, Sim, Task};

pub(crate) fn routes() -> Router<Sim> {
    Router::new()
        .route("/api/v1/jobs/createTask", post(create_task))
        .route("/api/v1/jobs/recordInfo", get(record_info))
}

/// kie's name for a phase. `pending_review` is deliberately not one of its documented states.
pub(crate) fn status(phase: Phase) -> &'static str {
    match phase {
        Phase::Waiting => "waiting",
        Phase::Queued => "queuing",
        Phase::Running { .. } => "generating",
        Phase::Unknown => "pending_review",
        Phase::Succeeded => "success",
        Phase::Failed => "fail",
    }
}

/// `X-Webhook-Signature`: base64(HMAC-SHA256(key, `taskId + "." + timestamp`)).
pub fn webhook_signature(key: &str, task_id: &str, timestamp: i64) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key.as_bytes()).expect("any key length");
    mac.update(format!("{task_id}.{timestamp}").as_bytes());
    STANDARD.encode(mac.finalize().into_bytes())
}

async fn create_task(State(sim): State<Sim>, headers: HeaderMap, body: Bytes) -> Response {
    let config = sim.config();
    if !authorized(&headers, &config.kie_api_key) {
        return unauthorized();
    }
    let request: Value = match serde_json::from_slice(&body) {
        Ok(request @ Value::Object(_)) => request,
        _ => return error(422, "the body must be a JSON object"),
    };
    let Some(model) = request.get("model").and_then(Value::as_str).filter(|m| !m.is_empty()) else {
        return error(422, "model is required");
    };
    let Some(input) = request.get("input").filter(|input| input.is_object()) else {
        return error(422, "input is required");
    };
    let prompt = input.get("prompt").and_then(Value::as_str).unwrap_or_default().to_owned();
    let callback_url = request
        .get("callBackUrl")
        .and_then(Value::as_str)
        .filter(|url| !url.is_empty())
        .map(str::to_owned);
    let key = match &callback_url {
        Some(url) => format!("kie:callBackUrl:{url}"),
        None => format!("kie:prompt:{prompt}"),
    };
    // Rates roll on the prompt, so a test that numbers its prompts gets the same fates from the
    // same seed on every run, whatever ids the gateway gave the jobs.
    let fate = Fate::decide(&Directives::parse(&prompt), &config, &prompt);

    let created = sim.with(|state| {
        if let Some(refusal) = fate.create_refusal(state.count_create_attempt(&key)) {
            return Err(refusal);
        }
        let task_id = Uuid::now_v7().simple().to_string();
        let task = Task {
            endpoint: "jobs".to_owned(),
            model: model.to_owned(),
            prompt: prompt.clone(),
            callback_url: callback_url.clone(),
            ..Task::new(Provider::Kie, task_id, key.clone(), request.clone(), fate.clone())
        };
        let task_id = task.task_id.clone();
        state.insert_task(task);
        Ok(task_id)
    });
    let task_id = match created {
        Ok(task_id) => task_id,
        Err(refused) => return refusal(refused),
    };
    tracing::info!(%task_id, model, ?fate, "kie task created");
    lifecycle::start(&sim, &task_id, &fate);
    // See Kling's create: the task exists, the answer is held back.
    tokio::time::sleep(std::time::Duration::from_millis(fate.accept_delay_ms)).await;
    Json(json!({"code": 200, "msg": "success", "data": {"taskId": task_id}})).into_response()
}

async fn record_info(
    State(sim): State<Sim>,
    headers: HeaderMap,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    if !authorized(&headers, &sim.config().kie_api_key) {
        return unauthorized();
    }
    let Some(task_id) = params.get("taskId").filter(|id| !id.is_empty()) else {
        return error(422, "taskId is required");
    };
    let record = sim.with(|state| {
        state
            .tasks
            .get(task_id)
            .filter(|task| task.provider == Provider::Kie)
            .map(|task| record(task, sim.base_url()))
    });
    match record {
        Some(data) => {
            Json(json!({"code": 200, "message": "success", "data": data})).into_response()
        }
        None => error(404, "task not found"),
    }
}

/// The task record of `recordInfo` and of callbacks. `param` and `resultJson` are JSON documents
/// inside strings, as kie sends them.
pub(crate) fn record(task: &Task, base_url: &str) -> Value {
    let result_json = (task.phase == Phase::Succeeded).then(|| {
        let media = Media::of_kie_model(&task.model);
        let url = files::result_url(base_url, &task.task_id, media, task.fate.evil_url);
        json!({"resultUrls": [url]}).to_string()
    });
    let (fail_code, fail_msg) = match task.phase {
        Phase::Failed => ("501", task.failure_message()),
        _ => ("", ""),
    };
    let progress = match task.phase {
        Phase::Waiting | Phase::Queued | Phase::Failed => 0,
        Phase::Running { progress } => progress,
        Phase::Unknown => 50,
        Phase::Succeeded => 100,
    };
    json!({
        "taskId": task.task_id,
        "model": task.model,
        "state": status(task.phase),
        "param": task.request.to_string(),
        "resultJson": result_json,
        "failCode": fail_code,
        "failMsg": fail_msg,
        "completeTime": task.completed_at_ms,
        "createTime": task.created_at_ms,
        "updateTime": task.updated_at_ms,
        "progress": progress,
    })
}

/// The body POSTed to `callBackUrl` at a terminal state.
pub(crate) fn callback_body(task: &Task, base_url: &str) -> Value {
    let data = record(task, base_url);
    match task.phase {
        Phase::Failed => json!({"code": 501, "msg": "generation failed", "data": data}),
        _ => json!({"code": 200, "msg": "generation succeeded", "data": data}),
    }
}

/// kie's answers to a create its fate refuses.
fn refusal(refused: CreateRefusal) -> Response {
    match refused {
        CreateRefusal::Retryable => error(429, "rate limited, try again later"),
        CreateRefusal::ServerError { alternate } => {
            let status = if alternate {
                StatusCode::SERVICE_UNAVAILABLE
            } else {
                StatusCode::INTERNAL_SERVER_ERROR
            };
            let body = json!({"code": 500, "msg": "server exception", "data": null});
            (status, Json(body)).into_response()
        }
        CreateRefusal::Reject => error(422, "rejected ([[sim:reject]])"),
    }
}

fn authorized(headers: &HeaderMap, api_key: &str) -> bool {
    let expected = format!("Bearer {api_key}");
    headers.get(header::AUTHORIZATION).is_some_and(|value| value.as_bytes() == expected.as_bytes())
}

fn unauthorized() -> Response {
    let body = json!({"code": 401, "msg": "You do not have access permissions", "data": null});
    (StatusCode::UNAUTHORIZED, Json(body)).into_response()
}

/// kie's error answer: HTTP 200, the error in `code`.
fn error(code: u16, msg: &str) -> Response {
    Json(json!({"code": code, "msg": msg, "data": null})).into_response()
}
