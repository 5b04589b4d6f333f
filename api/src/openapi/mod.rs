//! The OpenAPI 3.1 document of the public listener, generated from the code, served at
//! `GET /openapi.json`, and browsable at `GET /docs`.
//!
//! Every route of the public listener is registered through `utoipa_axum`'s `OpenApiRouter`
//! (`crate::routes`): `routes!(handler)` takes the path and method from the handler's
//! `#[utoipa::path]` attribute, both to route and to document, so a handler cannot be served at
//! one path and documented at another. The router and the document are split from that one
//! registration when the router is built, and the document is finished and serialized then, once
//! ([`Document::publish`]). What the registration cannot describe is added here: `/healthz` and
//! `/readyz` (served by `gengate_http::ops`, which the public router always merges), the client
//! webhooks (a top-level `webhooks` object, which utoipa has no model of), and, for each body
//! whose schema has an example, that example on the body itself.
//!
//! The tests hold the two together: `routes::tests` compares the routes the built router holds
//! with the document's operations, and the `openapi` end-to-end tests check that every
//! operation is served and that real answers match their documented schemas.

pub mod problems;
mod reference;
pub mod schemas;
#[cfg(test)]
mod tests;
mod webhooks;

use std::sync::{Arc, OnceLock};

use axum::Extension;
use axum::body::Bytes;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{self as spec, Content, RefOr, Schema};
use utoipa::{IntoParams, Modify, OpenApi};
use utoipa_axum::router::{OpenApiRouter, UtoipaMethodRouterExt};
use utoipa_axum::routes;

use crate::error::ApiError;
use crate::state::ApiContext;

/// The parts of the document that are not routes: its description, tags, security schemes, and
/// the schemas only error answers and webhooks refer to.
#[derive(Debug, OpenApi)]
#[openapi(
    info(
        title = "gengate",
        description = include_str!("description.md"),
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    tags(
        (name = "generations", description = "Submit, read, list and cancel generations \
            (`Authorization: Bearer <api key>`)."),
        (name = "models", description = "The model catalogue and its prices (no authentication)."),
        (name = "credits", description = "A user's credits: balance and grants, ledger timeline, \
            totals (`Authorization: Bearer <api key>`)."),
        (name = "files", description = "gengate's copies of result files, by the signed, \
            expiring links the generation object hands out."),
        (name = "provider-ingress", description = "The URLs gengate gives providers, and the \
            failure report of trusted servers; clients never call them."),
        (name = "admin", description = "Users, API keys, grants, balances, generations, default \
            webhook endpoints and webhook deliveries, for operators (`Authorization: Bearer \
            <admin token>`). When `api.admin_on_ops_listener` is set, these (and the failure \
            report) are served on the operations listener instead, and this document does not \
            list them."),
        (name = "operations", description = "Liveness and readiness, for load balancers and \
            supervisors."),
        (name = "kling", description = "Kling's own video API, served by gengate \
            (`/kling/v1/videos/…`): Kling's request bodies, answers and error codes, with a \
            gengate API key or a Kling JWT signed with a key pair issued with an API key \
            (`Authorization: Bearer …`). Errors are Kling's `{code, message, request_id}`, not \
            problems."),
        (name = "documentation", description = "This document, and its browsable reference."),
        (name = "webhooks", description = "Client webhooks: what gengate POSTs to a client's \
            URL (see the document's `webhooks`), and, by the client's API key, the secret that \
            signs them, the default endpoints an operator registered, and each generation's \
            delivery log (`Authorization: Bearer <api key>`)."),
    ),
    components(schemas(problems::Problem, schemas::WebhookEvent)),
    modifiers(&SecuritySchemes),
)]
pub struct ApiDoc;

/// The ways to authenticate.
#[derive(Debug)]
struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, api: &mut spec::OpenApi) {
        let components = api.components.get_or_insert_with(Default::default);
        let bearer = |format: &str, description: &str| {
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format(format)
                    .description(Some(description))
                    .build(),
            )
        };
        components.add_security_scheme(
            "api_key",
            bearer(
                "API key",
                "A user's API key (`POST /admin/users/{id}/api-keys`): \
                 `Authorization: Bearer <api key>`.",
            ),
        );
        components.add_security_scheme(
            "admin_token",
            bearer("token", "The admin token (`api.admin_token`)."),
        );
        components.add_security_scheme(
            "internal_token",
            bearer("token", "The token of trusted servers (`api.internal_token`)."),
        );
        components.add_security_scheme(
            "webhook_token",
            SecurityScheme::ApiKey(ApiKey::Query(ApiKeyValue::with_description(
                "token",
                "The generation's callback token, in the callback URL gengate gave the provider.",
            ))),
        );
    }
}

/// `Idempotency-Key` of a submit.
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Header)]
pub struct IdempotencyKey {
    /// Makes a retry safe: the same key with the same request (defaults spelled out or not)
    /// answers the original response again, with `Idempotent-Replayed: true`, and charges
    /// nothing; the same key with a different request is `409 idempotency_conflict`. Keys are per
    /// user; 1–255 printable ASCII characters.
    #[param(
        rename = "Idempotency-Key",
        nullable = false,
        min_length = 1,
        max_length = 255,
        pattern = "^[\\x20-\\x7E]+$",
        example = "order-A-1001-attempt"
    )]
    pub idempotency_key: Option<String>,
}

/// The document of one router, rendered once when the router is built and shared by every
/// request for `/openapi.json`.
#[derive(Debug, Clone, Default)]
pub(crate) struct Document(Arc<OnceLock<Bytes>>);

