//! Kling's direct API as data, without HTTP: the JWT it authenticates with, the create bodies of
//! its four video endpoints, the query paths, its answers and callbacks read into
//! [`TaskUpdate`]s, and its error codes classified into [`ProviderError`]s.
//!
//! Every create carries the generation id as `external_task_id`: Kling refuses a second task with
//! the same id, and a task can be queried by it, so a worker that crashed after creating a task
//! finds it again instead of paying for a second one.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use serde_json::{Map, Value, json};
use sha2::Sha256;

use super::envelope::{self, Envelope};
use super::{CallbackParseError, ProviderError, ProviderKind, ResultFile, TaskRef, TaskRequest};
use super::{TaskState, TaskUpdate, Verdict};
use crate::generation::Mode;
use crate::ids::GenerationId;

/// How long a token is valid after it is made (Kling's own examples use 30 minutes).
pub const TOKEN_LIFETIME_SECS: i64 = 1800;

/// A token is valid from this long before it is made, so a provider clock slightly behind ours
/// does not refuse it as "not yet valid".
pub const TOKEN_NOT_BEFORE_SKEW_SECS: i64 = 5;

/// The only model the omni-video endpoint serves.
pub const OMNI_MODEL: &str = "kling-video-o1";

/// Most images multi-image2video takes.
const MAX_MULTI_IMAGES: usize = 4;

/// Kling's code for success in the answer envelope.
const SUCCESS: i64 = 0;

/// The HS256 JWT Kling expects as `Authorization: Bearer …`: `iss` = access key, valid from
/// `now − 5 s` to `now + 30 min`, signed with the secret key.
pub fn token(access_key: &str, secret_key: &str, now_unix: i64) -> String {
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
    let claims = json!({
        "iss": access_key,
        "exp": now_unix + TOKEN_LIFETIME_SECS,
        "nbf": now_unix - TOKEN_NOT_BEFORE_SKEW_SECS,
    });
    let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
    let signing_input = format!("{header}.{payload}");
    let mut mac = Hmac::<Sha256>::new_from_slice(secret_key.as_bytes())
        .expect("HMAC-SHA256 takes keys of any length");
    mac.update(signing_input.as_bytes());
    let signature = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
    format!("{signing_input}.{signature}")
}

/// The endpoint (last path segment) that creates and queries tasks of `mode`.
pub fn endpoint(mode: Mode) -> Result<&'static str, ProviderError> {
    match mode {
        Mode::Text2Video => Ok("text2video"),
        Mode::Image2Video => Ok("image2video"),
        Mode::MultiImage2Video => Ok("multi-image2video"),
        Mode::OmniVideo => Ok("omni-video"),
        Mode::Text2Image | Mode::Image2Image => {
            Err(super::unsupported(format!("Kling adapter does not support {mode}")))
        }
    }
}

/// `POST` path that creates a task of `mode`.
pub fn create_path(mode: Mode) -> Result<String, ProviderError> {
    Ok(format!("/v1/videos/{}", endpoint(mode)?))
}

/// `GET` path of a task by its Kling task id. Kling finds a task only under the endpoint that
/// created it, hence the mode.
pub fn query_path(task: &TaskRef) -> Result<String, ProviderError> {
    path_segment(&task.remote_task_id)?;
    Ok(format!("{}/{}", create_path(task.mode)?, task.remote_task_id))
}

/// `GET` path of a task by its `external_task_id`, i.e. by the generation that created it.
pub fn query_path_by_generation(
    mode: Mode,
    generation_id: GenerationId,
) -> Result<String, ProviderError> {
    Ok(format!("{}/{generation_id}", create_path(mode)?))
}

