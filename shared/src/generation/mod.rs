//! Generations: what a job is, and the state machine every change of its status goes through.

pub mod archive;
pub mod callback_token;
pub mod camera;
pub mod cancel;
pub mod failure;
pub mod job;
pub mod operator;
pub mod polling;
pub mod report;
pub mod settle;
pub mod store;
pub mod submit;
pub mod sweep;
pub mod transitions;

use serde::{Deserialize, Serialize};

use crate::names::named_enum;

named_enum! {
    /// What a generation produces. Also the `{type}` of its ledger transaction types.
    pub enum MediaType ("media type") {
        /// Video clips.
        Video = "video",
        /// Still images.
        Image = "image",
    }
}

named_enum! {
    /// How a generation is asked for (the request's `mode`).
    pub enum Mode ("mode") {
        /// A video from a prompt.
        Text2Video = "text2video",
        /// A video from an image (and a prompt).
        Image2Video = "image2video",
        /// A video from 2–4 reference images.
        MultiImage2Video = "multi-image2video",
        /// Kling's omni model: prompt plus optional reference images.
        OmniVideo = "omni-video",
        /// An image from a prompt.
        Text2Image = "text2image",
        /// An image from an image (and a prompt).
        Image2Image = "image2image",
    }
}

impl Mode {
    /// What the mode produces.
    pub fn media(self) -> MediaType {
        match self {
            Mode::Text2Image | Mode::Image2Image => MediaType::Image,
            _ => MediaType::Video,
        }
    }
}

/// The normalized request a generation was accepted with (its params snapshot): what the provider
/// receives, after validation and prompt building.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GenerationParams {
    /// The prompt exactly as the provider receives it (built from the client's prompt and the
    /// `sub_type` template).
    pub prompt: String,
    /// The client's own prompt, before the template.
    pub client_prompt: String,
    /// What to avoid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub negative_prompt: Option<String>,
    /// Clip length in seconds (video).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<u32>,
    /// `16:9`, `9:16`, `1:1`, `21:9`, `9:21` …
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aspect_ratio: Option<String>,
    /// Input images (https URLs), in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub image_urls: Vec<String>,
    /// The video's last frame (image2video, models with `end_frame`; Kling's `image_tail`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_image_url: Option<String>,
    /// How the camera moves (models with `camera_control`; Kling's shape).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub camera_control: Option<camera::CameraControl>,
    /// A model's quality or resolution choice where it has one (`720p`, `1080p`, `standard`, `high`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quality: Option<String>,
    /// The prompt template applied (e.g. `anime_video`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub_type: Option<String>,
}

named_enum! {
    /// When a generation's credits move.
    pub enum Billing ("billing") {
        /// Reserved at submit, confirmed on success, refunded on failure.
        Prepaid = "prepaid",
        /// Held at submit, charged on success, released on failure.
        Postpaid = "postpaid",
    }
}

named_enum! {
    /// Where a generation is in its life (see `docs/design.md`, "The generation state machine").
    pub enum GenerationStatus ("generation status") {
        /// Accepted, priced, paid for (or held); the job message is in the outbox.
        Queued = "queued",
        /// A worker created the upstream task.
        Submitted = "submitted",
        /// The provider reported success; credits confirmed or charged.
        Completed = "completed",
        /// Failed (provider, submission, or deadline); credits refunded.
        Failed = "failed",
        /// Canceled by the client; credits refunded.
        Canceled = "canceled",
    }
}

impl GenerationStatus {
    /// Terminal: nothing that arrives later changes it. `failed` is not: a late success
    /// overrides it (and restores the charge).
    pub fn is_terminal(self) -> bool {
        matches!(self, GenerationStatus::Completed | GenerationStatus::Canceled)
    }

    /// The statuses of a job still running (what the in-flight limit counts).
    pub const IN_FLIGHT: [GenerationStatus; 2] =
        [GenerationStatus::Queued, GenerationStatus::Submitted];

    /// Still running: queued or submitted.
    pub fn is_in_flight(self) -> bool {
        Self::IN_FLIGHT.contains(&self)
    }
}
