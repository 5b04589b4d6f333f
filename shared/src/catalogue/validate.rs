//! Turning a client's submit body into a priced, normalized [`Submission`], or into the list of
//! every field that is wrong (all at once, so a client fixes them in one round).

use serde::Serialize;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use super::{Catalogue, Model, price};
use crate::generation::camera::CameraControl;
use crate::generation::{GenerationParams, MediaType, Mode};
use crate::validation::{self, FieldError, Text};

const KNOWN_FIELDS: &[&str] = &[
    "model",
    "mode",
    "prompt",
    "negative_prompt",
    "duration",
    "aspect_ratio",
    "quality",
    "image_urls",
    "end_image_url",
    "camera_control",
    "sub_type",
    "metadata",
    // Read by `client_webhooks::subscription`, not by the catalogue.
    "webhook_url",
    "webhook_events",
];
/// Fields that may span lines; every other string is an identifier (see [`Text`]).
const FREE_TEXT_FIELDS: &[&str] = &["prompt", "negative_prompt"];
const MAX_NEGATIVE_PROMPT_CHARS: usize = 2500;
const MAX_URL_LEN: usize = 2048;
const MAX_METADATA_BYTES: usize = 4096;

/// A valid, priced request.
#[derive(Debug, Clone)]
pub struct Submission {
    /// The model.
    pub model: Model,
    /// The mode.
    pub mode: Mode,
    /// What the provider receives (defaults applied, template applied).
    pub params: GenerationParams,
    /// The client's metadata, stored and returned, never interpreted.
    pub metadata: Value,
    /// The client's own negative prompt (`params.negative_prompt` may be a template's default).
    pub client_negative_prompt: Option<String>,
    /// The price in credits.
    pub cost: i64,
    /// SHA-256 of the normalized request, for idempotency-key comparisons.
    pub request_hash: [u8; 32],
    /// The price table the cost comes from.
    pub catalogue_version: String,
}

/// The request after defaults, in a fixed field order: what an idempotency key is compared on.
/// Two bodies that differ only in spelled-out defaults are the same request.
#[derive(Serialize)]
struct NormalizedRequest<'a> {
    model: &'a str,
    mode: Mode,
    prompt: &'a str,
    negative_prompt: Option<&'a str>,
    duration: Option<u32>,
    aspect_ratio: Option<&'a str>,
    quality: Option<&'a str>,
    image_urls: &'a [String],
    // Left out when absent, so requests made before these existed keep their hash.
    #[serde(skip_serializing_if = "Option::is_none")]
    end_image_url: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    camera_control: Option<&'a CameraControl>,
    sub_type: Option<&'a str>,
    metadata: &'a Value,
}

/// The idempotency hash of a submission.
pub fn normalized_request_hash(
    model: &str,
    mode: Mode,
    params: &GenerationParams,
    client_negative_prompt: Option<&str>,
    metadata: &Value,
) -> [u8; 32] {
    let normalized = NormalizedRequest {
        model,
        mode,
        prompt: &params.client_prompt,
        negative_prompt: client_negative_prompt,
        duration: params.duration,
        aspect_ratio: params.aspect_ratio.as_deref(),
        quality: params.quality.as_deref(),
        image_urls: &params.image_urls,
        end_image_url: params.end_image_url.as_deref(),
        camera_control: params.camera_control.as_ref(),
        sub_type: params.sub_type.as_deref(),
        metadata,
    };
    let bytes = serde_json::to_vec(&normalized).expect("plain data serializes");
    Sha256::digest(bytes).into()
}

/// Collects the failures of one request.
#[derive(Default)]
struct Errors(Vec<FieldError>);

impl Errors {
    fn add(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.0.push(FieldError::new(field, message));
    }
}

/// A string field; `None` when it is missing (or null) or wrong, which is then in `errors`.
fn string<'a>(body: &'a Map<String, Value>, field: &str, errors: &mut Errors) -> Option<&'a str> {
    let rule = if FREE_TEXT_FIELDS.contains(&field) { Text::Free } else { Text::Token };
    match body.get(field) {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => match rule.check(s) {
            None => Some(s),
            Some(why) => {
                errors.add(field, why);
                None
            }
        },
        Some(_) => {
            errors.add(field, "must be a string");
            None
        }
    }
}