/// The JSON body that creates the task of `request` (POST it to [`create_path`]).
///
/// `model_name` is the catalogue's `provider_model` (omni-video always uses [`OMNI_MODEL`]);
/// Kling's quality `mode` is the catalogue option `mode` (`std`, the default, or `pro`);
/// `cfg_scale` comes from the catalogue option of that name when set. For omni-video, images are
/// references unless the catalogue option `image_role = "frames"` makes them the first and last
/// frames.
pub fn create_body(request: &TaskRequest) -> Result<Value, ProviderError> {
    endpoint(request.mode)?;
    let params = &request.params;
    let mut body = Map::new();
    let model = match request.mode {
        Mode::OmniVideo => OMNI_MODEL,
        _ => request.provider_model.as_str(),
    };
    body.insert("model_name".into(), json!(model));
    if !params.prompt.is_empty() {
        body.insert("prompt".into(), json!(params.prompt));
    }
    if let Some(negative) = params.negative_prompt.as_deref().filter(|n| !n.is_empty()) {
        body.insert("negative_prompt".into(), json!(negative));
    }
    if let Some(cfg_scale) = request.options.get("cfg_scale") {
        let cfg_scale: f64 = cfg_scale.parse().map_err(|_| {
            super::unsupported(format!("Kling option cfg_scale {cfg_scale:?} is not a number"))
        })?;
        body.insert("cfg_scale".into(), json!(cfg_scale));
    }
    let quality_mode = request.options.get("mode").map_or("std", String::as_str);
    if !matches!(quality_mode, "std" | "pro") {
        return Err(super::unsupported(format!(
            "Kling option mode must be std or pro, not {quality_mode:?}"
        )));
    }
    body.insert("mode".into(), json!(quality_mode));
    // image2video takes its shape from the image; Kling has no aspect_ratio there.
    if request.mode != Mode::Image2Video
        && let Some(aspect_ratio) = &params.aspect_ratio
    {
        body.insert("aspect_ratio".into(), json!(aspect_ratio));
    }
    if let Some(duration) = params.duration {
        // Kling wants the duration as a string: "5", "10".
        body.insert("duration".into(), json!(duration.to_string()));
    }
    if !request.callback_url.is_empty() {
        body.insert("callback_url".into(), json!(request.callback_url));
    }
    body.insert("external_task_id".into(), json!(request.generation_id.to_string()));
    if let Some(camera) = &params.camera_control {
        body.insert("camera_control".into(), json!(camera));
    }

    let images = &params.image_urls;
    match request.mode {
        // Image modes were refused by `endpoint` above.
        Mode::Text2Video | Mode::Text2Image | Mode::Image2Image => {}
        Mode::Image2Video => {
            let image = images
                .first()
                .ok_or_else(|| super::invalid_request("image2video needs an input image"))?;
            body.insert("image".into(), json!(image));
            if let Some(tail) = &params.end_image_url {
                body.insert("image_tail".into(), json!(tail));
            }
        }
        Mode::MultiImage2Video => {
            if images.is_empty() || images.len() > MAX_MULTI_IMAGES {
                return Err(super::invalid_request(format!(
                    "multi-image2video takes 1 to {MAX_MULTI_IMAGES} images, not {}",
                    images.len()
                )));
            }
            let list: Vec<Value> = images.iter().map(|url| json!({"image": url})).collect();
            body.insert("image_list".into(), Value::Array(list));
        }
        Mode::OmniVideo => {
            let frames = request.options.get("image_role").is_some_and(|role| role == "frames");
            if frames && images.len() > 2 {
                return Err(super::invalid_request(
                    "omni-video takes at most a first and a last frame",
                ));
            }
            if !images.is_empty() {
                let list = images.iter().enumerate().map(|(i, url)| match (frames, i) {
                    (true, 0) => json!({"image_url": url, "type": "first_frame"}),
                    (true, _) => json!({"image_url": url, "type": "end_frame"}),
                    (false, _) => json!({"image_url": url}),
                });
                body.insert("image_list".into(), Value::Array(list.collect()));
            }
        }
    }
    Ok(Value::Object(body))
}

