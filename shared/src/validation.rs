//! Rules every string a client sends must follow before gengate stores it or passes it on.
//!
//! Control characters are refused: NUL cannot be stored by PostgreSQL at all (a request carrying
//! one used to fail with a 500), and the others have no business in a prompt, a name or an
//! identifier, where they can forge log lines or confuse whoever reads the text next. Free text
//! (prompts, names, metadata values) may still span lines: tab, line feed and carriage return are
//! allowed there.

use serde::Serialize;
use serde_json::Value;

/// One field of a request that failed validation.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct FieldError {
    /// The field's path in the request, e.g. `duration` or `image_urls[1]`.
    pub field: String,
    /// What is wrong with it.
    pub message: String,
}

impl FieldError {
    /// A failing field.
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self { field: field.into(), message: message.into() }
    }
}

/// Whether a piece of text may span lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Text {
    /// Free text: tab, line feed and carriage return are allowed, no other control character.
    Free,
    /// An identifier, a URL, a code: no control character at all.
    Token,
}

impl Text {
    /// Why `text` breaks the rule, or `None` when it follows it.
    pub fn check(self, text: &str) -> Option<&'static str> {
        let refused = |c: char| match self {
            Text::Free => c.is_control() && !matches!(c, '\t' | '\n' | '\r'),
            Text::Token => c.is_control(),
        };
        text.chars().any(refused).then_some(match self {
            Text::Free => "must not contain control characters (other than tab and line breaks)",
            Text::Token => "must not contain control characters",
        })
    }

    /// The rule as a field error for `field`, if `text` breaks it.
    pub fn field_error(self, field: &str, text: &str) -> Option<FieldError> {
        self.check(text).map(|why| FieldError::new(field, why))
    }
}

/// Checks every string and object key in a JSON value (client metadata) as free text; the
/// first offender, by its path under `field` (`metadata.tags[2]`).
pub fn json_strings(field: &str, value: &Value) -> Option<FieldError> {
    match value {
        Value::String(text) => Text::Free.field_error(field, text),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .find_map(|(i, item)| json_strings(&format!("{field}[{i}]"), item)),
        Value::Object(map) => map.iter().find_map(|(key, item)| {
            let path = format!("{field}.{key}");
            Text::Token
                .check(key)
                .map(|why| FieldError::new(&path, format!("key {why}")))
                .or_else(|| json_strings(&path, item))
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn free_text_may_span_lines_tokens_may_not() {
        assert_eq!(Text::Free.check("a cat\non a\tlawn\r\n"), None);
        assert!(Text::Free.check("a\u{0}cat").is_some());
        assert!(Text::Free.check("bell\u{7}").is_some());
        assert!(Text::Free.check("c1 \u{85}").is_some());
        assert!(Text::Token.check("kling\n").is_some());
        assert_eq!(Text::Token.check("kling-v1-6-pro"), None);
        assert_eq!(Text::Free.check("ünïcode, emoji 🎬, 中文"), None);
    }

    #[test]
    fn metadata_offenders_are_named_by_path() {
        let ok = json!({"a": ["x\ny", 1, {"b": null}]});
        assert_eq!(json_strings("metadata", &ok), None);
        let bad = json!({"a": [1, {"b": "x\u{0}"}]});
        assert_eq!(json_strings("metadata", &bad).unwrap().field, "metadata.a[1].b");
        let bad_key = json!({"k\u{0}": 1});
        assert!(json_strings("metadata", &bad_key).is_some());
    }
}
