//! Webhooks to clients: when a generation ends (and when its files are stored), and, for a client
//! that asks, when the provider starts working on it, gengate POSTs the generation object to the
//! client's URL, signed as the Standard Webhooks specification says
//! (<https://www.standardwebhooks.com>), so that the client libraries that verify those verify
//! ours.
//!
//! - A client names a URL with its request (`webhook_url`, optionally `webhook_events`), or an
//!   operator registers a default endpoint for a user or one of its API keys ([`endpoints`]). The
//!   most specific target receives: the request's URL, else its key's endpoint, else its user's.
//! - The transition that ends a generation (or submits it, for `generation.processing`) writes a
//!   `notify.generation` message to the outbox in its own statement
//!   ([`crate::generation::transitions`]), so a final status is never without its notification; a
//!   worker turns the message into a delivery ([`deliveries`]) whose id is the `webhook-id` header
//!   and whose body is fixed at the first attempt.
//! - A target without an event list takes every event but the opt-in ones ([`Event::OPT_IN`]:
//!   `generation.processing`), so clients that never asked for them are never sent them.
//! - Deliveries are sent at least once: a worker leases the delivery while it sends, and a retry
//!   (or a delivery whose worker died) is due again at a time kept in the database, which the
//!   workers' scheduler publishes.
//! - Signing secrets are derived from the server key and a stored id ([`secrets`]), never stored;
//!   addresses are checked against private networks before every attempt ([`address`]).

pub mod address;
pub mod deliveries;
pub mod endpoints;
pub mod secrets;
pub mod signing;

use std::sync::LazyLock;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::config::ClientWebhookSettings;
use crate::db::Tx;
use crate::generation::GenerationStatus;
use crate::ids::GenerationId;
use crate::names::named_enum;
use crate::queue::{Envelope, MessageKind, payloads};
use crate::validation::FieldError;

named_enum! {
    /// What a client is told about.
    pub enum Event ("webhook event") {
        /// The provider accepted the generation's task and is working on it (`queued →
        /// submitted`; Kling's `processing`). Opt-in: only a target whose event list names it
        /// receives it. Deliveries are not ordered: it may arrive after the generation's end.
        Processing = "generation.processing",
        /// The generation completed: its result is in the payload.
        Completed = "generation.completed",
        /// The generation failed (its credits were returned); a late success may still follow.
        Failed = "generation.failed",
        /// The client canceled it (its credits were returned).
        Canceled = "generation.canceled",
        /// Its result files were copied into gengate's storage (each file's `archive_status`
        /// says how that went): the links in the payload are gengate's own.
        Archived = "generation.archived",
    }
}

impl Event {
    /// The events a target receives only when its event list names them: a target without a list
    /// (`None`, `NULL`) receives every other event. [`HAS_TARGET_SQL`] and [`deliveries::open`]
    /// read this list into SQL ([`takes_sql`]).
    pub const OPT_IN: [Event; 1] = [Event::Processing];

    /// The event a transition to `status` makes, if any (the only transition to `submitted` is
    /// `queued → submitted`).
    pub fn on_status(status: GenerationStatus) -> Option<Event> {
        match status {
            GenerationStatus::Submitted => Some(Event::Processing),
            GenerationStatus::Completed => Some(Event::Completed),
            GenerationStatus::Failed => Some(Event::Failed),
            GenerationStatus::Canceled => Some(Event::Canceled),
            GenerationStatus::Queued => None,
        }
    }

    /// Whether a target with the event list `events` (`None`: it has none) receives this event:
    /// a list receives what it names; no list receives everything but [`Event::OPT_IN`]. (What
    /// [`takes_sql`] says in SQL.)
    pub fn taken_by(self, events: Option<&[Event]>) -> bool {
        match events {
            Some(events) => events.contains(&self),
            None => !Event::OPT_IN.contains(&self),
        }
    }
}

/// The shape of a delivery's body (`generations.webhook_format`, `webhook_deliveries.format`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// Standard Webhooks' payload: `{type, timestamp, data: <the generation object>}`.
    #[default]
    Standard,
    /// Kling's callback: the bare Kling task object (`crate::kling_task::task`), for a Kling
    /// request's `callback_url`.
    Kling,
}

impl Format {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Standard => "standard",
            Format::Kling => "kling",
        }
    }

    /// Reads a stored name (anything unknown is the standard format).
    pub fn from_stored(name: &str) -> Format {
        if name == "kling" { Format::Kling } else { Format::Standard }
    }
}