/// Reads a create answer: the new task's id, or why there is none.
pub fn parse_create_response(http_status: u16, body: &[u8]) -> Result<String, ProviderError> {
    let data = success_data(http_status, body)?;
    data.get("task_id")
        .and_then(envelope::text)
        .ok_or_else(|| super::malformed("Kling create answer without data.task_id"))
}

/// Reads a query answer. An unknown task (HTTP 404, codes 1202/1203) is
/// [`ProviderError::NotFound`].
pub fn parse_query_response(http_status: u16, body: &[u8]) -> Result<TaskUpdate, ProviderError> {
    let envelope = Envelope::parse(body);
    if http_status == 404 || matches!(envelope.code, Some(1202 | 1203)) {
        return Err(ProviderError::NotFound);
    }
    let data = success_data_of(http_status, envelope)?;
    task_update(&data).map_err(super::malformed)
}

/// Reads a callback body: the bare task object as documented, or the same wrapped in
/// `{code, message, request_id, data}` as some copies of the documentation show it.
pub fn parse_callback(body: &[u8]) -> Result<TaskUpdate, CallbackParseError> {
    let fail = |reason: String| CallbackParseError { provider: ProviderKind::Kling, reason };
    let value: Value = serde_json::from_slice(body).map_err(|e| fail(format!("not JSON: {e}")))?;
    let wrapped = value.get("task_id").is_none() && value.get("data").is_some_and(Value::is_object);
    let task = if wrapped {
        let code = value.get("code").and_then(envelope::integer);
        if code.is_some_and(|code| code != SUCCESS) {
            return Err(fail(format!("envelope carries error code {}", code.unwrap_or_default())));
        }
        &value["data"]
    } else {
        &value
    };
    task_update(task).map_err(fail)
}

/// Reads Kling's task object (of queries and callbacks) into gengate's terms.
pub fn task_update(task: &Value) -> Result<TaskUpdate, String> {
    let remote_task_id =
        task.get("task_id").and_then(envelope::text).ok_or("the task has no task_id")?;
    let status =
        task.get("task_status").and_then(Value::as_str).ok_or("the task has no task_status")?;
    let external_id = task.pointer("/task_info/external_task_id").and_then(envelope::text);
    let state = match status {
        "submitted" => TaskState::Queued,
        "processing" => TaskState::Running { progress: None },
        "succeed" => TaskState::Succeeded {
            files: videos(task),
            usage: task.get("final_unit_deduction").and_then(envelope::text),
        },
        "failed" => TaskState::Failed {
            // Kling gives no failure code, only a message.
            code: "failed".to_owned(),
            message: task
                .get("task_status_msg")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned(),
        },
        other => TaskState::Unknown { status: other.to_owned() },
    };
    Ok(TaskUpdate { remote_task_id, external_id, state })
}

fn videos(task: &Value) -> Vec<ResultFile> {
    let Some(videos) = task.pointer("/task_result/videos").and_then(Value::as_array) else {
        return Vec::new();
    };
    videos
        .iter()
        .filter_map(|video| {
            let url = video.get("url").and_then(Value::as_str).filter(|u| !u.is_empty())?;
            let duration_s = video.get("duration").and_then(|d| match d {
                #[allow(clippy::cast_possible_truncation, reason = "a clip length needs no f64")]
                Value::Number(n) => n.as_f64().map(|n| n as f32),
                Value::String(s) => s.trim().parse().ok(),
                _ => None,
            });
            Some(ResultFile { url: url.to_owned(), duration_s })
        })
        .collect()
}

