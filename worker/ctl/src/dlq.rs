//! The dead-letter queue, for operators: list, show, replay, purge, stats.
//!
//! Reading never loses or reorders anything: messages are fetched with their acknowledgements held
//! and returned when the channel closes, which puts them back where they were. A replay publishes
//! each message to its original routing key with publisher confirms and removes it from the
//! dead-letter queue only after the broker confirmed the copy; the handlers' idempotency makes
//! replaying an event that was already applied harmless.

use std::time::{Duration, Instant};

use futures_util::future::join_all;
use gengate_shared::config::Settings;
use gengate_shared::queue::route::{headers, text_header};
use gengate_shared::queue::{Broker, Parcel, Route, WorkQueue};
use lapin::Channel;
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicGetOptions, BasicNackOptions, QueuePurgeOptions};
use lapin::types::{AMQPValue, FieldTable};
use serde::Serialize;
use serde_json::{Value, json};
use time::OffsetDateTime;

use super::output::{self, Progress, Table, confirm};
use super::{Refused, connect_broker};

/// Which dead letters a command is about.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Only from this work queue (`jobs`, `events`, `poll`, or a full name).
    pub queue: Option<String>,
    /// Only messages of this kind (`job.submit`, `event.provider_update`, …).
    pub kind: Option<String>,
    /// Only messages about this generation.
    pub generation: Option<String>,
    /// Only messages that died within this long.
    pub since: Option<Duration>,
    /// Only these message ids.
    pub messages: Vec<String>,
}

impl Filter {
    /// Whether any criterion is set.
    pub fn is_empty(&self) -> bool {
        self.queue.is_none()
            && self.kind.is_none()
            && self.generation.is_none()
            && self.since.is_none()
            && self.messages.is_empty()
    }

    fn matches(&self, letter: &DeadLetter, broker: &Broker) -> bool {
        if let Some(queue) = &self.queue {
            let full = WorkQueue::ALL
                .iter()
                .find(|q| q.suffix() == queue)
                .map_or_else(|| queue.clone(), |q| broker.topology().queue(*q));
            if letter.original_queue.as_deref() != Some(full.as_str()) {
                return false;
            }
        }
        if self.kind.as_ref().is_some_and(|k| letter.kind.as_ref() != Some(k)) {
            return false;
        }
        if self.generation.as_ref().is_some_and(|g| letter.generation_id.as_ref() != Some(g)) {
            return false;
        }
        if let Some(since) = self.since {
            let cutoff = OffsetDateTime::now_utc() - since;
            if letter.failed_at.is_none_or(|at| at < cutoff) {
                return false;
            }
        }
        self.messages.is_empty() || self.messages.contains(&letter.message_id)
    }
}

/// One dead-lettered message as operators see it.
#[derive(Debug, Clone, Serialize)]
pub struct DeadLetter {
    /// The message's id (the envelope's `message_id`).
    pub message_id: String,
    /// The envelope's kind, if the body is an envelope.
    pub kind: Option<String>,
    /// The generation it is about.
    pub generation_id: Option<String>,
    /// The routing key it was published with (where a replay sends it).
    pub routing_key: String,
    /// The work queue it died in.
    pub original_queue: Option<String>,
    /// How many times it was dead-lettered.
    pub deaths: i64,
    /// Why: the worker's error kind (`database`, `unparsable`, …) or the broker's reason
    /// (`delivery_limit`, `rejected`).
    pub reason: String,
    /// The last error, as the worker reported it.
    pub error: Option<String>,
    /// When it died.
    #[serde(with = "time::serde::rfc3339::option")]
    pub failed_at: Option<OffsetDateTime>,
    /// Every header.
    pub headers: Value,
    /// The body (JSON, or the raw text when it is not JSON).
    pub body: Value,
}

impl DeadLetter {
    fn from_delivery(delivery: &Delivery) -> Self {
        let headers = delivery.properties.headers().clone().unwrap_or_default();
        let text = |key: &str| text_header(&headers, key);
        let body: Value = serde_json::from_slice(&delivery.data).unwrap_or_else(|_| {
            Value::String(String::from_utf8_lossy(&delivery.data).into_owned())
        });
        let deaths = x_deaths(&headers);
        let first_death = deaths.first();
        let message_id = delivery
            .properties
            .message_id()
            .as_ref()
            .map(|id| id.to_string())
            .or_else(|| body["message_id"].as_str().map(str::to_owned))
            .unwrap_or_else(|| "(none)".into());
        let failed_at = text(headers::FAILED_AT)
            .and_then(|t| {
                OffsetDateTime::parse(&t, &time::format_description::well_known::Rfc3339).ok()
            })
            .or_else(|| first_death.and_then(|d| d.time));
        Self {
            message_id,
            kind: body["kind"].as_str().map(str::to_owned),
            generation_id: body["generation_id"].as_str().map(str::to_owned),
            routing_key: delivery.routing_key.to_string(),
            original_queue: text(headers::ORIGINAL_QUEUE)
                .or_else(|| first_death.and_then(|d| d.queue.clone())),
            deaths: if deaths.is_empty() {
                1
            } else {
                deaths.iter().map(|d| d.count).sum::<i64>().max(1)
            },
            reason: text(headers::ERROR_KIND)
                .or_else(|| first_death.and_then(|d| d.reason.clone()))
                .unwrap_or_else(|| "unknown".into()),
            error: text(headers::ERROR),
            failed_at,
            headers: table_to_json(&headers),
            body,
        }
    }
}

