//! The document lists exactly the routes the public router serves.
//!
//! `routes!` makes a handler's route and its documentation from one attribute, but a route can
//! still reach the router without it (an axum `Router` merged in, `.route(…)`, a nested service),
//! and the document has entries no registration made (the probes). So this test does not trust
//! the registration: it builds the real public router, as `gengate-api` serves it, reads the
//! routes that router holds, and compares them with the document that router serves at
//! `/openapi.json`, both ways. axum has no API to list a router's routes; its `Debug` form shows
//! them (each route's path and the methods of its `Allow` header). If a later axum prints them
//! differently, the parse finds nothing and the comparison fails loudly; it cannot pass
//! vacuously, because the document is never empty. The end-to-end tests (`tests/tests/e2e/
//! openapi.rs`) check the same from outside: every documented operation is answered by its
//! handler, never by the fallback or a 405.

use std::collections::{BTreeMap, BTreeSet};

use axum::Router;
use axum::body::Body;
use axum::http::Request;
use gengate_shared::config::Settings;
use gengate_shared::queue::Broker;
use gengate_shared::{db, telemetry};
use serde_json::Value;
use tower::ServiceExt;

use crate::state::ApiContext;

/// A method and a path, as the document writes them (`{*key}` is `{key}`).
type Operation = (String, String);

fn context(overrides: &[(&str, &str)]) -> ApiContext {
    let storage = std::env::temp_dir().join(format!("gengate-openapi-{}", uuid::Uuid::new_v4()));
    let mut env: BTreeMap<String, String> = [
        ("GENGATE__WEBHOOK__SECRET", "a-webhook-secret-for-the-openapi-tests"),
        // Never connected to: the pool is lazy, and nothing here queries.
        ("GENGATE__DATABASE__URL", "postgres://gengate@127.0.0.1:1/none"),
        ("GENGATE__AMQP__URL", "amqp://guest:guest@127.0.0.1:1/%2f"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    env.insert("GENGATE__STORAGE__PATH".to_owned(), storage.display().to_string());
    env.extend(overrides.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
    let settings = Settings::load_from(None, Some(env)).expect("test settings");
    let pool = db::lazy_pool(&settings.database, "gengate-api-openapi-test").expect("lazy pool");
    let broker = Broker::new(&settings.amqp, "gengate-api-openapi-test");
    ApiContext::new(settings, pool, broker, telemetry::metrics_handle()).expect("context")
}

/// The routes `router` holds, read from its `Debug` form: the `path_router` part (not the
/// fallback's), each `RouteId(n): "path"` of its node, and each route's `allow_header`. HEAD,
/// which axum adds to every GET, is left out.
fn served(router: &Router) -> BTreeSet<Operation> {
    let text = format!("{router:?}");
    let section = text
        .split_once("path_router: PathRouter {")
        .and_then(|(_, rest)| rest.split_once("fallback_router:"))
        .map(|(section, _)| section)
        .expect("axum's Router Debug shows path_router before fallback_router");
    let (routes, node) =
        section.split_once("node: Node {").expect("the path router's node follows its routes");
    let mut paths = BTreeMap::new();
    for entry in node.split("RouteId(").skip(1) {
        let (id, rest) = entry.split_once(')').expect("RouteId(n)");
        let path = rest.split('"').nth(1).expect("RouteId(n): \"path\"");
        paths.insert(id.to_owned(), path.replace("{*", "{"));
    }
    let mut operations = BTreeSet::new();
    for entry in routes.split("RouteId(").skip(1) {
        let (id, rest) = entry.split_once(')').expect("RouteId(n)");
        let path = paths.get(id).unwrap_or_else(|| panic!("route {id} has a path")).clone();
        // A route without an `Allow` header list is a service that takes any method.
        let methods = rest
            .split_once("allow_header: Bytes(b\"")
            .and_then(|(_, rest)| rest.split_once('"'))
            .map_or("*", |(methods, _)| methods);
        for method in methods.split(',').filter(|m| *m != "HEAD") {
            operations.insert((method.to_owned(), path.clone()));
        }
    }
    operations
}

/// The operations `document` lists.
fn documented(document: &Value) -> BTreeSet<Operation> {
    let mut operations = BTreeSet::new();
    for (path, item) in document["paths"].as_object().expect("paths") {
        for method in ["get", "put", "post", "delete", "options", "head", "patch", "trace"] {
            if item.get(method).is_some() {
                operations.insert((method.to_uppercase(), path.clone()));
            }
        }
    }
    operations
}

async fn served_document(router: Router) -> Value {
    let request = Request::get("/openapi.json").body(Body::empty()).expect("a request");
    let response = router.oneshot(request).await.expect("an answer");
    assert_eq!(response.status(), 200);
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX).await.expect("a body");
    serde_json::from_slice(&bytes).expect("the document is JSON")
}

async fn assert_documents_exactly_what_it_serves(overrides: &[(&str, &str)]) -> Value {
    let router = crate::routes::router(context(overrides));
    let served = served(&router);
    let document = served_document(router).await;
    let documented = documented(&document);
    let undocumented: Vec<_> = served.difference(&documented).collect();
    let unserved: Vec<_> = documented.difference(&served).collect();
    assert!(
        undocumented.is_empty() && unserved.is_empty(),
        "served but not in the document (register them with `routes!` and a `#[utoipa::path]`): \
         {undocumented:?}\nin the document but not served: {unserved:?}"
    );
    document
}

#[tokio::test]
async fn the_public_router_serves_exactly_the_operations_its_document_lists() {
    let document = assert_documents_exactly_what_it_serves(&[]).await;
    // Not vacuous: the parse found the routes of every area.
    let listed = documented(&document);
    for (method, path) in [
        ("POST", "/v1/generations"),
        ("GET", "/files/{key}"),
        ("POST", "/kling/callback/{generation_id}"),
        ("POST", "/admin/users"),
        ("GET", "/readyz"),
        ("GET", "/docs/{asset}"),
    ] {
        assert!(listed.contains(&(method.to_owned(), path.to_owned())), "{method} {path}");
    }
}

#[tokio::test]
async fn operator_routes_moved_to_the_ops_listener_leave_the_public_document() {
    let document =
        assert_documents_exactly_what_it_serves(&[("GENGATE__API__ADMIN_ON_OPS_LISTENER", "true")])
            .await;
    let paths = document["paths"].as_object().expect("paths");
    assert!(!paths.keys().any(|p| p.starts_with("/admin/")), "{:?}", paths.keys());
    assert!(!paths.contains_key("/api/generation/handle-failure"));
    assert!(paths.contains_key("/v1/generations"));
}

#[test]
fn the_router_debug_parse_reads_paths_methods_and_wildcards() {
    async fn ok() {}
    let router: Router = Router::new()
        .route("/a/{id}", axum::routing::get(ok).post(ok))
        .route("/files/{*key}", axum::routing::get(ok))
        .route_service(
            "/any",
            tower::service_fn(|_: Request<Body>| async {
                Ok::<_, std::convert::Infallible>(axum::response::Response::new(Body::empty()))
            }),
        )
        .fallback(ok);
    let expected: BTreeSet<Operation> =
        [("GET", "/a/{id}"), ("POST", "/a/{id}"), ("GET", "/files/{key}"), ("*", "/any")]
            .into_iter()
            .map(|(m, p)| (m.to_owned(), p.to_owned()))
            .collect();
    assert_eq!(served(&router), expected);
}