impl Catalogue {
    /// Validates and prices a submit body.
    pub fn validate(&self, body: &Value) -> Result<Submission, Vec<FieldError>> {
        let mut errors = Errors::default();
        let Some(body) = body.as_object() else {
            return Err(vec![FieldError::new("body", "must be a JSON object")]);
        };
        // An explicit `null` is the same as leaving the field out.
        let body: Map<String, Value> = body
            .iter()
            .filter(|(_, v)| !v.is_null())
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let body = &body;
        for field in body.keys() {
            if !KNOWN_FIELDS.contains(&field.as_str()) {
                errors.add(field.clone(), "unknown field");
            }
        }

        let model = match string(body, "model", &mut errors) {
            None if !body.contains_key("model") => {
                errors.add("model", "is required");
                None
            }
            None => None,
            Some(name) => {
                let model = self.model(name);
                if model.is_none() {
                    errors.add("model", format!("unknown model {name:?}; see GET /v1/models"));
                }
                model
            }
        };
        let mode = match string(body, "mode", &mut errors) {
            None if !body.contains_key("mode") => {
                errors.add("mode", "is required");
                None
            }
            None => None,
            Some(name) => match name.parse::<Mode>().ok() {
                None => {
                    errors.add("mode", format!("unknown mode {name:?}"));
                    None
                }
                Some(mode) if model.is_some_and(|m| !m.modes.contains(&mode)) => {
                    errors.add("mode", format!("{name} is not offered by this model"));
                    None
                }
                Some(mode) => Some(mode),
            },
        };

        let sub_type = string(body, "sub_type", &mut errors);
        let template = sub_type.and_then(|name| {
            let template = self.template(name);
            if template.is_none() {
                let known: Vec<&str> = self.sub_types().collect();
                errors.add("sub_type", format!("unknown sub_type; one of: {}", known.join(", ")));
            }
            template
        });

        let client_prompt = string(body, "prompt", &mut errors).map(str::trim);
        let prompt_required = mode.is_some_and(|m| m != Mode::Image2Video);
        match client_prompt {
            Some("") => errors.add("prompt", "must not be empty"),
            None if prompt_required && !body.contains_key("prompt") => {
                errors.add("prompt", "is required for this mode")
            }
            _ => {}
        }
        let built_prompt = template.map_or_else(
            || client_prompt.unwrap_or("").to_owned(),
            |t| t.apply(client_prompt.unwrap_or("")),
        );
        if let Some(model) = model {
            let length = built_prompt.chars().count();
            if length > model.max_prompt_chars {
                let after = if template.is_some() { " with the sub_type template" } else { "" };
                errors.add(
                    "prompt",
                    format!(
                        "is {length} characters{after}; at most {} allowed",
                        model.max_prompt_chars
                    ),
                );
            }
        }

        let client_negative = string(body, "negative_prompt", &mut errors);
        if client_negative.is_some_and(|n| n.chars().count() > MAX_NEGATIVE_PROMPT_CHARS) {
            errors
                .add("negative_prompt", format!("at most {MAX_NEGATIVE_PROMPT_CHARS} characters"));
        }
        let negative_prompt = client_negative
            .map(str::to_owned)
            .or_else(|| template.and_then(|t| t.default_negative_prompt.clone()));

        let duration = self.duration(body, model, &mut errors);
        let aspect_ratio =
            choice(body, "aspect_ratio", model.map(|m| &m.aspect_ratios[..]), &mut errors);
        let qualities: Option<Vec<String>> =
            model.map(|m| m.qualities.iter().map(|(q, _)| q.clone()).collect());
        let quality = match model {
            Some(m) if m.qualities.is_empty() => {
                if body.get("quality").is_some_and(|q| !q.is_null()) {
                    errors.add("quality", "this model has no quality choices");
                }
                None
            }
            Some(m) => choice(body, "quality", qualities.as_deref(), &mut errors)
                .or(m.default_quality.clone()),
            None => string(body, "quality", &mut errors).map(str::to_owned),
        };
        let image_urls = image_urls(body, model, mode, self.allow_private_image_urls, &mut errors);
        let end_image_url =
            end_image_url(body, model, mode, self.allow_private_image_urls, &mut errors);
        let camera_control = camera_control(body, model, mode, &mut errors);

        let metadata = match body.get("metadata") {
            None | Some(Value::Null) => Value::Object(Map::new()),
            Some(Value::Object(map)) => {
                if serde_json::to_vec(map).map_or(0, |b| b.len()) > MAX_METADATA_BYTES {
                    errors.add("metadata", format!("at most {MAX_METADATA_BYTES} bytes of JSON"));
                }
                let metadata = Value::Object(map.clone());
                if let Some(error) = validation::json_strings("metadata", &metadata) {
                    errors.0.push(error);
                }
                metadata
            }
            Some(_) => {
                errors.add("metadata", "must be an object");
                Value::Null
            }
        };

        let (Some(model), Some(mode)) = (model, mode) else {
            return Err(errors.0);
        };
        if !errors.0.is_empty() {
            return Err(errors.0);
        }
        let cost = price(model, mode, duration, aspect_ratio.as_deref(), quality.as_deref())
            .ok_or_else(|| vec![FieldError::new("model", "this combination has no price")])?;
        let params = GenerationParams {
            prompt: built_prompt,
            client_prompt: client_prompt.unwrap_or("").to_owned(),
            negative_prompt,
            duration,
            aspect_ratio,
            image_urls,
            end_image_url,
            camera_control,
            quality,
            sub_type: sub_type.map(str::to_owned),
        };
        let request_hash =
            normalized_request_hash(&model.name, mode, &params, client_negative, &metadata);
        Ok(Submission {
            model: model.clone(),
            mode,
            params,
            metadata,
            client_negative_prompt: client_negative.map(str::to_owned),
            cost,
            request_hash,
            catalogue_version: self.version.clone(),
        })
    }

