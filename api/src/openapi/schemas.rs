//! The JSON bodies of the API as the OpenAPI document describes them.
//!
//! These types exist for the document only: nothing is built from them. The answers are
//! serialized from `gengate-shared`'s structs (`GenerationView`, `Balance`, `User`, …) or built
//! with `json!`, and the submit body is read by hand (`Catalogue::validate`). Each type here
//! mirrors one of those field for field; the structs are closed (`additionalProperties: false`)
//! and list every member that is always present as required, so that the end-to-end tests, which
//! validate real answers against this document, fail on a member added, renamed or dropped on
//! either side. Enumerations are built from the code's own lists (`GenerationStatus::ALL`, …),
//! so they cannot fall behind it.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};

use gengate_shared::client_webhooks::Event;
use gengate_shared::client_webhooks::deliveries::DeliveryStatus;
use gengate_shared::generation::archive::ArchiveStatus as ArchiveStatusEnum;
use gengate_shared::generation::failure::FailureKind;
use gengate_shared::generation::{
    Billing as BillingEnum, GenerationStatus as StatusEnum, MediaType as MediaTypeEnum,
    Mode as ModeEnum,
};
use gengate_shared::ledger::GrantSource as GrantSourceEnum;
use gengate_shared::providers::ProviderKind;
use serde_json::{Value, json};
use time::OffsetDateTime;
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{
    ArrayBuilder, KnownFormat, ObjectBuilder, Schema, SchemaFormat, Type,
};
use utoipa::{PartialSchema, ToSchema};
use uuid::Uuid;

/// A string schema that takes one of `values`.
fn string_enum<'a>(description: &str, values: impl IntoIterator<Item = &'a str>) -> Schema {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .description(Some(description))
        .enum_values(Some(values))
        .into()
}

/// Declares a named string enumeration whose values come from the code.
macro_rules! string_enum {
    ($(#[$doc:meta])* $name:ident = $description:literal, $values:expr) => {
        $(#[$doc])*
        #[derive(Debug)]
        pub struct $name;

        impl PartialSchema for $name {
            fn schema() -> RefOr<Schema> {
                string_enum($description, $values).into()
            }
        }

        impl ToSchema for $name {
            fn name() -> Cow<'static, str> {
                Cow::Borrowed(stringify!($name))
            }
        }
    };
}

string_enum!(
    /// `status` of a generation.
    GenerationStatus = "Where a generation is: `queued` (accepted, paid for, waiting for a worker), \
        `submitted` (the provider has it), then `completed`, `failed` (credits returned; a late \
        success may still complete it) or `canceled` (credits returned).",
    StatusEnum::ALL.iter().map(|s| s.as_str())
);
string_enum!(
    /// `type` of a generation or a model.
    MediaType = "What a generation produces.",
    MediaTypeEnum::ALL.iter().map(|m| m.as_str())
);
string_enum!(
    /// `mode` of a request.
    Mode = "How a generation is asked for: `text2video`, `image2video` (exactly 1 image), \
        `multi-image2video` (2–4 images), `omni-video` (0–4 images), `text2image`, `image2image` \
        (1 or more images), as the model offers (`GET /v1/models`).",
    ModeEnum::ALL.iter().map(|m| m.as_str())
);
string_enum!(
    /// `billing` of a model and a generation.
    Billing = "When credits move: `prepaid` reserves the price at submit and returns it on \
        failure or cancel; `postpaid` holds it at submit and charges it on success.",
    BillingEnum::ALL.iter().map(|b| b.as_str())
);
string_enum!(
    /// `archive_status` of a result file.
    ArchiveStatus = "How gengate's copy of a result file stands: `pending` (being copied; `url` is \
        the provider's), `archived` (`url` is a signed, expiring link to gengate's copy), \
        `failed` (not copied; the provider's URL stays, as long as the provider serves it) or \
        `purged` (deleted by retention).",
    ArchiveStatusEnum::ALL.iter().map(|s| s.as_str())
);
string_enum!(
    /// `provider` of a model.
    Provider = "Who runs the model.",
    ProviderKind::ALL.iter().map(|p| p.as_str())
);
string_enum!(
    /// `source` of a grant.
    GrantSource = "Where a grant's credits come from (also the `trans_type` of its ledger entry).",
    GrantSourceEnum::ALL.iter().map(|s| s.as_str())
);
string_enum!(
    /// `failure.code` of a generation.
    FailureCode = "Why a generation failed, in gengate's words: `generation_failed` (the provider \
        could not generate this request), `request_rejected` (the provider refused it), \
        `provider_unavailable` (the job could not be started), `deadline_exceeded`, \
        `result_rejected` (the provider's result could not be accepted), `empty_result`, \
        `polling_failed` (the job was reported failed), `operator` (an operator ended it).",
    FailureKind::ALL.iter().map(|k| k.code())
);
string_enum!(
    /// A client webhook event.
    WebhookEventType = "A client webhook event: `generation.processing` (the provider accepted \
        the task and is working on it: the generation went from `queued` to `submitted`; sent \
        only to a target whose event list names it), `generation.completed`, \
        `generation.failed`, `generation.canceled` (the generation reached that status) or \
        `generation.archived` (its result files were copied into gengate's storage; each file's \
        `archive_status` says how that went).",
    Event::ALL.iter().map(|e| e.as_str())
);
string_enum!(
    /// `status` of a client webhook delivery.
    WebhookDeliveryStatus = "How a delivery stands: `pending` (being sent, or due again at \
        `next_attempt_at`), `delivered` (an attempt got a 2xx answer) or `failed` (it will not be \
        sent again unless an operator redelivers it: 410 Gone, a refused address, every retry \
        failed, or its endpoint was disabled).",
    delivery_statuses().iter().map(String::as_str)
);

/// Every [`DeliveryStatus`]. The match below stops compiling when the enum gains a status, so
/// that it is added here too.
const DELIVERY_STATUSES: [DeliveryStatus; 3] =
    [DeliveryStatus::Pending, DeliveryStatus::Delivered, DeliveryStatus::Failed];
const _: () = match DELIVERY_STATUSES[0] {
    DeliveryStatus::Pending | DeliveryStatus::Delivered | DeliveryStatus::Failed => {}
};

/// Every delivery status as the API writes it (serialized, so the names are the code's own).
fn delivery_statuses() -> Vec<String> {
    DELIVERY_STATUSES
        .iter()
        .map(|status| match serde_json::to_value(status) {
            Ok(Value::String(name)) => name,
            other => panic!("a delivery status serializes as a string, not {other:?}"),
        })
        .collect()
}

/// The bytes of a file (any content type).
#[derive(Debug)]
pub struct Binary;

impl PartialSchema for Binary {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .format(Some(SchemaFormat::KnownFormat(KnownFormat::Binary)))
            .description(Some("The file's bytes."))
            .into()
    }
}

