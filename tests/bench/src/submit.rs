//! `submit`: how many generations the API accepts per second. Every client submits as its own
//! bench user, back to back, for the window; only `202 Accepted` counts. `hot-user` is the same
//! with every client submitting as one user, and `one-client` the same with one client alone.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::client::Api;
use super::load::{LoopReport, closed_loop};
use super::setup::BenchUser;

/// The model every bench job uses: cheap, prepaid, on the Kling simulator.
pub const MODEL: &str = "kling-v1-6-std";

/// The body of a bench job (`text2video`, 5 s, 1:1: 20 credits with the built-in catalogue).
/// The prompt carries no simulator markers, so jobs simply succeed.
pub fn job_body() -> Bytes {
    let body = json!({
        "model": MODEL,
        "mode": "text2video",
        "prompt": "gengate-bench: a lighthouse at dusk, waves rolling in",
        "duration": 5,
        "aspect_ratio": "1:1",
    });
    Bytes::from(serde_json::to_vec(&body).expect("a JSON value serializes"))
}

/// Runs the scenario: one client per user, for `window`. The same user may stand in the list
/// more than once (`hot-user`: every client submits as one user), or only one user with one
/// client, paced (`one-client`). `label` names the progress bar.
pub async fn run(
    api: &Api,
    label: &str,
    users: &[BenchUser],
    window: Duration,
    pace: Option<Duration>,
    stop: &CancellationToken,
) -> LoopReport {
    let keys: Arc<Vec<String>> = Arc::new(users.iter().map(|u| u.key.clone()).collect());
    let body = job_body();
    let api = api.clone();
    closed_loop(label, keys.len(), window, pace, 202, stop, move |client, _| {
        let (api, keys, body) = (api.clone(), keys.clone(), body.clone());
        async move { api.submit(&keys[client], body).await }
    })
    .await
}
