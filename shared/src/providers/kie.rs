//! The kie.ai jobs API as data, without HTTP: which kie model and `input` each catalogue model
//! family and mode becomes, `recordInfo` answers and callbacks read into [`TaskUpdate`]s, kie's
//! codes classified into [`ProviderError`]s, and the optional webhook signature.
//!
//! kie answers most errors with HTTP 200 and the error in the body's `code`, so the code is read
//! first and the HTTP status only when there is none. kie has no idempotency key: a create that
//! timed out and is retried may start a second task.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use serde_json::{Map, Value, json};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use super::envelope::{self, Envelope};
use super::{CallbackParseError, ProviderError, ProviderKind, ResultFile, TaskRequest};
use super::{TaskState, TaskUpdate, Verdict};
use crate::generation::Mode;

/// `POST`: creates a task of any model.
pub const CREATE_TASK_PATH: &str = "/api/v1/jobs/createTask";

/// `GET` with the query parameter [`TASK_ID_PARAM`]: one task's record.
pub const RECORD_INFO_PATH: &str = "/api/v1/jobs/recordInfo";

/// The query parameter of [`RECORD_INFO_PATH`].
pub const TASK_ID_PARAM: &str = "taskId";

/// Header of the optional webhook signature.
pub const SIGNATURE_HEADER: &str = "X-Webhook-Signature";

/// Header of the Unix time (seconds) the signature covers.
pub const TIMESTAMP_HEADER: &str = "X-Webhook-Timestamp";

/// kie's code for success.
const SUCCESS: i64 = 200;

/// A catalogue model family served through kie (the catalogue's `provider_model`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Family {
    /// `sora-2`
    Sora2,
    /// `sora-2-pro`
    Sora2Pro,
    /// `wan-2-6`
    Wan26,
    /// `kling-2-6`
    Kling26,
    /// `nano-banana` (images)
    NanoBanana,
}

impl Family {
    fn parse(provider_model: &str) -> Option<Self> {
        match provider_model {
            "sora-2" => Some(Self::Sora2),
            "sora-2-pro" => Some(Self::Sora2Pro),
            "wan-2-6" => Some(Self::Wan26),
            "kling-2-6" => Some(Self::Kling26),
            "nano-banana" => Some(Self::NanoBanana),
            _ => None,
        }
    }
}

/// The kie model that serves `provider_model` in `mode` (`sora-2` + image2video →
/// `sora-2-image-to-video`, …).
pub fn model(provider_model: &str, mode: Mode) -> Result<&'static str, ProviderError> {
    let unsupported =
        || super::unsupported(format!("kie adapter does not serve {provider_model:?} in {mode}"));
    let family = Family::parse(provider_model).ok_or_else(unsupported)?;
    match (family, mode) {
        (Family::Sora2, Mode::Text2Video) => Ok("sora-2-text-to-video"),
        (Family::Sora2, Mode::Image2Video) => Ok("sora-2-image-to-video"),
        (Family::Sora2Pro, Mode::Text2Video) => Ok("sora-2-pro-text-to-video"),
        (Family::Sora2Pro, Mode::Image2Video) => Ok("sora-2-pro-image-to-video"),
        (Family::Wan26, Mode::Text2Video) => Ok("wan/2-6-text-to-video"),
        (Family::Wan26, Mode::Image2Video) => Ok("wan/2-6-image-to-video"),
        (Family::Kling26, Mode::Text2Video) => Ok("kling-2.6/text-to-video"),
        (Family::Kling26, Mode::Image2Video) => Ok("kling-2.6/image-to-video"),
        (Family::NanoBanana, Mode::Text2Image) => Ok("google/nano-banana"),
        (Family::NanoBanana, Mode::Image2Image) => Ok("google/nano-banana-edit"),
        _ => Err(unsupported()),
    }
}

