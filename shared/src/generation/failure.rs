//! Why a generation failed, in two registers: what its owner is told (a stable code and a text
//! gengate wrote, never a provider's or a library's words), and what operators keep (the
//! provider's own code and message, in the audit log, cleaned of characters that could not be
//! stored or could forge a log line).

use serde_json::{Map, Value, json};

/// The reasons a generation fails, as clients see them. The codes are part of the HTTP API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FailureKind {
    /// The provider ran the task and reported that it failed.
    GenerationFailed,
    /// The provider refused to start the task (parameters, content policy, a model it does not
    /// serve).
    RequestRejected,
    /// The provider could not be used: it kept answering with errors, or gengate's own account
    /// with it needs an operator.
    ProviderUnavailable,
    /// The task did not finish before the model's deadline.
    DeadlineExceeded,
    /// The provider reported success with a result gengate will not hand out (a URL off the
    /// allowlist, or not in normal form).
    ResultRejected,
    /// The provider reported success without any result file.
    EmptyResult,
    /// A trusted server reported the job failed (`POST /api/generation/handle-failure`).
    ReportedFailure,
    /// An operator failed the job.
    Operator,
}

impl FailureKind {
    /// Every kind.
    pub const ALL: [FailureKind; 8] = [
        FailureKind::GenerationFailed,
        FailureKind::RequestRejected,
        FailureKind::ProviderUnavailable,
        FailureKind::DeadlineExceeded,
        FailureKind::ResultRejected,
        FailureKind::EmptyResult,
        FailureKind::ReportedFailure,
        FailureKind::Operator,
    ];

    /// The stable code clients match on (`failure.code`).
    pub fn code(self) -> &'static str {
        match self {
            FailureKind::GenerationFailed => "generation_failed",
            FailureKind::RequestRejected => "request_rejected",
            FailureKind::ProviderUnavailable => "provider_unavailable",
            FailureKind::DeadlineExceeded => "deadline_exceeded",
            FailureKind::ResultRejected => "result_rejected",
            FailureKind::EmptyResult => "empty_result",
            FailureKind::ReportedFailure => "polling_failed",
            FailureKind::Operator => "operator",
        }
    }

    /// What clients are told (`failure.message`).
    pub fn message(self) -> &'static str {
        match self {
            FailureKind::GenerationFailed => "the provider could not generate this request",
            FailureKind::RequestRejected => "the provider refused this request",
            FailureKind::ProviderUnavailable => {
                "the provider was unavailable; the job could not be started"
            }
            FailureKind::DeadlineExceeded => "the provider did not finish in time",
            FailureKind::ResultRejected => "the provider's result could not be accepted",
            FailureKind::EmptyResult => "the provider finished without a result",
            FailureKind::ReportedFailure => "the job was reported failed",
            FailureKind::Operator => "an operator ended the job",
        }
    }

    /// The kind of a stored code. Codes written before the kinds existed (a provider's own code)
    /// read as [`FailureKind::GenerationFailed`], so their text never reaches a client.
    pub fn from_code(code: &str) -> Self {
        FailureKind::ALL
            .into_iter()
            .find(|kind| kind.code() == code)
            .unwrap_or(FailureKind::GenerationFailed)
    }
}

/// A failure to record: the kind clients see, and what the provider (or whoever reported it)
/// said, for the audit log.
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    /// What clients are told.
    pub kind: FailureKind,
    /// The provider's own code, when there was one.
    pub provider_code: Option<String>,
    /// The raw explanation (a provider's message, a network error, a reporter's reason).
    pub detail: Option<String>,
}

impl Failure {
    /// A failure with nothing more to say than its kind.
    pub fn new(kind: FailureKind) -> Self {
        Self { kind, provider_code: None, detail: None }
    }

    /// A failure the provider explained.
    pub fn from_provider(kind: FailureKind, code: &str, message: &str) -> Self {
        Self { kind, provider_code: Some(code.to_owned()), detail: Some(message.to_owned()) }
    }