impl Document {
    /// Finishes the document split from the router's registration, and renders it for serving.
    pub(crate) fn publish(&self, api: spec::OpenApi) {
        let json = serde_json::to_vec(&finish(api)).expect("an OpenAPI document serializes");
        // A router is built once; a second document for it would be a bug, not a change.
        assert!(self.0.set(Bytes::from(json)).is_ok(), "the document is published once");
    }
}

/// `/openapi.json` and the reference at `/docs`.
pub(crate) fn routes(document: Document) -> OpenApiRouter<ApiContext> {
    OpenApiRouter::new()
        .routes(routes!(openapi_json).layer(Extension(document)))
        .merge(reference::routes())
}

/// This document.
///
/// The OpenAPI 3.1 document of this listener: every operation, its parameters, bodies and
/// answers (error answers are `application/problem+json`), and the client webhooks.
#[utoipa::path(
    get,
    path = "/openapi.json",
    operation_id = "getOpenApiDocument",
    tag = "documentation",
    responses(
        (status = OK, description = "The document.", body = serde_json::Value,
         content_type = "application/json",
         example = json!({"openapi": "3.1.0", "info": {"title": "gengate", "version": "0.1.0"},
                          "paths": {}})),
        problems::Common,
    ),
)]
async fn openapi_json(Extension(document): Extension<Document>) -> Response {
    let Some(json) = document.0.get() else {
        // The router publishes its document before it serves anything.
        return ApiError::Internal(anyhow::anyhow!("the OpenAPI document is not published"))
            .into_response();
    };
    let mut response =
        ([(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], json.clone())
            .into_response();
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

/// The probes `gengate_http::ops::probes` serves on every public listener, documented here
/// because that crate does not depend on utoipa.
#[derive(OpenApi)]
#[openapi(paths(healthz, readyz))]
struct Probes;

/// Liveness.
///
/// The process is alive (nothing else is checked).
#[utoipa::path(
    get,
    path = "/healthz",
    operation_id = "getHealth",
    tag = "operations",
    responses((status = OK, description = "Alive.", body = schemas::Health), problems::Common),
)]
#[allow(dead_code, reason = "documentation only: gengate_http::ops serves it")]
fn healthz() {}

/// Readiness.
///
/// PostgreSQL and RabbitMQ answer; `503 not_ready` names the ones that do not.
#[utoipa::path(
    get,
    path = "/readyz",
    operation_id = "getReadiness",
    tag = "operations",
    responses((status = OK, description = "Ready.", body = schemas::Readiness), problems::Readiness),
)]
#[allow(dead_code, reason = "documentation only: gengate_http::ops serves it")]
fn readyz() {}

/// The served document: the registration's, with the probes, the client webhooks, and the
/// examples of body schemas on the bodies themselves.
fn finish(mut api: spec::OpenApi) -> spec::OpenApi {
    api.merge(Probes::openapi());
    // axum's wildcard `{*key}` is a plain parameter in a path template (its value may hold `/`).
    api.paths.paths = std::mem::take(&mut api.paths.paths)
        .into_iter()
        .map(|(path, item)| (path.replace("{*", "{"), item))
        .collect();
    let schemas = api.components.as_ref().map(|c| c.schemas.clone()).unwrap_or_default();
    for item in api.paths.paths.values_mut() {
        let operations = [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.options,
            &mut item.head,
            &mut item.patch,
            &mut item.trace,
        ];
        for operation in operations.into_iter().flatten() {
            if let Some(body) = &mut operation.request_body {
                absent_not_null(body);
            }
            let bodies = operation.request_body.iter_mut().flat_map(|b| b.content.values_mut());
            let answers = operation.responses.responses.values_mut().flat_map(|r| match r {
                RefOr::T(response) => Some(response.content.values_mut()),
                RefOr::Ref(_) => None,
            });
            for content in bodies.chain(answers.flatten()) {
                lift_example(content, &schemas);
            }
        }
    }
    let extensions = api.extensions.get_or_insert_with(Default::default);
    extensions.insert("webhooks".to_owned(), webhooks::webhooks());
    api
}

/// An optional request body is one left out, never a JSON `null`: utoipa writes an `Option`'s
/// schema as "null or …", which here means only that the body may be absent.
fn absent_not_null(body: &mut spec::request_body::RequestBody) {
    if body.required == Some(spec::Required::True) {
        return;
    }
    for content in body.content.values_mut() {
        if let Some(RefOr::T(Schema::OneOf(one_of))) = &content.schema {
            let is_null = |item: &RefOr<Schema>| {
                matches!(item, RefOr::T(Schema::Object(o))
                    if o.schema_type == spec::schema::SchemaType::Type(spec::Type::Null))
            };
            let mut others = one_of.items.iter().filter(|item| !is_null(item));
            if let (Some(only), None) = (others.next(), others.next()) {
                content.schema = Some(only.clone());
            }
        }
    }
}

/// Gives a body whose schema is a component with an example that example, so that readers and
/// tools that show a body's example (rather than its schema's) show one.
fn lift_example(
    content: &mut Content,
    schemas: &std::collections::BTreeMap<String, RefOr<Schema>>,
) {
    if content.example.is_some() || !content.examples.is_empty() {
        return;
    }
    let Some(RefOr::Ref(reference)) = &content.schema else { return };
    let name = reference.ref_location.trim_start_matches("#/components/schemas/");
    content.example = match schemas.get(name) {
        Some(RefOr::T(Schema::Object(object))) => object.example.clone(),
        Some(RefOr::T(Schema::OneOf(one_of))) => one_of.example.clone(),
        _ => None,
    };
}