/// What an error answer means for the job, from the HTTP status and Kling's code and message.
///
/// Retryable: 1302 (rate limit), 1303 (concurrency limit), 5000–5002 (Kling overloaded), and any
/// other 5xx, 408 or 429. Permanent: 1100 and 1103 (account not allowed), 1200–1203 (bad
/// parameters, no such task), 1300–1301 (content policy). Permanent and an account problem that
/// needs an operator: 1000–1004 (authentication) and 1101/1102 (arrears, resource pack
/// depleted). Anything else is permanent: retrying a request Kling did not understand does not
/// make it understand.
pub fn classify_error(http_status: u16, code: Option<i64>, message: &str) -> ProviderError {
    let verdict = match code {
        Some(1302 | 1303 | 5000..=5002) => Verdict::Retry,
        Some(1000..=1004 | 1101 | 1102) => Verdict::FailAndAlert,
        Some(1100 | 1103 | 1200..=1203 | 1300 | 1301) => Verdict::Fail,
        _ if http_status >= 500 || http_status == 408 || http_status == 429 => Verdict::Retry,
        None if http_status == 401 => Verdict::FailAndAlert,
        _ => Verdict::Fail,
    };
    ProviderError::from_answer(verdict, http_status, code, message)
}

/// The `data` of a successful answer, or the classified error.
fn success_data(http_status: u16, body: &[u8]) -> Result<Value, ProviderError> {
    success_data_of(http_status, Envelope::parse(body))
}

fn success_data_of(http_status: u16, envelope: Envelope) -> Result<Value, ProviderError> {
    let ok_status = (200..300).contains(&http_status);
    match envelope.code {
        Some(SUCCESS) if ok_status => {
            envelope.data.ok_or_else(|| super::malformed("Kling answer without data"))
        }
        // A 2xx that is not Kling's JSON: something in between answered; worth another try.
        None if ok_status => {
            Err(super::malformed(format!("Kling answer is not its JSON: {}", envelope.message)))
        }
        code => Err(classify_error(http_status, code, &envelope.message)),
    }
}

