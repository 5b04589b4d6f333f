//! The message envelope every gengate message travels in, the kinds of message, and their typed
//! payloads.
//!
//! A payload type implements [`Message`], which names its kind once (as crates.io's
//! `BackgroundJob` names its job type): [`Envelope::of`] wraps a payload, and
//! [`Envelope::payload`] reads it back, refusing a payload of another kind or one that does not
//! parse. On the wire the payload is plain JSON inside the envelope, so what is queued today is
//! read by the workers of tomorrow.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::ids::GenerationId;
use crate::names::named_enum;

named_enum! {
    /// What a message asks for. The kind's name is also its routing key, which picks its queue.
    pub enum MessageKind ("message kind") {
        /// Create the upstream task of a queued generation (`gengate.jobs`).
        SubmitJob = "job.submit",
        /// A provider's word on a task, from a webhook or a poll (`gengate.events`).
        ProviderUpdate = "event.provider_update",
        /// Fail a generation that will not finish (reported, deadline, operator) (`gengate.events`).
        Failure = "event.failure",
        /// The client canceled (and was refunded): stop polling (`gengate.events`).
        Canceled = "event.canceled",
        /// Ask the provider how a task is doing (`gengate.poll`).
        PollTask = "poll.task",
        /// Copy a completed generation's result files into gengate's storage (`gengate.archive`).
        Archive = "generation.archive",
        /// Tell the generation's client about an event: a webhook delivery (`gengate.notify`).
        Notify = "notify.generation",
    }
}

impl MessageKind {
    /// The routing key (the kind's name).
    pub fn routing_key(self) -> &'static str {
        self.as_str()
    }
}

/// A payload of one message kind.
pub trait Message: Serialize + DeserializeOwned {
    /// The kind of message that carries it.
    const KIND: MessageKind;
}

/// Why an envelope's payload could not be read as the type asked for.
#[derive(Debug, thiserror::Error)]
pub enum PayloadError {
    /// The envelope is of another kind.
    #[error("a {wanted} payload was asked of a {found} message")]
    WrongKind {
        /// The kind asked for.
        wanted: MessageKind,
        /// The envelope's kind.
        found: MessageKind,
    },
    /// The payload does not parse as its kind's type.
    #[error("{kind} payload does not parse: {error}")]
    Malformed {
        /// The envelope's kind.
        kind: MessageKind,
        /// What serde said.
        error: serde_json::Error,
    },
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
    /// The kind's payload (see [`Envelope::payload`]).
    #[serde(default)]
    payload: Value,
}

impl Envelope {
    /// A first-attempt message carrying `payload`, about `generation_id`.
    pub fn of<M: Message>(generation_id: GenerationId, payload: &M) -> Self {
        Self {
            message_id: Uuid::now_v7(),
            kind: M::KIND,
            generation_id,
            attempt: 0,
            created_at: OffsetDateTime::now_utc(),
            payload: serde_json::to_value(payload).expect("a message payload always serializes"),
        }
    }