impl ToSchema for Binary {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("Binary")
    }
}

fn always_true() -> Schema {
    ObjectBuilder::new()
        .schema_type(Type::Boolean)
        .enum_values(Some([true]))
        .description(Some("Always `true`."))
        .into()
}

fn any_object(description: &str) -> Schema {
    ObjectBuilder::new().schema_type(Type::Object).description(Some(description)).into()
}

fn image_urls() -> Schema {
    let url = ObjectBuilder::new()
        .schema_type(Type::String)
        .format(Some(SchemaFormat::KnownFormat(KnownFormat::Uri)))
        .max_length(Some(2048));
    ArrayBuilder::new()
        .items(url)
        .description(Some(
            "Input images: https URLs in normal form, without credentials, on the default port, \
             naming a public host (the provider fetches them). `image2video` takes exactly 1, \
             `multi-image2video` 2–4, `omni-video` 0–4, `image2image` 1 or more (up to the \
             model's `max_images`), the others none.",
        ))
        .into()
}

fn metadata() -> Schema {
    any_object("Any JSON object up to 4 KiB, stored and returned, never interpreted.")
}

fn operator_params() -> Schema {
    any_object(
        "The params snapshot as stored: the client's request after defaults, the prompt as the \
         provider receives it (with the `sub_type` template), adapter options and expected usage.",
    )
}

fn ok_status(value: &'static str) -> impl Fn() -> Schema {
    move || ObjectBuilder::new().schema_type(Type::String).enum_values(Some([value])).into()
}

fn health_ok() -> Schema {
    ok_status("ok")()
}

fn ready() -> Schema {
    ok_status("ready")()
}

// --- Requests -----------------------------------------------------------------------------------

/// The body of `POST /v1/generations`. Unknown members are refused (422), not ignored; a member
/// sent as `null` is the same as one left out.
#[derive(Debug, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({
    "model": "kling-v1-6-pro", "mode": "text2video", "prompt": "a cat on a lawn",
    "negative_prompt": "blur", "duration": 5, "aspect_ratio": "16:9", "image_urls": [],
    "sub_type": "anime_video", "metadata": {"order": "A-1001"},
    "webhook_url": "https://client.example.com/hooks/gengate",
    "webhook_events": ["generation.completed", "generation.failed"]
}))]
pub struct CreateGenerationRequest {
    /// One of `GET /v1/models`.
    #[schema(example = "kling-v1-6-pro")]
    pub model: String,
    /// As the model offers it.
    pub mode: Mode,
    /// What to generate. Required except for `image2video`; not empty; at most the model's
    /// `max_prompt_chars`, counted after the `sub_type` template. Free text: line breaks and
    /// tabs are allowed, other control characters are not.
    pub prompt: Option<String>,
    /// What to avoid; defaults to the `sub_type` template's.
    #[schema(max_length = 2500)]
    pub negative_prompt: Option<String>,
    /// Seconds, one of the model's `durations` (videos only; images have none). Default: the
    /// model's first.
    #[schema(minimum = 0)]
    pub duration: Option<u32>,
    /// One of the model's `aspect_ratios`. Default: the model's first.
    pub aspect_ratio: Option<String>,
    /// One of the model's `qualities`, for models that have them. Default: `default_quality`.
    pub quality: Option<String>,
    /// Input images.
    #[schema(schema_with = image_urls)]
    pub image_urls: Option<Vec<String>>,
    /// The video's last frame (`image2video`, models with `end_frame`): a URL under the same
    /// rules as `image_urls`.
    #[schema(format = Uri, max_length = 2048)]
    pub end_image_url: Option<String>,
    /// How the camera moves (`text2video` and `image2video`, models with `camera_control`).
    pub camera_control: Option<CameraControl>,
    /// A prompt template (`anime_video`, `cinematic`, …; listed by `GET /v1/models`).
    pub sub_type: Option<String>,
    /// Any JSON object up to 4 KiB, stored and returned.
    #[schema(schema_with = metadata)]
    pub metadata: Option<Value>,
    /// Where gengate POSTs this generation's events (see the `webhooks` of this document),
    /// signed as Standard Webhooks specifies. An https URL naming a public host, at most 2048
    /// characters.
    #[schema(format = Uri, max_length = 2048)]
    pub webhook_url: Option<String>,
    /// The events sent to `webhook_url` (which it requires), each at most once. Default: all but
    /// `generation.processing` (sent only when named).
    #[schema(min_items = 1)]
    pub webhook_events: Option<BTreeSet<WebhookEventType>>,
}

/// A camera movement, in Kling's shape: `simple` moves along one axis as `config` says; the
/// presets take no `config`.
#[derive(Debug, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"type": "simple", "config": {"zoom": 5}}))]
pub struct CameraControl {
    /// The movement.
    #[serde(rename = "type")]
    #[schema(pattern = "^(simple|down_back|forward_up|right_turn_forward|left_turn_forward)$")]
    pub kind: String,
    /// For `simple` only: exactly one axis not zero; axes left out are 0.
    #[schema(nullable = false)]
    pub config: Option<CameraConfig>,
}

/// How far a `simple` camera movement goes along each axis (−10 to 10).
#[derive(Debug, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CameraConfig {
    /// Sideways.
    #[schema(nullable = false, minimum = -10, maximum = 10)]
    pub horizontal: Option<f64>,
    /// Up and down.
    #[schema(nullable = false, minimum = -10, maximum = 10)]
    pub vertical: Option<f64>,
    /// Turning left and right.
    #[schema(nullable = false, minimum = -10, maximum = 10)]
    pub pan: Option<f64>,
    /// Turning up and down.
    #[schema(nullable = false, minimum = -10, maximum = 10)]
    pub tilt: Option<f64>,
    /// Rolling.
    #[schema(nullable = false, minimum = -10, maximum = 10)]
    pub roll: Option<f64>,
    /// In and out.
    #[schema(nullable = false, minimum = -10, maximum = 10)]
    pub zoom: Option<f64>,
}