    fn duration(
        &self,
        body: &Map<String, Value>,
        model: Option<&Model>,
        errors: &mut Errors,
    ) -> Option<u32> {
        let given = match body.get("duration") {
            None | Some(Value::Null) => None,
            Some(value) => match value.as_u64().and_then(|d| u32::try_from(d).ok()) {
                Some(d) => Some(d),
                None => {
                    errors.add("duration", "must be a whole number of seconds");
                    return None;
                }
            },
        };
        let model = model?;
        match (model.media, given) {
            (MediaType::Image, Some(_)) => {
                errors.add("duration", "images have no duration");
                None
            }
            (MediaType::Image, None) => None,
            (MediaType::Video, None) => model.durations.first().copied(),
            (MediaType::Video, Some(d)) if model.durations.contains(&d) => Some(d),
            (MediaType::Video, Some(d)) => {
                let allowed: Vec<String> = model.durations.iter().map(u32::to_string).collect();
                errors
                    .add("duration", format!("{d} is not offered; one of: {}", allowed.join(", ")));
                None
            }
        }
    }
}

/// A string field that must be one of `allowed` (the first is the default).
fn choice(
    body: &Map<String, Value>,
    field: &str,
    allowed: Option<&[String]>,
    errors: &mut Errors,
) -> Option<String> {
    let given = string(body, field, errors);
    let allowed = allowed?;
    match given {
        None => allowed.first().cloned(),
        Some(value) if allowed.iter().any(|a| a == value) => Some(value.to_owned()),
        Some(value) => {
            if allowed.is_empty() {
                errors.add(field, "this model has no such choice");
            } else {
                errors
                    .add(field, format!("{value} is not offered; one of: {}", allowed.join(", ")));
            }
            None
        }
    }
}