    /// A failure with an explanation for operators.
    pub fn with_detail(kind: FailureKind, detail: impl Into<String>) -> Self {
        Self { kind, provider_code: None, detail: Some(detail.into()) }
    }

    /// The audit log's account of it, merged into `extra` (an object, or nothing).
    pub fn audit_detail(&self, extra: Option<Value>) -> Value {
        let mut detail = match extra {
            Some(Value::Object(map)) => map,
            Some(other) => Map::from_iter([("detail".to_owned(), other)]),
            None => Map::new(),
        };
        detail.insert("failure".into(), json!(self.kind.code()));
        if let Some(code) = &self.provider_code {
            detail.insert("provider_code".into(), json!(code));
        }
        if let Some(message) = &self.detail {
            detail.insert("message".into(), json!(message));
        }
        Value::Object(detail)
    }
}

/// Longest piece of outside text (a provider's message, a URL) kept in the audit log.
pub const MAX_OUTSIDE_TEXT_CHARS: usize = 2000;

/// Text from outside (a provider's message, a webhook's URL) made safe to store and to log:
/// control characters (NUL, which PostgreSQL cannot store, and CR/LF, which could forge a log
/// line, among them) become `\u{fffd}`, and the text is cut at [`MAX_OUTSIDE_TEXT_CHARS`].
pub fn outside_text(raw: &str) -> String {
    let mut clean: String = raw
        .chars()
        .take(MAX_OUTSIDE_TEXT_CHARS)
        .map(|c| if c.is_control() { '\u{fffd}' } else { c })
        .collect();
    if raw.chars().nth(MAX_OUTSIDE_TEXT_CHARS).is_some() {
        clean.push('…');
    }
    clean
}

/// Every string (and object key) in `value` passed through [`outside_text`]: an audit row can
/// always be written, whatever a provider sent.
pub fn outside_json(value: &Value) -> Value {
    match value {
        Value::String(text) => Value::String(outside_text(text)),
        Value::Array(items) => Value::Array(items.iter().map(outside_json).collect()),
        Value::Object(map) => {
            Value::Object(map.iter().map(|(k, v)| (outside_text(k), outside_json(v))).collect())
        }
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_stable_and_read_back() {
        for kind in FailureKind::ALL {
            assert_eq!(FailureKind::from_code(kind.code()), kind);
            assert!(!kind.message().is_empty());
        }
        assert_eq!(FailureKind::from_code("1301"), FailureKind::GenerationFailed);
        assert_eq!(FailureKind::from_code("timeout"), FailureKind::GenerationFailed);
    }

    #[test]
    fn outside_text_loses_what_cannot_be_stored_or_forge_a_line() {
        assert_eq!(outside_text("a\u{0}b\r\nc\td"), "a\u{fffd}b\u{fffd}\u{fffd}c\u{fffd}d");
        assert_eq!(outside_text("plain words, ünïcode"), "plain words, ünïcode");
        let long = "x".repeat(MAX_OUTSIDE_TEXT_CHARS + 5);
        assert_eq!(outside_text(&long).chars().count(), MAX_OUTSIDE_TEXT_CHARS + 1);
        let json = outside_json(&json!({"k\u{0}": ["v\u{0}", 1, {"n": "\u{7}"}]}));
        assert_eq!(json, json!({"k\u{fffd}": ["v\u{fffd}", 1, {"n": "\u{fffd}"}]}));
    }

    #[test]
    fn the_audit_detail_keeps_the_providers_words() {
        let failure = Failure::from_provider(FailureKind::GenerationFailed, "501", "review");
        assert_eq!(
            failure.audit_detail(Some(json!({"source": "poll"}))),
            json!({"source": "poll", "failure": "generation_failed", "provider_code": "501",
                   "message": "review"})
        );
    }
}