/// A request's own webhook: where its events go, and which (`None`: all but [`Event::OPT_IN`]), in
/// which shape.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subscription {
    /// The URL, in normal form.
    pub url: String,
    /// The events sent there; `None` for all but [`Event::OPT_IN`].
    pub events: Option<Vec<Event>>,
    /// The body's shape.
    #[serde(default)]
    pub format: Format,
}

impl Subscription {
    /// The events as stored (`generations.webhook_events`).
    pub fn event_names(&self) -> Option<Vec<&'static str>> {
        self.events.as_ref().map(|events| events.iter().map(|e| e.as_str()).collect())
    }
}

/// The request fields this module reads (the catalogue leaves them alone).
pub const REQUEST_FIELDS: [&str; 2] = ["webhook_url", "webhook_events"];

/// Reads `webhook_url` and `webhook_events` of a submit's body. `webhook_events` without a URL
/// is an error; so is an event twice, an unknown one, or a URL the address rules refuse.
pub fn subscription(
    body: &Value,
    settings: &ClientWebhookSettings,
) -> Result<Option<Subscription>, Vec<FieldError>> {
    let empty = Map::new();
    let body = body.as_object().unwrap_or(&empty);
    let mut errors = Vec::new();
    let url = match body.get("webhook_url") {
        None | Some(Value::Null) => None,
        Some(Value::String(text)) => match address::check_url(text, settings) {
            Ok(url) => Some(url.to_string()),
            Err(why) => {
                errors.push(FieldError::new("webhook_url", why));
                None
            }
        },
        Some(_) => {
            errors.push(FieldError::new("webhook_url", "must be a string"));
            None
        }
    };
    let events = match body.get("webhook_events") {
        None | Some(Value::Null) => None,
        Some(Value::Array(items)) if !items.is_empty() => {
            Some(parse_events(items.iter().map(Value::as_str), "webhook_events", &mut errors))
        }
        Some(_) => {
            errors.push(FieldError::new("webhook_events", "must be a non-empty array of events"));
            None
        }
    };
    if events.is_some() && url.is_none() && !body.contains_key("webhook_url") {
        errors.push(FieldError::new("webhook_events", "needs a webhook_url"));
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(url.map(|url| Subscription { url, events, format: Format::Standard }))
}

/// Reads a list of event names (`None`: an item that is not a string), each once; what is wrong
/// is added to `errors` as `{field}[i]`.
pub fn parse_events<'a>(
    names: impl IntoIterator<Item = Option<&'a str>>,
    field: &str,
    errors: &mut Vec<FieldError>,
) -> Vec<Event> {
    let mut events = Vec::new();
    for (i, name) in names.into_iter().enumerate() {
        match name.map(str::parse::<Event>) {
            Some(Ok(event)) if !events.contains(&event) => events.push(event),
            Some(Ok(_)) => errors.push(FieldError::new(format!("{field}[{i}]"), "is listed twice")),
            _ => errors.push(FieldError::new(
                format!("{field}[{i}]"),
                format!(
                    "one of {}",
                    Event::ALL.iter().map(|e| e.as_str()).collect::<Vec<_>>().join(", ")
                ),
            )),
        }
    }
    events
}

/// The idempotency hash of a request with its webhook: the same key with another URL or other
/// events is another request. A request without one keeps the hash it had before webhooks
/// existed, so keys used before an upgrade replay as they did.
pub fn request_hash(hash: [u8; 32], subscription: Option<&Subscription>) -> [u8; 32] {
    let Some(subscription) = subscription else { return hash };
    let mut digest = Sha256::new();
    digest.update(hash);
    digest.update(b"\0webhook_url\0");
    digest.update(subscription.url.as_bytes());
    if let Some(mut events) = subscription.event_names() {
        // A Kling callback's events are the format's, not the client's: hashed as they were
        // before it was told `processing` too, so a Kling create sent again with the same
        // `external_task_id` across that upgrade still answers its task.
        if subscription.format == Format::Kling {
            events.retain(|name| *name != Event::Processing.as_str());
        }
        digest.update(b"\0webhook_events\0");
        digest.update(events.join(",").as_bytes());
    }
    if subscription.format != Format::Standard {
        digest.update(b"\0webhook_format\0");
        digest.update(subscription.format.as_str().as_bytes());
    }
    digest.finalize().into()
}

/// The condition that a target whose event list is `events` (a `text[]` expression, `NULL` when
/// it has none) takes the event `{event}`: a list takes what it names; no list takes every event
/// but the opt-in ones. [`Event::taken_by`] in SQL.
pub fn takes_sql(events: &str) -> String {
    let opt_in: Vec<String> = Event::OPT_IN.iter().map(|e| format!("'{}'", e.as_str())).collect();
    format!(
        "(CASE WHEN {events} IS NULL THEN {{event}} <> ALL(ARRAY[{opt_in}]::text[])
               ELSE {{event}} = ANY({events}) END)",
        opt_in = opt_in.join(", ")
    )
}

