//! Bench users: one per simulated client, each with its own API key, credits for far more jobs
//! than a run submits and an in-flight limit no run reaches, so that per-user limits measure
//! nothing.

use anyhow::Context;
use futures_util::StreamExt;
use serde_json::json;

use super::client::Api;
use super::progress;

/// Credits each bench user is granted (`system_add`).
pub const CREDITS_PER_USER: i64 = 1_000_000_000;
/// Each bench user's own in-flight limit.
pub const MAX_IN_FLIGHT: i64 = 1_000_000;
/// Admin requests in flight at once while setting up.
const SETUP_PARALLELISM: usize = 8;

/// A user the bench acts as.
#[derive(Clone)]
pub struct BenchUser {
    /// The user's id.
    pub id: String,
    /// An API key of the user.
    pub key: String,
}

impl std::fmt::Debug for BenchUser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BenchUser").field("id", &self.id).finish_non_exhaustive()
    }
}

/// Creates a user with an API key through the admin API; with `credits`, grants them
/// (`system_add`).
pub async fn create_user(
    api: &Api,
    admin_token: &str,
    email: &str,
    name: &str,
    credits: Option<i64>,
) -> anyhow::Result<BenchUser> {
    let user = api
        .admin_post(
            admin_token,
            "/admin/users",
            &json!({"email": email, "name": name, "max_in_flight": MAX_IN_FLIGHT}),
        )
        .await
        .context("creating a bench user")?;
    let id = user["id"].as_str().context("the created user has no id")?.to_owned();
    let key = api
        .admin_post(
            admin_token,
            &format!("/admin/users/{id}/api-keys"),
            &json!({"name": "gengate-bench"}),
        )
        .await
        .context("creating a bench API key")?;
    let key = key["key"].as_str().context("the created API key has no key")?.to_owned();
    if let Some(amount) = credits {
        api.admin_post(
            admin_token,
            &format!("/admin/users/{id}/grants"),
            &json!({"source": "system_add", "amount": amount}),
        )
        .await
        .context("granting bench credits")?;
    }
    Ok(BenchUser { id, key })
}

/// `count` bench users, named after `run_id`.
pub async fn create_users(
    api: &Api,
    admin_token: &str,
    run_id: &str,
    count: usize,
) -> anyhow::Result<Vec<BenchUser>> {
    let bar = progress::count_bar("bench users", count as u64);
    let users: Vec<anyhow::Result<BenchUser>> = futures_util::stream::iter(0..count)
        .map(|i| {
            let bar = bar.clone();
            async move {
                let user = create_user(
                    api,
                    admin_token,
                    &format!("bench-{run_id}-{i}@bench.gengate.local"),
                    &format!("gengate-bench {run_id} client {i}"),
                    Some(CREDITS_PER_USER),
                )
                .await;
                bar.inc(1);
                user
            }
        })
        .buffered(SETUP_PARALLELISM)
        .collect()
        .await;
    bar.finish_and_clear();
    users.into_iter().collect()
}