fn image_urls(
    body: &Map<String, Value>,
    model: Option<&Model>,
    mode: Option<Mode>,
    allow_private: bool,
    errors: &mut Errors,
) -> Vec<String> {
    let urls: Vec<String> = match body.get("image_urls") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .filter_map(|(i, item)| {
                let field = format!("image_urls[{i}]");
                let Some(text) = item.as_str() else {
                    errors.add(field, "must be a string");
                    return None;
                };
                if let Err(why) = check_image_url(text, allow_private) {
                    errors.add(field, why);
                }
                Some(text.to_owned())
            })
            .collect(),
        Some(_) => {
            errors.add("image_urls", "must be an array of URLs");
            return Vec::new();
        }
    };
    let (Some(model), Some(mode)) = (model, mode) else { return urls };
    let max = model.max_images;
    let (min, max) = match mode {
        Mode::Text2Video | Mode::Text2Image => (0, 0),
        Mode::Image2Video => (1, 1),
        Mode::MultiImage2Video => (2, max.min(4)),
        Mode::OmniVideo => (0, max),
        Mode::Image2Image => (1, max),
    };
    let count = urls.len();
    if count < min || count > max {
        let wanted = match (min, max) {
            (0, 0) => format!("{mode} takes no images"),
            (a, b) if a == b => format!("{mode} takes exactly {a} image"),
            (a, b) => format!("{mode} takes {a} to {b} images"),
        };
        errors.add("image_urls", format!("{wanted}; got {count}"));
    }
    urls
}

/// `end_image_url`: the last frame of an image2video clip, for models with `end_frame`.
fn end_image_url(
    body: &Map<String, Value>,
    model: Option<&Model>,
    mode: Option<Mode>,
    allow_private: bool,
    errors: &mut Errors,
) -> Option<String> {
    let text = match body.get("end_image_url")? {
        Value::String(text) => text,
        _ => {
            errors.add("end_image_url", "must be a string");
            return None;
        }
    };
    if let Err(why) = check_image_url(text, allow_private) {
        errors.add("end_image_url", why);
    }
    if mode.is_some_and(|m| m != Mode::Image2Video) {
        errors.add("end_image_url", "only image2video takes a last frame");
    } else if model.is_some_and(|m| !m.end_frame) {
        errors.add("end_image_url", "this model takes no last frame");
    }
    Some(text.clone())
}

/// `camera_control`: how the camera moves, for models with `camera_control`.
fn camera_control(
    body: &Map<String, Value>,
    model: Option<&Model>,
    mode: Option<Mode>,
    errors: &mut Errors,
) -> Option<CameraControl> {
    let value = body.get("camera_control")?;
    if mode.is_some_and(|m| !matches!(m, Mode::Text2Video | Mode::Image2Video)) {
        errors.add("camera_control", "only text2video and image2video take a camera movement");
    } else if model.is_some_and(|m| !m.camera_control) {
        errors.add("camera_control", "this model takes no camera movement");
    }
    match CameraControl::parse(value, "camera_control") {
        Ok(control) => Some(control),
        Err(why) => {
            errors.0.extend(why);
            None
        }
    }
}