/// The JSON body that creates the task of `request` (POST it to [`CREATE_TASK_PATH`]):
/// `{"model", "callBackUrl", "input"}` with the input fields of the model family (see
/// `docs/providers.md`). Durations go as strings; the quality choice becomes Sora's `size`
/// (`standard` by default) or Wan's `resolution` (`720p` by default); Kling 2.6's `sound` is the
/// catalogue option `sound = "true"`.
pub fn create_body(request: &TaskRequest) -> Result<Value, ProviderError> {
    let model = model(&request.provider_model, request.mode)?;
    let family = Family::parse(&request.provider_model).ok_or_else(|| {
        super::unsupported(format!("unknown kie model family {:?}", request.provider_model))
    })?;
    let params = &request.params;
    let from_image = matches!(request.mode, Mode::Image2Video | Mode::Image2Image);
    if from_image && params.image_urls.is_empty() {
        return Err(super::invalid_request(format!("{} needs an input image", request.mode)));
    }
    let duration = |default: u32| json!(params.duration.unwrap_or(default).to_string());
    let quality = |allowed: &[&'static str]| -> Result<Value, ProviderError> {
        match params.quality.as_deref() {
            None => Ok(json!(allowed[0])),
            Some(q) if allowed.contains(&q) => Ok(json!(q)),
            Some(q) => Err(super::unsupported(format!(
                "{} takes quality {allowed:?}, not {q:?}",
                request.provider_model
            ))),
        }
    };

    let mut input = Map::new();
    input.insert("prompt".into(), json!(params.prompt));
    match family {
        Family::Sora2 | Family::Sora2Pro => {
            let aspect_ratio = match params.aspect_ratio.as_deref() {
                None | Some("16:9") => "landscape",
                Some("9:16") => "portrait",
                Some(other) => {
                    return Err(super::unsupported(format!(
                        "Sora 2 takes aspect ratios 16:9 and 9:16, not {other}"
                    )));
                }
            };
            input.insert("aspect_ratio".into(), json!(aspect_ratio));
            input.insert("n_frames".into(), duration(10));
            // The watermark is not what a paying client asked for.
            input.insert("remove_watermark".into(), json!(true));
            if family == Family::Sora2Pro {
                input.insert("size".into(), quality(&["standard", "high"])?);
            }
        }
        Family::Wan26 => {
            input.insert("duration".into(), duration(5));
            input.insert("resolution".into(), quality(&["720p", "1080p"])?);
        }
        Family::Kling26 => {
            // From an image, the image decides the shape.
            if !from_image && let Some(aspect_ratio) = &params.aspect_ratio {
                input.insert("aspect_ratio".into(), json!(aspect_ratio));
            }
            input.insert("duration".into(), duration(5));
            let sound = request.options.get("sound").is_some_and(|s| s == "true");
            input.insert("sound".into(), json!(sound));
        }
        Family::NanoBanana => {
            input.insert("output_format".into(), json!("png"));
            if let Some(aspect_ratio) = &params.aspect_ratio {
                input.insert("image_size".into(), json!(aspect_ratio));
            }
        }
    }
    if from_image {
        input.insert("image_urls".into(), json!(params.image_urls));
    }

    let mut body = Map::new();
    body.insert("model".into(), json!(model));
    if !request.callback_url.is_empty() {
        body.insert("callBackUrl".into(), json!(request.callback_url));
    }
    body.insert("input".into(), Value::Object(input));
    Ok(Value::Object(body))
}

/// Reads a `createTask` answer: the new task's id, or why there is none.
pub fn parse_create_response(http_status: u16, body: &[u8]) -> Result<String, ProviderError> {
    let data = success_data(http_status, Envelope::parse(body))?;
    data.get("taskId")
        .and_then(envelope::text)
        .ok_or_else(|| super::malformed("kie createTask answer without data.taskId"))
}

/// Reads a `recordInfo` answer. An unknown task (code or HTTP 404) is
/// [`ProviderError::NotFound`].
pub fn parse_record_info_response(
    http_status: u16,
    body: &[u8],
) -> Result<TaskUpdate, ProviderError> {
    let envelope = Envelope::parse(body);
    if envelope.code == Some(404) || (envelope.code.is_none() && http_status == 404) {
        return Err(ProviderError::NotFound);
    }
    let data = success_data(http_status, envelope)?;
    record_update(&data).map_err(super::malformed)
}