/// The body of `POST /admin/users`: every member is optional.
#[derive(Debug, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"email": "ada@example.com", "name": "Ada", "max_in_flight": 5}))]
pub struct CreateUserRequest {
    /// An email address (at most 320 characters), unique among users.
    #[schema(max_length = 320)]
    pub email: Option<String>,
    /// A name (free text).
    pub name: Option<String>,
    /// How many of the user's jobs may be queued or running at once; default
    /// `limits.default_max_in_flight`.
    #[schema(minimum = 1)]
    pub max_in_flight: Option<i32>,
}

/// The body of `POST /admin/users/{id}/api-keys`: optional (no body at all is the same as `{}`).
#[derive(Debug, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"name": "production"}))]
pub struct CreateApiKeyRequest {
    /// A name for the key (free text).
    pub name: Option<String>,
    /// Also issue a Kling access key / secret key pair for the Kling-compatible API
    /// (`/kling/v1/…`); default false.
    pub kling: Option<bool>,
}

/// The body of `POST /admin/users/{id}/grants`.
#[derive(Debug, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"source": "order_pay", "amount": 1000, "order_no": "ORD-2026-0001",
                          "expires_at": "2027-12-31T00:00:00Z", "priority": 0}))]
pub struct CreateGrantRequest {
    /// Where the credits come from.
    pub source: GrantSource,
    /// Credits, at least 1 and at most 10¹².
    #[schema(minimum = 1, maximum = 1_000_000_000_000_i64)]
    pub amount: i64,
    /// When the grant expires (RFC 3339); after `effective_at`. Default: never.
    pub expires_at: Option<OffsetDateTime>,
    /// When the grant becomes usable (RFC 3339). Default: now.
    pub effective_at: Option<OffsetDateTime>,
    /// Grants are drawn by priority (lower first), then soonest expiry, then oldest. Default 0.
    pub priority: Option<i32>,
    /// The order number (1–128 characters): required for `order_pay`, refused otherwise. An order
    /// seen before returns its grant (200) when the amount is the same, and is `409
    /// order_conflict` when it is not.
    #[schema(min_length = 1, max_length = 128)]
    pub order_no: Option<String>,
}

/// The body of `POST /api/generation/handle-failure`.
#[derive(Debug, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"generation_id": "0192f0c4-6a8e-7cc1-9d4e-1f2a3b4c5d6e",
                          "reason": "the provider reported the task failed"}))]
pub struct FailureReport {
    /// The generation that failed.
    pub generation_id: Uuid,
    /// Why (free text, 1–1000 characters; kept for operators, never shown to clients).
    #[schema(min_length = 1, max_length = 1000)]
    pub reason: String,
}

/// The body of a signing secret's rotation (a client's, or a default endpoint's): optional (no
/// body at all is the same as `{}`).
#[derive(Debug, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"grace_seconds": 3600}))]
pub struct RotateSecretRequest {
    /// How long the replaced secret keeps signing beside the new one, in seconds: at most 30
    /// days; `0` retires it at once. Default: `client_webhooks.secret_grace_ms` (24 hours).
    #[schema(minimum = 0, maximum = 2_592_000)]
    pub grace_seconds: Option<u64>,
}

/// The body of `POST /admin/users/{id}/webhook-endpoints`.
#[derive(Debug, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"url": "https://client.example.com/hooks/gengate",
                          "events": ["generation.completed", "generation.failed"],
                          "description": "Ada's production hook"}))]
pub struct CreateWebhookEndpointRequest {
    /// Where deliveries go: an https URL (http too with `client_webhooks.allow_http`) without
    /// credentials, at most 2048 characters, naming a public host (unless
    /// `client_webhooks.allow_private_addresses`). Stored in normal form.
    #[schema(format = Uri, max_length = 2048)]
    pub url: String,
    /// The events it receives, each at most once. Default: all but `generation.processing` (sent
    /// only when named).
    #[schema(min_items = 1)]
    pub events: Option<BTreeSet<WebhookEventType>>,
    /// Only this API key's requests (the key must be the user's). Default: every request of the
    /// user (that names no URL of its own, and whose key has no endpoint of its own).
    pub api_key_id: Option<Uuid>,
    /// The operator's note (free text).
    pub description: Option<String>,
}

/// The body of `POST /admin/webhook-endpoints/{id}/disable`: optional (no body at all is the same
/// as `{}`).
#[derive(Debug, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"reason": "the client asked us to stop"}))]
pub struct DisableWebhookEndpointRequest {
    /// Why (free text): kept as the endpoint's `disabled_reason`, which its owner sees, and as
    /// the `last_error` of the pending deliveries it ends. Default: `disabled by an operator`.
    pub reason: Option<String>,
}

// --- Generations --------------------------------------------------------------------------------

pub(super) fn generation_example() -> Value {
    json!({
        "id": "0192f0c4-6a8e-7cc1-9d4e-1f2a3b4c5d6e", "status": "completed", "type": "video",
        "sub_type": "anime_video", "model": "kling-v1-6-pro", "mode": "text2video",
        "params": {"prompt": "a cat on a lawn", "negative_prompt": "blur", "duration": 5,
                   "aspect_ratio": "16:9", "sub_type": "anime_video",
                   "metadata": {"order": "A-1001"}},
        "billing": "prepaid", "cost": 42, "charged": 42, "progress": 100, "failure": null,
        "result": {"videos": [video_example()], "images": []},
        "created_at": "2026-11-01T12:00:00Z", "updated_at": "2026-11-01T12:01:30Z",
        "completed_at": "2026-11-01T12:01:30Z"
    })
}

fn generation_page_example() -> Value {
    json!({"data": [generation_example()], "next_cursor": "MjAyNi0xMS0wMVQxMjowMDowMFp8MDE5MmYwYzQ"})
}

fn generation_detail_example() -> Value {
    let mut detail = generation_example();
    detail["params"] = json!({
        "prompt": "anime style, a cat on a lawn", "client_prompt": "a cat on a lawn",
        "negative_prompt": "blur", "duration": 5, "aspect_ratio": "16:9",
        "sub_type": "anime_video", "metadata": {"order": "A-1001"}
    });
    detail["ledger"] = json!([{
        "id": "0192f0c4-0000-7000-8000-0000000000a1", "trans_type": "video_generation",
        "amount": -42, "generation_id": "0192f0c4-6a8e-7cc1-9d4e-1f2a3b4c5d6e",
        "grant_id": "0192f0c4-0000-7000-8000-000000000001", "created_at": "2026-11-01T12:00:00Z",
        "voided_at": null, "voided_reason": null
    }]);
    detail["events"] = json!([
        {"from_status": null, "to_status": "queued", "cause": "submit", "message_id": null,
         "payload_digest": null, "detail": null, "created_at": "2026-11-01T12:00:00Z"},
        {"from_status": "submitted", "to_status": "completed", "cause": "poll",
         "message_id": "0192f0c4-0000-7000-8000-0000000000c1",
         "payload_digest": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
         "detail": null, "created_at": "2026-11-01T12:01:30Z"}
    ]);
    detail
}