/// One entry of RabbitMQ's `x-death` header.
struct Death {
    count: i64,
    reason: Option<String>,
    queue: Option<String>,
    time: Option<OffsetDateTime>,
}

fn x_deaths(headers: &FieldTable) -> Vec<Death> {
    let Some(AMQPValue::FieldArray(entries)) = headers.inner().get("x-death") else {
        return Vec::new();
    };
    entries
        .as_slice()
        .iter()
        .filter_map(|entry| match entry {
            AMQPValue::FieldTable(table) => {
                let get = |k: &str| table.inner().get(k);
                let string = |k: &str| match get(k) {
                    Some(AMQPValue::LongString(s)) => Some(s.to_string()),
                    _ => None,
                };
                Some(Death {
                    count: match get("count") {
                        Some(AMQPValue::LongLongInt(n)) => *n,
                        Some(AMQPValue::LongInt(n)) => i64::from(*n),
                        _ => 1,
                    },
                    reason: string("reason"),
                    queue: string("queue"),
                    time: match get("time") {
                        Some(AMQPValue::Timestamp(t)) => OffsetDateTime::from_unix_timestamp(
                            i64::try_from(*t).unwrap_or(i64::MAX),
                        )
                        .ok(),
                        _ => None,
                    },
                })
            }
            _ => None,
        })
        .collect()
}

fn value_to_json(value: &AMQPValue) -> Value {
    match value {
        AMQPValue::Boolean(b) => json!(b),
        AMQPValue::ShortShortInt(n) => json!(n),
        AMQPValue::ShortShortUInt(n) => json!(n),
        AMQPValue::ShortInt(n) => json!(n),
        AMQPValue::ShortUInt(n) => json!(n),
        AMQPValue::LongInt(n) => json!(n),
        AMQPValue::LongUInt(n) => json!(n),
        AMQPValue::LongLongInt(n) => json!(n),
        AMQPValue::Float(f) => json!(f),
        AMQPValue::Double(f) => json!(f),
        AMQPValue::ShortString(s) => json!(s.to_string()),
        AMQPValue::LongString(s) => json!(s.to_string()),
        AMQPValue::Timestamp(t) => {
            OffsetDateTime::from_unix_timestamp(i64::try_from(*t).unwrap_or(i64::MAX))
                .ok()
                .map(output::rfc3339)
                .map_or(json!(t), |s| json!(s))
        }
        AMQPValue::FieldArray(items) => {
            Value::Array(items.as_slice().iter().map(value_to_json).collect())
        }
        AMQPValue::FieldTable(table) => table_to_json(table),
        other => json!(format!("{other:?}")),
    }
}

fn table_to_json(table: &FieldTable) -> Value {
    Value::Object(table.inner().iter().map(|(k, v)| (k.to_string(), value_to_json(v))).collect())
}

/// The dead-letter queue, opened for one command: every message is held until the command ends.
struct Browse {
    broker: Broker,
    channel: Channel,
    letters: Vec<(Delivery, DeadLetter)>,
}

impl Browse {
    /// Fetches every message in the dead-letter queue, holding them all.
    async fn open(settings: &Settings) -> anyhow::Result<Self> {
        let broker = connect_broker(settings).await?;
        let channel = broker.channel().await?;
        let queue = broker.topology().dead_letter_queue();
        let mut letters = Vec::new();
        while let Some(message) =
            channel.basic_get(queue.clone().into(), BasicGetOptions { no_ack: false }).await?
        {
            let letter = DeadLetter::from_delivery(&message.delivery);
            letters.push((message.delivery, letter));
        }
        Ok(Self { broker, channel, letters })
    }

    /// Returns every message still held to the queue, in its place, and disconnects.
    async fn close(self) {
        let _ = self.channel.close(200, "done".into()).await;
        self.broker.close().await;
    }
}

