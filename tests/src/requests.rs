//! Submit bodies the end-to-end tests send again and again, and what they cost.

use serde_json::{Value, json};

/// `kling-v1-6-pro` (Kling direct, prepaid), text2video, defaults (5 s, 16:9): 35 × 1 × 1.2.
pub const KLING_COST: i64 = 42;
/// `sora-2` (kie.ai, prepaid), text2video, defaults (10 s, 16:9): 30 × 2 × 1.2.
pub const SORA_COST: i64 = 72;

/// A `kling-v1-6-pro` text2video request (Kling direct).
pub fn kling(prompt: &str) -> Value {
    json!({"model": "kling-v1-6-pro", "mode": "text2video", "prompt": prompt})
}

/// A `sora-2` text2video request (kie.ai).
pub fn sora(prompt: &str) -> Value {
    json!({"model": "sora-2", "mode": "text2video", "prompt": prompt})
}