/// Reads a callback: success `{"code": 200, "msg", "data": {taskId, state: "success",
/// resultJson, …}}` or failure `{"code": 501, "msg", "data": {state: "fail", failCode, failMsg,
/// resultJson: null, …}}`. When `data.state` is missing, the envelope's code decides.
pub fn parse_callback(body: &[u8]) -> Result<TaskUpdate, CallbackParseError> {
    let fail = |reason: String| CallbackParseError { provider: ProviderKind::Kie, reason };
    let value: Value = serde_json::from_slice(body).map_err(|e| fail(format!("not JSON: {e}")))?;
    let mut data = value
        .get("data")
        .filter(|data| data.is_object())
        .cloned()
        .ok_or_else(|| fail("no data object".to_owned()))?;
    let code = value.get("code").and_then(envelope::integer);
    if data.get("state").and_then(Value::as_str).is_none() {
        let state = if code == Some(SUCCESS) { "success" } else { "fail" };
        data["state"] = json!(state);
    }
    if data["state"] == "fail" && data.get("failCode").and_then(envelope::text).is_none() {
        data["failCode"] = json!(code.map_or_else(|| "fail".to_owned(), |c| c.to_string()));
    }
    record_update(&data).map_err(fail)
}

/// Reads kie's task record (of `recordInfo` and callbacks) into gengate's terms.
pub fn record_update(record: &Value) -> Result<TaskUpdate, String> {
    let remote_task_id =
        record.get("taskId").and_then(envelope::text).ok_or("the record has no taskId")?;
    let state = record.get("state").and_then(Value::as_str).ok_or("the record has no state")?;
    let state = match state {
        "waiting" | "queuing" => TaskState::Queued,
        "generating" => TaskState::Running {
            progress: record
                .get("progress")
                .and_then(envelope::integer)
                .map(|p| u8::try_from(p.clamp(0, 100)).unwrap_or(100)),
        },
        "success" => TaskState::Succeeded { files: result_files(record)?, usage: None },
        "fail" => TaskState::Failed {
            code: record
                .get("failCode")
                .and_then(envelope::text)
                .unwrap_or_else(|| "fail".to_owned()),
            message: record.get("failMsg").and_then(Value::as_str).unwrap_or_default().to_owned(),
        },
        other => TaskState::Unknown { status: other.to_owned() },
    };
    Ok(TaskUpdate { remote_task_id, external_id: None, state })
}

/// `resultJson` is a JSON document inside a string: `"{\"resultUrls\":[\"https://…\"]}"`. An
/// already decoded object is accepted too.
fn result_files(record: &Value) -> Result<Vec<ResultFile>, String> {
    let result = match record.get("resultJson") {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::String(text)) if text.trim().is_empty() => return Ok(Vec::new()),
        Some(Value::String(text)) => serde_json::from_str::<Value>(text)
            .map_err(|e| format!("resultJson is not JSON: {e}"))?,
        Some(object) => object.clone(),
    };
    let urls = result.get("resultUrls").and_then(Value::as_array).cloned().unwrap_or_default();
    Ok(urls
        .iter()
        .filter_map(Value::as_str)
        .filter(|url| !url.is_empty())
        .map(|url| ResultFile { url: url.to_owned(), duration_s: None })
        .collect())
}

/// What an error answer means for the job, from the HTTP status and kie's code and message.
///
/// Retryable: 429 (rate limited), 455 (maintenance), 500, any other 5xx code kie has not
/// documented, and, without a code, HTTP 5xx, 408 and 429. Permanent: 404, 422 (validation), 501
/// (generation failed), 505 (feature disabled). Permanent and an account problem that needs an
/// operator: 401 (key refused) and 402 (our kie credits are exhausted).
pub fn classify_error(http_status: u16, code: Option<i64>, message: &str) -> ProviderError {
    let verdict = match code {
        Some(429 | 455 | 500) => Verdict::Retry,
        Some(401 | 402) => Verdict::FailAndAlert,
        Some(404 | 422 | 501 | 505) => Verdict::Fail,
        Some(500..=599) => Verdict::Retry,
        _ if http_status >= 500 || http_status == 408 || http_status == 429 => Verdict::Retry,
        _ if http_status == 401 || http_status == 402 => Verdict::FailAndAlert,
        _ => Verdict::Fail,
    };
    ProviderError::from_answer(verdict, http_status, code, message)
}

