//! Requests that must get through while the system under test is losing pieces (the chaos and
//! cluster suites kill workers, the API, broker nodes): sent again until answered.

use std::time::{Duration, Instant};

use serde_json::Value;

/// POSTs `body` to `url` with API key `key` (and `Idempotency-Key` when given, so a repeat is the
/// same request) until the API answers: `Ok(answer)` on `expect`, `Err((status, body))` on a
/// client error it means (not 408 or 429). No answer (a dead API, a 5xx, a timeout) is sent
/// again after a pause growing from 100 ms to 2 s; still none after `give_up` panics.
pub async fn post_until_answered(
    http: &reqwest::Client,
    url: &str,
    key: &str,
    idempotency_key: Option<&str>,
    body: &Value,
    expect: u16,
    give_up: Duration,
) -> Result<Value, (u16, String)> {
    let deadline = Instant::now() + give_up;
    let mut pause = Duration::from_millis(100);
    loop {
        let mut request =
            http.post(url).bearer_auth(key).timeout(Duration::from_secs(10)).json(body);
        if let Some(idempotency_key) = idempotency_key {
            request = request.header("Idempotency-Key", idempotency_key);
        }
        match request.send().await {
            Ok(r) if r.status().as_u16() == expect => {
                return Ok(r.json().await.expect("a JSON answer"));
            }
            Ok(r) if r.status().is_client_error() && r.status() != 408 && r.status() != 429 => {
                return Err((r.status().as_u16(), r.text().await.unwrap_or_default()));
            }
            _ => {}
        }
        assert!(Instant::now() < deadline, "POST {url} got no answer in {give_up:?}");
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(2));
    }
}
