//! A Kling task request, as Kling documents it, turned into the body of `POST /v1/generations`
//! (which the catalogue then validates and prices like any other). (A generation turned into
//! Kling's task object is `gengate_shared::kling_task`: the worker's callbacks send it too.)

use gengate_shared::client_webhooks::{self, Event, Format, Subscription};
use gengate_shared::config::{ClientWebhookSettings, KlingCompatSettings};
use gengate_shared::generation::Mode;
use gengate_shared::kling_task::EXTERNAL_ID_METADATA;
use serde_json::{Map, Value, json};

/// Fields every video endpoint takes.
const COMMON_FIELDS: &[&str] = &[
    "model_name",
    "prompt",
    "negative_prompt",
    "cfg_scale",
    "mode",
    "aspect_ratio",
    "duration",
    "callback_url",
    "external_task_id",
];
/// Longest `external_task_id` (it becomes the generation's idempotency key, `kling:<id>`).
const MAX_EXTERNAL_ID_LEN: usize = 200;

/// The video endpoints, by the last segment of their path.
pub(super) fn video_mode(endpoint: &str) -> Option<Mode> {
    match endpoint {
        "text2video" => Some(Mode::Text2Video),
        "image2video" => Some(Mode::Image2Video),
        "multi-image2video" => Some(Mode::MultiImage2Video),
        "omni-video" => Some(Mode::OmniVideo),
        _ => None,
    }
}

/// Fields the endpoint of `mode` takes beyond [`COMMON_FIELDS`].
fn mode_fields(mode: Mode) -> &'static [&'static str] {
    match mode {
        Mode::Text2Video => &["camera_control"],
        Mode::Image2Video => {
            &["image", "image_tail", "static_mask", "dynamic_masks", "camera_control"]
        }
        Mode::MultiImage2Video => &["image_list"],
        Mode::OmniVideo => &["image_list", "video_list"],
        Mode::Text2Image | Mode::Image2Image => &[],
    }
}

/// Kling's default `model_name` for each endpoint.
fn default_model_name(mode: Mode) -> &'static str {
    match mode {
        Mode::MultiImage2Video => "kling-v1-6",
        Mode::OmniVideo => "kling-video-o1",
        _ => "kling-v1",
    }
}

/// Why a Kling request cannot be submitted.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Refusal {
    /// `model_name` + `mode` map to no catalogue model (Kling's 404, code 1203).
    UnknownModel(String),
    /// Fields that are wrong (Kling's 400, code 1201).
    Invalid(Vec<String>),
}

/// A translated request.
#[derive(Debug)]
pub(super) struct Translated {
    /// The body of `POST /v1/generations`.
    pub(super) body: Value,
    /// The client's `external_task_id`.
    pub(super) external_task_id: Option<String>,
    /// The client's `callback_url`, as the generation's webhook (Kling-shaped, [`KLING_EVENTS`]).
    pub(super) callback: Option<Subscription>,
}

/// What a `callback_url` is told: that the task is `processing` (the provider accepted it,
/// `generation.processing`), and its end (Kling's `succeed`, or `failed` for a failure or a
/// cancellation). Kling also calls back on `submitted` (at creation); gengate does not.
const KLING_EVENTS: [Event; 4] =
    [Event::Processing, Event::Completed, Event::Failed, Event::Canceled];

fn text<'a>(
    body: &'a Map<String, Value>,
    field: &str,
    errors: &mut Vec<String>,
) -> Option<&'a str> {
    match body.get(field) {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s),
        Some(_) => {
            errors.push(format!("{field}: must be a string"));
            None
        }
    }
}

/// An image given as a URL (Kling also takes bare base64, which gengate does not).
fn image_url(value: &str, field: &str, errors: &mut Vec<String>) -> Option<String> {
    if value.starts_with("https://") || value.starts_with("http://") {
        Some(value.to_owned())
    } else {
        errors.push(format!("{field}: must be an image URL (base64 images are not supported)"));
        None
    }
}

