//! Upstream providers: what gengate asks of them and what they answer, independent of any one
//! provider's wire format. Each provider has a module here with its wire types, status mapping,
//! error classification and callback parsing (`kling`, `kie`); the HTTP clients live in the
//! worker. See `docs/wire-formats.md` for the formats.

mod envelope;
pub mod kie;
pub mod kling;

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::generation::{GenerationParams, Mode};
use crate::ids::GenerationId;
use crate::names::named_enum;

named_enum! {
    /// A provider gengate talks to.
    pub enum ProviderKind ("provider") {
        /// Kling's own API (JWT auth).
        Kling = "kling",
        /// The kie.ai aggregator (Sora 2, Sora 2 Pro, Wan, Kling, images).
        Kie = "kie",
    }
}

/// Everything a provider needs to create the upstream task of one generation.
#[derive(Debug, Clone)]
pub struct TaskRequest {
    /// The generation; also Kling's `external_task_id`, so a task can be found again after a crash.
    pub generation_id: GenerationId,
    /// The model family at the provider, from the catalogue (`kling-v1-6`, `kling-video-o1`,
    /// `sora-2`, `sora-2-pro`, `wan-2-6`, `kling-2-6`, `nano-banana`, …).
    pub provider_model: String,
    /// Fixed per-model options from the catalogue (e.g. Kling `mode = "pro"`).
    pub options: BTreeMap<String, String>,
    /// How the generation was asked for.
    pub mode: Mode,
    /// The normalized request.
    pub params: GenerationParams,
    /// Where the provider should POST status changes (carries the generation id and its token).
    pub callback_url: String,
}

/// Identifies an upstream task for queries (Kling's query path depends on the mode).
#[derive(Debug, Clone)]
pub struct TaskRef {
    /// How the task was created.
    pub mode: Mode,
    /// The model family (see [`TaskRequest::provider_model`]).
    pub provider_model: String,
    /// The provider's task id.
    pub remote_task_id: String,
}

/// One result file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResultFile {
    /// Where the provider serves it (checked against the allowlist before use).
    pub url: String,
    /// Seconds, for videos when the provider says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_s: Option<f32>,
}

/// A task's state in gengate's terms.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum TaskState {
    /// Accepted, not started.
    Queued,
    /// Running; some providers report progress (0–100).
    Running {
        /// Percent done, when known.
        progress: Option<u8>,
    },
    /// Finished with results.
    Succeeded {
        /// Result files (videos or images, as the generation's media type says), in the
        /// provider's order.
        files: Vec<ResultFile>,
        /// Usage the provider reports having charged (Kling `final_unit_deduction`), if any.
        usage: Option<String>,
    },
    /// Finished without results.
    Failed {
        /// The provider's failure code.
        code: String,
        /// The provider's failure message.
        message: String,
    },
    /// A status the provider did not document: treated as still running, never as failed.
    Unknown {
        /// The status as the provider wrote it.
        status: String,
    },
}

impl TaskState {
    /// The provider reports the task finished, successfully or not. A generation's own ending is
    /// another matter ([`GenerationStatus::is_terminal`](crate::generation::GenerationStatus::is_terminal)):
    /// a generation whose task failed stays open to a success that comes later.
    pub fn has_ended(&self) -> bool {
        matches!(self, TaskState::Succeeded { .. } | TaskState::Failed { .. })
    }

    /// `success`, `failed`, `running` …: how the audit log names a task's state (these are the
    /// provider's task states, not a generation's statuses).
    pub fn audit_name(&self) -> &'static str {
        match self {
            TaskState::Queued => "queued",
            TaskState::Running { .. } => "running",
            TaskState::Succeeded { .. } => "success",
            TaskState::Failed { .. } => "failed",
            TaskState::Unknown { .. } => "an undocumented status",
        }
    }
}

/// What a provider said about one task, from a callback or a query.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskUpdate {
    /// The provider's task id.
    pub remote_task_id: String,
    /// gengate's generation id, where the provider echoes it (Kling `external_task_id`).
    pub external_id: Option<String>,
    /// The state.
    pub state: TaskState,
}

/// Why a provider call failed, classified for what to do next.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ProviderError {
    /// Try again later (rate limits, overload, 5xx, timeouts, connection errors).
    #[error("retryable provider error {code}: {message}")]
    Retryable {
        /// The provider's code (or `timeout`, `connect`, `http_503`, …).
        code: String,
        /// What it said.
        message: String,
        /// The provider asked to wait this long.
        retry_after: Option<Duration>,
    },
    /// Retrying cannot help (bad parameters, content policy, our account out of funds).
    #[error("permanent provider error {code}: {message}")]
    Permanent {
        /// The provider's code.
        code: String,
        /// What it said.
        message: String,
        /// gengate's own provider account has a problem (arrears, resource pack depleted, auth):
        /// fail the job and alert an operator.
        account_problem: bool,
    },
    /// No such task at the provider.
    #[error("task not found at the provider")]
    NotFound,
}

/// What an adapter decided an error answer means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Try again later.
    Retry,
    /// Fail the job.
    Fail,
    /// Fail the job, and alert: the gateway's own provider account has a problem.
    FailAndAlert,
}

impl ProviderError {
    /// The error an adapter's verdict on an answer makes: the code is the provider's, or
    /// `http_<status>` when the answer had none.
    pub fn from_answer(
        verdict: Verdict,
        http_status: u16,
        code: Option<i64>,
        message: &str,
    ) -> Self {
        let code = code.map_or_else(|| format!("http_{http_status}"), |c| c.to_string());
        let message = message.to_owned();
        match verdict {
            Verdict::Retry => ProviderError::Retryable { code, message, retry_after: None },
            Verdict::Fail => ProviderError::Permanent { code, message, account_problem: false },
            Verdict::FailAndAlert => {
                ProviderError::Permanent { code, message, account_problem: true }
            }
        }
    }
}

/// A callback body no adapter could make sense of.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unparsable {provider} callback: {reason}")]
pub struct CallbackParseError {
    /// Which adapter tried.
    pub provider: ProviderKind,
    /// Why it failed.
    pub reason: String,
}

/// Reads a callback body from `kind`'s format. Adding a provider adds one arm here.
pub fn parse_callback(kind: ProviderKind, body: &[u8]) -> Result<TaskUpdate, CallbackParseError> {
    match kind {
        ProviderKind::Kling => kling::parse_callback(body),
        ProviderKind::Kie => kie::parse_callback(body),
    }
}

/// The adapter cannot express this request (a mode or model family the provider does not serve,
/// an option it does not know): a catalogue or validation gap, not the provider's fault.
fn unsupported(message: impl Into<String>) -> ProviderError {
    ProviderError::Permanent {
        code: "unsupported".to_owned(),
        message: message.into(),
        account_problem: false,
    }
}

/// The request lacks what the provider needs (an input image, …), so sending it cannot succeed.
fn invalid_request(message: impl Into<String>) -> ProviderError {
    ProviderError::Permanent {
        code: "invalid_request".to_owned(),
        message: message.into(),
        account_problem: false,
    }
}

/// A 2xx answer we cannot read. Retryable: it is more likely a glitch in between (a proxy, a
/// truncated body) than a permanent change of format, and a create can be found again by the
/// generation id where the provider supports it.
fn malformed(message: impl Into<String>) -> ProviderError {
    ProviderError::Retryable {
        code: "malformed_response".to_owned(),
        message: message.into(),
        retry_after: None,
    }
}
