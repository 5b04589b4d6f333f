//! Camera control: how the camera moves through a generated video, in the shape Kling's API takes
//! it (`camera_control: {type, config?}`), so it passes through to Kling unchanged and the
//! Kling-compatible API can take it as Kling's clients send it.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::validation::FieldError;

/// Largest magnitude of a `simple` movement's value (Kling's range is −10 to 10).
const MAX_AMOUNT: f64 = 10.0;

/// The six axes of a `simple` movement, in Kling's order.
const AXES: [&str; 6] = ["horizontal", "vertical", "pan", "tilt", "roll", "zoom"];

/// The preset movements; `simple` is the one movement along one axis that `config` describes.
const KINDS: [&str; 5] =
    ["simple", "down_back", "forward_up", "right_turn_forward", "left_turn_forward"];

/// A camera movement.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CameraControl {
    /// `simple` or one of the presets (`down_back`, `forward_up`, `right_turn_forward`,
    /// `left_turn_forward`).
    #[serde(rename = "type")]
    pub kind: String,
    /// For `simple` only: how far along each axis; exactly one is not zero.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<Map<String, Value>>,
}

// Only finite numbers are ever stored (see `parse`), so equality is total.
impl Eq for CameraControl {}

impl CameraControl {
    /// Reads a request's `camera_control` (reported under `field`): every problem at once.
    /// A `simple` movement's axes left out are 0, and are written out, so two requests that mean
    /// the same movement are the same request.
    pub fn parse(value: &Value, field: &str) -> Result<CameraControl, Vec<FieldError>> {
        let mut errors = Vec::new();
        let Some(object) = value.as_object() else {
            return Err(vec![FieldError::new(field, "must be an object with a type")]);
        };
        for key in object.keys() {
            if key != "type" && key != "config" {
                errors.push(FieldError::new(format!("{field}.{key}"), "unknown field"));
            }
        }
        let kind = match object.get("type") {
            Some(Value::String(kind)) if KINDS.contains(&kind.as_str()) => Some(kind.clone()),
            _ => {
                errors.push(FieldError::new(
                    format!("{field}.type"),
                    format!("must be one of {}", KINDS.join(", ")),
                ));
                None
            }
        };
        let config = match (kind.as_deref(), object.get("config").filter(|c| !c.is_null())) {
            (Some("simple"), None) => {
                errors.push(FieldError::new(
                    format!("{field}.config"),
                    "is required for a simple movement",
                ));
                None
            }
            (Some("simple"), Some(config)) => {
                simple_config(config, &format!("{field}.config"), &mut errors)
            }
            (Some(_), Some(_)) => {
                errors.push(FieldError::new(
                    format!("{field}.config"),
                    "only a simple movement takes a config",
                ));
                None
            }
            (_, _) => None,
        };
        match kind {
            Some(kind) if errors.is_empty() => Ok(CameraControl { kind, config }),
            _ => Err(errors),
        }
    }
}

/// A `simple` movement's axes: numbers from −10 to 10, exactly one of them not zero.
fn simple_config(
    config: &Value,
    field: &str,
    errors: &mut Vec<FieldError>,
) -> Option<Map<String, Value>> {
    let Some(given) = config.as_object() else {
        errors.push(FieldError::new(field, "must be an object"));
        return None;
    };
    let before = errors.len();
    for key in given.keys() {
        if !AXES.contains(&key.as_str()) {
            errors.push(FieldError::new(
                format!("{field}.{key}"),
                format!("unknown axis; one of {}", AXES.join(", ")),
            ));
        }
    }
    let mut axes = Map::new();
    let mut moving = 0;
    for axis in AXES {
        let amount = match given.get(axis) {
            None | Some(Value::Null) => 0.0,
            Some(value) => match value.as_f64() {
                Some(amount) if amount.abs() <= MAX_AMOUNT => amount,
                _ => {
                    errors.push(FieldError::new(
                        format!("{field}.{axis}"),
                        format!("must be a number from -{MAX_AMOUNT} to {MAX_AMOUNT}"),
                    ));
                    0.0
                }
            },
        };
        if amount != 0.0 {
            moving += 1;
        }
        axes.insert(axis.to_owned(), Value::from(amount));
    }
    if errors.len() == before && moving != 1 {
        errors.push(FieldError::new(field, "exactly one axis must be non-zero"));
    }
    (errors.len() == before).then_some(axes)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn fields(result: Result<CameraControl, Vec<FieldError>>) -> Vec<String> {
        result.unwrap_err().into_iter().map(|e| e.field).collect()
    }

    #[test]
    fn a_simple_movement_names_one_axis_and_the_rest_are_written_out_as_zero() {
        let control =
            CameraControl::parse(&json!({"type": "simple", "config": {"zoom": 5}}), "c").unwrap();
        assert_eq!(
            serde_json::to_value(&control).unwrap(),
            json!({"type": "simple", "config": {"horizontal": 0.0, "vertical": 0.0, "pan": 0.0,
                   "tilt": 0.0, "roll": 0.0, "zoom": 5.0}})
        );
        let preset = CameraControl::parse(&json!({"type": "down_back"}), "c").unwrap();
        assert_eq!(serde_json::to_value(&preset).unwrap(), json!({"type": "down_back"}));
    }

    #[test]
    fn every_wrong_part_is_named() {
        assert_eq!(fields(CameraControl::parse(&json!("zoom"), "c")), ["c"]);
        assert_eq!(fields(CameraControl::parse(&json!({"type": "spin"}), "c")), ["c.type"]);
        assert_eq!(fields(CameraControl::parse(&json!({"type": "simple"}), "c")), ["c.config"]);
        assert_eq!(
            fields(CameraControl::parse(&json!({"type": "forward_up", "config": {"pan": 1}}), "c")),
            ["c.config"]
        );
        assert_eq!(
            fields(CameraControl::parse(
                &json!({"type": "simple", "config": {"pan": 11, "spin": 1}, "speed": 2}),
                "c"
            )),
            ["c.speed", "c.config.spin", "c.config.pan"]
        );
        // None moving, or two at once.
        for config in [json!({}), json!({"pan": 0}), json!({"pan": 1, "tilt": -1})] {
            let body = json!({"type": "simple", "config": config});
            assert_eq!(fields(CameraControl::parse(&body, "c")), ["c.config"], "{body}");
        }
    }
}
