//! The OpenAPI document (`GET /openapi.json`) and the browsable reference (`GET /docs`).
//!
//! - The document is valid OpenAPI 3.1 as far as Rust can check it alone (version, every `$ref`
//!   resolves, unique operation ids, path parameters, error answers as problem+json, every
//!   example valid against its schema), and by `openapi-spec-validator` too where Python has it.
//! - It lists what the router serves, and only that. Two checks, from two sides:
//!   `gengate_api::openapi::tests` builds the real public router in process and compares the
//!   routes it holds (read from the router itself, not from the registration) with the document;
//!   [`every_documented_operation_is_served_and_no_other_method_is`] checks the binary from
//!   outside: every documented operation is answered by its handler (never the 404 fallback or a
//!   405), with a status the document lists for it, and every other method on a documented path
//!   is a 405.
//! - What the handlers really answer matches the document: real answers (successes and errors)
//!   are validated against the schema the document gives for their operation and status, with
//!   `jsonschema` (OpenAPI 3.1 schemas are JSON Schema 2020-12). The documented structs are
//!   closed (`additionalProperties: false`) and list their always-present members as required,
//!   so an added, renamed or dropped member fails these tests.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::time::Duration;

use gengate_tests::harness::eventually;
use gengate_tests::harness::receiver::Receiver;
use gengate_tests::requests::kling;
use gengate_tests::{ADMIN_TOKEN, INTERNAL_TOKEN, TestApp, TestUser};
use serde_json::{Value, json};

const METHODS: [&str; 8] = ["get", "put", "post", "delete", "options", "head", "patch", "trace"];

/// The served document, and the real answers checked against it.
struct Spec {
    document: Value,
    /// `(operationId, status)` of every answer checked.
    checked: Mutex<BTreeSet<(String, u16)>>,
}

impl Spec {
    async fn fetch(app: &TestApp) -> Spec {
        let response = app.get("/openapi.json").await;
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["content-type"], "application/json");
        let document: Value = response.json().await.expect("the document is JSON");
        Spec { document, checked: Mutex::new(BTreeSet::new()) }
    }

    /// Every operation: `(method, path, operation)`, the webhooks' included (path = event).
    fn operations(&self) -> Vec<(String, String, &Value)> {
        let mut operations = Vec::new();
        for section in ["paths", "webhooks"] {
            for (path, item) in self.document[section].as_object().expect(section) {
                for method in METHODS {
                    if let Some(operation) = item.get(method) {
                        operations.push((method.to_owned(), path.clone(), operation));
                    }
                }
            }
        }
        operations
    }

    fn operation(&self, id: &str) -> &Value {
        self.operations()
            .into_iter()
            .find(|(_, _, op)| op["operationId"] == id)
            .unwrap_or_else(|| panic!("no operation {id}"))
            .2
    }

    /// Validates `instance` against `schema`, a schema of this document: the validator's root
    /// holds the document's components, so `#/components/schemas/…` resolves as in the document.
    fn validate(&self, schema: &Value, instance: &Value) -> Result<(), Vec<String>> {
        let root = json!({
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "components": self.document["components"],
            "allOf": [schema],
        });
        let validator = jsonschema::options()
            .with_draft(jsonschema::Draft::Draft202012)
            .should_validate_formats(true)
            .build(&root)
            .unwrap_or_else(|e| panic!("schema {schema} does not compile: {e}"));
        let errors: Vec<String> = validator
            .iter_errors(instance)
            .map(|e| format!("{e} (at {})", e.instance_path()))
            .collect();
        if errors.is_empty() { Ok(()) } else { Err(errors) }
    }

    /// Checks a real answer of `operation_id`: its status is one the operation documents, its
    /// content type one documented for that status, and its body (JSON) valid against that
    /// content's schema. Returns the body (`Null` when it is not JSON).
    async fn check(&self, operation_id: &str, response: reqwest::Response) -> Value {
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().split(';').next().unwrap().trim().to_owned());
        let text = response.text().await.expect("a body");
        let operation = self.operation(operation_id);
        let documented = operation["responses"].get(status.to_string()).unwrap_or_else(|| {
            panic!("{operation_id} answered {status}, which it does not document: {text}")
        });
        self.checked.lock().unwrap().insert((operation_id.to_owned(), status));
        let Some(content) = documented.get("content") else {
            assert!(text.is_empty(), "{operation_id} {status} documents no body: {text}");
            return Value::Null;
        };
        let content_type = content_type.expect("a content type");
        let media = content.get(&content_type).unwrap_or_else(|| {
            panic!("{operation_id} {status} answered {content_type}, not one of {content}")
        });
        if !content_type.ends_with("json") {
            return Value::Null;
        }
        if status >= 400 {
            assert_eq!(content_type, "application/problem+json", "{operation_id} {status}");
        }
        let body: Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{operation_id} {status}: not JSON ({e}): {text}"));
        if let Err(errors) = self.validate(&media["schema"], &body) {
            panic!(
                "{operation_id} {status} does not match its documented schema:\n{errors:#?}\n{body:#}"
            );
        }
        body
    }

    /// Asserts that `answers` were all checked: these tests cannot lose one silently.
    fn assert_checked(&self, answers: &[(&str, u16)]) {
        let checked = self.checked.lock().unwrap();
        let missing: Vec<_> = answers
            .iter()
            .filter(|(id, status)| !checked.contains(&((*id).to_owned(), *status)))
            .collect();
        assert!(missing.is_empty(), "answers never checked: {missing:?}");
    }
}

/// Every `$ref` string in `value`, with where it is.
fn refs<'a>(value: &'a Value, at: String, out: &mut Vec<(String, &'a str)>) {
    match value {
        Value::Object(map) => {
            for (key, child) in map {
                match (key.as_str(), child) {
                    ("$ref", Value::String(target)) => out.push((at.clone(), target)),
                    _ => refs(child, format!("{at}/{key}"), out),
                }
            }
        }
        Value::Array(items) => {
            for (i, child) in items.iter().enumerate() {
                refs(child, format!("{at}/{i}"), out);
            }
        }
        _ => {}
    }
}

/// The examples of a media type (`example` and each of `examples`).
fn media_examples(media: &Value) -> Vec<&Value> {
    let mut examples: Vec<&Value> = media.get("example").into_iter().collect();
    if let Some(named) = media.get("examples").and_then(Value::as_object) {
        examples.extend(named.values().map(|e| &e["value"]));
    }
    examples
}