/// `X-Webhook-Signature` as kie computes it: base64(HMAC-SHA256(key, `taskId + "." +
/// timestamp`)).
pub fn webhook_signature(key: &str, task_id: &str, timestamp: &str) -> String {
    STANDARD.encode(webhook_mac(key, task_id, timestamp))
}

/// Whether `signature` (the `X-Webhook-Signature` header) signs `task_id` and `timestamp` (the
/// `X-Webhook-Timestamp` header) with `key`, compared in constant time. The body is not signed:
/// this proves who called, not what they said, so the per-generation callback token stays the
/// primary check and a `recordInfo` query confirms the state.
pub fn verify_webhook_signature(
    key: &str,
    task_id: &str,
    timestamp: &str,
    signature: &str,
) -> bool {
    let Ok(given) = STANDARD.decode(signature.trim()) else {
        return false;
    };
    let expected = webhook_mac(key, task_id, timestamp);
    expected.as_slice().ct_eq(&given).into()
}

/// Whether a signed timestamp is within `tolerance_secs` of `now_unix`, so a captured signed
/// callback cannot be replayed forever.
pub fn webhook_timestamp_is_fresh(timestamp: &str, now_unix: i64, tolerance_secs: i64) -> bool {
    timestamp.trim().parse::<i64>().is_ok_and(|t| (now_unix - t).abs() <= tolerance_secs)
}

fn webhook_mac(key: &str, task_id: &str, timestamp: &str) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key.as_bytes())
        .expect("HMAC-SHA256 takes keys of any length");
    mac.update(format!("{task_id}.{timestamp}").as_bytes());
    mac.finalize().into_bytes().to_vec()
}