/// Task ids go into URL paths: refuse anything that could change the path.
fn path_segment(id: &str) -> Result<(), ProviderError> {
    let safe =
        !id.is_empty() && id.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_".contains(&b));
    if safe {
        Ok(())
    } else {
        Err(super::invalid_request(format!("{id:?} is not a Kling task id")))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::generation::GenerationParams;

    const GENERATION: &str = "0190f5a0-0000-7000-8000-000000000001";

    fn request(mode: Mode, images: &[&str]) -> TaskRequest {
        TaskRequest {
            generation_id: GENERATION.parse().unwrap(),
            provider_model: "kling-v2-1-master".to_owned(),
            options: BTreeMap::new(),
            mode,
            params: GenerationParams {
                prompt: "a cat on a boat".to_owned(),
                client_prompt: "a cat on a boat".to_owned(),
                negative_prompt: Some("blur".to_owned()),
                duration: Some(5),
                aspect_ratio: Some("16:9".to_owned()),
                image_urls: images.iter().map(|s| s.to_string()).collect(),
                end_image_url: None,
                camera_control: None,
                quality: None,
                sub_type: None,
            },
            callback_url: "https://gw.example/cb/g1?token=t".to_owned(),
        }
    }

    #[test]
    fn text2video_body() {
        let mut request = request(Mode::Text2Video, &[]);
        request.options.insert("mode".into(), "pro".into());
        assert_eq!(create_path(request.mode).unwrap(), "/v1/videos/text2video");
        assert_eq!(
            create_body(&request).unwrap(),
            json!({
                "model_name": "kling-v2-1-master",
                "prompt": "a cat on a boat",
                "negative_prompt": "blur",
                "mode": "pro",
                "aspect_ratio": "16:9",
                "duration": "5",
                "callback_url": "https://gw.example/cb/g1?token=t",
                "external_task_id": GENERATION,
            })
        );
    }

    #[test]
    fn image2video_body_takes_the_first_image_and_no_aspect_ratio() {
        let mut request = request(Mode::Image2Video, &["https://i/1.png", "https://i/2.png"]);
        request.params.negative_prompt = None;
        request.options.insert("cfg_scale".into(), "0.5".into());
        assert_eq!(create_path(request.mode).unwrap(), "/v1/videos/image2video");
        assert_eq!(
            create_body(&request).unwrap(),
            json!({
                "model_name": "kling-v2-1-master",
                "prompt": "a cat on a boat",
                "cfg_scale": 0.5,
                "mode": "std",
                "duration": "5",
                "callback_url": "https://gw.example/cb/g1?token=t",
                "external_task_id": GENERATION,
                "image": "https://i/1.png",
            })
        );
        let without_image = self::request(Mode::Image2Video, &[]);
        assert!(matches!(
            create_body(&without_image),
            Err(ProviderError::Permanent { code, .. }) if code == "invalid_request"
        ));
    }

    #[test]
    fn an_end_frame_is_the_image_tail_and_a_camera_movement_passes_through() {
        let camera = crate::generation::camera::CameraControl::parse(
            &json!({"type": "simple", "config": {"zoom": -4}}),
            "camera_control",
        )
        .unwrap();
        let mut request = request(Mode::Image2Video, &["https://i/1.png"]);
        request.params.end_image_url = Some("https://i/last.png".to_owned());
        request.params.camera_control = Some(camera.clone());
        let body = create_body(&request).unwrap();
        assert_eq!(body["image"], "https://i/1.png");
        assert_eq!(body["image_tail"], "https://i/last.png");
        assert_eq!(
            body["camera_control"],
            json!({"type": "simple", "config": {"horizontal": 0.0, "vertical": 0.0, "pan": 0.0,
                   "tilt": 0.0, "roll": 0.0, "zoom": -4.0}})
        );
        let mut text = self::request(Mode::Text2Video, &[]);
        text.params.camera_control = Some(camera);
        let body = create_body(&text).unwrap();
        assert_eq!(body["camera_control"]["type"], "simple");
        assert!(body.get("image_tail").is_none());
    }

    #[test]
    fn multi_image2video_body() {
        let mut request = request(Mode::MultiImage2Video, &["https://i/1.png", "https://i/2.png"]);
        request.provider_model = "kling-v1-6".to_owned();
        request.params.negative_prompt = None;
        request.params.duration = Some(10);
        assert_eq!(create_path(request.mode).unwrap(), "/v1/videos/multi-image2video");
        assert_eq!(
            create_body(&request).unwrap(),
            json!({
                "model_name": "kling-v1-6",
                "prompt": "a cat on a boat",
                "mode": "std",
                "aspect_ratio": "16:9",
                "duration": "10",
                "callback_url": "https://gw.example/cb/g1?token=t",
                "external_task_id": GENERATION,
                "image_list": [{"image": "https://i/1.png"}, {"image": "https://i/2.png"}],
            })
        );
        let five = self::request(Mode::MultiImage2Video, &["https://i/1.png"; 5]);
        assert!(create_body(&five).is_err(), "more than 4 images must be refused");
    }

    #[test]
    fn omni_video_body_uses_the_omni_model_and_image_urls() {
        let mut request = request(Mode::OmniVideo, &["https://i/1.png", "https://i/2.png"]);
        request.params.negative_prompt = None;
        request.params.aspect_ratio = Some("9:16".to_owned());
        request.params.duration = Some(7);
        assert_eq!(create_path(request.mode).unwrap(), "/v1/videos/omni-video");
        let expected = |list: Value| {
            json!({
                "model_name": "kling-video-o1",
                "prompt": "a cat on a boat",
                "mode": "std",
                "aspect_ratio": "9:16",
                "duration": "7",
                "callback_url": "https://gw.example/cb/g1?token=t",
                "external_task_id": GENERATION,
                "image_list": list,
            })
        };
        assert_eq!(
            create_body(&request).unwrap(),
            expected(json!([{"image_url": "https://i/1.png"}, {"image_url": "https://i/2.png"}]))
        );
        request.options.insert("image_role".into(), "frames".into());
        assert_eq!(
            create_body(&request).unwrap(),
            expected(json!([
                {"image_url": "https://i/1.png", "type": "first_frame"},
                {"image_url": "https://i/2.png", "type": "end_frame"},
            ]))
        );
    }

    #[test]
    fn image_modes_and_unknown_quality_modes_are_unsupported() {
        for mode in [Mode::Text2Image, Mode::Image2Image] {
            let error = create_body(&request(mode, &["https://i/1.png"])).unwrap_err();
            assert!(
                matches!(error, ProviderError::Permanent { code, .. } if code == "unsupported")
            );
        }
        let mut fast = request(Mode::Text2Video, &[]);
        fast.options.insert("mode".into(), "turbo".into());
        assert!(create_body(&fast).is_err());
    }

    #[test]
    fn query_paths_follow_the_creating_endpoint() {
        let task = TaskRef {
            mode: Mode::MultiImage2Video,
            provider_model: "kling-v1-6".to_owned(),
            remote_task_id: "867283741759111202".to_owned(),
        };
        assert_eq!(query_path(&task).unwrap(), "/v1/videos/multi-image2video/867283741759111202");
        assert_eq!(
            query_path_by_generation(Mode::Text2Video, GENERATION.parse().unwrap()).unwrap(),
            format!("/v1/videos/text2video/{GENERATION}")
        );
        let sneaky = TaskRef { remote_task_id: "../../admin".to_owned(), ..task };
        assert!(query_path(&sneaky).is_err());
    }

    #[test]
    fn the_token_is_hs256_with_the_documented_claims() {
        let now = 1_750_000_000;
        let token = token("ak-123", "sk-456", now);
        let parts: Vec<&str> = token.split('.').collect();
        assert_eq!(parts.len(), 3);
        let decode = |part: &str| -> Value {
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
        };
        assert_eq!(decode(parts[0]), json!({"alg": "HS256", "typ": "JWT"}));
        assert_eq!(decode(parts[1]), json!({"iss": "ak-123", "exp": now + 1800, "nbf": now - 5}));
        let mut mac = Hmac::<Sha256>::new_from_slice(b"sk-456").unwrap();
        mac.update(format!("{}.{}", parts[0], parts[1]).as_bytes());
        mac.verify_slice(&URL_SAFE_NO_PAD.decode(parts[2]).unwrap()).expect("signature matches");
    }

    fn task(status: &str) -> Value {
        json!({
            "task_id": "867283741759111202",
            "task_status": status,
            "task_status_msg": if status == "failed" { "content review failed" } else { "" },
            "task_info": {"external_task_id": GENERATION},
            "created_at": 1_722_769_557_708_i64,
            "updated_at": 1_722_769_557_708_i64,
        })
    }

    #[test]
    fn statuses_map_to_task_states() {
        let state = |status| task_update(&task(status)).unwrap().state;
        assert_eq!(state("submitted"), TaskState::Queued);
        assert_eq!(state("processing"), TaskState::Running { progress: None });
        assert_eq!(
            state("failed"),
            TaskState::Failed { code: "failed".into(), message: "content review failed".into() }
        );
        assert_eq!(state("queueing"), TaskState::Unknown { status: "queueing".into() });

        let mut done = task("succeed");
        done["final_unit_deduction"] = json!("2");
        done["task_result"] = json!({"videos": [
            {"id": "v1", "url": "https://cdn.kling/v1.mp4", "duration": "5.1"},
            {"id": "v2", "url": "https://cdn.kling/v2.mp4", "duration": 10},
        ]});
        let update = task_update(&done).unwrap();
        assert_eq!(update.remote_task_id, "867283741759111202");
        assert_eq!(update.external_id.as_deref(), Some(GENERATION));
        assert_eq!(
            update.state,
            TaskState::Succeeded {
                files: vec![
                    ResultFile { url: "https://cdn.kling/v1.mp4".into(), duration_s: Some(5.1) },
                    ResultFile { url: "https://cdn.kling/v2.mp4".into(), duration_s: Some(10.0) },
                ],
                usage: Some("2".into()),
            }
        );
    }

    #[test]
    fn answers_are_read_through_the_envelope() {
        let created =
            json!({"code": 0, "message": "SUCCEED", "request_id": "r", "data": task("submitted")});
        let body = created.to_string();
        assert_eq!(parse_create_response(200, body.as_bytes()).unwrap(), "867283741759111202");
        assert_eq!(parse_query_response(200, body.as_bytes()).unwrap().state, TaskState::Queued);

        let busy = br#"{"code":1303,"message":"concurrency limit","request_id":"r"}"#;
        assert!(matches!(
            parse_create_response(429, busy),
            Err(ProviderError::Retryable { code, .. }) if code == "1303"
        ));
        let missing = br#"{"code":1203,"message":"task not found","request_id":"r"}"#;
        assert_eq!(parse_query_response(404, missing), Err(ProviderError::NotFound));
        // Success HTTP status but an error code: the code wins.
        let refused = br#"{"code":1201,"message":"bad params"}"#;
        assert!(matches!(
            parse_create_response(200, refused),
            Err(ProviderError::Permanent { code, account_problem: false, .. }) if code == "1201"
        ));
        assert!(matches!(
            parse_create_response(200, b"<html>hi</html>"),
            Err(ProviderError::Retryable { code, .. }) if code == "malformed_response"
        ));
    }

    #[test]
    fn error_classification_table() {
        enum Want {
            Retry,
            Permanent,
            Account,
        }
        use Want::*;
        let table: &[(u16, Option<i64>, Want)] = &[
            (401, Some(1000), Account),
            (401, Some(1001), Account),
            (401, Some(1002), Account),
            (401, Some(1003), Account),
            (401, Some(1004), Account),
            (429, Some(1100), Permanent),
            (429, Some(1101), Account),
            (429, Some(1102), Account),
            (403, Some(1103), Permanent),
            (400, Some(1200), Permanent),
            (400, Some(1201), Permanent),
            (404, Some(1202), Permanent),
            (404, Some(1203), Permanent),
            (400, Some(1300), Permanent),
            (400, Some(1301), Permanent),
            (429, Some(1302), Retry),
            (429, Some(1303), Retry),
            (500, Some(5000), Retry),
            (503, Some(5001), Retry),
            (504, Some(5002), Retry),
            (502, Some(9999), Retry),
            (400, Some(9999), Permanent),
            (502, None, Retry),
            (429, None, Retry),
            (401, None, Account),
            (418, None, Permanent),
        ];
        for (status, code, want) in table {
            let got = classify_error(*status, *code, "m");
            let ok = match want {
                Retry => matches!(got, ProviderError::Retryable { .. }),
                Permanent => {
                    matches!(got, ProviderError::Permanent { account_problem: false, .. })
                }
                Account => matches!(got, ProviderError::Permanent { account_problem: true, .. }),
            };
            assert!(ok, "HTTP {status} code {code:?} classified as {got:?}");
        }
        assert!(matches!(
            classify_error(502, None, "bad gateway"),
            ProviderError::Retryable { code, .. } if code == "http_502"
        ));
    }

    #[test]
    fn callbacks_come_bare_or_wrapped() {
        let mut bare = task("succeed");
        bare["task_result"] =
            json!({"videos": [{"id": "v", "url": "https://cdn/v.mp4", "duration": "5"}]});
        let wrapped = json!({"code": 0, "message": "SUCCEED", "request_id": "r", "data": bare});
        let from_bare = parse_callback(bare.to_string().as_bytes()).unwrap();
        let from_wrapped = parse_callback(wrapped.to_string().as_bytes()).unwrap();
        assert_eq!(from_bare, from_wrapped);
        assert_eq!(from_bare.external_id.as_deref(), Some(GENERATION));
        assert!(from_bare.state.has_ended());

        let error = json!({"code": 1201, "message": "x", "data": {"task_id": "1"}});
        assert!(parse_callback(error.to_string().as_bytes()).is_err());
        assert!(parse_callback(b"{}").is_err());
        assert!(parse_callback(b"not json").is_err());
    }
}