fn api_key_example() -> Value {
    json!({"id": "0192f0c4-0000-7000-8000-0000000000b1", "user_id": "0192f0c4-0000-7000-8000-000000000101",
           "prefix": "gg_3f9a1c", "name": "production", "created_at": "2026-11-01T00:00:00Z",
           "revoked_at": null, "last_used_at": "2026-11-02T09:30:00Z"})
}

fn api_key_list_example() -> Value {
    json!({"data": [api_key_example()]})
}

/// A generation as a submit answers it.
pub fn queued_generation_example() -> Value {
    let mut generation = generation_example();
    generation["status"] = json!("queued");
    generation["progress"] = Value::Null;
    generation["result"] = Value::Null;
    generation["updated_at"] = generation["created_at"].clone();
    generation["completed_at"] = Value::Null;
    generation
}

fn video_example() -> Value {
    json!({
        "url": "https://api.gengate.example/files/generations/0192f0c4-6a8e-7cc1-9d4e-1f2a3b4c5d6e/video-original.mp4?expires=1793534400&sig=3q2-7w",
        "width": 1280, "height": 720, "size_bytes": 2_159_000, "archive_status": "archived",
        "archive_detail": null,
        "poster_url": "https://api.gengate.example/files/generations/0192f0c4-6a8e-7cc1-9d4e-1f2a3b4c5d6e/video-original.poster.jpg?expires=1793534400&sig=9f1-a2",
        "quality": "original", "duration": 5.0
    })
}

/// The generation object: one job, as its owner reads it (`GET /v1/generations/{id}`), and as
/// client webhooks carry it (`data`).
#[derive(Debug, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = generation_example)]
pub struct Generation {
    /// The generation's id.
    pub id: Uuid,
    /// Where it is.
    pub status: GenerationStatus,
    /// What it produces.
    #[serde(rename = "type")]
    pub media: MediaType,
    /// The prompt template used.
    #[schema(required = true)]
    pub sub_type: Option<String>,
    /// The model.
    pub model: String,
    /// The mode.
    pub mode: Mode,
    /// The request after defaults.
    pub params: GenerationParams,
    /// When its credits move.
    pub billing: Billing,
    /// The price at submit, in credits.
    pub cost: i64,
    /// What the job costs its owner now, in credits (0 after a refund).
    pub charged: i64,
    /// Percent done, while the provider reports it.
    #[schema(required = true, minimum = 0, maximum = 100)]
    pub progress: Option<i16>,
    /// Why it failed (status `failed`).
    #[schema(required = true)]
    pub failure: Option<Failure>,
    /// Its files (status `completed`).
    #[schema(required = true)]
    pub result: Option<GenerationResult>,
    /// When it was accepted.
    pub created_at: OffsetDateTime,
    /// Its last change.
    pub updated_at: OffsetDateTime,
    /// When it ended.
    #[schema(required = true)]
    pub completed_at: Option<OffsetDateTime>,
}

/// The request as its client sent it, after defaults; what gengate adds for the provider (the
/// templated prompt, adapter options) is not shown. Members the request did not have (and that
/// have no default) are left out.
#[derive(Debug, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GenerationParams {
    /// The client's prompt (empty when it sent none).
    #[schema(nullable = false)]
    pub prompt: Option<String>,
    /// The client's negative prompt, if it sent one.
    #[schema(nullable = false)]
    pub negative_prompt: Option<String>,
    /// Seconds (videos).
    #[schema(nullable = false, minimum = 0)]
    pub duration: Option<u32>,
    /// The aspect ratio.
    #[schema(nullable = false)]
    pub aspect_ratio: Option<String>,
    /// The quality, for models that have them.
    #[schema(nullable = false)]
    pub quality: Option<String>,
    /// Input images, in order.
    #[schema(nullable = false)]
    pub image_urls: Option<Vec<String>>,
    /// The last frame, if the request gave one.
    #[schema(nullable = false)]
    pub end_image_url: Option<String>,
    /// The camera movement, if the request gave one (a `simple` one with all six axes).
    #[schema(nullable = false)]
    pub camera_control: Option<CameraControl>,
    /// The prompt template.
    #[schema(nullable = false)]
    pub sub_type: Option<String>,
    /// The client's metadata.
    #[schema(schema_with = metadata)]
    pub metadata: Option<Value>,
}

/// Why a generation failed, in gengate's words (never a provider's).
#[derive(Debug, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"code": "deadline_exceeded", "message": "the provider did not finish in time"}))]
pub struct Failure {
    /// The stable code clients match on.
    pub code: FailureCode,
    /// What happened.
    pub message: String,
}

/// A completed generation's files.
#[derive(Debug, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GenerationResult {
    /// Videos.
    pub videos: Vec<Video>,
    /// Images.
    pub images: Vec<Image>,
}

/// A result video.
#[derive(Debug, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = video_example)]
pub struct Video {
    /// Where to fetch it: once archived, a signed link to gengate's copy (it expires; read the
    /// generation again for a fresh one); before, the provider's URL.
    pub url: String,
    /// Pixels, once archived.
    #[schema(required = true)]
    pub width: Option<i32>,
    /// Pixels, once archived.
    #[schema(required = true)]
    pub height: Option<i32>,
    /// Bytes, once archived.
    #[schema(required = true)]
    pub size_bytes: Option<i64>,
    /// How gengate's copy stands.
    pub archive_status: ArchiveStatus,
    /// Why the copy failed, or what an archived file lacks.
    #[schema(required = true)]
    pub archive_detail: Option<String>,
    /// A signed link to its first frame (JPEG), once archived.
    #[schema(required = true)]
    pub poster_url: Option<String>,
    /// Its quality label (`original`, …).
    pub quality: String,
    /// Seconds.
    #[schema(required = true)]
    pub duration: Option<f32>,
}