/// `gengatectl dlq list`.
pub async fn list(
    settings: &Settings,
    filter: &Filter,
    limit: usize,
    json: bool,
) -> anyhow::Result<()> {
    let browse = Browse::open(settings).await?;
    let total = browse.letters.len();
    let chosen: Vec<&DeadLetter> = browse
        .letters
        .iter()
        .map(|(_, l)| l)
        .filter(|l| filter.matches(l, &browse.broker))
        .take(limit)
        .collect();
    let result = if json {
        let rows: Vec<Value> = chosen
            .iter()
            .map(|l| {
                json!({"message_id": l.message_id, "kind": l.kind, "generation_id": l.generation_id,
                       "routing_key": l.routing_key, "original_queue": l.original_queue, "deaths": l.deaths,
                       "reason": l.reason, "error": l.error, "failed_at": l.failed_at.map(output::rfc3339)})
            })
            .collect();
        output::json(&json!({"total": total, "shown": rows.len(), "data": rows}))
    } else {
        let now = OffsetDateTime::now_utc();
        let mut table = Table::new(&[
            "MESSAGE",
            "KIND",
            "GENERATION",
            "QUEUE",
            "DEATHS",
            "REASON",
            "AGE",
            "LAST ERROR",
        ]);
        for l in &chosen {
            table.row(vec![
                l.message_id.clone(),
                l.kind.clone().unwrap_or_else(|| "-".into()),
                l.generation_id.clone().unwrap_or_else(|| "-".into()),
                l.original_queue.clone().unwrap_or_else(|| l.routing_key.clone()),
                l.deaths.to_string(),
                l.reason.clone(),
                l.failed_at
                    .map_or_else(|| "-".into(), |at| output::age((now - at).whole_seconds())),
                l.error.as_deref().map(|e| e.chars().take(80).collect()).unwrap_or_default(),
            ]);
        }
        println!("{}", table.render());
        println!("{} of {} dead letters shown", chosen.len(), total);
        Ok(())
    };
    browse.close().await;
    result
}

/// `gengatectl dlq show MESSAGE_ID`: the full envelope and headers.
pub async fn show(settings: &Settings, message_id: &str) -> anyhow::Result<()> {
    let browse = Browse::open(settings).await?;
    let found = browse.letters.iter().map(|(_, l)| l).find(|l| l.message_id == message_id).cloned();
    browse.close().await;
    let letter =
        found.ok_or_else(|| Refused(format!("no dead letter with message id {message_id}")))?;
    output::json(&letter)
}

/// What a replay did.
#[derive(Debug, Default, Serialize)]
pub struct ReplaySummary {
    /// Dead letters in the queue.
    pub total: usize,
    /// Dead letters the filter chose.
    pub matched: usize,
    /// Republished (confirmed) and removed from the dead-letter queue.
    pub replayed: usize,
    /// Not confirmed by the broker: left in the dead-letter queue.
    pub failed: usize,
    /// A dry run: nothing was published.
    pub dry_run: bool,
}

/// `gengatectl dlq replay`.
pub async fn replay(
    settings: &Settings,
    filter: &Filter,
    all: bool,
    dry_run: bool,
    rate: Option<u32>,
    json: bool,
) -> anyhow::Result<()> {
    if !all && filter.is_empty() {
        return Err(Refused("say which dead letters to replay: --all, --message ID, or filters (--queue, --kind, --generation, --since)".into()).into());
    }
    let browse = Browse::open(settings).await?;
    let mut summary =
        ReplaySummary { total: browse.letters.len(), dry_run, ..ReplaySummary::default() };
    let chosen: Vec<&(Delivery, DeadLetter)> =
        browse.letters.iter().filter(|(_, l)| filter.matches(l, &browse.broker)).collect();
    summary.matched = chosen.len();
    if dry_run {
        if !json {
            for (_, l) in &chosen {
                println!(
                    "would replay {} ({}) to {}",
                    l.message_id,
                    l.kind.as_deref().unwrap_or("-"),
                    l.routing_key
                );
            }
        }
    } else {
        let progress = Progress::new(chosen.len() as u64, "replaying", json);
        // Publish in pipelined chunks; each message leaves the DLQ only after its copy is confirmed.
        let chunk = rate.map_or(200, |r| r.clamp(1, 200) as usize);
        for batch in chosen.chunks(chunk) {
            let started = Instant::now();
            let results = join_all(
                batch.iter().map(|(delivery, letter)| republish(&browse.broker, delivery, letter)),
            )
            .await;
            for ((delivery, _), result) in batch.iter().zip(results) {
                match result {
                    Ok(()) => {
                        delivery.ack(BasicAckOptions::default()).await?;
                        summary.replayed += 1;
                    }
                    Err(err) => {
                        tracing::warn!(error = %err, "replay not confirmed; the dead letter stays");
                        delivery
                            .nack(BasicNackOptions { requeue: true, ..Default::default() })
                            .await?;
                        summary.failed += 1;
                    }
                }
                progress.inc();
            }
            if let Some(rate) = rate {
                let budget = Duration::from_secs_f64(batch.len() as f64 / f64::from(rate.max(1)));
                if let Some(rest) = budget.checked_sub(started.elapsed()) {
                    tokio::time::sleep(rest).await;
                }
            }
        }
        progress.finish();
    }
    browse.close().await;
    if json {
        output::json(&summary)?;
    } else if dry_run {
        println!(
            "dry run: {} of {} dead letters would be replayed",
            summary.matched, summary.total
        );
    } else {
        println!(
            "replayed {} of {} matching dead letters ({} in the queue); {} not confirmed and left in place",
            summary.replayed, summary.matched, summary.total, summary.failed
        );
    }
    if summary.failed > 0 {
        return Err(anyhow::anyhow!("{} dead letters could not be replayed", summary.failed));
    }
    Ok(())
}