/// Turns a Kling request to endpoint `mode` into a gengate submit body, with the catalogue model
/// `models` maps its `model_name` and `mode` to.
pub(super) fn translate(
    mode: Mode,
    body: &Value,
    settings: &KlingCompatSettings,
    hooks: &ClientWebhookSettings,
) -> Result<Translated, Refusal> {
    let Some(body) = body.as_object() else {
        return Err(Refusal::Invalid(vec!["body: must be a JSON object".into()]));
    };
    let mut errors = Vec::new();
    for field in body.keys() {
        if !COMMON_FIELDS.contains(&field.as_str()) && !mode_fields(mode).contains(&field.as_str())
        {
            errors.push(format!("{field}: unknown field for {mode}"));
        }
    }
    let unsupported = |field: &str, errors: &mut Vec<String>, why: &str| {
        let given = match body.get(field) {
            None | Some(Value::Null) => false,
            Some(Value::String(s)) => !s.is_empty(),
            Some(Value::Array(a)) => !a.is_empty(),
            Some(_) => true,
        };
        if given {
            errors.push(format!("{field}: {why}"));
        }
    };
    unsupported("static_mask", &mut errors, "motion brushes are not supported");
    unsupported("dynamic_masks", &mut errors, "motion brushes are not supported");
    unsupported("video_list", &mut errors, "reference videos are not supported");

    let model_name = text(body, "model_name", &mut errors).unwrap_or(default_model_name(mode));
    let quality = text(body, "mode", &mut errors).unwrap_or("std");
    if !matches!(quality, "std" | "pro") {
        errors.push(format!("mode: must be std or pro, not {quality:?}"));
    }
    match body.get("cfg_scale") {
        None | Some(Value::Null) => {}
        Some(v) if v.as_f64().is_some_and(|c| (0.0..=1.0).contains(&c)) => {}
        Some(_) => errors.push("cfg_scale: must be a number from 0 to 1".into()),
    }
    let duration = match body.get("duration") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => match s.parse::<u32>() {
            Ok(d) => Some(d),
            Err(_) => {
                errors.push(format!("duration: must be a whole number of seconds, not {s:?}"));
                None
            }
        },
        Some(v) => match v.as_u64().and_then(|d| u32::try_from(d).ok()) {
            Some(d) => Some(d),
            None => {
                errors.push("duration: must be a whole number of seconds, as a string".into());
                None
            }
        },
    };
    // The same rules as any client webhook (checked again, by address, before every attempt).
    let callback =
        text(body, "callback_url", &mut errors).filter(|url| !url.is_empty()).and_then(|url| {
            match client_webhooks::address::check_url(url, hooks) {
                Ok(url) => Some(Subscription {
                    url: url.to_string(),
                    events: Some(KLING_EVENTS.to_vec()),
                    format: Format::Kling,
                }),
                Err(why) => {
                    errors.push(format!("callback_url: {why}"));
                    None
                }
            }
        });
    let external_task_id = text(body, "external_task_id", &mut errors).filter(|id| !id.is_empty());
    if let Some(id) = external_task_id
        && (id.len() > MAX_EXTERNAL_ID_LEN || !id.bytes().all(|b| (0x21..0x7f).contains(&b)))
    {
        errors.push(format!(
            "external_task_id: must be 1 to {MAX_EXTERNAL_ID_LEN} printable ASCII characters \
             without spaces"
        ));
    }
    let mut images = Vec::new();
    if let Some(image) = text(body, "image", &mut errors) {
        images.extend(image_url(image, "image", &mut errors));
    }
    let image_tail = text(body, "image_tail", &mut errors)
        .filter(|tail| !tail.is_empty())
        .and_then(|tail| image_url(tail, "image_tail", &mut errors));
    match body.get("image_list") {
        None | Some(Value::Null) => {}
        Some(Value::Array(list)) => {
            // multi-image2video: `{image}`; omni-video: `{image_url, type}`.
            let key = if mode == Mode::OmniVideo { "image_url" } else { "image" };
            for (i, item) in list.iter().enumerate() {
                let field = format!("image_list[{i}]");
                let Some(item) = item.as_object() else {
                    errors.push(format!("{field}: must be an object with {key:?}"));
                    continue;
                };
                for member in item.keys() {
                    if member != key && !(mode == Mode::OmniVideo && member == "type") {
                        errors.push(format!("{field}.{member}: unknown field"));
                    }
                }
                if item.get("type").is_some_and(|t| !t.is_null()) {
                    errors.push(format!(
                        "{field}.type: first and end frames are not supported; images are references"
                    ));
                }
                match item.get(key).and_then(Value::as_str) {
                    Some(url) => {
                        images.extend(image_url(url, &format!("{field}.{key}"), &mut errors))
                    }
                    None => errors.push(format!("{field}.{key}: is required")),
                }
            }
        }
        Some(_) => errors.push("image_list: must be an array".into()),
    }

    let model = settings.models.get(&format!("{model_name}/{quality}"));
    if !errors.is_empty() {
        return Err(Refusal::Invalid(errors));
    }
    let Some(model) = model else {
        return Err(Refusal::UnknownModel(format!(
            "model_name {model_name} (mode {quality}) is not offered"
        )));
    };
    let mut submit = Map::new();
    submit.insert("model".into(), json!(model));
    submit.insert("mode".into(), json!(mode.as_str()));
    for field in ["prompt", "negative_prompt", "aspect_ratio"] {
        if let Some(value) = body.get(field).filter(|v| !v.is_null()) {
            submit.insert(field.into(), value.clone());
        }
    }
    if let Some(duration) = duration {
        submit.insert("duration".into(), json!(duration));
    }
    if !images.is_empty() {
        submit.insert("image_urls".into(), json!(images));
    }
    if let Some(tail) = image_tail {
        submit.insert("end_image_url".into(), json!(tail));
    }
    // Kling's shape is gengate's: the catalogue checks it, and the model must take it.
    if let Some(camera) = body.get("camera_control").filter(|v| !v.is_null()) {
        submit.insert("camera_control".into(), camera.clone());
    }
    if let Some(id) = external_task_id {
        submit.insert("metadata".into(), json!({ EXTERNAL_ID_METADATA: id }));
    }
    Ok(Translated {
        body: Value::Object(submit),
        external_task_id: external_task_id.map(str::to_owned),
        callback,
    })
}

