//! What tests and people use to look inside: health, the request log, the tasks, live config
//! changes and reset. Admin and health requests are not recorded, so polling them does not
//! drown the provider traffic a test wants to assert on.

use std::collections::HashMap;

use axum::body::Body;
use axum::extract::{Path, Query, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{Value, json};

use super::fate::Outcome;
use super::state::{RecordedRequest, Sim, now_ms};
use super::{SimConfig, jwt, lifecycle};

/// Largest request body accepted (Kling takes bare base64 images inline).
pub(crate) const MAX_BODY_BYTES: usize = 32 * 1024 * 1024;

pub(crate) fn routes() -> Router<Sim> {
    Router::new()
        .route("/healthz", get(|| async { Json(json!({"status": "ok"})) }))
        .route("/_sim/requests", get(requests))
        .route("/_sim/tasks", get(tasks))
        .route("/_sim/tasks/{id}", get(task))
        .route("/_sim/tasks/{id}/finish", post(finish))
        .route("/_sim/config", get(config).post(update_config))
        .route("/_sim/reset", post(reset))
}

/// Middleware: records every provider-facing request (method, path, query, headers, body) before
/// it is handled, and its response status after.
pub(crate) async fn record(State(sim): State<Sim>, request: Request, next: Next) -> Response {
    let path = request.uri().path().to_owned();
    if path == "/healthz" || path.starts_with("/_sim/") {
        return next.run(request).await;
    }
    let (parts, body) = request.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, MAX_BODY_BYTES).await else {
        return StatusCode::PAYLOAD_TOO_LARGE.into_response();
    };
    let query = Query::<HashMap<String, String>>::try_from_uri(&parts.uri)
        .map(|Query(query)| query)
        .unwrap_or_default();
    let mut headers = HashMap::<String, String>::new();
    for (name, value) in &parts.headers {
        let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
        headers
            .entry(name.as_str().to_owned())
            .and_modify(|joined| {
                joined.push_str(", ");
                joined.push_str(&value);
            })
            .or_insert(value);
    }
    let jwt_claims = headers
        .get("authorization")
        .and_then(|value| value.strip_prefix("Bearer "))
        .and_then(jwt::peek_claims);
    let body = serde_json::from_slice::<Value>(&bytes).ok();
    let body_text =
        (body.is_none() && !bytes.is_empty()).then(|| String::from_utf8_lossy(&bytes).into_owned());
    let seq = sim.with(|state| {
        state.next_request_seq += 1;
        let seq = state.next_request_seq;
        state.requests.push(RecordedRequest {
            seq,
            method: parts.method.to_string(),
            path,
            query,
            headers,
            body,
            body_text,
            jwt_claims,
            response_status: None,
            received_at_ms: now_ms(),
        });
        seq
    });

    let response = next.run(Request::from_parts(parts, Body::from(bytes))).await;
    let status = response.status().as_u16();
    sim.with(|state| {
        if let Some(recorded) = state.requests.iter_mut().rev().find(|r| r.seq == seq) {
            recorded.response_status = Some(status);
        }
    });
    response
}

async fn requests(State(sim): State<Sim>) -> Json<Vec<RecordedRequest>> {
    Json(sim.with(|state| state.requests.clone()))
}

async fn tasks(State(sim): State<Sim>) -> Response {
    Json(sim.with(|state| state.views())).into_response()
}

/// One task, by task id or Kling `external_task_id`.
async fn task(State(sim): State<Sim>, Path(id): Path<String>) -> Response {
    match sim.with(|state| state.find_task(&id).map(|task| state.view(task))) {
        Some(view) => Json(view).into_response(),
        None => problem(StatusCode::NOT_FOUND, &format!("no task {id}")),
    }
}

/// Ends a task now: `{"outcome": "succeed"}` or `{"outcome": "fail"}` (for `[[sim:never]]` tasks).
async fn finish(
    State(sim): State<Sim>,
    Path(id): Path<String>,
    Json(body): Json<FinishRequest>,
) -> Response {
    let Some(task_id) = sim.with(|state| state.find_task(&id).map(|t| t.task_id.clone())) else {
        return problem(StatusCode::NOT_FOUND, &format!("no task {id}"));
    };
    if !matches!(body.outcome, Outcome::Succeed | Outcome::Fail) {
        return problem(StatusCode::BAD_REQUEST, "outcome must be succeed or fail");
    }
    lifecycle::finish(&sim, &task_id, body.outcome);
    match sim.with(|state| state.find_task(&task_id).map(|task| state.view(task))) {
        Some(view) => Json(view).into_response(),
        None => problem(StatusCode::NOT_FOUND, &format!("no task {id}")),
    }
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct FinishRequest {
    outcome: Outcome,
}

async fn config(State(sim): State<Sim>) -> Json<SimConfig> {
    Json(sim.config())
}

/// Partial update (JSON merge patch): `{"rates": {"fail": 0.2}, "task_duration_ms": 50}`.
/// Unknown fields are refused, so a typo does not silently change nothing.
async fn update_config(State(sim): State<Sim>, Json(patch): Json<Value>) -> Response {
    let current = sim.config();
    let mut merged = serde_json::to_value(&current).expect("the config serializes");
    merge_patch(&mut merged, &patch);
    let updated: SimConfig = match serde_json::from_value(merged) {
        Ok(updated) => updated,
        Err(error) => return problem(StatusCode::BAD_REQUEST, &error.to_string()),
    };
    if updated.listen != current.listen || updated.public_url != current.public_url {
        return problem(StatusCode::BAD_REQUEST, "listen and public_url cannot change at runtime");
    }
    tracing::info!(config = %serde_json::to_string(&patch).unwrap_or_default(), "config updated");
    sim.with(|state| state.config = updated.clone());
    Json(updated).into_response()
}

/// Forgets every request, task and create attempt, and stops every lifecycle and delivery.
/// The config stays as it is.
async fn reset(State(sim): State<Sim>) -> StatusCode {
    sim.reset();
    StatusCode::NO_CONTENT
}

/// RFC 7386: objects merge recursively, `null` removes (here: resets the field to its default),
/// anything else replaces.
fn merge_patch(target: &mut Value, patch: &Value) {
    let (Value::Object(target), Value::Object(patch)) = (&mut *target, patch) else {
        *target = patch.clone();
        return;
    };
    for (key, value) in patch {
        if value.is_null() {
            target.remove(key);
        } else {
            merge_patch(target.entry(key.clone()).or_insert(Value::Null), value);
        }
    }
}

fn problem(status: StatusCode, detail: &str) -> Response {
    (status, Json(json!({"error": detail}))).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_patch_merges_nested_objects() {
        let mut config = json!({"a": 1, "rates": {"fail": 0.0, "no_callback": 0.1}, "key": "x"});
        merge_patch(&mut config, &json!({"rates": {"fail": 0.5}, "key": null}));
        assert_eq!(config, json!({"a": 1, "rates": {"fail": 0.5, "no_callback": 0.1}}));
    }
}