/// Publishes a dead letter's body to its original routing key as a new message (see
/// [`Route::Replay`]: the error and death headers stay behind).
async fn republish(
    broker: &Broker,
    delivery: &Delivery,
    letter: &DeadLetter,
) -> Result<(), gengate_shared::queue::BrokerError> {
    let parcel = Parcel {
        routing_key: letter.routing_key.clone(),
        message_id: Some(letter.message_id.clone()),
        ..Parcel::from_delivery(delivery)
    };
    broker.publish(parcel, Route::Replay).await
}

/// `gengatectl dlq purge`.
pub async fn purge(
    settings: &Settings,
    filter: &Filter,
    all: bool,
    yes: bool,
    json: bool,
) -> anyhow::Result<()> {
    if !all && filter.is_empty() {
        return Err(Refused(
            "purge needs --all or filters (--queue, --kind, --generation, --since, --message)"
                .into(),
        )
        .into());
    }
    let browse = Browse::open(settings).await?;
    let total = browse.letters.len();
    let chosen: Vec<&(Delivery, DeadLetter)> =
        browse.letters.iter().filter(|(_, l)| filter.matches(l, &browse.broker)).collect();
    if chosen.is_empty() {
        browse.close().await;
        if json {
            return output::json(&json!({"total": total, "purged": 0}));
        }
        println!("nothing to purge ({total} dead letters, none matched)");
        return Ok(());
    }
    if !yes && !confirm(&format!("permanently delete {} of {} dead letters?", chosen.len(), total))?
    {
        browse.close().await;
        return Err(Refused(
            "not confirmed; nothing was deleted (pass --yes to skip the question)".into(),
        )
        .into());
    }
    let purged = if all && filter.is_empty() {
        // Everything: give the held messages back and purge the queue in one step.
        let channel = browse.channel.clone();
        let queue = browse.broker.topology().dead_letter_queue();
        for (delivery, _) in &browse.letters {
            delivery.nack(BasicNackOptions { requeue: true, ..Default::default() }).await?;
        }
        channel.queue_purge(queue.into(), QueuePurgeOptions::default()).await? as usize
    } else {
        for (delivery, _) in &chosen {
            delivery.ack(BasicAckOptions::default()).await?;
        }
        chosen.len()
    };
    browse.close().await;
    if json {
        return output::json(&json!({"total": total, "purged": purged}));
    }
    println!("purged {purged} of {total} dead letters");
    Ok(())
}

/// `gengatectl dlq stats`: counts by kind and by reason.
pub async fn stats(settings: &Settings, json: bool) -> anyhow::Result<()> {
    let browse = Browse::open(settings).await?;
    let mut by_kind: std::collections::BTreeMap<String, usize> = Default::default();
    let mut by_reason: std::collections::BTreeMap<String, usize> = Default::default();
    for (_, l) in &browse.letters {
        *by_kind
            .entry(l.kind.clone().unwrap_or_else(|| "(not an envelope)".into()))
            .or_default() += 1;
        *by_reason.entry(l.reason.clone()).or_default() += 1;
    }
    let total = browse.letters.len();
    browse.close().await;
    if json {
        return output::json(&json!({"total": total, "by_kind": by_kind, "by_reason": by_reason}));
    }
    println!("{total} dead letters");
    let mut kinds = Table::new(&["KIND", "COUNT"]);
    for (k, n) in &by_kind {
        kinds.row(vec![k.clone(), n.to_string()]);
    }
    let mut reasons = Table::new(&["REASON", "COUNT"]);
    for (r, n) in &by_reason {
        reasons.row(vec![r.clone(), n.to_string()]);
    }
    println!("\n{}\n\n{}", kinds.render(), reasons.render());
    Ok(())
}