/// A catalogue validation error, in the Kling request's own field names.
pub(super) fn kling_field(mode: Mode, field: &str) -> String {
    let image_field = if mode == Mode::Image2Video { "image" } else { "image_list" };
    match field {
        "model" => "model_name".to_owned(),
        "end_image_url" => "image_tail".to_owned(),
        f if f.starts_with("image_urls") => f.replacen("image_urls", image_field, 1),
        f => f.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hooks() -> ClientWebhookSettings {
        let settings = gengate_shared::config::Settings::load_from(None, Some(Default::default()));
        let mut hooks = settings.unwrap().client_webhooks;
        hooks.allow_http = false;
        hooks.allow_private_addresses = false;
        hooks
    }

    fn settings() -> KlingCompatSettings {
        let mut settings = KlingCompatSettings::default();
        settings.models.insert("kling-v1-6/pro".into(), "kling-v1-6-pro".into());
        settings.models.insert("kling-video-o1/std".into(), "kling-video-o1".into());
        settings
    }

    #[test]
    fn a_kling_request_becomes_a_gengate_submit() {
        let body = json!({"model_name": "kling-v1-6", "mode": "pro", "prompt": "a cat",
            "negative_prompt": "blur", "cfg_scale": 0.5, "aspect_ratio": "16:9", "duration": "10",
            "external_task_id": "order-1", "callback_url": ""});
        let t = translate(Mode::Text2Video, &body, &settings(), &hooks()).unwrap();
        assert_eq!(
            t.body,
            json!({"model": "kling-v1-6-pro", "mode": "text2video", "prompt": "a cat",
                "negative_prompt": "blur", "aspect_ratio": "16:9", "duration": 10,
                "metadata": {"kling_external_task_id": "order-1"}})
        );
        assert_eq!(t.external_task_id.as_deref(), Some("order-1"));
        assert_eq!(t.callback, None, "an empty callback_url is none");

        let body = json!({"model_name": "kling-video-o1", "prompt": "a cat",
            "image_list": [{"image_url": "https://i/1.png"}]});
        let t = translate(Mode::OmniVideo, &body, &settings(), &hooks()).unwrap();
        assert_eq!(t.body["image_urls"], json!(["https://i/1.png"]));
        assert_eq!(t.body["model"], "kling-video-o1");

        // A last frame and a camera movement are gengate's fields of the same meaning.
        let camera = json!({"type": "simple", "config": {"zoom": 5}});
        let body = json!({"model_name": "kling-v1-6", "mode": "pro", "image": "https://i/1.png",
            "image_tail": "https://i/2.png", "camera_control": camera});
        let t = translate(Mode::Image2Video, &body, &settings(), &hooks()).unwrap();
        assert_eq!(t.body["image_urls"], json!(["https://i/1.png"]));
        assert_eq!(t.body["end_image_url"], "https://i/2.png");
        assert_eq!(t.body["camera_control"], camera);
        assert_eq!(kling_field(Mode::Image2Video, "end_image_url"), "image_tail");
    }

    #[test]
    fn a_callback_url_becomes_a_kling_shaped_webhook_under_the_address_rules() {
        let body = json!({"model_name": "kling-v1-6", "mode": "pro", "prompt": "a cat",
            "callback_url": "https://hooks.example.com/kling"});
        let t = translate(Mode::Text2Video, &body, &settings(), &hooks()).unwrap();
        assert_eq!(
            t.callback,
            Some(Subscription {
                url: "https://hooks.example.com/kling".into(),
                events: Some(vec![
                    Event::Processing,
                    Event::Completed,
                    Event::Failed,
                    Event::Canceled
                ]),
                format: Format::Kling,
            })
        );
        assert!(t.body.get("callback_url").is_none(), "not a submit field");
        for url in ["http://hooks.example.com/x", "https://10.0.0.1/x", "https://localhost/x", "x"]
        {
            let body = json!({"model_name": "kling-v1-6", "mode": "pro", "prompt": "a cat",
                "callback_url": url});
            let Err(Refusal::Invalid(errors)) =
                translate(Mode::Text2Video, &body, &settings(), &hooks())
            else {
                panic!("{url} refused")
            };
            assert!(errors.iter().all(|e| e.starts_with("callback_url: ")), "{url}: {errors:?}");
        }
    }

    #[test]
    fn bad_fields_and_unknown_models_are_refused() {
        let unknown =
            translate(Mode::Text2Video, &json!({"prompt": "a cat"}), &settings(), &hooks());
        assert!(matches!(unknown, Err(Refusal::UnknownModel(m)) if m.contains("kling-v1 ")));
        let body = json!({"model_name": "kling-v1-6", "mode": "ultra", "duration": "five",
            "cfg_scale": 2, "image": "aGVsbG8=", "callback_url": "ftp://hooks.example.com/x", "colour": 1});
        let Err(Refusal::Invalid(errors)) =
            translate(Mode::Text2Video, &body, &settings(), &hooks())
        else {
            panic!("refused")
        };
        for field in ["mode", "duration", "cfg_scale", "image", "callback_url", "colour"] {
            assert!(errors.iter().any(|e| e.starts_with(field)), "{field}: {errors:?}");
        }
        let body = json!({"model_name": "kling-v1-6", "mode": "pro",
            "image": "aGVsbG8=", "external_task_id": "with space"});
        let Err(Refusal::Invalid(errors)) =
            translate(Mode::Image2Video, &body, &settings(), &hooks())
        else {
            panic!("refused")
        };
        assert_eq!(errors.len(), 2, "{errors:?}");
    }
}
