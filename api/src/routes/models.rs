//! The model catalogue, as clients choose from it.

use axum::Router;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use gengate_shared::catalogue::price;
use serde_json::{Value, json};

use crate::state::ApiContext;

/// The catalogue route (public: prices are not secret).
pub(crate) fn routes() -> Router<ApiContext> {
    Router::new().route("/v1/models", get(models))
}

async fn models(State(ctx): State<ApiContext>) -> Response {
    let data: Vec<Value> = ctx
        .catalogue
        .models()
        .map(|model| {
            let mut entry = serde_json::to_value(model).expect("a model serializes");
            // The price of each mode at the defaults, so a client can show "from N credits".
            let defaults: serde_json::Map<String, Value> = model
                .modes
                .iter()
                .map(|mode| {
                    let cost = price(
                        model,
                        *mode,
                        model.durations.first().copied(),
                        model.aspect_ratios.first().map(String::as_str),
                        model.default_quality.as_deref(),
                    );
                    (mode.as_str().to_owned(), json!(cost))
                })
                .collect();
            entry["default_prices"] = Value::Object(defaults);
            entry
        })
        .collect();
    let sub_types: Vec<&str> = ctx.catalogue.sub_types().collect();
    axum::Json(json!({"version": ctx.catalogue.version, "sub_types": sub_types, "data": data}))
        .into_response()
}
