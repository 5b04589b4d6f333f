//! HTTPS served by the API itself (`api.tls_cert_file` + `api.tls_key_file`), with a self-signed
//! certificate made for the test.

use std::path::PathBuf;
use std::time::Duration;

use gengate_tests::TestApp;
use gengate_tests::harness::eventually;
use serde_json::json;

const WAIT: Duration = Duration::from_secs(30);

/// A directory of the test's own holding a fresh self-signed certificate for `127.0.0.1` and
/// `localhost` (`cert.pem`) and its key (`key.pem`). Removed on drop.
struct CertDir(PathBuf);

impl CertDir {
    fn new() -> Self {
        let dir = std::env::temp_dir().join(format!("gengate-tls-{}", uuid::Uuid::now_v7()));
        std::fs::create_dir_all(&dir).unwrap();
        let certified = rcgen::generate_simple_self_signed(vec![
            "127.0.0.1".to_owned(),
            "localhost".to_owned(),
        ])
        .unwrap();
        std::fs::write(dir.join("cert.pem"), certified.cert.pem()).unwrap();
        std::fs::write(dir.join("key.pem"), certified.signing_key.serialize_pem()).unwrap();
        Self(dir)
    }

    fn cert(&self) -> String {
        self.0.join("cert.pem").display().to_string()
    }

    fn key(&self) -> String {
        self.0.join("key.pem").display().to_string()
    }
}

impl Drop for CertDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[tokio::test]
async fn the_api_serves_https_end_to_end_and_only_https() {
    let certs = CertDir::new();
    let mut app = TestApp::builder()
        .workers(1)
        .env("GENGATE__API__TLS_CERT_FILE", certs.cert())
        .env("GENGATE__API__TLS_KEY_FILE", certs.key())
        .spawn()
        .await;
    assert!(app.api_url.starts_with("https://127.0.0.1:"), "{}", app.api_url);
    let address = app.api_url.trim_start_matches("https://").to_owned();

    // A client that trusts the certificate (the harness's) gets answers over https…
    assert_eq!(app.get("/healthz").await.status(), 200);
    // …the operations listener stays plain http…
    let ops = app.http.get(format!("{}/healthz", app.ops_url)).send().await.unwrap();
    assert!(app.ops_url.starts_with("http://"), "{}", app.ops_url);
    assert_eq!(ops.status(), 200);

    // …while plain http to the public port fails, and so does https from a client that does not
    // trust the certificate.
    let plain = reqwest::Client::builder().timeout(WAIT).build().unwrap();
    let error = plain.get(format!("http://{address}/healthz")).send().await;
    assert!(error.is_err(), "plain http to the https port: {error:?}");
    let untrusting = reqwest::Client::builder().timeout(WAIT).build().unwrap();
    let error = untrusting.get(format!("{}/healthz", app.api_url)).send().await.unwrap_err();
    let message = format!("{error:?}");
    assert!(message.contains("UnknownIssuer"), "an untrusted certificate: {message}");

    // A client that connects and never starts its handshake keeps nobody else waiting.
    let idle = tokio::net::TcpStream::connect(&address).await.unwrap();
    assert_eq!(app.get("/healthz").await.status(), 200);

    // A submit over https runs end to end. The simulator does not trust the test certificate, so
    // its callbacks to the https callback URL fail: the job completes by polling.
    let user = app.create_user(1000).await;
    let body =
        json!({"model": "kling-v1-6-std", "mode": "text2video", "prompt": "a cat [[sim:ok]]"});
    let id = app.submit_ok(&user, &body).await;
    let done = app.wait_for_status(&user, &id, "completed", WAIT).await;
    assert_eq!(done["id"], id.as_str());
    let task = app.sim_task(&id).await;
    let callback_url = task.callback_url.unwrap_or_default();
    assert!(callback_url.starts_with(&app.api_url), "callback URL {callback_url}");
    let attempts = eventually("a callback attempt", WAIT, || async {
        let task = app.sim_task(&id).await;
        (!task.callbacks.is_empty()).then_some(task.callbacks)
    })
    .await;
    assert!(
        attempts.iter().all(|a| a.http_status.is_none() && a.error.is_some()),
        "the simulator's callbacks cannot have reached the API: {attempts:?}"
    );

    // Graceful shutdown, with a connection still in its (never started) handshake.
    let status = app.api.as_mut().unwrap().terminate().await;
    assert!(status.success(), "the API stopped with {status}");
    drop(idle);
}

#[tokio::test]
async fn the_api_refuses_to_start_with_half_or_broken_tls_settings() {
    let app = TestApp::spawn().await;
    let certs = CertDir::new();
    let other = CertDir::new();
    let garbage = certs.0.join("garbage.pem");
    std::fs::write(&garbage, "not a certificate\n").unwrap();
    let garbage = garbage.display().to_string();
    let missing = certs.0.join("missing.pem").display().to_string();
    let cases: [(&[(&str, &str)], &str); 5] = [
        (
            &[("GENGATE__API__TLS_CERT_FILE", &certs.cert())],
            "api.tls_cert_file is set but api.tls_key_file is not",
        ),
        (
            &[("GENGATE__API__TLS_KEY_FILE", &certs.key())],
            "api.tls_key_file is set but api.tls_cert_file is not",
        ),
        (
            &[
                ("GENGATE__API__TLS_CERT_FILE", &garbage),
                ("GENGATE__API__TLS_KEY_FILE", &certs.key()),
            ],
            "no PEM certificate in it",
        ),
        (
            &[
                ("GENGATE__API__TLS_CERT_FILE", &certs.cert()),
                ("GENGATE__API__TLS_KEY_FILE", &missing),
            ],
            "no readable PEM private key",
        ),
        (
            &[
                ("GENGATE__API__TLS_CERT_FILE", &certs.cert()),
                ("GENGATE__API__TLS_KEY_FILE", &other.key()),
            ],
            "not a usable certificate and key",
        ),
    ];
    for (settings, expected) in cases {
        let stderr = app.api_refusing_to_start(settings).await;
        assert!(stderr.contains(expected), "{settings:?}: {stderr}");
    }
}
