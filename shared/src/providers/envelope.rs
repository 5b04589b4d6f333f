//! What Kling's and kie.ai's answers have in common: a JSON envelope `{code, message|msg, data}`,
//! and scalars that the documentation shows sometimes as strings, sometimes as numbers. Reading
//! them leniently here keeps one provider's quirk from failing a job.

use serde_json::Value;

/// The parts of an answer every adapter looks at.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Envelope {
    /// The provider's own code (`0` for Kling success, `200` for kie success), if it sent one.
    pub code: Option<i64>,
    /// `message` or `msg`, whichever the provider used; else a bit of the raw body.
    pub message: String,
    /// `data`, when present and not `null`.
    pub data: Option<Value>,
}

/// How much of a body that is not JSON ends up in an error message.
const SNIPPET_CHARS: usize = 200;

impl Envelope {
    /// Reads an answer body; a body that is not a JSON object gives no code and a snippet of the
    /// text as the message, so the classification falls back on the HTTP status.
    pub(crate) fn parse(body: &[u8]) -> Self {
        match serde_json::from_slice::<Value>(body) {
            Ok(Value::Object(mut object)) => {
                let code = object.get("code").and_then(integer);
                let message = ["message", "msg"]
                    .iter()
                    .find_map(|key| object.get(*key).and_then(Value::as_str))
                    .unwrap_or_default()
                    .to_owned();
                let data = object.remove("data").filter(|data| !data.is_null());
                Self { code, message, data }
            }
            _ => Self { code: None, message: snippet(body), data: None },
        }
    }
}

/// A number, or a string holding one (`1303`, `"1303"`).
pub(crate) fn integer(value: &Value) -> Option<i64> {
    match value {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// A non-empty string, or a number written as one (`"5"`, `5`).
pub(crate) fn text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// The start of a body that is not JSON, for error messages.
fn snippet(body: &[u8]) -> String {
    String::from_utf8_lossy(body).chars().take(SNIPPET_CHARS).collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn reads_either_message_key_and_stringly_codes() {
        let kling = Envelope::parse(br#"{"code":"1303","message":"busy","request_id":"r"}"#);
        assert_eq!((kling.code, kling.message.as_str(), kling.data), (Some(1303), "busy", None));
        let kie = Envelope::parse(br#"{"code":200,"msg":"success","data":{"taskId":"t"}}"#);
        assert_eq!((kie.code, kie.data), (Some(200), Some(json!({"taskId": "t"}))));
    }

    #[test]
    fn a_body_that_is_not_json_becomes_the_message() {
        let html = Envelope::parse(b"<html>502 Bad Gateway</html>");
        assert_eq!((html.code, html.message.as_str()), (None, "<html>502 Bad Gateway</html>"));
    }
}
