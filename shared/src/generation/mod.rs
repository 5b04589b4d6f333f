//! Generations: what a job is, and the state machine every change of its status goes through.

pub mod archive;
pub mod callback_token;
pub mod cancel;
pub mod failure;
pub mod operator;
pub mod settle;
pub mod store;
pub mod submit;
pub mod transitions;

use serde::{Deserialize, Serialize};

/// What a generation produces. Also the `{type}` of its ledger transaction types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MediaType {
    /// Video clips.
    Video,
    /// Still images.
    Image,
}

impl MediaType {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            MediaType::Video => "video",
            MediaType::Image => "image",
        }
    }

    /// Parses a stored name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "video" => Some(MediaType::Video),
            "image" => Some(MediaType::Image),
            _ => None,
        }
    }
}

impl std::fmt::Display for MediaType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a generation is asked for (the request's `mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Mode {
    /// A video from a prompt.
    #[serde(rename = "text2video")]
    Text2Video,
    /// A video from an image (and a prompt).
    #[serde(rename = "image2video")]
    Image2Video,
    /// A video from 2–4 reference images.
    #[serde(rename = "multi-image2video")]
    MultiImage2Video,
    /// Kling's omni model: prompt plus optional reference images.
    #[serde(rename = "omni-video")]
    OmniVideo,
    /// An image from a prompt.
    #[serde(rename = "text2image")]
    Text2Image,
    /// An image from an image (and a prompt).
    #[serde(rename = "image2image")]
    Image2Image,
}

impl Mode {
    /// Every mode.
    pub const ALL: [Mode; 6] = [
        Mode::Text2Video,
        Mode::Image2Video,
        Mode::MultiImage2Video,
        Mode::OmniVideo,
        Mode::Text2Image,
        Mode::Image2Image,
    ];

    /// The request/stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Text2Video => "text2video",
            Mode::Image2Video => "image2video",
            Mode::MultiImage2Video => "multi-image2video",
            Mode::OmniVideo => "omni-video",
            Mode::Text2Image => "text2image",
            Mode::Image2Image => "image2image",
        }
    }

    /// Parses a request/stored name.
    pub fn parse(s: &str) -> Option<Self> {
        Mode::ALL.into_iter().find(|m| m.as_str() == s)
    }

    /// What the mode produces.
    pub fn media(self) -> MediaType {
        match self {
            Mode::Text2Image | Mode::Image2Image => MediaType::Image,
            _ => MediaType::Video,
        }
    }
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
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
    /// A model's quality or resolution choice where it has one (`720p`, `1080p`, `standard`, `high`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quality: Option<String>,
    /// The prompt template applied (e.g. `anime_video`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub_type: Option<String>,
}

/// When a generation's credits move.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Billing {
    /// Reserved at submit, confirmed on success, refunded on failure.
    Prepaid,
    /// Balance checked at submit, charged on success, nothing on failure.
    Postpaid,
}

impl Billing {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Billing::Prepaid => "prepaid",
            Billing::Postpaid => "postpaid",
        }
    }

    /// Parses a stored name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "prepaid" => Some(Billing::Prepaid),
            "postpaid" => Some(Billing::Postpaid),
            _ => None,
        }
    }
}

/// Where a generation is in its life (see design.md, "The generation state machine").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GenerationStatus {
    /// Accepted, priced, paid for (or checked); the job message is in the outbox.
    Queued,
    /// A worker created the upstream task.
    Submitted,
    /// The provider reported success; credits confirmed or charged.
    Completed,
    /// Failed (provider, submission, or deadline); credits refunded.
    Failed,
    /// Canceled by the client; credits refunded.
    Canceled,
}

impl GenerationStatus {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            GenerationStatus::Queued => "queued",
            GenerationStatus::Submitted => "submitted",
            GenerationStatus::Completed => "completed",
            GenerationStatus::Failed => "failed",
            GenerationStatus::Canceled => "canceled",
        }
    }

    /// Parses a stored name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "queued" => Some(GenerationStatus::Queued),
            "submitted" => Some(GenerationStatus::Submitted),
            "completed" => Some(GenerationStatus::Completed),
            "failed" => Some(GenerationStatus::Failed),
            "canceled" => Some(GenerationStatus::Canceled),
            _ => None,
        }
    }

    /// Nothing that arrives later changes it (`failed` is not: a late success overrides it).
    pub fn is_final(self) -> bool {
        matches!(self, GenerationStatus::Completed | GenerationStatus::Canceled)
    }
}

impl std::fmt::Display for GenerationStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