    /// The payload, read as its kind's type.
    pub fn payload<M: Message>(&self) -> Result<M, PayloadError> {
        if self.kind != M::KIND {
            return Err(PayloadError::WrongKind { wanted: M::KIND, found: self.kind });
        }
        // Kinds without content were written as `null` by earlier versions: read them as `{}`.
        let value = match &self.payload {
            Value::Null => Value::Object(Default::default()),
            value => value.clone(),
        };
        serde_json::from_value(value)
            .map_err(|error| PayloadError::Malformed { kind: self.kind, error })
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

/// The payloads, one type per [`MessageKind`].
pub mod payloads {
    use serde::{Deserialize, Serialize};

    use super::{Message, MessageKind};
    use crate::generation::GenerationStatus;
    use crate::names::named_enum;
    use crate::providers::TaskUpdate;

    /// `job.submit`: create the generation's upstream task (everything needed is in its row).
    #[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
    pub struct SubmitJob {}

    impl Message for SubmitJob {
        const KIND: MessageKind = MessageKind::SubmitJob;
    }

    named_enum! {
        /// Where a provider's word came from.
        pub enum UpdateSource ("update source") {
            /// The provider called gengate: a hint, confirmed by a query before it is applied.
            Webhook = "webhook",
            /// A worker asked the provider by the task id gengate recorded: the provider's answer.
            Poll = "poll",
        }
    }

    /// `event.provider_update`: what a provider said about a task.
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    pub struct ProviderUpdate {
        /// A webhook or a poll.
        pub source: UpdateSource,
        /// The update, parsed by the provider's adapter.
        pub update: TaskUpdate,
        /// SHA-256 (hex) of the raw body it came in.
        #[serde(default)]
        pub payload_digest: Option<String>,
    }

    impl Message for ProviderUpdate {
        const KIND: MessageKind = MessageKind::ProviderUpdate;
    }

    named_enum! {
        /// Who decided that a generation will not finish.
        pub enum FailureCause ("failure cause") {
            /// A trusted server, through `POST /api/generation/handle-failure`.
            HandleFailure = "handle_failure",
            /// Its deadline passed.
            Deadline = "deadline",
            /// An operator.
            Operator = "operator",
            /// The sweeper: still queued past its deadline.
            Sweeper = "sweeper",
        }
    }

    /// `event.failure`: fail a generation that will not finish.
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    pub struct Failure {
        /// Who decided it.
        pub cause: FailureCause,
        /// A short code for the report (kept in the audit log).
        pub code: String,
        /// Why.
        pub reason: String,
    }

    impl Message for Failure {
        const KIND: MessageKind = MessageKind::Failure;
    }

    /// `event.canceled`: the client canceled, and the API refunded in the same transaction. The
    /// providers offer no upstream cancel, so the task runs on; a worker stops polling it.
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    pub struct Canceled {
        /// The status it was canceled from.
        pub was: GenerationStatus,
    }

    impl Message for Canceled {
        const KIND: MessageKind = MessageKind::Canceled;
    }

    /// `poll.task`: poll number `poll` of the generation's task (see `generation::polling`).
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    pub struct PollTask {
        /// The poll's number: it runs only while the generation's poll count is this.
        pub poll: i32,
    }

    impl Message for PollTask {
        const KIND: MessageKind = MessageKind::PollTask;
    }

    /// `generation.archive`: copy the generation's pending result files into storage.
    #[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
    pub struct Archive {}

    impl Message for Archive {
        const KIND: MessageKind = MessageKind::Archive;
    }

    /// `notify.generation`: deliver `event` of the generation to its client, as delivery
    /// `delivery` (made from the first message; the same id on every attempt and every copy of
    /// the message, see `client_webhooks::deliveries`).
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    pub struct Notify {
        /// What happened.
        pub event: crate::client_webhooks::Event,
        /// The delivery's id (its `webhook-id`).
        pub delivery: uuid::Uuid,
    }

    impl Message for Notify {
        const KIND: MessageKind = MessageKind::Notify;
    }
}

#[cfg(test)]
mod tests {
    use super::payloads::{Archive, FailureCause, PollTask, SubmitJob};
    use super::*;

    #[test]
    fn envelopes_round_trip_and_name_their_routing_key() {
        let e = Envelope::of(GenerationId::new(), &PollTask { poll: 3 });
        let back: Envelope = serde_json::from_slice(&e.to_bytes()).unwrap();
        assert_eq!(back, e);
        let json: Value = serde_json::from_slice(&e.to_bytes()).unwrap();
        assert_eq!(json["kind"], "poll.task");
        assert_eq!(json["payload"], serde_json::json!({"poll": 3}));
        assert_eq!(back.payload::<PollTask>().unwrap(), PollTask { poll: 3 });
        let again = e.retry();
        assert_eq!(again.attempt, 1);
        assert_ne!(again.message_id, e.message_id);
        for kind in MessageKind::ALL {
            assert_eq!(kind.routing_key().parse::<MessageKind>().unwrap(), *kind);
        }
    }

    #[test]
    fn a_payload_of_another_kind_or_shape_is_refused() {
        let e = Envelope::of(GenerationId::new(), &SubmitJob {});
        assert!(matches!(e.payload::<Archive>(), Err(PayloadError::WrongKind { .. })));
        let mut bad: Value = serde_json::from_slice(&e.to_bytes()).unwrap();
        bad["kind"] = "poll.task".into();
        bad["payload"] = serde_json::json!({"poll": "soon"});
        let bad: Envelope = serde_json::from_value(bad).unwrap();
        assert!(matches!(bad.payload::<PollTask>(), Err(PayloadError::Malformed { .. })));
        let unknown = serde_json::json!({"message_id": Uuid::now_v7(), "kind": "job.explode",
            "generation_id": GenerationId::new(), "attempt": 0, "created_at": "2026-12-02T00:00:00Z"});
        assert!(serde_json::from_value::<Envelope>(unknown).is_err());
        assert!("nobody".parse::<FailureCause>().is_err());
    }

    #[test]
    fn a_payload_written_as_null_reads_as_an_empty_one() {
        let mut e: Value =
            serde_json::from_slice(&Envelope::of(GenerationId::new(), &SubmitJob {}).to_bytes())
                .unwrap();
        e.as_object_mut().unwrap().remove("payload");
        let e: Envelope = serde_json::from_value(e).unwrap();
        assert_eq!(e.payload::<SubmitJob>().unwrap(), SubmitJob {});
    }
}
