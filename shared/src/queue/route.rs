//! Where a published message goes, and the headers gengate reads and writes on the way.
//!
//! Every publish names a [`Route`]: to its queue now, to its queue after a delay (through the
//! delay tier that covers it), to the dead-letter queue with the reason, or back from the
//! dead-letter queue (replay). The route picks the exchange and writes the headers, so the
//! consumer, webhook ingress, the outbox relay, the sweeper and `gengatectl dlq replay` cannot
//! disagree on them.

use std::time::Duration;

use lapin::message::Delivery;
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use time::OffsetDateTime;

use super::envelope::Envelope;
use super::topology::Topology;

/// The headers gengate reads and writes.
pub mod headers {
    /// The delay tier a message waits in (milliseconds); the delay exchange routes on it.
    pub const DELAY: &str = "gengate-delay-ms";
    /// The kind of the last error of a dead-lettered message.
    pub const ERROR_KIND: &str = "x-gengate-error-kind";
    /// The last error's message.
    pub const ERROR: &str = "x-gengate-error";
    /// The queue the dead letter was taken from.
    pub const ORIGINAL_QUEUE: &str = "x-gengate-original-queue";
    /// When it was dead-lettered (RFC 3339).
    pub const FAILED_AT: &str = "x-gengate-failed-at";
    /// When an operator replayed it (RFC 3339).
    pub const REPLAYED_AT: &str = "x-gengate-replayed-at";
    /// The prefix of every header gengate writes on a dead letter.
    pub const GENGATE_PREFIX: &str = "x-gengate-";
    /// RabbitMQ's count of earlier deliveries (quorum queues).
    pub const DELIVERY_COUNT: &str = "x-delivery-count";
    /// RabbitMQ's record of a message's dead-lettering by the broker itself.
    pub const X_DEATH: &str = "x-death";
    /// The prefix of RabbitMQ's `x-first-death-*` headers.
    pub const X_FIRST_DEATH_PREFIX: &str = "x-first-death";
}

/// Why a message is dead-lettered, written into its headers.
#[derive(Debug, Clone)]
pub struct DeadLetterNote<'a> {
    /// A short, stable name for the reason.
    pub error_kind: &'a str,
    /// Details (truncated to 2,000 bytes).
    pub error: &'a str,
    /// The queue it was taken from.
    pub original_queue: &'a str,
}

/// Where a message goes.
#[derive(Debug, Clone)]
pub enum Route<'a> {
    /// To its queue, now.
    Now,
    /// To its queue after at least this long: through the delay tier that covers it (the longest
    /// tier, if none does; a poll that comes back early waits again).
    Delayed(Duration),
    /// To the dead-letter queue, with the reason in its headers (the ones it had are kept).
    DeadLetter(DeadLetterNote<'a>),
    /// From the dead-letter queue back to its queue as a new message: the broker's death
    /// headers and gengate's error headers stay behind, and the replay time is added.
    Replay,
}

/// A message as the broker sees it: routing key, body, id and headers. An [`Envelope`] becomes
/// one; so does an outbox row, and a delivery being dead-lettered or replayed, whose bodies go
/// out exactly as they came.
#[derive(Debug, Clone)]
pub struct Parcel {
    /// The routing key (the message kind's name).
    pub routing_key: String,
    /// The JSON body.
    pub body: Vec<u8>,
    /// The AMQP `message_id` property.
    pub message_id: Option<String>,
    /// Headers.
    pub headers: FieldTable,
}

impl Parcel {
    /// An envelope, ready to publish.
    pub fn of(envelope: &Envelope) -> Self {
        Self {
            routing_key: envelope.kind.routing_key().to_owned(),
            body: envelope.to_bytes(),
            message_id: Some(envelope.message_id.to_string()),
            headers: FieldTable::default(),
        }
    }

    /// A delivery as it came: its routing key, body, id and headers.
    pub fn from_delivery(delivery: &Delivery) -> Self {
        Self {
            routing_key: delivery.routing_key.as_str().to_owned(),
            body: delivery.data.clone(),
            message_id: delivery.properties.message_id().as_ref().map(|id| id.to_string()),
            headers: delivery.properties.headers().clone().unwrap_or_default(),
        }
    }

    /// Sets a text header.
    fn set(&mut self, name: &str, value: &str) {
        self.headers
            .insert(ShortString::from(name), AMQPValue::LongString(LongString::from(value)));
    }

