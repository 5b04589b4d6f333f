//! The model catalogue, as clients choose from it.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use gengate_shared::catalogue::price;
use serde_json::{Value, json};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::openapi::{problems, schemas};
use crate::state::ApiContext;

/// The catalogue route (public: prices are not secret).
pub(crate) fn routes() -> OpenApiRouter<ApiContext> {
    OpenApiRouter::new().routes(routes!(models))
}

/// List the models.
///
/// The models a request may name, with what each offers and its prices. Prices are whole
/// credits, rounded up: for videos `base_price × ⌈duration / 5⌉ × aspect × mode × quality`
/// (aspect 16:9 and 9:16 → 1.2, 1:1 → 1.0, 21:9 and 9:21 → 1.3; mode text2video 1.0,
/// image2video 1.1, omni-video 1.2, multi-image2video 1.3), for images `base_price × quality`.
/// A generation keeps the price and catalogue `version` it was accepted with.
#[utoipa::path(
    get,
    path = "/v1/models",
    operation_id = "listModels",
    tag = "models",
    responses(
        (status = OK, description = "The catalogue.", body = schemas::ModelCatalogue),
        problems::Common,
    ),
)]
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