/// The condition, on a generation `g`, that its event `{event}` has somewhere to go: the request's
/// URL if it has one, else its API key's live endpoint, else its user's; and that target takes the
/// event ([`takes_sql`]: a target without an event list does not take the opt-in ones). (Resolved
/// again when the delivery is made, by [`deliveries::open`], the same way.)
pub static HAS_TARGET_SQL: LazyLock<String> = LazyLock::new(|| {
    format!(
        "
    CASE WHEN g.webhook_url IS NOT NULL
         THEN {request}
         ELSE COALESCE((SELECT {endpoint}
                        FROM webhook_endpoints e
                        WHERE e.user_id = g.user_id AND e.disabled_at IS NULL
                          AND (e.api_key_id IS NULL OR e.api_key_id = g.api_key_id)
                        ORDER BY e.api_key_id NULLS LAST LIMIT 1), false)
    END",
        request = takes_sql("g.webhook_events"),
        endpoint = takes_sql("e.events"),
    )
});

/// Writes the `generation.archived` notification of a generation to the outbox if no file of it is
/// still waiting to be copied and the event has somewhere to go; call in the transaction that
/// recorded a file's copy (or its failure). Returns whether it was written.
///
/// The generation's row is locked first: two copies of its files that end at once, in two
/// transactions, would otherwise each see the other's file still pending, and neither write it.
pub async fn notify_when_archived(
    tx: &mut Tx,
    generation: GenerationId,
) -> Result<bool, sqlx::Error> {
    sqlx::query("SELECT 1 FROM generations WHERE id = $1 FOR UPDATE")
        .bind(generation)
        .execute(&mut **tx)
        .await?;
    let envelope = Envelope::of(
        generation,
        &payloads::Notify { event: Event::Archived, delivery: uuid::Uuid::now_v7() },
    );
    let sql = format!(
        "INSERT INTO outbox (message_id, routing_key, body)
         SELECT $2, $3, $4 FROM generations g
         WHERE g.id = $1
           AND NOT EXISTS (SELECT 1 FROM generation_videos v WHERE v.generation_id = g.id AND v.archive_status = 'pending')
           AND NOT EXISTS (SELECT 1 FROM generation_images i WHERE i.generation_id = g.id AND i.archive_status = 'pending')
           AND {}",
        HAS_TARGET_SQL.replace("{event}", "$5::text")
    );
    let written = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(generation)
        .bind(envelope.message_id)
        .bind(MessageKind::Notify.routing_key())
        .bind(serde_json::to_value(&envelope).expect("an envelope always serializes"))
        .bind(Event::Archived.as_str())
        .execute(&mut **tx)
        .await?;
    Ok(written.rows_affected() == 1)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::config::Settings;

    fn settings(allow_http: bool, allow_private: bool) -> ClientWebhookSettings {
        let mut settings =
            Settings::load_from(None, Some(Default::default())).unwrap().client_webhooks;
        settings.allow_http = allow_http;
        settings.allow_private_addresses = allow_private;
        settings
    }

    fn fields(result: Result<Option<Subscription>, Vec<FieldError>>) -> Vec<String> {
        result.expect_err("refused").into_iter().map(|e| e.field).collect()
    }

    #[test]
    fn a_request_may_name_a_url_and_the_events_it_wants() {
        let s = settings(false, false);
        assert_eq!(subscription(&json!({}), &s).unwrap(), None);
        let sub = subscription(
            &json!({"webhook_url": "https://hooks.example.com/gengate",
                    "webhook_events": ["generation.completed", "generation.failed"]}),
            &s,
        )
        .unwrap()
        .unwrap();
        assert_eq!(sub.url, "https://hooks.example.com/gengate");
        assert_eq!(sub.events, Some(vec![Event::Completed, Event::Failed]));
        assert_eq!(
            fields(subscription(&json!({"webhook_events": ["generation.completed"]}), &s)),
            ["webhook_events"]
        );
        assert_eq!(
            fields(subscription(
                &json!({"webhook_url": "https://a.example.com/",
                        "webhook_events": ["generation.done", "generation.failed", "generation.failed"]}),
                &s
            )),
            ["webhook_events[0]", "webhook_events[2]"]
        );
        assert_eq!(
            fields(subscription(
                &json!({"webhook_url": "https://a.example.com/", "webhook_events": []}),
                &s
            )),
            ["webhook_events"]
        );
        assert_eq!(fields(subscription(&json!({"webhook_url": 7}), &s)), ["webhook_url"]);
    }

    #[test]
    fn plain_http_and_private_hosts_are_refused_unless_allowed() {
        let strict = settings(false, false);
        for url in [
            "http://hooks.example.com/x",
            "https://127.0.0.1/x",
            "https://10.1.2.3/x",
            "https://[::1]/x",
            "https://169.254.169.254/latest",
            "https://localhost/x",
            "https://metadata.google.internal/x",
            "https://user:pw@hooks.example.com/x",
            "ftp://hooks.example.com/x",
            "not a url",
        ] {
            assert_eq!(
                fields(subscription(&json!({"webhook_url": url}), &strict)),
                ["webhook_url"],
                "{url}"
            );
        }
        let local = settings(true, true);
        let sub = subscription(&json!({"webhook_url": "http://127.0.0.1:9000/hook"}), &local);
        assert_eq!(sub.unwrap().unwrap().url, "http://127.0.0.1:9000/hook");
        let http_only = settings(true, false);
        assert_eq!(
            fields(subscription(&json!({"webhook_url": "http://127.0.0.1:9000/hook"}), &http_only)),
            ["webhook_url"]
        );
    }

    #[test]
    fn submitting_makes_the_processing_event_and_every_end_its_own() {
        use GenerationStatus::{Canceled, Completed, Failed, Queued, Submitted};
        assert_eq!(Event::on_status(Queued), None);
        assert_eq!(Event::on_status(Submitted), Some(Event::Processing));
        assert_eq!(Event::on_status(Completed), Some(Event::Completed));
        assert_eq!(Event::on_status(Failed), Some(Event::Failed));
        assert_eq!(Event::on_status(Canceled), Some(Event::Canceled));
        assert_eq!("generation.processing".parse::<Event>().unwrap(), Event::Processing);
    }

    #[test]
    fn no_event_list_takes_every_event_but_processing_and_a_list_takes_what_it_names() {
        for &event in Event::ALL {
            assert_eq!(event.taken_by(None), event != Event::Processing, "{event}");
        }
        let ends = [Event::Completed, Event::Failed, Event::Canceled];
        assert!(!Event::Processing.taken_by(Some(&ends)));
        assert!(Event::Completed.taken_by(Some(&ends)));
        assert!(!Event::Archived.taken_by(Some(&ends)));
        let processing = [Event::Processing];
        assert!(Event::Processing.taken_by(Some(&processing)));
        assert!(!Event::Completed.taken_by(Some(&processing)));
        // The SQL reads the same list, for both the request's list and an endpoint's.
        let sql = takes_sql("x.events");
        assert!(
            sql.contains("x.events IS NULL THEN {event} <> ALL(ARRAY['generation.processing']")
        );
        assert!(sql.contains("ELSE {event} = ANY(x.events)"), "{sql}");
        for list in ["g.webhook_events", "e.events"] {
            assert!(HAS_TARGET_SQL.contains(&takes_sql(list)), "{list}: {}", *HAS_TARGET_SQL);
        }
    }

    #[test]
    fn the_request_hash_changes_with_the_webhook_and_only_then() {
        let base = [7u8; 32];
        assert_eq!(request_hash(base, None), base);
        let a = Subscription {
            url: "https://a.example.com/".into(),
            events: None,
            format: Format::Standard,
        };
        let b = Subscription { url: "https://b.example.com/".into(), ..a.clone() };
        let a_completed = Subscription { events: Some(vec![Event::Completed]), ..a.clone() };
        let a_kling = Subscription { format: Format::Kling, ..a.clone() };
        let hashes = [
            request_hash(base, Some(&a)),
            request_hash(base, Some(&b)),
            request_hash(base, Some(&a_completed)),
            request_hash(base, Some(&a_kling)),
        ];
        assert!(hashes.iter().all(|h| *h != base));
        assert_ne!(hashes[0], hashes[1]);
        assert_ne!(hashes[0], hashes[2]);
        assert_ne!(hashes[0], hashes[3]);
        // A standard request naming processing is another request; a Kling callback, which is
        // told processing since an upgrade, hashes as it did before it.
        let a_processing =
            Subscription { events: Some(vec![Event::Processing, Event::Completed]), ..a.clone() };
        assert_ne!(request_hash(base, Some(&a_processing)), hashes[2]);
        let kling = |events: Vec<Event>| Subscription {
            events: Some(events),
            format: Format::Kling,
            ..a.clone()
        };
        let before = kling(vec![Event::Completed, Event::Failed, Event::Canceled]);
        let after =
            kling(vec![Event::Processing, Event::Completed, Event::Failed, Event::Canceled]);
        assert_eq!(request_hash(base, Some(&before)), request_hash(base, Some(&after)));
    }
}
