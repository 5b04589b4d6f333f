//! The operations surface: readiness, liveness, metrics, request ids, graceful shutdown.

use gengate_tests::TestApp;
use serde_json::Value;

#[tokio::test]
async fn api_and_worker_report_ready_when_postgres_and_rabbitmq_answer() {
    let app = TestApp::builder().workers(1).spawn().await;

    for base in [app.api_url.clone(), app.ops_url.clone(), app.workers[0].url.clone()] {
        let response = app.http.get(format!("{base}/readyz")).send().await.unwrap();
        assert_eq!(response.status(), 200, "{base}/readyz");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["checks"]["postgres"], "ok");
        assert_eq!(body["checks"]["rabbitmq"], "ok");

        let health = app.http.get(format!("{base}/healthz")).send().await.unwrap();
        assert_eq!(health.status(), 200);
    }
    // Metrics: on the API's operations listener and the worker's port, never the public API.
    for base in [app.ops_url.clone(), app.workers[0].url.clone()] {
        let metrics = app.http.get(format!("{base}/metrics")).send().await.unwrap();
        assert_eq!(metrics.status(), 200);
        assert!(metrics.headers()["content-type"].to_str().unwrap().starts_with("text/plain"));
    }
    assert_eq!(app.get("/metrics").await.status(), 404);

    // Both processes declared the topology under the test's prefix.
    let queues = app.broker.topology().all_queues();
    let broker = app.broker.broker().await;
    let channel = broker.channel().await.unwrap();
    for queue in queues {
        let passive = lapin::options::QueueDeclareOptions { passive: true, ..Default::default() };
        channel
            .queue_declare(queue.clone().into(), passive, Default::default())
            .await
            .unwrap_or_else(|e| panic!("queue {queue} was not declared: {e}"));
    }
}

#[tokio::test]
async fn readyz_answers_503_naming_rabbitmq_when_the_broker_is_unreachable() {
    // Port 1 on loopback: nothing listens there, connections are refused at once.
    let app = TestApp::builder()
        .env("GENGATE__AMQP__URL", "amqp://guest:guest@127.0.0.1:1/%2f")
        .without_waiting_for_ready()
        .spawn()
        .await;

    let response = app.get("/readyz").await;
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["content-type"], "application/problem+json");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["code"], "not_ready");
    assert_eq!(body["failing"], serde_json::json!(["rabbitmq"]));
    assert_eq!(body["checks"]["postgres"], "ok");
    // Liveness does not depend on the broker.
    assert_eq!(app.get("/healthz").await.status(), 200);
}

#[tokio::test]
async fn readyz_answers_503_naming_postgres_when_the_database_is_unreachable() {
    let app = TestApp::builder()
        .env("GENGATE__DATABASE__URL", "postgres://postgres@127.0.0.1:1/gengate")
        .env("GENGATE__DATABASE__ACQUIRE_TIMEOUT_MS", "500")
        .without_waiting_for_ready()
        .spawn()
        .await;

    let response = app.get("/readyz").await;
    assert_eq!(response.status(), 503);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["failing"][0], "postgres");
}

#[tokio::test]
async fn every_response_carries_a_request_id_and_errors_are_problem_json() {
    let app = TestApp::spawn().await;

    let response = app.get("/no/such/path").await;
    assert_eq!(response.status(), 404);
    assert!(response.headers().contains_key("x-request-id"));
    assert_eq!(response.headers()["content-type"], "application/problem+json");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["code"], "not_found");
    assert_eq!(body["status"], 404);

    // A caller's own request id is kept, so logs on both sides line up.
    let response = app
        .http
        .get(format!("{}/healthz", app.api_url))
        .header("x-request-id", "caller-chosen-id")
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["x-request-id"], "caller-chosen-id");

    let response = app.http.delete(format!("{}/healthz", app.api_url)).send().await.unwrap();
    assert_eq!(response.status(), 405);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["code"], "method_not_allowed");
}

#[tokio::test]
async fn sigterm_stops_both_processes_cleanly() {
    let mut app = TestApp::builder().workers(1).spawn().await;

    let status = app.api.as_mut().unwrap().terminate().await;
    assert!(status.success(), "gengate-api exited with {status}");
    let status = app.workers[0].process.terminate().await;
    assert!(status.success(), "gengate-worker exited with {status}");
}