/// A result image.
#[derive(Debug, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Image {
    /// Where to fetch it: once archived, a signed link to gengate's copy (it expires); before,
    /// the provider's URL.
    pub url: String,
    /// Pixels, once archived.
    #[schema(required = true)]
    pub width: Option<i32>,
    /// Pixels, once archived.
    #[schema(required = true)]
    pub height: Option<i32>,
    /// Bytes, once archived.
    #[schema(required = true)]
    pub size_bytes: Option<i64>,
    /// How gengate's copy stands.
    pub archive_status: ArchiveStatus,
    /// Why the copy failed, or what an archived file lacks.
    #[schema(required = true)]
    pub archive_detail: Option<String>,
}

/// One page of generations, newest first.
#[derive(Debug, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = generation_page_example)]
pub struct GenerationPage {
    /// The generations.
    pub data: Vec<Generation>,
    /// Pass as `cursor` for the next page; `null` on the last.
    #[schema(required = true)]
    pub next_cursor: Option<String>,
}

/// The operator's view of a generation: the object (with its params as stored), its whole
/// ledger (voided entries included) and its audit log.
#[derive(Debug, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = generation_detail_example)]
pub struct GenerationDetail {
    /// The generation's id.
    pub id: Uuid,
    /// Where it is.
    pub status: GenerationStatus,
    /// What it produces.
    #[serde(rename = "type")]
    pub media: MediaType,
    /// The prompt template used.
    #[schema(required = true)]
    pub sub_type: Option<String>,
    /// The model.
    pub model: String,
    /// The mode.
    pub mode: Mode,
    /// The params snapshot as stored.
    #[schema(schema_with = operator_params)]
    pub params: Value,
    /// When its credits move.
    pub billing: Billing,
    /// The price at submit, in credits.
    pub cost: i64,
    /// What the job costs its owner now, in credits.
    pub charged: i64,
    /// Percent done, while the provider reports it.
    #[schema(required = true, minimum = 0, maximum = 100)]
    pub progress: Option<i16>,
    /// Why it failed.
    #[schema(required = true)]
    pub failure: Option<Failure>,
    /// Its files, once completed.
    #[schema(required = true)]
    pub result: Option<GenerationResult>,
    /// When it was accepted.
    pub created_at: OffsetDateTime,
    /// Its last change.
    pub updated_at: OffsetDateTime,
    /// When it ended.
    #[schema(required = true)]
    pub completed_at: Option<OffsetDateTime>,
    /// Every ledger entry of the generation, voided ones included.
    pub ledger: Vec<LedgerEntry>,
    /// The audit log, oldest first.
    pub events: Vec<GenerationEvent>,
}

/// One row of a generation's audit log.
#[derive(Debug, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GenerationEvent {
    /// The status before (`null` for the submit).
    #[schema(required = true)]
    pub from_status: Option<GenerationStatus>,
    /// The status after (`null`: recorded, not applied).
    #[schema(required = true)]
    pub to_status: Option<GenerationStatus>,
    /// What caused it.
    pub cause: String,
    /// The message that carried it.
    #[schema(required = true)]
    pub message_id: Option<Uuid>,
    /// SHA-256 (hex) of the provider payload, for webhooks and polls.
    #[schema(required = true)]
    pub payload_digest: Option<String>,
    /// Anything else worth keeping.
    #[schema(required = true)]
    pub detail: Option<Value>,
    /// When.
    pub created_at: OffsetDateTime,
}

// --- Models -------------------------------------------------------------------------------------

/// The model catalogue.
#[derive(Debug, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({
    "version": "2026-11-01", "sub_types": ["anime_video", "cinematic"],
    "data": [{"name": "kling-v1-6-pro", "provider": "kling", "type": "video",
              "billing": "prepaid", "base_price": 35, "modes": ["text2video", "image2video"],
              "durations": [5, 10], "aspect_ratios": ["16:9", "9:16", "1:1"], "qualities": {},
              "default_quality": null, "max_prompt_chars": 2500, "max_images": 1,
              "end_frame": true, "camera_control": false,
              "default_prices": {"text2video": 42, "image2video": 47}}]
}))]
pub struct ModelCatalogue {
    /// The price table's version (stored on every generation).
    pub version: String,
    /// The prompt templates a request may name as `sub_type`.
    pub sub_types: Vec<String>,
    /// The models.
    pub data: Vec<Model>,
}

/// A model clients can ask for.
#[derive(Debug, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Model {
    /// The name requests use.
    pub name: String,
    /// Who runs it.
    pub provider: Provider,
    /// What it makes.
    #[serde(rename = "type")]
    pub media: MediaType,
    /// When credits move.
    pub billing: Billing,
    /// Credits per 5-second unit (video) or per image, before factors.
    pub base_price: i64,
    /// The modes offered.
    pub modes: Vec<Mode>,
    /// The durations offered (seconds); the first is the default. Empty for images.
    pub durations: Vec<u32>,
    /// The aspect ratios offered; the first is the default.
    pub aspect_ratios: Vec<String>,
    /// The quality choices, each with its price factor.
    pub qualities: BTreeMap<String, f64>,
    /// The quality used when a request names none.
    #[schema(required = true)]
    pub default_quality: Option<String>,
    /// The longest prompt, in characters, after the `sub_type` template.
    pub max_prompt_chars: u64,
    /// The most input images.
    pub max_images: u64,
    /// Takes a last frame (`end_image_url`) in `image2video`.
    pub end_frame: bool,
    /// Takes a `camera_control` in `text2video` and `image2video`.
    pub camera_control: bool,
    /// The price of each mode at the defaults, in credits (`null`: no price at the defaults).
    pub default_prices: BTreeMap<String, Option<i64>>,
}

// --- Credits ------------------------------------------------------------------------------------

fn balance_example() -> Value {
    json!({
        "balance": 930, "held": 24, "available": 906, "debt": 0,
        "grants": [{"id": "0192f0c4-0000-7000-8000-000000000001", "source": "order_pay",
                    "amount": 1000, "remaining": 930, "expires_at": "2027-12-31T00:00:00Z",
                    "priority": 0, "effective_at": "2026-11-01T00:00:00Z",
                    "order_no": "ORD-2026-0001", "expired": false,
                    "created_at": "2026-11-01T00:00:00Z"}]
    })
}

/// A user's credits.
#[derive(Debug, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = balance_example)]
pub struct Balance {
    /// Credits in usable grants (effective, unexpired).
    pub balance: i64,
    /// Credits held by running postpaid jobs.
    pub held: i64,
    /// What a new job may use: `balance − held`.
    pub available: i64,
    /// Credits owed; paid first from the next grant. New jobs are refused while there is debt.
    pub debt: i64,
    /// Every grant that still holds credits, in the order they are drawn.
    pub grants: Vec<Grant>,
}

