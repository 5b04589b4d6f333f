//! `gengatectl webhooks …`: the webhooks gengate sends to clients when their generations end
//! (see `gengate_shared::client_webhooks`), through the same functions the admin API uses.
//!
//! - `list`, `show`: deliveries and every attempt of one.
//! - `redeliver ID…`: makes deliveries due again now; a worker's scheduler sends each again
//!   within `client_webhooks.schedule_ms`, with the same `webhook-id` and the same body. All or
//!   nothing: every id is checked first, in one transaction, and one that cannot be redelivered
//!   (unknown, or its endpoint disabled) refuses the whole call, so nothing changes.
//! - `endpoints list|create|disable`: a user's default endpoints. `create` shows the endpoint's
//!   signing secret, once; it is derived from `webhook.secret`, so gengatectl must run with the
//!   workers' `[webhook]` settings.

use anyhow::Context;
use gengate_shared::accounts;
use gengate_shared::client_webhooks::deliveries::{
    self, AttemptView, DeliveryStatus, DeliveryView,
};
use gengate_shared::client_webhooks::endpoints::{self, Endpoint, EndpointError, NewEndpoint};
use gengate_shared::config::Settings;
use gengate_shared::db;
use gengate_shared::generation::callback_token::CallbackKeys;
use gengate_shared::ids::{ApiKeyId, UserId};
use gengate_shared::validation::Text;
use serde::Serialize;
use serde_json::json;
use sqlx::types::Uuid;

use super::output::{self, Table, rfc3339};
use super::{Refused, connect_db};

/// How much of a last error the delivery list shows.
const ERROR_COLUMN_CHARS: usize = 60;

/// Reads `--status`: `pending`, `delivered` or `failed`.
pub fn parse_status(text: &str) -> Result<DeliveryStatus, String> {
    match text {
        "pending" => Ok(DeliveryStatus::Pending),
        "delivered" => Ok(DeliveryStatus::Delivered),
        "failed" => Ok(DeliveryStatus::Failed),
        _ => Err("one of pending, delivered, failed".to_owned()),
    }
}

fn status_name(status: DeliveryStatus) -> &'static str {
    match status {
        DeliveryStatus::Pending => "pending",
        DeliveryStatus::Delivered => "delivered",
        DeliveryStatus::Failed => "failed",
    }
}

/// A delivery id as an operator writes it (`msg_…` or a UUID), or a refusal that says so.
fn delivery_id(text: &str) -> Result<Uuid, Refused> {
    deliveries::parse_id(text).ok_or_else(|| {
        Refused(format!("{text:?} is not a delivery id (msg_ and 32 hex digits, or a UUID)"))
    })
}

/// The host (and port) of a URL, without its path or query: a client's URL may carry a token
/// of its own there.
fn url_host(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    authority.rsplit_once('@').map_or(authority, |(_, host)| host)
}