    /// Applies `route`: returns the exchange to publish to, with the headers rewritten.
    pub(crate) fn route(mut self, topology: &Topology, route: &Route<'_>) -> (String, Self) {
        let exchange = match route {
            Route::Now => topology.exchange(),
            Route::Delayed(delay) => {
                let tier = topology.tier_for(*delay);
                self.set(headers::DELAY, &tier.as_millis().to_string());
                topology.delay_exchange()
            }
            Route::DeadLetter(note) => {
                self.set(headers::ERROR_KIND, note.error_kind);
                self.set(headers::ERROR, &truncate(note.error, 2000));
                self.set(headers::ORIGINAL_QUEUE, note.original_queue);
                self.set(headers::FAILED_AT, &now_rfc3339());
                topology.dead_letter_exchange()
            }
            Route::Replay => {
                let kept = self
                    .headers
                    .inner()
                    .iter()
                    .filter(|(key, _)| !is_death_header(key.as_str()))
                    .map(|(key, value)| (key.clone(), value.clone()))
                    .collect::<std::collections::BTreeMap<_, _>>();
                self.headers = FieldTable::from(kept);
                self.set(headers::REPLAYED_AT, &now_rfc3339());
                topology.exchange()
            }
        };
        (exchange, self)
    }
}

/// A header a replayed message must not carry: the broker's record of its death (a copy that
/// kept `x-death` would count as dead-lettered again), its delivery count, and gengate's error.
fn is_death_header(key: &str) -> bool {
    key == headers::X_DEATH
        || key == headers::DELIVERY_COUNT
        || key.starts_with(headers::X_FIRST_DEATH_PREFIX)
        || key.starts_with(headers::GENGATE_PREFIX)
}

/// Deliveries of a message before this one (quorum queues count them in `x-delivery-count`).
pub fn delivery_count(headers: Option<&FieldTable>) -> u64 {
    let Some(headers) = headers else { return 0 };
    match headers.inner().get(headers::DELIVERY_COUNT) {
        Some(AMQPValue::LongLongInt(n)) => u64::try_from(*n).unwrap_or(0),
        Some(AMQPValue::LongInt(n)) => u64::try_from(*n).unwrap_or(0),
        Some(AMQPValue::LongUInt(n)) => u64::from(*n),
        Some(AMQPValue::ShortInt(n)) => u64::try_from(*n).unwrap_or(0),
        _ => 0,
    }
}

/// A text header's value, if the header is there and is text.
pub fn text_header(headers: &FieldTable, name: &str) -> Option<String> {
    match headers.inner().get(name) {
        Some(AMQPValue::LongString(s)) => Some(s.to_string()),
        Some(AMQPValue::ShortString(s)) => Some(s.as_str().to_owned()),
        _ => None,
    }
}

fn now_rfc3339() -> String {
    OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

fn truncate(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::GenerationId;
    use crate::queue::envelope::payloads::SubmitJob;

    #[test]
    fn each_route_picks_its_exchange_and_headers() {
        let topology = Topology::example();
        let parcel = Parcel::of(&Envelope::of(GenerationId::new(), &SubmitJob {}));
        let (exchange, now) = parcel.clone().route(&topology, &Route::Now);
        assert_eq!(exchange, topology.exchange());
        assert!(now.headers.inner().is_empty());

        let (exchange, delayed) =
            parcel.clone().route(&topology, &Route::Delayed(Duration::from_secs(7)));
        assert_eq!(exchange, topology.delay_exchange());
        let tier = topology.tier_for(Duration::from_secs(7)).as_millis().to_string();
        assert_eq!(text_header(&delayed.headers, headers::DELAY), Some(tier));

        let note = DeadLetterNote {
            error_kind: "database",
            error: &"x".repeat(3000),
            original_queue: "t.jobs",
        };
        let (exchange, dead) = parcel.route(&topology, &Route::DeadLetter(note));
        assert_eq!(exchange, topology.dead_letter_exchange());
        assert_eq!(text_header(&dead.headers, headers::ERROR_KIND).as_deref(), Some("database"));
        assert!(text_header(&dead.headers, headers::ERROR).unwrap().len() < 2010);
        assert!(text_header(&dead.headers, headers::FAILED_AT).is_some());

        let mut died = dead.clone();
        died.set(headers::X_DEATH, "…");
        died.set("x-first-death-queue", "t.jobs");
        died.set("traceparent", "kept");
        let (exchange, replayed) = died.route(&topology, &Route::Replay);
        assert_eq!(exchange, topology.exchange());
        let names: Vec<&str> = replayed.headers.inner().keys().map(|k| k.as_str()).collect();
        assert_eq!(names, ["traceparent", headers::REPLAYED_AT]);
    }
}