/// A credit grant.
#[derive(Debug, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Grant {
    /// The grant's id.
    pub id: Uuid,
    /// Where its credits come from.
    pub source: GrantSource,
    /// Credits granted.
    pub amount: i64,
    /// Credits left.
    pub remaining: i64,
    /// When it expires.
    #[schema(required = true)]
    pub expires_at: Option<OffsetDateTime>,
    /// Drawn lower first.
    pub priority: i32,
    /// When it became (or becomes) usable.
    pub effective_at: OffsetDateTime,
    /// The order number (`order_pay`).
    #[schema(required = true)]
    pub order_no: Option<String>,
    /// Whether it has expired (its remaining credits are no longer usable).
    pub expired: bool,
    /// When it was made.
    pub created_at: OffsetDateTime,
}

/// One page of a user's ledger, newest first.
#[derive(Debug, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({
    "data": [{"id": "0192f0c4-0000-7000-8000-0000000000a1", "trans_type": "video_generation",
              "amount": -42, "generation_id": "0192f0c4-6a8e-7cc1-9d4e-1f2a3b4c5d6e",
              "grant_id": "0192f0c4-0000-7000-8000-000000000001",
              "created_at": "2026-11-01T12:00:00Z", "voided_at": null, "voided_reason": null}],
    "next_cursor": null
}))]
pub struct TimelinePage {
    /// The entries.
    pub data: Vec<LedgerEntry>,
    /// Pass as `cursor` for the next page; `null` on the last.
    #[schema(required = true)]
    pub next_cursor: Option<String>,
}

/// A ledger entry.
#[derive(Debug, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LedgerEntry {
    /// The entry's id.
    pub id: Uuid,
    /// `{type}_generation` (a charge, negative), `{type}_generation_refund` (part of a charge
    /// returned when a job settled lower), `new_user`, `order_pay`, `system_add` (grants,
    /// positive), `debt_settlement`, `chat`, `chat_refund`.
    #[schema(example = "video_generation")]
    pub trans_type: String,
    /// Credits: positive for grants, negative for charges.
    pub amount: i64,
    /// The generation it charges.
    #[schema(required = true)]
    pub generation_id: Option<Uuid>,
    /// The grant it draws from or adds.
    #[schema(required = true)]
    pub grant_id: Option<Uuid>,
    /// When.
    pub created_at: OffsetDateTime,
    /// When a refund voided it (its amount went back to its grant).
    #[schema(required = true)]
    pub voided_at: Option<OffsetDateTime>,
    /// Why it was voided.
    #[schema(required = true)]
    pub voided_reason: Option<String>,
}

/// Totals per transaction type over live (not voided) entries.
#[derive(Debug, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({
    "from": "2026-11-01T00:00:00Z", "to": null,
    "data": [{"trans_type": "order_pay", "total": 1000, "count": 1},
             {"trans_type": "video_generation", "total": -70, "count": 2}]
}))]
pub struct CreditSummary {
    /// The start asked for (RFC 3339), if any.
    #[schema(required = true)]
    pub from: Option<OffsetDateTime>,
    /// The end asked for (RFC 3339), if any.
    #[schema(required = true)]
    pub to: Option<OffsetDateTime>,
    /// One line per transaction type.
    pub data: Vec<SummaryLine>,
}

/// The total of one transaction type.
#[derive(Debug, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SummaryLine {
    /// The transaction type.
    pub trans_type: String,
    /// The sum of the amounts.
    pub total: i64,
    /// How many entries.
    pub count: i64,
}

// --- Admin --------------------------------------------------------------------------------------

/// A user.
#[derive(Debug, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"id": "0192f0c4-0000-7000-8000-000000000101", "email": "ada@example.com",
                          "name": "Ada", "max_in_flight": 5, "debt": 0,
                          "created_at": "2026-11-01T00:00:00Z"}))]
pub struct User {
    /// The user's id.
    pub id: Uuid,
    /// The email address.
    #[schema(required = true)]
    pub email: Option<String>,
    /// The name.
    #[schema(required = true)]
    pub name: Option<String>,
    /// The user's own in-flight limit (`null`: the default).
    #[schema(required = true)]
    pub max_in_flight: Option<i32>,
    /// Credits owed.
    pub debt: i64,
    /// When the user was made.
    pub created_at: OffsetDateTime,
}

/// A new API key: the only time the key itself is shown (gengate stores only its SHA-256).
#[derive(Debug, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"id": "0192f0c4-0000-7000-8000-0000000000b1", "prefix": "gg_3f9a1c",
                          "key": "gg_3f9a1c.Zm9yIGV4YW1wbGUgb25seQ"}))]
pub struct NewApiKey {
    /// The key's id.
    pub id: Uuid,
    /// The key's public prefix (how it is recognized in lists and logs).
    pub prefix: String,
    /// The key: `Authorization: Bearer <key>`.
    pub key: String,
    /// With `{"kling": true}`: the Kling access key (the `iss` of the JWT a Kling client signs
    /// for `/kling/v1/…`).
    pub kling_access_key: Option<String>,
    /// With `{"kling": true}`: the Kling secret key (signs that JWT, HS256). Shown once; gengate
    /// derives it again to check a token and never stores it.
    pub kling_secret_key: Option<String>,
}

/// An API key as listed (never the key itself).
#[derive(Debug, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = api_key_example)]
pub struct ApiKey {
    /// The key's id.
    pub id: Uuid,
    /// Its owner.
    pub user_id: Uuid,
    /// Its public prefix.
    pub prefix: String,
    /// Its name.
    #[schema(required = true)]
    pub name: Option<String>,
    /// When it was made.
    pub created_at: OffsetDateTime,
    /// When it was revoked.
    #[schema(required = true)]
    pub revoked_at: Option<OffsetDateTime>,
    /// When it was last used (written every `api.key_usage_flush_ms`, not on every request).
    #[schema(required = true)]
    pub last_used_at: Option<OffsetDateTime>,
}

/// A user's API keys, newest first.
#[derive(Debug, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = api_key_list_example)]
pub struct ApiKeyList {
    /// The keys.
    pub data: Vec<ApiKey>,
}

/// The answer to a grant: the grant as it stands, or only its id when the debt it paid used it
/// up at once; and the debt it paid.
#[derive(Debug, ToSchema)]
#[serde(untagged)]
#[schema(example = json!({"id": "0192f0c4-0000-7000-8000-000000000001", "source": "order_pay",
                          "amount": 1000, "remaining": 988, "expires_at": "2027-12-31T00:00:00Z",
                          "priority": 0, "effective_at": "2026-11-01T00:00:00Z",
                          "order_no": "ORD-2026-0001", "expired": false,
                          "created_at": "2026-11-01T00:00:00Z", "debt_settled": 12}))]
