//! Kling's task object of a generation, as the Kling-compatible API (`/kling/v1/…`) answers it
//! and as a Kling client's `callback_url` receives it (the same object, built by the same
//! function, so a callback and a query of the same moment agree field by field).

use serde_json::{Value, json};

use crate::generation::GenerationStatus;
use crate::generation::store::GenerationView;

/// Where a Kling request's `external_task_id` is kept on the generation (its client metadata).
pub const EXTERNAL_ID_METADATA: &str = "kling_external_task_id";

fn millis(t: time::OffsetDateTime) -> i64 {
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
}

/// Kling's `task_status` and `task_status_msg` for a generation.
fn status(view: &GenerationView) -> (&'static str, String) {
    match view.status {
        GenerationStatus::Queued => ("submitted", String::new()),
        GenerationStatus::Submitted => ("processing", String::new()),
        GenerationStatus::Completed => ("succeed", String::new()),
        GenerationStatus::Failed => (
            "failed",
            view.failure
                .as_ref()
                .map_or_else(String::new, |f| format!("{}: {}", f.code, f.message)),
        ),
        GenerationStatus::Canceled => ("failed", "canceled".to_owned()),
    }
}

fn task_info(view: &GenerationView) -> Value {
    match view.params.get("metadata").and_then(|m| m.get(EXTERNAL_ID_METADATA)) {
        Some(id) => json!({"external_task_id": id}),
        None => json!({}),
    }
}

/// The task object of a create answer (Kling's: no result yet).
pub fn created_task(view: &GenerationView) -> Value {
    json!({
        "task_id": view.id.to_string(),
        "task_status": status(view).0,
        "task_info": task_info(view),
        "created_at": millis(view.created_at),
        "updated_at": millis(view.updated_at),
    })
}

/// The task object of a query answer (its `data`), and the body of a Kling-format callback.
/// Links to stored files are the view's: make them first ([`GenerationView::with_links`]).
pub fn task(view: &GenerationView) -> Value {
    let (task_status, message) = status(view);
    let videos: Vec<Value> = view
        .result
        .iter()
        .flat_map(|r| r.videos.iter())
        .enumerate()
        .map(|(i, video)| {
            let duration = video
                .duration
                .map(|d| d.to_string())
                .or_else(|| view.params.get("duration").map(|d| d.to_string()))
                .unwrap_or_default();
            json!({"id": format!("{}-{i}", view.id), "url": video.file.url, "duration": duration})
        })
        .collect();
    json!({
        "task_id": view.id.to_string(),
        "task_status": task_status,
        "task_status_msg": message,
        // Kling's units are gengate's credits here: what the task costs the caller now (taken at
        // submit for a prepaid model and returned if it fails; for a postpaid one, 0 until it
        // succeeds).
        "final_unit_deduction": view.charged.to_string(),
        "task_info": task_info(view),
        "task_result": {"videos": videos},
        "created_at": millis(view.created_at),
        "updated_at": millis(view.updated_at),
    })
}