/// An input image must be an https URL in normal form, with a public host name and no
/// credentials: the provider fetches it, so an address inside a network (an IP literal,
/// `localhost`, a single-label or `.internal` name, an odd port) could make it reach where no
/// client should. `allow_private` lifts the address rules (for the local stack and tests).
fn check_image_url(text: &str, allow_private: bool) -> Result<(), String> {
    if text.len() > MAX_URL_LEN {
        return Err("URL is too long".into());
    }
    if let Some(why) = Text::Token.check(text) {
        return Err(why.into());
    }
    let url = url::Url::parse(text).map_err(|_| "must be a valid URL")?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err("must not carry credentials".into());
    }
    if url.as_str() != text {
        return Err(format!("is not in normal form; send it as {}", url.as_str()));
    }
    let Some(host) = url.host() else { return Err("must name a host".into()) };
    if allow_private && matches!(url.scheme(), "https" | "http") {
        return Ok(());
    }
    if url.scheme() != "https" {
        return Err("must be an https URL".into());
    }
    if url.port().is_some() {
        return Err("must use the default https port".into());
    }
    match host {
        url::Host::Ipv4(_) | url::Host::Ipv6(_) => {
            Err("must name a host, not an IP address".into())
        }
        url::Host::Domain(name) => {
            if crate::client_webhooks::address::is_private_name(name) {
                Err("must name a public host (not localhost or a private name)".into())
            } else {
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::config::Settings;

    fn catalogue() -> Catalogue {
        let settings = Settings::load_from(None, Some(Default::default())).unwrap();
        Catalogue::from_settings(&settings).unwrap()
    }

    fn fields(result: Result<Submission, Vec<FieldError>>) -> Vec<String> {
        result.expect_err("invalid").into_iter().map(|e| e.field).collect()
    }

    #[test]
    fn a_valid_request_gets_defaults_a_price_and_the_built_prompt() {
        let c = catalogue();
        let s = c
            .validate(&json!({"model": "kling-v1-6-pro", "mode": "text2video", "prompt": "a cat",
                               "sub_type": "anime_video"}))
            .unwrap();
        assert_eq!(s.params.duration, Some(5));
        assert_eq!(s.params.aspect_ratio.as_deref(), Some("16:9"));
        assert_eq!(s.cost, 42, "35 × 1 × 1.2 × 1.0");
        assert!(s.params.prompt.starts_with("anime style") && s.params.prompt.ends_with("a cat"));
        assert_eq!(s.params.client_prompt, "a cat");
        assert!(s.params.negative_prompt.is_some(), "the template's default negative prompt");

        let wan = c
            .validate(&json!({"model": "wan-2-6", "mode": "image2video", "duration": 15,
                               "aspect_ratio": "9:16", "quality": "1080p",
                               "image_urls": ["https://img.example.com/a.png"]}))
            .unwrap();
        // 25 × 3 × 1.2 × 1.1 × 1.5 = 148.5 → 149
        assert_eq!(wan.cost, 149);
        assert_eq!(wan.params.quality.as_deref(), Some("1080p"));
    }

    #[test]
    fn every_failing_field_is_named_at_once() {
        let c = catalogue();
        let result = c.validate(&json!({
            "model": "kling-v1-6-pro", "mode": "multi-image2video", "prompt": "",
            "duration": 7, "aspect_ratio": "4:3", "image_urls": ["http://a.example/x.png"],
            "quality": "hd", "sub_type": "noir", "metadata": [], "price": 1
        }));
        let mut named = fields(result);
        named.sort();
        assert_eq!(
            named,
            [
                "aspect_ratio",
                "duration",
                "image_urls",
                "image_urls[0]",
                "metadata",
                "price",
                "prompt",
                "quality",
                "sub_type"
            ]
        );
    }

    #[test]
    fn modes_need_their_images() {
        let c = catalogue();
        let image = "https://img.example.com/a.png";
        assert_eq!(
            fields(c.validate(&json!({"model": "kling-v1-6-std", "mode": "image2video"}))),
            ["image_urls"]
        );
        assert!(
            c.validate(
                &json!({"model": "kling-v1-6-std", "mode": "image2video", "image_urls": [image]})
            )
            .is_ok()
        );
        assert_eq!(
            fields(c.validate(&json!({"model": "kling-v1-6-std", "mode": "multi-image2video", "prompt": "x", "image_urls": [image]}))),
            ["image_urls"]
        );
        let five = vec![image; 5];
        assert_eq!(
            fields(c.validate(&json!({"model": "kling-v1-6-std", "mode": "multi-image2video", "prompt": "x", "image_urls": five}))),
            ["image_urls"]
        );
        assert!(c.validate(&json!({"model": "kling-v1-6-std", "mode": "multi-image2video", "prompt": "x", "image_urls": [image, image]})).is_ok());
        assert_eq!(
            fields(c.validate(&json!({"model": "kling-v1-6-std", "mode": "text2video", "prompt": "x", "image_urls": [image]}))),
            ["image_urls"]
        );
    }

    #[test]
    fn image_urls_must_be_plain_https() {
        let c = catalogue();
        for bad in [
            "http://img.example.com/a.png",
            "https://user:pw@img.example.com/a.png",
            "not a url",
            "ftp://x/y",
            "https://127.0.0.1/a.png",
            "https://[::1]/a.png",
            "https://169.254.169.254/latest/meta-data",
            "https://10.0.0.7/a.png",
            "https://2130706433/a.png",
            "https://localhost/a.png",
            "https://api.localhost/a.png",
            "https://metadata.google.internal/a.png",
            "https://intranet/a.png",
            "https://img.example.com:8443/a.png",
            "https://img.example.com\\@evil.com/a.png",
            "https://img.example.com/a.png\nx",
            "https://IMG.example.com/a.png",
        ] {
            let result = c.validate(
                &json!({"model": "kling-v1-6-std", "mode": "image2video", "image_urls": [bad]}),
            );
            assert_eq!(fields(result), ["image_urls[0]"], "{bad}");
        }
    }

    #[test]
    fn an_operator_may_allow_private_image_urls() {
        let mut settings = Settings::load_from(None, Some(Default::default())).unwrap();
        settings.catalogue.allow_private_image_urls = true;
        let c = Catalogue::from_settings(&settings).unwrap();
        for ok in ["http://127.0.0.1:8099/files/a.png", "https://localhost/a.png"] {
            let result = c.validate(
                &json!({"model": "kling-v1-6-std", "mode": "image2video", "image_urls": [ok]}),
            );
            assert!(result.is_ok(), "{ok}");
        }
        let still_bad = c.validate(&json!({"model": "kling-v1-6-std", "mode": "image2video",
                                           "image_urls": ["ftp://127.0.0.1/a.png"]}));
        assert_eq!(fields(still_bad), ["image_urls[0]"]);
    }

    #[test]
    fn an_explicit_null_is_a_missing_field_and_every_error_names_its_field() {
        let c = catalogue();
        assert_eq!(
            fields(c.validate(&json!({"model": "sora-2", "mode": "text2video", "prompt": null}))),
            ["prompt"]
        );
        assert_eq!(
            fields(c.validate(&json!({"model": null, "mode": "text2video", "prompt": "x"}))),
            ["model"]
        );
        assert_eq!(fields(c.validate(&json!({"model": null, "mode": null}))), ["model", "mode"]);
        let defaults = c.validate(&json!({"model": "sora-2", "mode": "text2video", "prompt": "x",
                                          "duration": null, "metadata": null}));
        assert_eq!(defaults.unwrap().params.duration, Some(10));
    }

    #[test]
    fn control_characters_are_refused_in_every_string() {
        let c = catalogue();
        let base = json!({"model": "sora-2", "mode": "text2video", "prompt": "a cat"});
        for (field, value) in [
            ("prompt", json!("a\u{0}cat")),
            ("prompt", json!("bell\u{7}")),
            ("negative_prompt", json!("x\u{0}")),
            ("aspect_ratio", json!("16:9\n")),
            ("sub_type", json!("anime_video\u{0}")),
        ] {
            let mut body = base.clone();
            body[field] = value;
            assert_eq!(fields(c.validate(&body)), [field], "{body}");
        }
        let mut body = base.clone();
        body["metadata"] = json!({"tags": ["ok", "bad\u{0}"]});
        assert_eq!(fields(c.validate(&body)), ["metadata.tags[1]"]);
        // Line breaks are fine in free text.
        body["metadata"] = json!({"note": "two\nlines"});
        body["prompt"] = json!("a cat\non a lawn");
        assert!(c.validate(&body).is_ok());
    }

    #[test]
    fn unknown_model_mode_and_wrong_types_are_reported() {
        let c = catalogue();
        assert_eq!(fields(c.validate(&json!({"mode": "text2video", "prompt": "x"}))), ["model"]);
        assert_eq!(
            fields(c.validate(&json!({"model": "gpt-video", "mode": "text2video", "prompt": "x"}))),
            ["model"]
        );
        assert_eq!(
            fields(c.validate(&json!({"model": "sora-2", "mode": "omni-video", "prompt": "x"}))),
            ["mode"]
        );
        assert_eq!(
            fields(c.validate(
                &json!({"model": "sora-2", "mode": "text2video", "prompt": 5, "duration": "10"})
            )),
            ["prompt", "duration"]
        );
        assert_eq!(fields(c.validate(&json!([1, 2]))), ["body"]);
        assert_eq!(
            fields(c.validate(
                &json!({"model": "nano-banana", "mode": "text2image", "prompt": "x", "duration": 5})
            )),
            ["duration"]
        );
    }

    #[test]
    fn a_prompt_too_long_after_its_template_is_refused() {
        let c = catalogue();
        let long = "x".repeat(2490);
        assert!(
            c.validate(&json!({"model": "kling-v1-6-std", "mode": "text2video", "prompt": long}))
                .is_ok()
        );
        let result = c.validate(&json!({"model": "kling-v1-6-std", "mode": "text2video", "prompt": long, "sub_type": "anime_video"}));
        assert_eq!(fields(result), ["prompt"]);
    }

    #[test]
    fn spelled_out_defaults_are_the_same_request() {
        let c = catalogue();
        let short = c
            .validate(&json!({"model": "sora-2", "mode": "text2video", "prompt": "a cat"}))
            .unwrap();
        let long = c
            .validate(
                &json!({"model": "sora-2", "mode": "text2video", "prompt": "a cat", "duration": 10,
                               "aspect_ratio": "16:9", "metadata": {}}),
            )
            .unwrap();
        assert_eq!(short.request_hash, long.request_hash);
        let other = c
            .validate(&json!({"model": "sora-2", "mode": "text2video", "prompt": "a dog"}))
            .unwrap();
        assert_ne!(short.request_hash, other.request_hash);
    }

    #[test]
    fn a_last_frame_and_a_camera_movement_only_where_the_model_and_mode_take_them() {
        let c = catalogue();
        let (first, last) = ("https://img.example.com/a.png", "https://img.example.com/b.png");
        let ok = c
            .validate(
                &json!({"model": "kling-v1-pro", "mode": "image2video", "image_urls": [first],
                "end_image_url": last, "camera_control": {"type": "simple", "config": {"pan": 3}}}),
            )
            .unwrap();
        assert_eq!(ok.params.end_image_url.as_deref(), Some(last));
        assert_eq!(ok.params.camera_control.as_ref().unwrap().kind, "simple");
        let plain = c
            .validate(
                &json!({"model": "kling-v1-pro", "mode": "image2video", "image_urls": [first]}),
            )
            .unwrap();
        assert_ne!(ok.request_hash, plain.request_hash, "a last frame makes another request");
        assert_eq!(plain.params.end_image_url, None);

        // kling-v1-std takes a camera movement but no last frame; sora-2 takes neither.
        let cases = [
            (
                json!({"model": "kling-v1-std", "mode": "image2video", "image_urls": [first],
                    "end_image_url": last}),
                vec!["end_image_url"],
            ),
            (
                json!({"model": "kling-v1-pro", "mode": "text2video", "prompt": "a cat",
                    "end_image_url": last}),
                vec!["end_image_url"],
            ),
            (
                json!({"model": "kling-v1-pro", "mode": "image2video", "image_urls": [first],
                    "end_image_url": "http://10.0.0.1/b.png"}),
                vec!["end_image_url"],
            ),
            (
                json!({"model": "sora-2", "mode": "text2video", "prompt": "a cat",
                    "camera_control": {"type": "down_back"}}),
                vec!["camera_control"],
            ),
            (
                json!({"model": "kling-v1-std", "mode": "text2video", "prompt": "a cat",
                    "camera_control": {"type": "simple", "config": {"pan": 3, "zoom": 2}}}),
                vec!["camera_control.config"],
            ),
        ];
        for (body, expected) in cases {
            assert_eq!(fields(c.validate(&body)), expected, "{body}");
        }
        // Kling's own preset, where it is taken.
        assert!(
            c.validate(&json!({"model": "kling-v1-std", "mode": "text2video", "prompt": "a cat",
                "camera_control": {"type": "forward_up"}}))
                .is_ok()
        );
    }
}