/// The `data` of a successful answer, or the classified error.
fn success_data(http_status: u16, envelope: Envelope) -> Result<Value, ProviderError> {
    let ok_status = (200..300).contains(&http_status);
    match envelope.code {
        Some(SUCCESS) if ok_status => {
            envelope.data.ok_or_else(|| super::malformed("kie answer without data"))
        }
        None if ok_status => {
            Err(super::malformed(format!("kie answer is not its JSON: {}", envelope.message)))
        }
        code => Err(classify_error(http_status, code, &envelope.message)),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::generation::GenerationParams;

    const CALLBACK: &str = "https://gw.example/cb/g1?token=t";

    fn request(provider_model: &str, mode: Mode, images: &[&str]) -> TaskRequest {
        TaskRequest {
            generation_id: "0190f5a0-0000-7000-8000-000000000001".parse().unwrap(),
            provider_model: provider_model.to_owned(),
            options: BTreeMap::new(),
            mode,
            params: GenerationParams {
                prompt: "a cat on a boat".to_owned(),
                client_prompt: "a cat on a boat".to_owned(),
                negative_prompt: None,
                duration: Some(10),
                aspect_ratio: Some("16:9".to_owned()),
                image_urls: images.iter().map(|s| s.to_string()).collect(),
                end_image_url: None,
                camera_control: None,
                quality: None,
                sub_type: None,
            },
            callback_url: CALLBACK.to_owned(),
        }
    }

    fn body(model: &str, input: Value) -> Value {
        json!({"model": model, "callBackUrl": CALLBACK, "input": input})
    }

    #[test]
    fn sora_2_bodies() {
        let text = request("sora-2", Mode::Text2Video, &[]);
        assert_eq!(
            create_body(&text).unwrap(),
            body(
                "sora-2-text-to-video",
                json!({"prompt": "a cat on a boat", "aspect_ratio": "landscape",
                       "n_frames": "10", "remove_watermark": true}),
            )
        );
        let mut image = request("sora-2", Mode::Image2Video, &["https://i/1.png"]);
        image.params.aspect_ratio = Some("9:16".to_owned());
        image.params.duration = Some(15);
        assert_eq!(
            create_body(&image).unwrap(),
            body(
                "sora-2-image-to-video",
                json!({"prompt": "a cat on a boat", "aspect_ratio": "portrait",
                       "n_frames": "15", "remove_watermark": true,
                       "image_urls": ["https://i/1.png"]}),
            )
        );
        let mut square = request("sora-2", Mode::Text2Video, &[]);
        square.params.aspect_ratio = Some("1:1".to_owned());
        assert!(matches!(
            create_body(&square),
            Err(ProviderError::Permanent { code, .. }) if code == "unsupported"
        ));
    }

    #[test]
    fn sora_2_pro_bodies_add_the_size() {
        let text = request("sora-2-pro", Mode::Text2Video, &[]);
        assert_eq!(
            create_body(&text).unwrap(),
            body(
                "sora-2-pro-text-to-video",
                json!({"prompt": "a cat on a boat", "aspect_ratio": "landscape",
                       "n_frames": "10", "remove_watermark": true, "size": "standard"}),
            )
        );
        let mut image = request("sora-2-pro", Mode::Image2Video, &["https://i/1.png"]);
        image.params.quality = Some("high".to_owned());
        assert_eq!(
            create_body(&image).unwrap(),
            body(
                "sora-2-pro-image-to-video",
                json!({"prompt": "a cat on a boat", "aspect_ratio": "landscape",
                       "n_frames": "10", "remove_watermark": true, "size": "high",
                       "image_urls": ["https://i/1.png"]}),
            )
        );
        image.params.quality = Some("1080p".to_owned());
        assert!(create_body(&image).is_err());
    }

    #[test]
    fn wan_2_6_bodies() {
        let mut text = request("wan-2-6", Mode::Text2Video, &[]);
        text.params.duration = Some(15);
        assert_eq!(
            create_body(&text).unwrap(),
            body(
                "wan/2-6-text-to-video",
                json!({"prompt": "a cat on a boat", "duration": "15", "resolution": "720p"}),
            )
        );
        let mut image = request("wan-2-6", Mode::Image2Video, &["https://i/1.png"]);
        image.params.quality = Some("1080p".to_owned());
        assert_eq!(
            create_body(&image).unwrap(),
            body(
                "wan/2-6-image-to-video",
                json!({"prompt": "a cat on a boat", "duration": "10", "resolution": "1080p",
                       "image_urls": ["https://i/1.png"]}),
            )
        );
    }

    #[test]
    fn kling_2_6_bodies() {
        let mut text = request("kling-2-6", Mode::Text2Video, &[]);
        text.params.duration = Some(5);
        text.options.insert("sound".into(), "true".into());
        assert_eq!(
            create_body(&text).unwrap(),
            body(
                "kling-2.6/text-to-video",
                json!({"prompt": "a cat on a boat", "aspect_ratio": "16:9", "duration": "5",
                       "sound": true}),
            )
        );
        let image = request("kling-2-6", Mode::Image2Video, &["https://i/1.png"]);
        assert_eq!(
            create_body(&image).unwrap(),
            body(
                "kling-2.6/image-to-video",
                json!({"prompt": "a cat on a boat", "duration": "10", "sound": false,
                       "image_urls": ["https://i/1.png"]}),
            )
        );
    }

    #[test]
    fn nano_banana_bodies() {
        let mut text = request("nano-banana", Mode::Text2Image, &[]);
        text.params.duration = None;
        text.params.aspect_ratio = Some("1:1".to_owned());
        assert_eq!(
            create_body(&text).unwrap(),
            body(
                "google/nano-banana",
                json!({"prompt": "a cat on a boat", "output_format": "png", "image_size": "1:1"}),
            )
        );
        let edit =
            request("nano-banana", Mode::Image2Image, &["https://i/1.png", "https://i/2.png"]);
        assert_eq!(
            create_body(&edit).unwrap(),
            body(
                "google/nano-banana-edit",
                json!({"prompt": "a cat on a boat", "output_format": "png", "image_size": "16:9",
                       "image_urls": ["https://i/1.png", "https://i/2.png"]}),
            )
        );
    }

    #[test]
    fn unsupported_families_and_modes_and_missing_images() {
        let unsupported = |r: TaskRequest| matches!(create_body(&r), Err(ProviderError::Permanent { code, account_problem: false, .. }) if code == "unsupported");
        assert!(unsupported(request("veo-3", Mode::Text2Video, &[])));
        assert!(unsupported(request("sora-2", Mode::Text2Image, &[])));
        assert!(unsupported(request("sora-2", Mode::OmniVideo, &[])));
        assert!(unsupported(request("nano-banana", Mode::Text2Video, &[])));
        assert!(unsupported(request("wan-2-6", Mode::MultiImage2Video, &["https://i/1.png"])));
        assert!(matches!(
            create_body(&request("wan-2-6", Mode::Image2Video, &[])),
            Err(ProviderError::Permanent { code, .. }) if code == "invalid_request"
        ));
    }

    fn record(state: &str) -> Value {
        json!({
            "taskId": "0190f5a0aaaa7000800000000000abcd",
            "model": "sora-2-text-to-video",
            "state": state,
            "param": "{\"model\":\"sora-2-text-to-video\"}",
            "resultJson": null,
            "failCode": "",
            "failMsg": "",
            "completeTime": null,
            "createTime": 1_750_000_000_000_i64,
            "updateTime": 1_750_000_000_000_i64,
        })
    }

    #[test]
    fn states_map_to_task_states() {
        let state = |r: Value| record_update(&r).unwrap().state;
        assert_eq!(state(record("waiting")), TaskState::Queued);
        assert_eq!(state(record("queuing")), TaskState::Queued);
        let mut generating = record("generating");
        generating["progress"] = json!(50);
        assert_eq!(state(generating), TaskState::Running { progress: Some(50) });
        assert_eq!(state(record("generating")), TaskState::Running { progress: None });
        assert_eq!(
            state(record("pending_review")),
            TaskState::Unknown { status: "pending_review".into() }
        );
        let mut failed = record("fail");
        failed["failCode"] = json!("501");
        failed["failMsg"] = json!("content policy");
        assert_eq!(
            state(failed),
            TaskState::Failed { code: "501".into(), message: "content policy".into() }
        );
    }

    #[test]
    fn result_json_is_a_json_string() {
        let mut done = record("success");
        done["resultJson"] = json!(
            "{\"resultUrls\":[\"https://tempfile.aiquickdraw.com/a.mp4\",\"https://x.kie.ai/b.mp4\"]}"
        );
        let answer = json!({"code": 200, "message": "success", "data": done}).to_string();
        let update = parse_record_info_response(200, answer.as_bytes()).unwrap();
        assert_eq!(update.remote_task_id, "0190f5a0aaaa7000800000000000abcd");
        assert_eq!(
            update.state,
            TaskState::Succeeded {
                files: vec![
                    ResultFile {
                        url: "https://tempfile.aiquickdraw.com/a.mp4".into(),
                        duration_s: None
                    },
                    ResultFile { url: "https://x.kie.ai/b.mp4".into(), duration_s: None },
                ],
                usage: None,
            }
        );
        let mut broken = record("success");
        broken["resultJson"] = json!("{not json");
        assert!(record_update(&broken).is_err());
    }

    #[test]
    fn answers_are_read_by_their_code() {
        let created = br#"{"code":200,"msg":"success","data":{"taskId":"abc"}}"#;
        assert_eq!(parse_create_response(200, created).unwrap(), "abc");
        let limited = br#"{"code":429,"msg":"rate limited","data":null}"#;
        assert!(matches!(
            parse_create_response(200, limited),
            Err(ProviderError::Retryable { code, .. }) if code == "429"
        ));
        let unknown = br#"{"code":404,"msg":"no such task","data":null}"#;
        assert_eq!(parse_record_info_response(200, unknown), Err(ProviderError::NotFound));
        let refused = br#"{"code":401,"msg":"You do not have access permissions","data":null}"#;
        assert!(matches!(
            parse_create_response(401, refused),
            Err(ProviderError::Permanent { code, account_problem: true, .. }) if code == "401"
        ));
        assert!(matches!(
            parse_create_response(503, b"Service Unavailable"),
            Err(ProviderError::Retryable { code, .. }) if code == "http_503"
        ));
    }

    #[test]
    fn error_classification_table() {
        let retryable = |status, code| {
            matches!(classify_error(status, code, "m"), ProviderError::Retryable { .. })
        };
        let permanent = |status, code, account| {
            matches!(classify_error(status, code, "m"),
                ProviderError::Permanent { account_problem, .. } if account_problem == account)
        };
        for code in [429, 455, 500, 502, 503] {
            assert!(retryable(200, Some(code)), "code {code}");
        }
        for code in [404, 422, 501, 505, 400] {
            assert!(permanent(200, Some(code), false), "code {code}");
        }
        for code in [401, 402] {
            assert!(permanent(200, Some(code), true), "code {code}");
        }
        assert!(retryable(500, None));
        assert!(retryable(504, None));
        assert!(retryable(429, None));
        assert!(permanent(401, None, true));
        assert!(permanent(400, None, false));
    }

    #[test]
    fn success_and_failure_callbacks() {
        let mut done = record("success");
        done["resultJson"] = json!("{\"resultUrls\":[\"https://tempfile.aiquickdraw.com/a.png\"]}");
        let success = json!({"code": 200, "msg": "Generation succeeded", "data": done});
        let update = parse_callback(success.to_string().as_bytes()).unwrap();
        assert_eq!(
            update.state,
            TaskState::Succeeded {
                files: vec![ResultFile {
                    url: "https://tempfile.aiquickdraw.com/a.png".into(),
                    duration_s: None
                }],
                usage: None,
            }
        );

        let mut failed = record("fail");
        failed["failCode"] = json!("500");
        failed["failMsg"] = json!("Internal server error");
        let failure = json!({"code": 501, "msg": "Generation failed", "data": failed});
        let update = parse_callback(failure.to_string().as_bytes()).unwrap();
        assert_eq!(
            update.state,
            TaskState::Failed { code: "500".into(), message: "Internal server error".into() }
        );

        // No state and no failCode: the envelope's code speaks.
        let terse =
            json!({"code": 501, "msg": "failed", "data": {"taskId": "t1", "resultJson": null}});
        assert_eq!(
            parse_callback(terse.to_string().as_bytes()).unwrap().state,
            TaskState::Failed { code: "501".into(), message: String::new() }
        );
        assert!(parse_callback(br#"{"code":200,"msg":"x"}"#).is_err());
        assert!(parse_callback(b"[]").is_err());
    }

    #[test]
    fn webhook_signatures() {
        let signature = webhook_signature("hook-key", "task-1", "1750000000");
        assert!(verify_webhook_signature("hook-key", "task-1", "1750000000", &signature));
        assert!(!verify_webhook_signature("other-key", "task-1", "1750000000", &signature));
        assert!(!verify_webhook_signature("hook-key", "task-2", "1750000000", &signature));
        assert!(!verify_webhook_signature("hook-key", "task-1", "1750000001", &signature));
        assert!(!verify_webhook_signature("hook-key", "task-1", "1750000000", "not base64!"));
        assert!(!verify_webhook_signature("hook-key", "task-1", "1750000000", ""));
        // Computed independently (Python's hmac): base64(HMAC-SHA256("key", "t.1")).
        assert_eq!(
            webhook_signature("key", "t", "1"),
            "UrLtzvgEfsK39eXCiXD+XaoNFd/cbRzIyjQMHh4izoU="
        );

        assert!(webhook_timestamp_is_fresh("1750000000", 1_750_000_100, 300));
        assert!(!webhook_timestamp_is_fresh("1750000000", 1_750_000_400, 300));
        assert!(!webhook_timestamp_is_fresh("soon", 1_750_000_000, 300));
    }
}
