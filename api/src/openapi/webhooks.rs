//! The top-level `webhooks` of the document (OpenAPI 3.1): the requests gengate sends to a
//! client's URL when a generation ends or its files are stored (and, when asked, when its provider
//! starts on it). utoipa has no model of them, so
//! they are written here as JSON and added to the document as it is finished.

use gengate_shared::client_webhooks::Event;
use serde_json::{Value, json};

/// What each event means, and the operation id it is documented under.
fn about(event: Event) -> (&'static str, &'static str, &'static str) {
    match event {
        Event::Processing => (
            "generationProcessingWebhook",
            "A generation is being processed",
            "Sent when the provider accepted a generation's task and is working on it (its status \
             goes from `queued` to `submitted`; the Kling-compatible API calls this `processing`). \
             Only sent to a target whose event list names it (`webhook_events`, an endpoint's \
             `events`): a target without a list receives every other event, not this one. \
             Deliveries are not ordered: this one may arrive after the generation's end, and \
             `data` is the generation as it was at the first attempt, so it may already show \
             the end.",
        ),
        Event::Completed => (
            "generationCompletedWebhook",
            "A generation completed",
            "Sent when a generation completes: `data.result` has its files (the provider's URLs \
             until they are archived, see `generation.archived`), and its credits are charged.",
        ),
        Event::Failed => (
            "generationFailedWebhook",
            "A generation failed",
            "Sent when a generation fails: `data.failure` says why, and its credits were \
             returned. A success that arrives later still completes it (and charges it), which \
             sends `generation.completed`.",
        ),
        Event::Canceled => (
            "generationCanceledWebhook",
            "A generation was canceled",
            "Sent when a generation is canceled: its credits were returned.",
        ),
        Event::Archived => (
            "generationArchivedWebhook",
            "A generation's files were stored",
            "Sent once gengate has copied a completed generation's files into its own storage: \
             each file's `archive_status` says how that went, and archived files' `url` (and \
             `poster_url`) are signed links to gengate's copies, which expire.",
        ),
    }
}

const DELIVERY: &str = "\n\nEvery delivery is a `POST` of `application/json`, signed as the \
    [Standard Webhooks](https://www.standardwebhooks.com) specification says, so its libraries \
    verify it: compute `base64(HMAC-SHA256(key, \"{webhook-id}.{webhook-timestamp}.{body}\"))` \
    over the exact bytes of the body, where `key` is the base64-decoded part of the endpoint's \
    secret after `whsec_`, and compare it (in constant time) with each `v1,` signature of \
    `webhook-signature`. A delivery is sent at least once: a retry has the same `webhook-id` and \
    the same body (deduplicate on the id), and deliveries may arrive out of order (order them by \
    `data.updated_at`). Redirects are not followed.";

/// The `webhooks` object.
pub(super) fn webhooks() -> Value {
    let headers = json!([
        {
            "name": "webhook-id", "in": "header", "required": true,
            "description": "The delivery's id, the same on every attempt: deduplicate on it.",
            "schema": {"type": "string"}, "example": "msg_0192f0c46a8e7cc19d4e1f2a3b4c5d6f"
        },
        {
            "name": "webhook-timestamp", "in": "header", "required": true,
            "description": "When this attempt was signed, in Unix seconds. Refuse a delivery \
                whose timestamp is far from now (five minutes, say) to defeat replays.",
            "schema": {"type": "integer"}, "example": 1_793_534_400
        },
        {
            "name": "webhook-signature", "in": "header", "required": true,
            "description": "`v1,` and the base64 HMAC-SHA256 of `{webhook-id}.{webhook-timestamp}.{body}` \
                under the endpoint's secret; several, separated by spaces, while a rotated \
                secret still signs beside the new one (accept the delivery when any matches).",
            "schema": {"type": "string", "pattern": "^v1,[A-Za-z0-9+/=]+( v1,[A-Za-z0-9+/=]+)*$"},
            "example": "v1,K5oZfzN95Z9UVu1EsfQmfVNQhnkZ2pj9o9NDN/H/pI4="
        }
    ]);
    let responses = json!({
        "2XX": {"description": "Received: the delivery is done."},
        "410": {"description": "Gone: the delivery stops at once, and a default endpoint is \
            disabled."},
        "default": {
            "description": "Anything else, a redirect, or no answer within \
                `client_webhooks.timeout_ms`: the delivery is tried again later (on \
                `client_webhooks.retry_schedule_ms`), with the same id and body."
        }
    });
    let mut webhooks = serde_json::Map::new();
    for &event in Event::ALL {
        let (operation_id, summary, description) = about(event);
        let schema = json!({
            "allOf": [
                {"$ref": "#/components/schemas/WebhookEvent"},
                {"properties": {"type": {"enum": [event.as_str()]}}}
            ]
        });
        let operation = json!({
            "post": {
                "tags": ["webhooks"],
                "summary": summary,
                "description": format!("{description}{DELIVERY}"),
                "operationId": operation_id,
                "parameters": headers,
                "requestBody": {
                    "required": true,
                    "content": {"application/json": {"schema": schema, "example": example(event)}}
                },
                "responses": responses
            }
        });
        webhooks.insert(event.as_str().to_owned(), operation);
    }
    Value::Object(webhooks)
}

/// A delivery's body for `event`.
fn example(event: Event) -> Value {
    let mut generation = super::schemas::generation_example();
    match event {
        Event::Failed => {
            generation["status"] = json!("failed");
            generation["charged"] = json!(0);
            generation["progress"] = Value::Null;
            generation["result"] = Value::Null;
            generation["failure"] = json!({"code": "deadline_exceeded", "message": "the provider did not finish in time"});
        }
        Event::Canceled => {
            generation["status"] = json!("canceled");
            generation["charged"] = json!(0);
            generation["progress"] = Value::Null;
            generation["result"] = Value::Null;
        }
        Event::Processing => {
            generation["status"] = json!("submitted");
            generation["progress"] = Value::Null;
            generation["result"] = Value::Null;
            generation["updated_at"] = json!("2026-11-01T12:00:02Z");
            generation["completed_at"] = Value::Null;
        }
        Event::Completed | Event::Archived => {}
    }
    json!({"type": event.as_str(), "timestamp": "2026-11-01T12:01:31Z", "data": generation})
}