pub enum GrantCreated {
    /// The grant still holds credits.
    Holding(HoldingGrant),
    /// The grant was spent at once, on debt.
    Spent(SpentGrant),
}

/// A grant that still holds credits, and the debt it paid.
#[derive(Debug, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"id": "0192f0c4-0000-7000-8000-000000000001", "source": "system_add",
                          "amount": 500, "remaining": 500, "expires_at": null, "priority": 0,
                          "effective_at": "2026-11-01T00:00:00Z", "order_no": null,
                          "expired": false, "created_at": "2026-11-01T00:00:00Z",
                          "debt_settled": 0}))]
pub struct HoldingGrant {
    /// The grant's id.
    pub id: Uuid,
    /// Where its credits come from.
    pub source: GrantSource,
    /// Credits granted.
    pub amount: i64,
    /// Credits left.
    pub remaining: i64,
    /// When it expires.
    #[schema(required = true)]
    pub expires_at: Option<OffsetDateTime>,
    /// Drawn lower first.
    pub priority: i32,
    /// When it became (or becomes) usable.
    pub effective_at: OffsetDateTime,
    /// The order number (`order_pay`).
    #[schema(required = true)]
    pub order_no: Option<String>,
    /// Whether it has expired.
    pub expired: bool,
    /// When it was made.
    pub created_at: OffsetDateTime,
    /// Credits of the user's debt the grant paid at once.
    pub debt_settled: i64,
}

/// A grant that paid debt with all its credits.
#[derive(Debug, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SpentGrant {
    /// The grant's id.
    pub id: Uuid,
    /// Credits of the user's debt the grant paid.
    pub debt_settled: i64,
}

// --- Client webhooks ---------------------------------------------------------------------------

fn webhook_endpoint_example() -> Value {
    json!({
        "id": "0192f0c4-0000-7000-8000-0000000000e1",
        "user_id": "0192f0c4-0000-7000-8000-000000000101", "api_key_id": null,
        "url": "https://client.example.com/hooks/gengate",
        "events": ["generation.completed", "generation.failed"],
        "description": "Ada's production hook", "created_at": "2026-11-01T00:00:00Z",
        "failing_since": null, "disabled_at": null, "disabled_reason": null
    })
}

fn webhook_endpoint_created_example() -> Value {
    let mut endpoint = webhook_endpoint_example();
    endpoint["secret"] = json!("whsec_AwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8gISI=");
    endpoint
}

fn webhook_endpoint_list_example() -> Value {
    let mut disabled = webhook_endpoint_example();
    disabled["id"] = json!("0192f0c4-0000-7000-8000-0000000000e0");
    disabled["events"] = Value::Null;
    disabled["description"] = Value::Null;
    disabled["created_at"] = json!("2026-10-01T00:00:00Z");
    disabled["failing_since"] = json!("2026-10-20T08:00:00Z");
    disabled["disabled_at"] = json!("2026-10-25T08:00:00Z");
    disabled["disabled_reason"] =
        json!("every attempt failed for 5 days; the last: answered 502 Bad Gateway");
    json!({"data": [disabled, webhook_endpoint_example()]})
}

fn webhook_delivery_example() -> Value {
    json!({
        "id": "msg_0192f0c46a8e7cc19d4e1f2a3b4c5d6f",
        "generation_id": "0192f0c4-6a8e-7cc1-9d4e-1f2a3b4c5d6e", "event": "generation.completed",
        "url": "https://client.example.com/hooks/gengate", "format": "standard",
        "endpoint_id": null, "status": "delivered", "attempts": 2, "next_attempt_at": null, "last_error": null,
        "created_at": "2026-11-01T12:01:30Z", "finished_at": "2026-11-01T12:01:36Z",
        "attempt_log": [
            {"attempt": 1, "started_at": "2026-11-01T12:01:30.104Z", "status_code": 503,
             "latency_ms": 87, "error": "answered 503 Service Unavailable"},
            {"attempt": 2, "started_at": "2026-11-01T12:01:35.211Z", "status_code": 204,
             "latency_ms": 64, "error": null}
        ]
    })
}

fn webhook_delivery_list_example() -> Value {
    json!({"data": [webhook_delivery_example()]})
}

/// A signing secret, as its owner is shown it.
#[derive(Debug, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({
    "secret": "whsec_AwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8gISI=",
    "created_at": "2026-11-01T12:00:00Z", "previous_retires_at": "2026-11-02T12:00:00Z"
}))]
pub struct WebhookSecret {
    /// `whsec_` and the base64 of the secret's 32 bytes: what a Standard Webhooks verifier
    /// takes.
    #[schema(pattern = "^whsec_[A-Za-z0-9+/]{43}=$")]
    pub secret: String,
    /// When it was made.
    pub created_at: OffsetDateTime,
    /// Until when the secret a rotation replaced still signs beside this one (`null`: no other
    /// secret signs).
    #[schema(required = true)]
    pub previous_retires_at: Option<OffsetDateTime>,
}

/// A default webhook endpoint, as its owner and operators see it.
#[derive(Debug, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = webhook_endpoint_example)]
pub struct WebhookEndpoint {
    /// The endpoint's id.
    pub id: Uuid,
    /// Its owner.
    pub user_id: Uuid,
    /// The API key whose requests it receives (`null`: every request of its user).
    #[schema(required = true)]
    pub api_key_id: Option<Uuid>,
    /// Where deliveries go.
    #[schema(format = Uri)]
    pub url: String,
    /// The events it receives (`null`: all but `generation.processing`).
    #[schema(required = true, min_items = 1)]
    pub events: Option<BTreeSet<WebhookEventType>>,
    /// The operator's note.
    #[schema(required = true)]
    pub description: Option<String>,
    /// When it was registered.
    pub created_at: OffsetDateTime,
    /// Since when every attempt to it failed (`null` after a success).
    #[schema(required = true)]
    pub failing_since: Option<OffsetDateTime>,
    /// When it was disabled (nothing is sent to it any more).
    #[schema(required = true)]
    pub disabled_at: Option<OffsetDateTime>,
    /// Why: it answered 410 Gone, every attempt failed for `client_webhooks.disable_after_ms`,
    /// or an operator's reason.
    #[schema(required = true)]
    pub disabled_reason: Option<String>,
}