#[tokio::test]
async fn the_document_is_valid_openapi_3_1() {
    let app = TestApp::spawn().await;
    let spec = Spec::fetch(&app).await;
    let document = &spec.document;

    assert!(document["openapi"].as_str().unwrap().starts_with("3.1"), "{}", document["openapi"]);
    assert_eq!(document["info"]["title"], "gengate");
    assert!(document["info"]["version"].is_string());

    // Every reference resolves inside the document.
    let mut found = Vec::new();
    refs(document, String::new(), &mut found);
    assert!(found.len() > 50, "only {} references: the walk is broken", found.len());
    for (at, target) in &found {
        let pointer =
            target.strip_prefix('#').unwrap_or_else(|| panic!("{at}: {target} is remote"));
        assert!(document.pointer(pointer).is_some(), "{at}: {target} does not resolve");
    }

    // Operations: unique ids, tags, summaries, answers, known security schemes.
    let tags: BTreeSet<&str> =
        document["tags"].as_array().unwrap().iter().map(|t| t["name"].as_str().unwrap()).collect();
    let schemes = document["components"]["securitySchemes"].as_object().unwrap();
    let mut ids = BTreeSet::new();
    for (method, path, operation) in spec.operations() {
        let id = operation["operationId"].as_str().unwrap_or_else(|| panic!("{method} {path}"));
        assert!(ids.insert(id.to_owned()), "operationId {id} twice");
        assert!(
            id.chars().next().unwrap().is_ascii_lowercase()
                && id.chars().all(char::is_alphanumeric),
            "{id}: operation ids are camelCase"
        );
        assert!(operation["summary"].as_str().is_some_and(|s| !s.is_empty()), "{id}: summary");
        let op_tags = operation["tags"].as_array().unwrap_or_else(|| panic!("{id}: tags"));
        assert!(!op_tags.is_empty(), "{id}: tags");
        for tag in op_tags {
            assert!(tags.contains(tag.as_str().unwrap()), "{id}: tag {tag} is not declared");
        }
        assert!(!operation["responses"].as_object().unwrap().is_empty(), "{id}: responses");
        for requirement in operation["security"].as_array().into_iter().flatten() {
            for scheme in requirement.as_object().unwrap().keys() {
                assert!(schemes.contains_key(scheme), "{id}: unknown security scheme {scheme}");
            }
        }
    }
    assert!(ids.len() >= 28, "{ids:?}");

    // Path templates and path parameters agree.
    for (path, item) in document["paths"].as_object().unwrap() {
        let templated: BTreeSet<&str> =
            path.split('{').skip(1).map(|part| part.split('}').next().unwrap()).collect();
        for method in METHODS {
            let Some(operation) = item.get(method) else { continue };
            let declared: BTreeSet<&str> = operation["parameters"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|p| p["in"] == "path")
                .inspect(|p| assert_eq!(p["required"], true, "{method} {path}: {p}"))
                .map(|p| p["name"].as_str().unwrap())
                .collect();
            assert_eq!(templated, declared, "{method} {path}");
        }
    }

    // Error answers are problem+json, name their codes, and carry an example of each.
    let problem_codes: BTreeSet<&str> = document["components"]["schemas"]["Problem"]["properties"]
        ["code"]["enum"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    // (The webhooks' answers are the client's, not gengate's: they are not problems; nor are the
    // Kling-compatible API's, which answers errors in Kling's own envelope.)
    let webhooks = spec.document["webhooks"].as_object().unwrap();
    for (method, path, operation) in spec.operations() {
        if webhooks.contains_key(&path) || path.starts_with("/kling/v1/") {
            continue;
        }
        for (status, response) in operation["responses"].as_object().unwrap() {
            let Ok(number) = status.parse::<u16>() else { continue };
            if number < 400 {
                continue;
            }
            let content = response["content"].as_object().unwrap();
            assert_eq!(content.keys().collect::<Vec<_>>(), ["application/problem+json"]);
            let schema = &content["application/problem+json"]["schema"];
            assert_eq!(schema["allOf"][0]["$ref"], "#/components/schemas/Problem");
            assert_eq!(schema["allOf"][1]["properties"]["status"]["enum"], json!([number]));
            let codes = schema["allOf"][1]["properties"]["code"]["enum"].as_array().unwrap();
            assert!(!codes.is_empty(), "{method} {path} {status}");
            for code in codes {
                let code = code.as_str().unwrap();
                assert!(problem_codes.contains(code), "{method} {path} {status}: {code}");
                let example = &content["application/problem+json"]["examples"][code]["value"];
                assert_eq!(example["code"], code, "{method} {path} {status}: example of {code}");
                assert!(
                    response["description"].as_str().unwrap().contains(&format!("`{code}`")),
                    "{method} {path} {status}: the description says when {code} is answered"
                );
            }
        }
    }

    // Every JSON body has an example, and every example (bodies and component schemas) is
    // valid against its schema.
    let mut examples = 0;
    for (method, path, operation) in spec.operations() {
        let bodies = operation["requestBody"]["content"].as_object().into_iter().flatten();
        let answers = operation["responses"]
            .as_object()
            .unwrap()
            .values()
            .filter_map(|r| r["content"].as_object())
            .flatten();
        for (content_type, media) in bodies.chain(answers) {
            if !content_type.ends_with("json") {
                continue;
            }
            let found = media_examples(media);
            assert!(!found.is_empty(), "{method} {path}: a {content_type} body without an example");
            for example in found {
                examples += 1;
                if let Err(errors) = spec.validate(&media["schema"], example) {
                    panic!("{method} {path}: an example does not match its schema: {errors:#?}");
                }
            }
        }
    }
    for (name, schema) in document["components"]["schemas"].as_object().unwrap() {
        if let Some(example) = schema.get("example") {
            examples += 1;
            let reference = json!({"$ref": format!("#/components/schemas/{name}")});
            if let Err(errors) = spec.validate(&reference, example) {
                panic!("the example of {name} does not match it: {errors:#?}");
            }
        }
        // Structs are closed: a member the document does not know fails validation.
        if schema.get("properties").is_some() {
            assert_eq!(schema["additionalProperties"], false, "{name} is not closed");
        }
    }
    assert!(examples > 60, "only {examples} examples checked");

    // The submit: its header, body, answers and their headers.
    let submit = spec.operation("createGeneration");
    let header = submit["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "Idempotency-Key")
        .expect("the Idempotency-Key parameter");
    assert_eq!(header["in"], "header");
    assert_eq!(header["schema"]["maxLength"], 255);
    for status in ["202", "400", "401", "402", "409", "413", "415", "422", "429"] {
        assert!(submit["responses"].get(status).is_some(), "createGeneration {status}");
    }
    assert!(submit["responses"]["202"]["headers"].get("Idempotent-Replayed").is_some());
    assert!(submit["responses"]["429"]["headers"].get("Retry-After").is_some());
    let codes = |status: &str| {
        submit["responses"][status]["content"]["application/problem+json"]
        ["schema"]["allOf"][1]["properties"]["code"]["enum"]
        .clone()
    };
    assert_eq!(codes("402"), json!(["insufficient_credits", "outstanding_debt"]));
    assert_eq!(codes("409"), json!(["idempotency_conflict"]));
    assert_eq!(codes("429"), json!(["too_many_in_flight", "rate_limited"]));
    let request = &document["components"]["schemas"]["CreateGenerationRequest"];
    let members: BTreeSet<&str> =
        request["properties"].as_object().unwrap().keys().map(String::as_str).collect();
    let expected: BTreeSet<&str> = [
        "model",
        "mode",
        "prompt",
        "negative_prompt",
        "duration",
        "aspect_ratio",
        "quality",
        "image_urls",
        "end_image_url",
        "camera_control",
        "sub_type",
        "metadata",
        "webhook_url",
        "webhook_events",
    ]
    .into();
    assert_eq!(members, expected);
    assert_eq!(request["required"], json!(["model", "mode"]));

    // The client webhooks.
    let webhooks = document["webhooks"].as_object().expect("webhooks");
    let events: Vec<&str> = webhooks.keys().map(String::as_str).collect();
    assert_eq!(
        events.iter().copied().collect::<BTreeSet<_>>(),
        [
            "generation.archived",
            "generation.canceled",
            "generation.completed",
            "generation.failed",
            "generation.processing"
        ]
        .into()
    );
    for (event, item) in webhooks {
        let post = &item["post"];
        let headers: Vec<&str> = post["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .inspect(|p| assert_eq!(p["in"], "header"))
            .map(|p| p["name"].as_str().unwrap())
            .collect();
        assert_eq!(headers, ["webhook-id", "webhook-timestamp", "webhook-signature"], "{event}");
        let schema = &post["requestBody"]["content"]["application/json"]["schema"];
        assert_eq!(schema["allOf"][0]["$ref"], "#/components/schemas/WebhookEvent");
        assert_eq!(schema["allOf"][1]["properties"]["type"]["enum"], json!([event]));
        assert!(post["responses"].get("2XX").is_some() && post["responses"].get("410").is_some());
    }
    let event = &document["components"]["schemas"]["WebhookEvent"];
    assert_eq!(event["properties"]["data"]["$ref"], "#/components/schemas/Generation");
    assert_eq!(event["required"], json!(["type", "timestamp", "data"]));

    // An independent validator, where this machine has it (the checks above stand alone).
    openapi_spec_validator(document);
}

/// Runs Python's `openapi-spec-validator` on the document when it is installed; says so and does
/// nothing when it is not.
fn openapi_spec_validator(document: &Value) {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let present = Command::new("python3")
        .args(["-c", "import openapi_spec_validator"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !present {
        eprintln!("openapi-spec-validator is not installed: only the Rust checks ran");
        return;
    }
    let script = "import json, sys\n\
                  from openapi_spec_validator import validate\n\
                  from openapi_spec_validator.validation import OpenAPIV31SpecValidator\n\
                  validate(json.load(sys.stdin), cls=OpenAPIV31SpecValidator)\n";
    let mut child = Command::new("python3")
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 starts");
    child.stdin.take().unwrap().write_all(document.to_string().as_bytes()).unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "openapi-spec-validator refuses the document:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A value for a path parameter that reaches the handler (which then refuses the anonymous
/// request on its own terms, never with the fallback's 404).
fn fill(path: &str) -> String {
    let id = uuid::Uuid::now_v7().to_string();
    path.replace("{id}", &id)
        .replace("{key_id}", &id)
        .replace("{generation_id}", &id)
        .replace("{key}", &format!("generations/{id}/video-original.mp4"))
        .replace("{asset}", "swagger-ui.css")
        .replace("{mode}", "text2video")
        .replace("{task_id}", &id)
}

#[tokio::test]
async fn every_documented_operation_is_served_and_no_other_method_is() {
    // Why this cannot pass by accident: a route the router does not have is answered by its
    // fallback (404 `not_found`) or, on a path it has, 405. Every request below is anonymous, and
    // each handler answers anonymous requests with something else (401, 403, 200, …), so a
    // documented operation that is not served fails here, and so does an answer the document
    // does not list for the operation. The other way round (a route served but not documented)
    // is checked in process by `gengate_api::openapi::tests`, which reads the router's routes;
    // here, each other method on a documented path must be a 405.
    let app = TestApp::spawn().await;
    let spec = Spec::fetch(&app).await;
    let paths = spec.document["paths"].as_object().unwrap();
    assert!(paths.len() > 20);
    for (path, item) in paths {
        let filled = fill(path);
        assert!(!filled.contains('{'), "{path}: give its parameters a value in `fill`");
        let url = format!("{}{filled}", app.api_url);
        for method in ["get", "post", "put", "patch", "delete"] {
            let request = app
                .http
                .request(method.to_uppercase().parse().unwrap(), &url)
                .header("content-type", "application/json")
                .body("{}");
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            let text = response.text().await.unwrap();
            match item.get(method) {
                Some(operation) => {
                    assert!(
                        status != 404 && status != 405,
                        "{method} {path} is documented but answered {status}: {text}"
                    );
                    assert!(
                        operation["responses"].get(status.to_string()).is_some(),
                        "{method} {path} answered {status}, which it does not document: {text}"
                    );
                }
                None => {
                    assert_eq!(status, 405, "{method} {path} is not documented: {text}");
                    let problem: Value = serde_json::from_str(&text).unwrap();
                    assert_eq!(problem["code"], "method_not_allowed");
                }
            }
        }
    }
    // The probe tells a missing route apart.
    let missing = app.get("/v1/generationz").await;
    assert_eq!(missing.status(), 404);
}

#[tokio::test]
async fn the_submit_members_documented_are_those_the_api_takes() {
    let app = TestApp::spawn().await;
    let spec = Spec::fetch(&app).await;
    // No credits: a request that passes validation is refused with 402, and nothing is made.
    let user = app.create_user(0).await;
    let request = &spec.document["components"]["schemas"]["CreateGenerationRequest"];
    let example = &request["example"];
    let base = json!({"model": "kling-v1-6-pro", "mode": "text2video", "prompt": "a cat"});
    let unknown = |problem: &Value, member: &str| {
        problem["errors"].as_array().into_iter().flatten().any(|e| {
            e["field"] == member && e["message"].as_str().unwrap_or_default().contains("unknown")
        })
    };
    for member in request["properties"].as_object().unwrap().keys() {
        let mut body = base.clone();
        // A member the example leaves out gets a string: refused or not, never as unknown.
        body[member] = example.get(member).cloned().unwrap_or(json!("x"));
        let response = app.submit(&user, &body).await;
        let status = response.status();
        let problem = spec.check("createGeneration", response).await;
        assert!(status == 402 || status == 422, "{member}: {status} {problem}");
        assert!(!unknown(&problem, member), "{member} is documented but refused: {problem}");
    }
    // The check can fail: a member the document does not have is refused.
    let mut body = base.clone();
    body["seed"] = json!(7);
    let problem = spec.check("createGeneration", app.submit(&user, &body).await).await;
    assert!(unknown(&problem, "seed"), "{problem}");
}

/// `POST {path}` with a bearer token and a raw body.
async fn post_raw(
    app: &TestApp,
    path: &str,
    token: Option<&str>,
    content_type: &str,
    body: impl Into<reqwest::Body>,
) -> reqwest::Response {
    let mut request = app
        .http
        .post(format!("{}{path}", app.api_url))
        .header("content-type", content_type)
        .body(body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().await.unwrap()
}

async fn submit_with_key(
    app: &TestApp,
    user: &TestUser,
    key: &str,
    body: &Value,
) -> reqwest::Response {
    app.http
        .post(format!("{}/v1/generations", app.api_url))
        .bearer_auth(&user.key)
        .header("idempotency-key", key)
        .json(body)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn answers_match_their_documented_schemas() {
    let app = TestApp::spawn().await;
    let spec = Spec::fetch(&app).await;
    let admin = Some(ADMIN_TOKEN);

    // Operations and the catalogue.
    spec.check("getHealth", app.get("/healthz").await).await;
    spec.check("getReadiness", app.get("/readyz").await).await;
    spec.check("getOpenApiDocument", app.get("/openapi.json").await).await;
    let models = spec.check("listModels", app.get("/v1/models").await).await;
    assert!(!models["data"].as_array().unwrap().is_empty());

    // Users, keys and grants.
    let user = json!({"email": "ada@example.com", "name": "Ada", "max_in_flight": 2});
    let created =
        spec.check("createUser", app.admin_post("/admin/users", user.clone()).await).await;
    let user_id = created["id"].as_str().unwrap().to_owned();
    let taken = spec.check("createUser", app.admin_post("/admin/users", user).await).await;
    assert_eq!(taken["code"], "email_taken");
    let invalid = json!({"max_in_flight": 0});
    let invalid = spec.check("createUser", app.admin_post("/admin/users", invalid).await).await;
    assert_eq!(invalid["errors"][0]["field"], "max_in_flight");
    let anonymous = post_raw(&app, "/admin/users", None, "application/json", "{}").await;
    assert_eq!(spec.check("createUser", anonymous).await["code"], "unauthorized");
    let plain = post_raw(&app, "/admin/users", admin, "text/plain", "{}").await;
    assert_eq!(spec.check("createUser", plain).await["code"], "unsupported_media_type");
    let malformed = post_raw(&app, "/admin/users", admin, "application/json", "{").await;
    assert_eq!(spec.check("createUser", malformed).await["code"], "malformed_json");

    let keys = format!("/admin/users/{user_id}/api-keys");
    let key =
        spec.check("createApiKey", app.admin_post(&keys, json!({"name": "main"})).await).await;
    let user = TestUser { id: user_id.clone(), key: key["key"].as_str().unwrap().to_owned() };
    let nobody = format!("/admin/users/{}/api-keys", uuid::Uuid::now_v7());
    spec.check("createApiKey", app.admin_post(&nobody, json!({})).await).await;
    let spare = spec.check("createApiKey", post_raw(&app, &keys, admin, "", "").await).await;
    spec.check("listApiKeys", app.admin_get(&keys).await).await;
    let revoke = |key_id: String| {
        app.http.delete(format!("{}{keys}/{key_id}", app.api_url)).bearer_auth(ADMIN_TOKEN).send()
    };
    let spare = spare["id"].as_str().unwrap().to_owned();
    let revoked = spec.check("revokeApiKey", revoke(spare).await.unwrap()).await;
    assert!(revoked["revoked_at"].is_string());
    spec.check("revokeApiKey", revoke(uuid::Uuid::now_v7().to_string()).await.unwrap()).await;

    let grants = format!("/admin/users/{user_id}/grants");
    let order = json!({"source": "order_pay", "amount": 1000, "order_no": "ORD-1",
                       "expires_at": "2099-01-01T00:00:00Z"});
    let grant = spec.check("createGrant", app.admin_post(&grants, order.clone()).await).await;
    assert_eq!(grant["remaining"], 1000);
    spec.check("createGrant", app.admin_post(&grants, order).await).await;
    let other = json!({"source": "order_pay", "amount": 5, "order_no": "ORD-1"});
    let conflict = spec.check("createGrant", app.admin_post(&grants, other).await).await;
    assert_eq!(conflict["code"], "order_conflict");
    let gift = json!({"source": "gift", "amount": 5});
    assert_eq!(
        spec.check("createGrant", app.admin_post(&grants, gift).await).await["code"],
        "validation_failed"
    );
    let nobody = format!("/admin/users/{}/grants", uuid::Uuid::now_v7());
    let system = json!({"source": "system_add", "amount": 5});
    spec.check("createGrant", app.admin_post(&nobody, system).await).await;
    spec.check("getUserCredits", app.admin_get(&format!("/admin/users/{user_id}/credits")).await)
        .await;
    let nobody = format!("/admin/users/{}/credits", uuid::Uuid::now_v7());
    spec.check("getUserCredits", app.admin_get(&nobody).await).await;

    // Submits: accepted, replayed, conflicting, refused.
    let body = json!({"model": "kling-v1-6-pro", "mode": "text2video", "prompt": "a cat",
                      "negative_prompt": "blur", "sub_type": "anime_video",
                      "metadata": {"order": "A-1"}});
    let first = submit_with_key(&app, &user, "key-1", &body).await;
    assert!(first.headers().get("idempotent-replayed").is_none());
    let generation = spec.check("createGeneration", first).await;
    assert_eq!(generation["status"], "queued");
    let id = generation["id"].as_str().unwrap().to_owned();
    let again = submit_with_key(&app, &user, "key-1", &body).await;
    assert_eq!(again.status(), 202);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    assert_eq!(spec.check("createGeneration", again).await["id"], id.as_str());
    let mut changed = body.clone();
    changed["prompt"] = json!("a dog");
    let conflict =
        spec.check("createGeneration", submit_with_key(&app, &user, "key-1", &changed).await).await;
    assert_eq!(conflict["code"], "idempotency_conflict");
    let second = spec.check("createGeneration", app.submit(&user, &kling("two")).await).await;
    let full = spec.check("createGeneration", app.submit(&user, &kling("three")).await).await;
    assert_eq!(full["code"], "too_many_in_flight");
    let invalid = json!({"model": "kling-v1-6-pro", "mode": "text2video", "duration": 7});
    let invalid = spec.check("createGeneration", app.submit(&user, &invalid).await).await;
    assert_eq!(invalid["code"], "validation_failed");
    let poor = app.create_user(0).await;
    let refused = spec.check("createGeneration", app.submit(&poor, &kling("poor")).await).await;
    assert_eq!(refused["code"], "insufficient_credits");
    let anonymous =
        post_raw(&app, "/v1/generations", None, "application/json", body.to_string()).await;
    spec.check("createGeneration", anonymous).await;
    let token = Some(user.key.as_str());
    let plain = post_raw(&app, "/v1/generations", token, "text/plain", body.to_string()).await;
    spec.check("createGeneration", plain).await;
    let malformed = post_raw(&app, "/v1/generations", token, "application/json", "{").await;
    spec.check("createGeneration", malformed).await;
    let huge =
        json!({"model": "kling-v1-6-pro", "mode": "text2video", "prompt": "x".repeat(400_000)});
    let huge = post_raw(&app, "/v1/generations", token, "application/json", huge.to_string()).await;
    assert_eq!(spec.check("createGeneration", huge).await["code"], "payload_too_large");

    // Reading, listing, canceling.
    let path = format!("/v1/generations/{id}");
    spec.check("getGeneration", app.user_get(&user, &path).await).await;
    let unknown = format!("/v1/generations/{}", uuid::Uuid::now_v7());
    assert_eq!(
        spec.check("getGeneration", app.user_get(&user, &unknown).await).await["code"],
        "not_found"
    );
    spec.check("getGeneration", app.user_get(&poor, &path).await).await;
    let page =
        spec.check("listGenerations", app.user_get(&user, "/v1/generations?limit=1").await).await;
    assert!(page["next_cursor"].is_string());
    spec.check("listGenerations", app.user_get(&user, "/v1/generations?status=queued").await).await;
    spec.check("listGenerations", app.user_get(&user, "/v1/generations?cursor=nope").await).await;
    let cancel = format!("/v1/generations/{}/cancel", second["id"].as_str().unwrap());
    let canceled =
        spec.check("cancelGeneration", app.user_post(&user, &cancel, &json!({})).await).await;
    assert_eq!(canceled["status"], "canceled");
    let ended =
        spec.check("cancelGeneration", app.user_post(&user, &cancel, &json!({})).await).await;
    assert_eq!(ended["code"], "not_cancelable");
    let unknown_cancel = format!("{unknown}/cancel");
    spec.check("cancelGeneration", app.user_post(&user, &unknown_cancel, &json!({})).await).await;

    // Credits.
    spec.check("getCredits", app.user_get(&user, "/v1/credits").await).await;
    let timeline = "/v1/credits/timeline?include_voided=true&limit=2";
    let entries = spec.check("getCreditTimeline", app.user_get(&user, timeline).await).await;
    assert!(entries["next_cursor"].is_string(), "{entries}");
    spec.check("getCreditTimeline", app.user_get(&user, "/v1/credits/timeline?limit=0").await)
        .await;
    let summary = "/v1/credits/summary?from=2020-01-01T00:00:00Z";
    spec.check("getCreditSummary", app.user_get(&user, summary).await).await;
    spec.check("getCreditSummary", app.user_get(&user, "/v1/credits/summary?from=yesterday").await)
        .await;

    // The operator's view: the canceled job has a voided charge and audit rows.
    let detail = format!("/admin/generations/{}", second["id"].as_str().unwrap());
    let detail = spec.check("getGenerationDetail", app.admin_get(&detail).await).await;
    assert!(detail["ledger"].as_array().unwrap().iter().any(|e| e["voided_at"].is_string()));
    let unknown_detail = format!("/admin/generations/{}", uuid::Uuid::now_v7());
    spec.check("getGenerationDetail", app.admin_get(&unknown_detail).await).await;

    // Provider ingress.
    let report = |body: Value, token: Option<&'static str>| {
        post_raw(
            &app,
            "/api/generation/handle-failure",
            token,
            "application/json",
            body.to_string(),
        )
    };
    let internal = Some(INTERNAL_TOKEN);
    let reported = json!({"generation_id": id, "reason": "the provider said so"});
    let queued =
        spec.check("reportGenerationFailure", report(reported.clone(), internal).await).await;
    assert_eq!(queued["generation_id"], id.as_str());
    spec.check("reportGenerationFailure", report(reported, None).await).await;
    let unknown_report = json!({"generation_id": uuid::Uuid::now_v7(), "reason": "x"});
    spec.check("reportGenerationFailure", report(unknown_report, internal).await).await;
    spec.check("reportGenerationFailure", report(json!({"reason": ""}), internal).await).await;
    let hook = format!("/api/generation/webhook?generation_id={id}&token=wrong");
    spec.check(
        "receiveProviderCallback",
        post_raw(&app, &hook, None, "application/json", "{}").await,
    )
    .await;
    let (webhook, kling_callback) = callback_urls(&app, &id);
    let unparsable = app.http.post(&webhook).json(&json!({})).send().await.unwrap();
    assert_eq!(
        spec.check("receiveProviderCallback", unparsable).await["code"],
        "unparsable_callback"
    );
    let unparsable = app.http.post(&kling_callback).json(&json!({})).send().await.unwrap();
    spec.check("receiveKlingCallback", unparsable).await;
    let kling_hook = format!("/kling/callback/{id}?token=wrong");
    spec.check(
        "receiveKlingCallback",
        post_raw(&app, &kling_hook, None, "application/json", "{}").await,
    )
    .await;

    // Files and the reference's files.
    let link = format!("/files/generations/{id}/video-original.mp4?expires=1&sig=nope");
    spec.check("downloadFile", app.get(&link).await).await;
    spec.check("downloadFile", app.get("/files/elsewhere").await).await;
    spec.check("getApiReference", app.get("/docs").await).await;
    spec.check("getApiReferenceAsset", app.get("/docs/reference.js").await).await;
    spec.check("getApiReferenceAsset", app.get("/docs/nope.js").await).await;

    // Rate limiting: one key, more requests than its burst.
    let busy = app.create_user(0).await;
    let mut limited = None;
    for _ in 0..400 {
        let response = app.user_get(&busy, "/v1/credits").await;
        if response.status() == 429 {
            limited = Some(response);
            break;
        }
    }
    let limited = limited.expect("the key's burst ran out");
    assert!(limited.headers().contains_key("retry-after"));
    assert_eq!(spec.check("getCredits", limited).await["code"], "rate_limited");

    spec.assert_checked(&[
        ("getHealth", 200),
        ("getReadiness", 200),
        ("getOpenApiDocument", 200),
        ("listModels", 200),
        ("createUser", 201),
        ("createUser", 400),
        ("createUser", 401),
        ("createUser", 409),
        ("createUser", 415),
        ("createUser", 422),
        ("createApiKey", 201),
        ("createApiKey", 404),
        ("listApiKeys", 200),
        ("revokeApiKey", 200),
        ("revokeApiKey", 404),
        ("createGrant", 200),
        ("createGrant", 201),
        ("createGrant", 404),
        ("createGrant", 409),
        ("createGrant", 422),
        ("getUserCredits", 200),
        ("getUserCredits", 404),
        ("createGeneration", 202),
        ("createGeneration", 400),
        ("createGeneration", 401),
        ("createGeneration", 402),
        ("createGeneration", 409),
        ("createGeneration", 413),
        ("createGeneration", 415),
        ("createGeneration", 422),
        ("createGeneration", 429),
        ("getGeneration", 200),
        ("getGeneration", 404),
        ("listGenerations", 200),
        ("listGenerations", 422),
        ("cancelGeneration", 200),
        ("cancelGeneration", 404),
        ("cancelGeneration", 409),
        ("getCredits", 200),
        ("getCredits", 429),
        ("getCreditTimeline", 200),
        ("getCreditTimeline", 422),
        ("getCreditSummary", 200),
        ("getCreditSummary", 422),
        ("getGenerationDetail", 200),
        ("getGenerationDetail", 404),
        ("reportGenerationFailure", 202),
        ("reportGenerationFailure", 401),
        ("reportGenerationFailure", 404),
        ("reportGenerationFailure", 422),
        ("receiveProviderCallback", 400),
        ("receiveProviderCallback", 401),
        ("receiveKlingCallback", 400),
        ("receiveKlingCallback", 401),
        ("downloadFile", 403),
        ("downloadFile", 404),
        ("getApiReference", 200),
        ("getApiReferenceAsset", 200),
        ("getApiReferenceAsset", 404),
    ]);
}

/// The callback URLs the workers would give the providers for generation `id` (unified, Kling).
fn callback_urls(app: &TestApp, id: &str) -> (String, String) {
    use gengate_shared::config::Settings;
    use gengate_shared::generation::callback_token::{CallbackKeys, callback_url};
    use gengate_shared::providers::ProviderKind;
    let settings = Settings::load_from(None, Some(app.env().clone())).expect("settings");
    let keys = CallbackKeys::required(&settings.webhook).expect("callback keys");
    let generation = id.parse().unwrap();
    let token = keys.token(keys.current_version(), generation).unwrap();
    let base = &settings.api.public_base_url;
    (
        callback_url(base, ProviderKind::Kie, generation, &token),
        callback_url(base, ProviderKind::Kling, generation, &token),
    )
}

#[tokio::test]
async fn finished_generations_match_their_documented_schemas() {
    const WAIT: Duration = Duration::from_secs(60);
    let app = TestApp::builder().workers(1).spawn().await;
    let spec = Spec::fetch(&app).await;
    let user = app.create_user(10_000).await;
    let video = app.submit_ok(&user, &kling("a cat")).await;
    let image = json!({"model": "nano-banana", "mode": "text2image", "prompt": "a cat"});
    let image = app.submit_ok(&user, &image).await;
    let failed = app.submit_ok(&user, &kling("a cat [[sim:fail]]")).await;

    app.wait_for_status(&user, &failed, "failed", WAIT).await;
    let path = format!("/v1/generations/{failed}");
    let generation = spec.check("getGeneration", app.user_get(&user, &path).await).await;
    assert!(generation["failure"]["code"].is_string(), "{generation}");

    for id in [&video, &image] {
        app.wait_for_status(&user, id, "completed", WAIT).await;
        app.wait_for_archive(id).await;
        let path = format!("/v1/generations/{id}");
        let generation = spec.check("getGeneration", app.user_get(&user, &path).await).await;
        let result = &generation["result"];
        let file = if id == &video { &result["videos"][0] } else { &result["images"][0] };
        assert_eq!(file["archive_status"], "archived", "{generation}");
        spec.check("getGenerationDetail", app.admin_get(&format!("/admin/generations/{id}")).await)
            .await;
        // The signed link: the whole file, then a range of it.
        let url = file["url"].as_str().unwrap();
        spec.check("downloadFile", app.http.get(url).send().await.unwrap()).await;
        let range = app.http.get(url).header("range", "bytes=0-9").send().await.unwrap();
        assert_eq!(range.status(), 206);
        spec.check("downloadFile", range).await;
    }
    let page = spec.check("listGenerations", app.user_get(&user, "/v1/generations").await).await;
    assert_eq!(page["data"].as_array().unwrap().len(), 3);
    spec.assert_checked(&[
        ("getGeneration", 200),
        ("getGenerationDetail", 200),
        ("downloadFile", 200),
        ("downloadFile", 206),
        ("listGenerations", 200),
    ]);
}

/// `GET /v1/generations/{id}/deliveries` once its deliveries are all `delivered`, and at least
/// one exists.
async fn delivered(app: &TestApp, user: &TestUser, id: &str) -> Value {
    let path = format!("/v1/generations/{id}/deliveries");
    eventually(&format!("the deliveries of {id} delivered"), Duration::from_secs(60), || async {
        let body: Value = app.user_get(user, &path).await.json().await.ok()?;
        let data = body["data"].as_array()?;
        (!data.is_empty() && data.iter().all(|d| d["status"] == "delivered")).then_some(body)
    })
    .await
}

#[tokio::test]
async fn client_webhook_answers_match_their_documented_schemas() {
    const WAIT: Duration = Duration::from_secs(60);
    let app = TestApp::builder().workers(1).spawn().await;
    let spec = Spec::fetch(&app).await;
    let receiver = Receiver::start().await;
    let user = app.create_user(1_000).await;
    let other = app.create_user(0).await;
    let key = Some(user.key.as_str());
    let admin = Some(ADMIN_TOKEN);

    // The client's signing secret, and its rotation.
    let secret =
        spec.check("getWebhookSecret", app.user_get(&user, "/v1/webhooks/secret").await).await;
    assert!(secret["secret"].as_str().unwrap().starts_with("whsec_"));
    assert!(secret["previous_retires_at"].is_null(), "{secret}");
    spec.check("getWebhookSecret", app.get("/v1/webhooks/secret").await).await;
    let rotate = "/v1/webhooks/secret/rotate";
    let rotated = post_raw(&app, rotate, key, "application/json", r#"{"grace_seconds": 60}"#).await;
    let rotated = spec.check("rotateWebhookSecret", rotated).await;
    assert_ne!(rotated["secret"], secret["secret"]);
    assert!(rotated["previous_retires_at"].is_string(), "{rotated}");
    let shown =
        spec.check("getWebhookSecret", app.user_get(&user, "/v1/webhooks/secret").await).await;
    assert_eq!(shown, rotated);
    // The body is optional.
    spec.check("rotateWebhookSecret", post_raw(&app, rotate, key, "", "").await).await;
    let too_long = r#"{"grace_seconds": 2592001}"#;
    let refused =
        spec.check("rotateWebhookSecret", post_raw(&app, rotate, key, "", too_long).await).await;
    assert_eq!(refused["errors"][0]["field"], "grace_seconds", "{refused}");
    let unknown = post_raw(&app, rotate, key, "application/json", r#"{"grace": 1}"#).await;
    assert_eq!(spec.check("rotateWebhookSecret", unknown).await["code"], "validation_failed");
    spec.check("rotateWebhookSecret", post_raw(&app, rotate, None, "", "").await).await;

    // No default endpoint yet.
    let none = spec
        .check("listWebhookEndpoints", app.user_get(&user, "/v1/webhooks/endpoints").await)
        .await;
    assert_eq!(none["data"], json!([]));
    spec.check("listWebhookEndpoints", app.get("/v1/webhooks/endpoints").await).await;

    // An operator registers one; a second for the same user is refused.
    let endpoints = format!("/admin/users/{}/webhook-endpoints", user.id);
    let body = json!({"url": receiver.url("/default"), "events": ["generation.completed"],
                      "description": "the user's default"});
    let created = app.admin_post(&endpoints, body).await;
    assert_eq!(created.status(), 201);
    let endpoint = spec.check("createWebhookEndpoint", created).await;
    assert!(endpoint["secret"].as_str().unwrap().starts_with("whsec_"));
    let endpoint_id = endpoint["id"].as_str().unwrap().to_owned();
    let again = app.admin_post(&endpoints, json!({"url": receiver.url("/other")})).await;
    assert_eq!(spec.check("createWebhookEndpoint", again).await["code"], "endpoint_exists");
    let bad = json!({"url": "ftp://hooks.example.com/x",
                     "events": ["generation.completed", "generation.nope"]});
    let bad = spec.check("createWebhookEndpoint", app.admin_post(&endpoints, bad).await).await;
    let fields: BTreeSet<&str> =
        bad["errors"].as_array().unwrap().iter().map(|e| e["field"].as_str().unwrap()).collect();
    assert_eq!(fields, ["events[1]", "url"].into(), "{bad}");
    let nobody = format!("/admin/users/{}/webhook-endpoints", uuid::Uuid::now_v7());
    let url = json!({"url": receiver.url("/x")});
    spec.check("createWebhookEndpoint", app.admin_post(&nobody, url).await).await;
    let malformed = post_raw(&app, &endpoints, admin, "application/json", "{").await;
    assert_eq!(spec.check("createWebhookEndpoint", malformed).await["code"], "malformed_json");
    let plain = post_raw(&app, &endpoints, admin, "text/plain", "{}").await;
    spec.check("createWebhookEndpoint", plain).await;
    spec.check("createWebhookEndpoint", post_raw(&app, &endpoints, None, "", "").await).await;

    // The endpoint, as the operator and its owner see it.
    let listed = spec.check("listUserWebhookEndpoints", app.admin_get(&endpoints).await).await;
    let unknown = spec.check("listUserWebhookEndpoints", app.admin_get(&nobody).await).await;
    assert_eq!(unknown["code"], "not_found");
    assert_eq!(listed["data"][0]["id"], endpoint_id.as_str());
    assert!(listed["data"][0].get("secret").is_none(), "the secret is shown once");
    let own = spec
        .check("listWebhookEndpoints", app.user_get(&user, "/v1/webhooks/endpoints").await)
        .await;
    assert_eq!(own["data"], listed["data"]);
    let malformed_user = "/admin/users/nope/webhook-endpoints";
    spec.check("listUserWebhookEndpoints", app.admin_get(malformed_user).await).await;

    // Its secret rotated.
    let endpoint_path = format!("/admin/webhook-endpoints/{endpoint_id}");
    let rotate_endpoint = format!("{endpoint_path}/rotate-secret");
    let rotated = app.admin_post(&rotate_endpoint, json!({"grace_seconds": 0})).await;
    let rotated = spec.check("rotateWebhookEndpointSecret", rotated).await;
    assert_ne!(rotated["secret"], endpoint["secret"]);
    let unknown_endpoint = format!("/admin/webhook-endpoints/{}", uuid::Uuid::now_v7());
    let unknown_rotate = format!("{unknown_endpoint}/rotate-secret");
    spec.check("rotateWebhookEndpointSecret", post_raw(&app, &unknown_rotate, admin, "", "").await)
        .await;
    let refused = app.admin_post(&rotate_endpoint, json!({"grace_seconds": -1})).await;
    spec.check("rotateWebhookEndpointSecret", refused).await;

    // Two jobs: one names its own URL, the other goes to the default endpoint.
    let own_url = json!({"model": "kling-v1-6-std", "mode": "text2video",
                         "prompt": "a cat [[sim:ok]]", "webhook_url": receiver.url("/hook"),
                         "webhook_events": ["generation.completed"]});
    let by_url = app.submit_ok(&user, &own_url).await;
    let to_default = json!({"model": "kling-v1-6-std", "mode": "text2video",
                            "prompt": "a dog [[sim:ok]]"});
    let by_default = app.submit_ok(&user, &to_default).await;
    delivered(&app, &user, &by_url).await;
    delivered(&app, &user, &by_default).await;
    let path = format!("/v1/generations/{by_url}/deliveries");
    let log = spec.check("listGenerationDeliveries", app.user_get(&user, &path).await).await;
    let delivery = &log["data"][0];
    assert_eq!(delivery["url"], receiver.url("/hook"));
    assert!(delivery["endpoint_id"].is_null());
    assert_eq!(delivery["attempt_log"][0]["status_code"], 204);
    let msg = delivery["id"].as_str().unwrap().to_owned();
    let path = format!("/v1/generations/{by_default}/deliveries");
    let log = spec.check("listGenerationDeliveries", app.user_get(&user, &path).await).await;
    let to_endpoint = &log["data"][0];
    assert_eq!(to_endpoint["endpoint_id"], endpoint_id.as_str());
    let to_endpoint = to_endpoint["id"].as_str().unwrap().to_owned();
    let theirs = app.user_get(&other, &path).await;
    assert_eq!(spec.check("listGenerationDeliveries", theirs).await["code"], "not_found");
    let unknown_generation = format!("/v1/generations/{}/deliveries", uuid::Uuid::now_v7());
    spec.check("listGenerationDeliveries", app.user_get(&user, &unknown_generation).await).await;
    assert_eq!(receiver.received().len(), 2);

    // The operator's view of deliveries.
    let list = format!("/admin/webhook-deliveries?user_id={}&status=delivered&limit=10", user.id);
    let all = spec.check("listWebhookDeliveries", app.admin_get(&list).await).await;
    let ids: BTreeSet<&str> =
        all["data"].as_array().unwrap().iter().map(|d| d["id"].as_str().unwrap()).collect();
    assert_eq!(ids, [msg.as_str(), to_endpoint.as_str()].into());
    let one = format!("/admin/webhook-deliveries?generation_id={by_url}");
    let one = spec.check("listWebhookDeliveries", app.admin_get(&one).await).await;
    assert_eq!(one["data"].as_array().unwrap().len(), 1);
    for bad in ["status=lost", "limit=0", "generation_id=nope", "page=2"] {
        let path = format!("/admin/webhook-deliveries?{bad}");
        let problem = spec.check("listWebhookDeliveries", app.admin_get(&path).await).await;
        assert_eq!(problem["code"], "validation_failed", "{bad}");
    }
    spec.check("listWebhookDeliveries", app.get("/admin/webhook-deliveries").await).await;
    let shown = spec
        .check(
            "getWebhookDelivery",
            app.admin_get(&format!("/admin/webhook-deliveries/{msg}")).await,
        )
        .await;
    assert_eq!(shown["id"], msg.as_str());
    let uuid = uuid::Uuid::try_parse(msg.trim_start_matches("msg_")).unwrap();
    let by_uuid = format!("/admin/webhook-deliveries/{uuid}");
    assert_eq!(spec.check("getWebhookDelivery", app.admin_get(&by_uuid).await).await, shown);
    let unknown_delivery =
        format!("/admin/webhook-deliveries/msg_{}", uuid::Uuid::now_v7().simple());
    spec.check("getWebhookDelivery", app.admin_get(&unknown_delivery).await).await;
    spec.check("getWebhookDelivery", app.admin_get("/admin/webhook-deliveries/nope").await).await;

    // Redelivery: sent again with the same id.
    let redeliver = format!("/admin/webhook-deliveries/{msg}/redeliver");
    let queued = post_raw(&app, &redeliver, admin, "", "").await;
    assert_eq!(queued.status(), 202);
    let queued = spec.check("redeliverWebhook", queued).await;
    assert_eq!(queued["id"], msg.as_str());
    assert_eq!(queued["status"], "pending");
    let received = receiver.wait_for(3, WAIT).await;
    assert_eq!(received.iter().filter(|d| d.id() == msg).count(), 2, "sent again, same id");
    let unknown_redeliver = format!("{unknown_delivery}/redeliver");
    spec.check("redeliverWebhook", post_raw(&app, &unknown_redeliver, admin, "", "").await).await;

    // The endpoint disabled: its delivery is not redelivered.
    let disable = format!("{endpoint_path}/disable");
    let reason = json!({"reason": "the client moved"});
    let disabled =
        spec.check("disableWebhookEndpoint", app.admin_post(&disable, reason).await).await;
    assert!(disabled["disabled_at"].is_string());
    assert_eq!(disabled["disabled_reason"], "the client moved");
    let again =
        spec.check("disableWebhookEndpoint", post_raw(&app, &disable, admin, "", "").await).await;
    assert_eq!(again, disabled, "disabled once; the same answer again");
    let bad_reason = app.admin_post(&disable, json!({"reason": "a\u{7}b"})).await;
    assert_eq!(spec.check("disableWebhookEndpoint", bad_reason).await["code"], "validation_failed");
    let unknown_disable = format!("{unknown_endpoint}/disable");
    spec.check("disableWebhookEndpoint", post_raw(&app, &unknown_disable, admin, "", "").await)
        .await;
    let refused = format!("/admin/webhook-deliveries/{to_endpoint}/redeliver");
    let refused = post_raw(&app, &refused, admin, "", "").await;
    assert_eq!(spec.check("redeliverWebhook", refused).await["code"], "endpoint_disabled");
    let own = spec
        .check("listWebhookEndpoints", app.user_get(&user, "/v1/webhooks/endpoints").await)
        .await;
    assert_eq!(own["data"][0]["disabled_reason"], "the client moved");

    spec.assert_checked(&[
        ("getWebhookSecret", 200),
        ("getWebhookSecret", 401),
        ("rotateWebhookSecret", 200),
        ("rotateWebhookSecret", 401),
        ("rotateWebhookSecret", 422),
        ("listWebhookEndpoints", 200),
        ("listWebhookEndpoints", 401),
        ("createWebhookEndpoint", 201),
        ("createWebhookEndpoint", 400),
        ("createWebhookEndpoint", 401),
        ("createWebhookEndpoint", 404),
        ("createWebhookEndpoint", 409),
        ("createWebhookEndpoint", 415),
        ("createWebhookEndpoint", 422),
        ("listUserWebhookEndpoints", 200),
        ("listUserWebhookEndpoints", 404),
        ("rotateWebhookEndpointSecret", 200),
        ("rotateWebhookEndpointSecret", 404),
        ("rotateWebhookEndpointSecret", 422),
        ("listGenerationDeliveries", 200),
        ("listGenerationDeliveries", 404),
        ("listWebhookDeliveries", 200),
        ("listWebhookDeliveries", 401),
        ("listWebhookDeliveries", 422),
        ("getWebhookDelivery", 200),
        ("getWebhookDelivery", 404),
        ("redeliverWebhook", 202),
        ("redeliverWebhook", 404),
        ("redeliverWebhook", 409),
        ("disableWebhookEndpoint", 200),
        ("disableWebhookEndpoint", 404),
        ("disableWebhookEndpoint", 422),
    ]);
}

#[tokio::test]
async fn the_reference_is_served_with_its_own_files_only() {
    let app = TestApp::spawn().await;
    let response = app.get("/docs").await;
    assert_eq!(response.status(), 200);
    assert!(response.headers()["content-type"].to_str().unwrap().starts_with("text/html"));
    let policy = response.headers()["content-security-policy"].to_str().unwrap().to_owned();
    assert!(policy.contains("default-src 'none'") && policy.contains("connect-src 'self'"));
    let html = response.text().await.unwrap();
    // Nothing from elsewhere: no absolute URL anywhere in the page.
    assert!(!html.contains("http://") && !html.contains("https://") && !html.contains("//cdn"));

    let mut referenced = BTreeMap::new();
    for attribute in ["src=\"", "href=\""] {
        for part in html.split(attribute).skip(1) {
            let target = part.split('"').next().unwrap();
            assert!(
                !target.starts_with('/') && !target.contains("//") && !target.contains(':'),
                "{target} is not relative to the page"
            );
            // Relative to the page, `/docs`.
            referenced.insert(target.to_owned(), format!("/{target}"));
        }
    }
    for expected in ["docs/swagger-ui-bundle.js", "docs/swagger-ui.css", "docs/reference.js"] {
        assert!(referenced.contains_key(expected), "{expected} in {referenced:?}");
    }
    for (target, path) in &referenced {
        let response = app.get(path).await;
        assert_eq!(response.status(), 200, "{target}");
        let content_type = response.headers()["content-type"].to_str().unwrap().to_owned();
        let body = response.bytes().await.unwrap();
        assert!(!body.is_empty(), "{target}");
        if target.ends_with(".js") {
            assert!(content_type.starts_with("text/javascript"), "{target}: {content_type}");
        } else if target.ends_with(".css") {
            assert!(content_type.starts_with("text/css"), "{target}: {content_type}");
        }
    }
    // The start-up script loads the document relative to the page, and no validator badge.
    let script = app.get("/docs/reference.js").await.text().await.unwrap();
    assert!(script.contains("url: \"openapi.json\"") && script.contains("validatorUrl: null"));
    assert_eq!(app.get("/openapi.json").await.status(), 200);
}