/// At most `max` characters of `text`, with `…` when cut.
fn truncate(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let mut cut: String = text.chars().take(max.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

/// When the delivery's next attempt is due (pending), or when it ended.
fn next_or_finished(view: &DeliveryView) -> String {
    match (view.status, view.next_attempt_at, view.finished_at) {
        (DeliveryStatus::Pending, Some(at), _) => format!("next {}", rfc3339(at)),
        (_, _, Some(at)) => rfc3339(at),
        _ => "-".to_owned(),
    }
}

/// What an attempt came to, as a person reads it. An attempt with neither a status nor an error
/// never finished: its worker stopped (or, the last one of a pending delivery, it may be under
/// way now).
fn attempt_outcome(attempt: &AttemptView, last_of_pending: bool) -> String {
    match (&attempt.error, attempt.status_code) {
        (Some(error), _) => error.clone(),
        (None, Some(_)) => "delivered".to_owned(),
        (None, None) if last_of_pending => "under way, or cut short (worker stopped)".to_owned(),
        (None, None) => "cut short (worker stopped)".to_owned(),
    }
}

/// `gengatectl webhooks list`: deliveries, newest first.
pub async fn list(
    settings: &Settings,
    filter: &deliveries::Filter,
    json: bool,
) -> anyhow::Result<()> {
    let pool = connect_db(settings).await?;
    let found = deliveries::list(&pool, filter).await.context("reading webhook deliveries")?;
    if json {
        return output::json(&json!({"data": found}));
    }
    if found.is_empty() {
        println!("no webhook deliveries match");
        return Ok(());
    }
    let mut table = Table::new(&[
        "WEBHOOK ID",
        "GENERATION",
        "EVENT",
        "STATUS",
        "ATTEMPTS",
        "LAST CODE",
        "NEXT / FINISHED",
        "HOST",
        "LAST ERROR",
    ]);
    for view in &found {
        let last_code = view
            .attempt_log
            .last()
            .and_then(|a| a.status_code)
            .map_or_else(|| "-".to_owned(), |code| code.to_string());
        table.row(vec![
            view.id.clone(),
            view.generation_id.to_string(),
            view.event.clone(),
            status_name(view.status).to_owned(),
            view.attempts.to_string(),
            last_code,
            next_or_finished(view),
            url_host(&view.url).to_owned(),
            view.last_error.as_deref().map(|e| truncate(e, ERROR_COLUMN_CHARS)).unwrap_or_default(),
        ]);
    }
    println!("{}", table.render());
    println!("{} deliveries shown (newest first, at most {})", found.len(), filter.limit);
    Ok(())
}

/// `gengatectl webhooks show ID`: one delivery with every attempt.
pub async fn show(settings: &Settings, id: &str, json: bool) -> anyhow::Result<()> {
    let uuid = delivery_id(id)?;
    let pool = connect_db(settings).await?;
    let view = deliveries::get(&pool, uuid)
        .await
        .context("reading the webhook delivery")?
        .ok_or_else(|| Refused(format!("no webhook delivery {id}")))?;
    if json {
        return output::json(&view);
    }
    println!("webhook delivery {} ({uuid})", view.id);
    println!("  generation  {}", view.generation_id);
    println!("  event       {}", view.event);
    println!("  url         {}", view.url);
    println!("  format      {}", view.format.as_str());
    match view.endpoint_id {
        Some(endpoint) => println!("  endpoint    {endpoint} (a default endpoint)"),
        None => println!("  endpoint    - (the URL the request named)"),
    }
    println!("  status      {} after {} attempts", status_name(view.status), view.attempts);
    println!("  created     {}", rfc3339(view.created_at));
    match (view.status, view.next_attempt_at, view.finished_at) {
        (DeliveryStatus::Pending, Some(at), _) => println!("  next        {}", rfc3339(at)),
        (_, _, Some(at)) => println!("  finished    {}", rfc3339(at)),
        _ => {}
    }
    if let Some(error) = &view.last_error {
        println!("  last error  {error}");
    }
    if view.attempt_log.is_empty() {
        println!("\nno attempt yet");
        return Ok(());
    }
    let mut attempts = Table::new(&["ATTEMPT", "STARTED", "STATUS", "LATENCY", "OUTCOME"]);
    let last = view.attempt_log.len() - 1;
    for (i, attempt) in view.attempt_log.iter().enumerate() {
        let last_of_pending = i == last && view.status == DeliveryStatus::Pending;
        attempts.row(vec![
            attempt.attempt.to_string(),
            rfc3339(attempt.started_at),
            attempt.status_code.map_or_else(|| "-".to_owned(), |code| code.to_string()),
            attempt.latency_ms.map_or_else(|| "-".to_owned(), |ms| format!("{ms} ms")),
            attempt_outcome(attempt, last_of_pending),
        ]);
    }
    println!("\nattempts:\n{}", attempts.render());
    Ok(())
}

/// A delivery made due again, and how it stood before.
#[derive(Debug, Serialize)]
struct Redelivered {
    /// How it stood before (`failed`, `delivered`, or `pending` waiting for a retry).
    previous_status: DeliveryStatus,
    #[serde(flatten)]
    delivery: DeliveryView,
}

/// `gengatectl webhooks redeliver ID…`: every delivery named is due again now, or, if any of them
/// cannot be (unknown, or its endpoint was disabled), none is.
pub async fn redeliver(settings: &Settings, ids: &[String], json: bool) -> anyhow::Result<()> {
    let mut chosen: Vec<(&str, Uuid)> = Vec::new();
    for text in ids {
        let uuid = delivery_id(text)?;
        if !chosen.iter().any(|(_, seen)| *seen == uuid) {
            chosen.push((text, uuid));
        }
    }
    if chosen.is_empty() {
        return Err(Refused("name at least one delivery (msg_… or a UUID)".into()).into());
    }
    let pool = connect_db(settings).await?;
    let mut tx = pool.begin().await?;
    let mut problems = Vec::new();
    let mut before = Vec::new();
    for &(text, uuid) in &chosen {
        let Some(view) = deliveries::get(&mut *tx, uuid).await? else {
            problems.push(format!("no webhook delivery {text}"));
            continue;
        };
        // A worker ends a delivery to a disabled endpoint without sending it: redelivering it
        // would only fail it again.
        if let Some(endpoint) = view.endpoint_id
            && let Some(reason) =
                endpoints::get(&mut *tx, endpoint).await?.and_then(|e| e.disabled_reason)
        {
            problems.push(format!(
                "{}: its endpoint {endpoint} is disabled ({reason}), so it would not be sent",
                view.id
            ));
            continue;
        }
        before.push((uuid, view.status));
    }
    if !problems.is_empty() {
        tx.rollback().await?;
        return Err(Refused(format!("nothing redelivered: {}", problems.join("; "))).into());
    }
    let mut done = Vec::new();
    for (uuid, previous_status) in before {
        let delivery = deliveries::redeliver(&mut *tx, uuid)
            .await?
            .with_context(|| format!("the delivery {uuid} vanished while it was redelivered"))?;
        done.push(Redelivered { previous_status, delivery });
    }
    tx.commit().await.context("committing the redelivery")?;
    if json {
        return output::json(&json!({"data": done}));
    }
    for r in &done {
        println!(
            "{}: due again now (was {} after {} attempts; {} to {})",
            r.delivery.id,
            status_name(r.previous_status),
            r.delivery.attempts,
            r.delivery.event,
            url_host(&r.delivery.url)
        );
    }
    println!(
        "a worker sends each again within about {} ms, with the same webhook-id and body; \
         `gengatectl webhooks show <id>` follows it",
        settings.client_webhooks.schedule_ms
    );
    Ok(())
}

/// How an endpoint stands, in a few words.
fn endpoint_state(endpoint: &Endpoint) -> String {
    match (&endpoint.disabled_at, &endpoint.disabled_reason, &endpoint.failing_since) {
        (Some(at), reason, _) => {
            format!("disabled {}: {}", rfc3339(*at), reason.as_deref().unwrap_or("-"))
        }
        (None, _, Some(since)) => format!("live, failing since {}", rfc3339(*since)),
        (None, _, None) => "live".to_owned(),
    }
}

fn endpoint_events(endpoint: &Endpoint) -> String {
    endpoint.events.as_ref().map_or_else(|| "all".to_owned(), |events| events.join(","))
}

/// `gengatectl webhooks endpoints list --user USER`: live and disabled, oldest first.
pub async fn list_endpoints(settings: &Settings, user: UserId, json: bool) -> anyhow::Result<()> {
    let pool = connect_db(settings).await?;
    accounts::find_user(&pool, user)
        .await
        .context("reading the user")?
        .ok_or_else(|| Refused(format!("no user {user}")))?;
    let found = endpoints::of_user(&pool, user).await.context("reading webhook endpoints")?;
    if json {
        return output::json(&json!({"data": found}));
    }
    if found.is_empty() {
        println!("user {user} has no webhook endpoints");
        return Ok(());
    }
    let mut table = Table::new(&["ID", "API KEY", "URL", "EVENTS", "CREATED", "STATE"]);
    for e in &found {
        table.row(vec![
            e.id.to_string(),
            e.api_key_id.map_or_else(|| "(any)".to_owned(), |k| k.to_string()),
            e.url.clone(),
            endpoint_events(e),
            rfc3339(e.created_at),
            endpoint_state(e),
        ]);
    }
    println!("{}", table.render());
    Ok(())
}

/// What `gengatectl webhooks endpoints create` registers.
#[derive(Debug)]
pub struct EndpointArgs {
    /// The user.
    pub user: UserId,
    /// Where deliveries go.
    pub url: String,
    /// Only this API key's requests.
    pub key: Option<ApiKeyId>,
    /// The events it receives (none given: all).
    pub events: Vec<String>,
    /// The operator's note.
    pub description: Option<String>,
}

/// Checks the arguments as the admin API checks its body (the same rules,
/// [`NewEndpoint::checked`]); every problem at once, named by its flag.
fn new_endpoint(settings: &Settings, args: EndpointArgs) -> Result<NewEndpoint, Refused> {
    let events = (!args.events.is_empty()).then_some(args.events.as_slice());
    NewEndpoint::checked(
        args.user,
        args.key,
        &args.url,
        events,
        args.description.clone(),
        &settings.client_webhooks,
    )
    .map_err(|errors| {
        let said: Vec<String> = errors
            .iter()
            .map(|e| match e.field.strip_prefix("events[") {
                Some(rest) => {
                    let i: usize = rest.trim_end_matches(']').parse().unwrap_or(0);
                    let name = args.events.get(i).map(String::as_str).unwrap_or_default();
                    format!("--event {name:?}: {}", e.message)
                }
                None => format!("--{} {}", e.field, e.message),
            })
            .collect();
        Refused(said.join("; "))
    })
}

/// `gengatectl webhooks endpoints create`: the endpoint, and its signing secret (shown once).
pub async fn create_endpoint(
    settings: &Settings,
    args: EndpointArgs,
    json: bool,
) -> anyhow::Result<()> {
    let new = new_endpoint(settings, args)?;
    // The secret is derived from the server key: without one there is nothing to show.
    let keys = CallbackKeys::required(&settings.webhook).map_err(Refused)?;
    let pool = connect_db(settings).await?;
    let made = db::transaction!(&pool, EndpointError, |tx| endpoints::register(tx, &new, &keys)
        .await?)
    .await;
    let (endpoint, secret) = match made {
        Ok(made) => made,
        Err(EndpointError::NotFound) => {
            return Err(Refused(match new.api_key_id {
                Some(key) => format!("no user {} with an API key {key}", new.user_id),
                None => format!("no user {}", new.user_id),
            })
            .into());
        }
        Err(EndpointError::Exists(existing)) => {
            let how = existing.map_or_else(
                || "disable it first".to_owned(),
                |id| {
                    format!("({id}); disable it first (gengatectl webhooks endpoints disable {id})")
                },
            );
            return Err(Refused(format!(
                "a live endpoint is registered for this user or key already {how}"
            ))
            .into());
        }
        Err(EndpointError::Database(err)) => return Err(err.into()),
    };
    let secret = secret
        .secret(&keys)
        .with_context(|| {
            format!(
                "the key version {} of the endpoint's secret is not configured",
                secret.key_version
            )
        })?
        .reveal();
    if json {
        let mut body = serde_json::to_value(&endpoint)?;
        body["secret"] = json!(secret);
        return output::json(&body);
    }
    let scope = match endpoint.api_key_id {
        Some(key) => format!("the requests of API key {key}"),
        None => "every request of the user".to_owned(),
    };
    println!("registered webhook endpoint {} for user {}", endpoint.id, endpoint.user_id);
    println!("  url     {}", endpoint.url);
    println!("  events  {}", endpoint_events(&endpoint));
    println!("  for     {scope} that names no webhook_url of its own");
    println!(
        "signing secret (shown once; give it to the client, whose Standard Webhooks verifier \
         takes it as it is):\n{secret}"
    );
    Ok(())
}

/// `gengatectl webhooks endpoints disable ID`: nothing more is sent to it; its pending deliveries
/// end `failed` with the reason when their next attempt comes.
pub async fn disable_endpoint(
    settings: &Settings,
    id: Uuid,
    reason: Option<String>,
    json: bool,
) -> anyhow::Result<()> {
    if let Some(reason) = &reason {
        if reason.trim().is_empty() {
            return Err(Refused("--reason must say why (its owner sees it)".into()).into());
        }
        if let Some(why) = Text::Free.check(reason) {
            return Err(Refused(format!("--reason {why}")).into());
        }
    }
    let reason = reason.unwrap_or_else(|| "disabled by an operator".to_owned());
    let pool = connect_db(settings).await?;
    let (endpoint, changed) = match endpoints::disable(&pool, id, &reason).await? {
        Some(endpoint) => (endpoint, true),
        None => {
            let endpoint = endpoints::get(&pool, id)
                .await?
                .ok_or_else(|| Refused(format!("no webhook endpoint {id}")))?;
            (endpoint, false)
        }
    };
    if json {
        return output::json(&endpoint);
    }
    if changed {
        println!("disabled webhook endpoint {id} of user {}: {reason}", endpoint.user_id);
    } else {
        println!("nothing to do: webhook endpoint {id} is already {}", endpoint_state(&endpoint));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_are_shown_without_paths_queries_or_credentials() {
        assert_eq!(url_host("https://hooks.example.com/a/b?token=x"), "hooks.example.com");
        assert_eq!(url_host("http://127.0.0.1:9000/hook"), "127.0.0.1:9000");
        assert_eq!(url_host("https://u:p@h.example.com#x"), "h.example.com");
        assert_eq!(url_host("https://[::1]:8443?x"), "[::1]:8443");
    }

    #[test]
    fn long_errors_are_cut_with_an_ellipsis() {
        assert_eq!(truncate("short", 10), "short");
        assert_eq!(truncate("abcdefghijk", 5), "abcd…");
        assert_eq!(truncate("ééééé", 5), "ééééé");
    }

    #[test]
    fn statuses_read_as_written() {
        for name in ["pending", "delivered", "failed"] {
            assert_eq!(status_name(parse_status(name).unwrap()), name);
        }
        assert!(parse_status("done").is_err());
    }
}