/// A default webhook endpoint as it is registered: with its signing secret, shown only here.
#[derive(Debug, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = webhook_endpoint_created_example)]
pub struct WebhookEndpointCreated {
    /// The endpoint's id.
    pub id: Uuid,
    /// Its owner.
    pub user_id: Uuid,
    /// The API key whose requests it receives (`null`: every request of its user).
    #[schema(required = true)]
    pub api_key_id: Option<Uuid>,
    /// Where deliveries go, in normal form.
    #[schema(format = Uri)]
    pub url: String,
    /// The events it receives (`null`: all but `generation.processing`).
    #[schema(required = true, min_items = 1)]
    pub events: Option<BTreeSet<WebhookEventType>>,
    /// The operator's note.
    #[schema(required = true)]
    pub description: Option<String>,
    /// When it was registered.
    pub created_at: OffsetDateTime,
    /// `null`: nothing was sent to it yet.
    #[schema(required = true)]
    pub failing_since: Option<OffsetDateTime>,
    /// `null`: it is live.
    #[schema(required = true)]
    pub disabled_at: Option<OffsetDateTime>,
    /// `null`: it is live.
    #[schema(required = true)]
    pub disabled_reason: Option<String>,
    /// The endpoint's own signing secret (`whsec_…`), shown once, here; `rotate-secret` makes a
    /// new one.
    #[schema(pattern = "^whsec_[A-Za-z0-9+/]{43}=$")]
    pub secret: String,
}

/// A user's default webhook endpoints, live and disabled, oldest first.
#[derive(Debug, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = webhook_endpoint_list_example)]
pub struct WebhookEndpointList {
    /// The endpoints.
    pub data: Vec<WebhookEndpoint>,
}

/// One client webhook delivery: one event of one generation to one URL, sent at least once.
#[derive(Debug, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = webhook_delivery_example)]
pub struct WebhookDelivery {
    /// The `webhook-id` every attempt carries (`msg_` and 32 hex digits).
    #[schema(pattern = "^msg_[0-9a-f]{32}$", example = "msg_0192f0c46a8e7cc19d4e1f2a3b4c5d6f")]
    pub id: String,
    /// The generation.
    pub generation_id: Uuid,
    /// The event.
    pub event: WebhookEventType,
    /// Where it goes.
    #[schema(format = Uri)]
    pub url: String,
    /// The body's shape: `standard` (Standard Webhooks' payload), or `kling` (the Kling task
    /// object, for a Kling request's `callback_url`).
    #[schema(pattern = "^(standard|kling)$", example = "standard")]
    pub format: String,
    /// The default endpoint it goes to (`null`: the URL its request named).
    #[schema(required = true)]
    pub endpoint_id: Option<Uuid>,
    /// How it stands.
    pub status: WebhookDeliveryStatus,
    /// Attempts made.
    #[schema(minimum = 0)]
    pub attempts: i32,
    /// When the next attempt is due (`pending` only).
    #[schema(required = true)]
    pub next_attempt_at: Option<OffsetDateTime>,
    /// The last attempt's error (`null` once delivered).
    #[schema(required = true)]
    pub last_error: Option<String>,
    /// When the event happened (the delivery was made).
    pub created_at: OffsetDateTime,
    /// When it was delivered or failed.
    #[schema(required = true)]
    pub finished_at: Option<OffsetDateTime>,
    /// Every attempt, first first.
    pub attempt_log: Vec<WebhookAttempt>,
}

/// One attempt of a delivery. An attempt with neither a status nor an error was cut short (its
/// worker stopped) and was made again.
#[derive(Debug, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookAttempt {
    /// 1 for the first.
    #[schema(minimum = 1)]
    pub attempt: i32,
    /// When it started.
    pub started_at: OffsetDateTime,
    /// The answer's HTTP status, if one came.
    #[schema(required = true)]
    pub status_code: Option<i16>,
    /// How long it took, in milliseconds.
    #[schema(required = true)]
    pub latency_ms: Option<i32>,
    /// What went wrong (`null` for a 2xx).
    #[schema(required = true)]
    pub error: Option<String>,
}

/// Client webhook deliveries.
#[derive(Debug, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = webhook_delivery_list_example)]
pub struct WebhookDeliveryList {
    /// The deliveries.
    pub data: Vec<WebhookDelivery>,
}

// --- Provider ingress and operations ------------------------------------------------------------

/// The answer to a provider callback that was taken in.
#[derive(Debug, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"ok": true}))]
pub struct CallbackAccepted {
    /// Always `true`.
    #[schema(schema_with = always_true)]
    pub ok: bool,
}

/// The answer to a failure report: queued, to be applied by a worker.
#[derive(Debug, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"ok": true, "generation_id": "0192f0c4-6a8e-7cc1-9d4e-1f2a3b4c5d6e"}))]
pub struct FailureReported {
    /// Always `true`.
    #[schema(schema_with = always_true)]
    pub ok: bool,
    /// The generation.
    pub generation_id: Uuid,
}

/// The process is alive.
#[derive(Debug, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"status": "ok"}))]
pub struct Health {
    /// `ok`.
    #[schema(schema_with = health_ok)]
    pub status: String,
}

/// PostgreSQL and RabbitMQ answer.
#[derive(Debug, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"status": "ready", "checks": {"postgres": "ok", "rabbitmq": "ok"}}))]
pub struct Readiness {
    /// `ready`.
    #[schema(schema_with = ready)]
    pub status: String,
    /// Each dependency: `ok`.
    pub checks: ReadinessChecks,
}

/// What `/readyz` checked.
#[derive(Debug, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReadinessChecks {
    /// `ok`, or why PostgreSQL does not answer.
    pub postgres: String,
    /// `ok`, or why RabbitMQ does not answer.
    pub rabbitmq: String,
}

/// One failing field of a request.
#[derive(Debug, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FieldError {
    /// The field's path in the request (`duration`, `image_urls[1]`, `metadata.tags[0]`), a query
    /// parameter, a header (`Idempotency-Key`) or `body`.
    pub field: String,
    /// What is wrong with it.
    pub message: String,
}

/// The body of every client webhook delivery.
#[derive(Debug, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookEvent {
    /// The event.
    #[serde(rename = "type")]
    pub event: WebhookEventType,
    /// When the delivery was made (RFC 3339); every retry sends the same body.
    pub timestamp: OffsetDateTime,
    /// The generation, exactly as `GET /v1/generations/{id}` returns it (with fresh links to its
    /// stored files).
    pub data: Generation,
}
