//! The message envelope every gengate message travels in, and the kinds of message.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::ids::GenerationId;

/// What a message asks for. The kind is also its routing key, which picks its queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum MessageKind {
    /// Create the upstream task of a queued generation (`gengate.jobs`).
    #[serde(rename = "job.submit")]
    SubmitJob,
    /// A provider's word on a task, from a webhook or a poll (`gengate.events`).
    #[serde(rename = "event.provider_update")]
    ProviderUpdate,
    /// Fail a generation that did not finish (polling failure, deadline) (`gengate.events`).
    #[serde(rename = "event.failure")]
    Failure,
    /// The client canceled; cancel upstream where the provider can (`gengate.events`).
    #[serde(rename = "event.canceled")]
    Canceled,
    /// Ask the provider how a task is doing (`gengate.poll`).
    #[serde(rename = "poll.task")]
    PollTask,
    /// Copy a completed generation's result files into gengate's storage (`gengate.archive`).
    #[serde(rename = "generation.archive")]
    Archive,
}

impl MessageKind {
    /// The routing key (and the kind's name).
    pub fn routing_key(self) -> &'static str {
        match self {
            MessageKind::SubmitJob => "job.submit",
            MessageKind::ProviderUpdate => "event.provider_update",
            MessageKind::Failure => "event.failure",
            MessageKind::Canceled => "event.canceled",
            MessageKind::PollTask => "poll.task",
            MessageKind::Archive => "generation.archive",
        }
    }
}

/// A message: persistent JSON with an id of its own, so every delivery of it can be recognised.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    /// Unique per message (UUID v7); also the AMQP `message_id`.
    pub message_id: Uuid,
    /// What it asks for.
    pub kind: MessageKind,
    /// The generation it is about.
    pub generation_id: GenerationId,
    /// How many times this work was tried before (0 for the first).
    pub attempt: u32,
    /// When the message was made.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// Kind-specific content.
    #[serde(default)]
    pub payload: Value,
}

impl Envelope {
    /// A first-attempt message.
    pub fn new(kind: MessageKind, generation_id: GenerationId, payload: Value) -> Self {
        Self {
            message_id: Uuid::now_v7(),
            kind,
            generation_id,
            attempt: 0,
            created_at: OffsetDateTime::now_utc(),
            payload,
        }
    }

    /// The same work again, as a new message with the attempt counted.
    pub fn retry(&self) -> Self {
        Self {
            message_id: Uuid::now_v7(),
            attempt: self.attempt + 1,
            created_at: OffsetDateTime::now_utc(),
            ..self.clone()
        }
    }

    /// The JSON body.
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("an envelope always serializes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelopes_round_trip_and_name_their_routing_key() {
        let e =
            Envelope::new(MessageKind::SubmitJob, GenerationId::new(), serde_json::json!({"x": 1}));
        let back: Envelope = serde_json::from_slice(&e.to_bytes()).unwrap();
        assert_eq!(back, e);
        let json: Value = serde_json::from_slice(&e.to_bytes()).unwrap();
        assert_eq!(json["kind"], "job.submit");
        assert_eq!(e.kind.routing_key(), "job.submit");
        let again = e.retry();
        assert_eq!(again.attempt, 1);
        assert_ne!(again.message_id, e.message_id);
    }
}

/// Payloads of the message kinds that carry one.
pub mod payloads {
    use serde::{Deserialize, Serialize};

    use crate::providers::TaskUpdate;

    /// `event.provider_update`: what a provider said about a task.
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    pub struct ProviderUpdate {
        /// `webhook` or `poll`.
        pub source: String,
        /// The update, parsed by the provider's adapter.
        pub update: TaskUpdate,
        /// SHA-256 (hex) of the raw body it came in.
        #[serde(default)]
        pub payload_digest: Option<String>,
    }

    /// `event.failure`: fail a generation that did not finish.
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    pub struct Failure {
        /// What decided it: `handle_failure`, `deadline`, `operator`.
        pub cause: String,
        /// The failure code recorded on the generation.
        pub code: String,
        /// Why.
        pub reason: String,
    }
}
