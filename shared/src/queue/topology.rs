//! The RabbitMQ topology: every exchange, queue, binding and argument in one place.
//!
//! ```text
//!                        ┌─ job.#        ─► {p}.jobs    ─┐
//! publish ─► {p} (topic) ┼─ event.#      ─► {p}.events  ─┼─ delivery limit / poison ─► {p}.dlx ─► {p}.dlq
//!              ▲         ├─ poll.#       ─► {p}.poll    ─┤
//!              │         ├─ generation.# ─► {p}.archive ─┤
//!              │         └─ notify.#     ─► {p}.notify  ─┘
//!              │ (TTL expired, original routing key)
//! delay ──► {p}.delay (headers: delay-ms) ─► {p}.delay.{ms}ms  (one fixed-TTL queue per tier)
//! ```
//!
//! Work queues are quorum queues with a delivery limit and at-least-once dead-lettering (which
//! needs `x-overflow = reject-publish`), so a message is neither lost when it is dead-lettered nor
//! redelivered forever. Delay tiers are quorum queues too, each with one fixed TTL: never a single
//! queue with mixed per-message TTLs, where a long delay at the head would hold back short ones.
//! The dead-letter queue is a classic durable queue: operators browse it by fetching and returning
//! messages, which keeps their order there and does not count against any delivery limit.

use std::time::Duration;

use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{Channel, ExchangeKind};

use crate::config::AmqpSettings;

use super::route::headers::DELAY as DELAY_HEADER;

/// A queue workers consume from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WorkQueue {
    /// New jobs to submit to a provider.
    Jobs,
    /// State transitions: webhook results, poll results, failures, cancels.
    Events,
    /// Requests to poll a provider for one task.
    Poll,
    /// Copies of completed generations' result files into storage.
    Archive,
    /// Webhook deliveries to clients.
    Notify,
}

impl WorkQueue {
    /// Every work queue.
    pub const ALL: [WorkQueue; 5] = [
        WorkQueue::Jobs,
        WorkQueue::Events,
        WorkQueue::Poll,
        WorkQueue::Archive,
        WorkQueue::Notify,
    ];

    /// The queue's name after the prefix, e.g. `jobs`.
    pub fn suffix(self) -> &'static str {
        match self {
            WorkQueue::Jobs => "jobs",
            WorkQueue::Events => "events",
            WorkQueue::Poll => "poll",
            WorkQueue::Archive => "archive",
            WorkQueue::Notify => "notify",
        }
    }

    /// The binding pattern on the main exchange; routing keys start with this word.
    pub fn binding(self) -> &'static str {
        match self {
            WorkQueue::Jobs => "job.#",
            WorkQueue::Events => "event.#",
            WorkQueue::Poll => "poll.#",
            WorkQueue::Archive => "generation.#",
            WorkQueue::Notify => "notify.#",
        }
    }
}

/// Names and arguments of the topology under one prefix.
#[derive(Debug, Clone)]
pub struct Topology {
    prefix: String,
    delivery_limit: u32,
    delay_tiers: Vec<Duration>,
    /// `x-quorum-initial-group-size` of every quorum queue; `None`: the broker's default.
    quorum_initial_group_size: Option<u32>,
}

impl Topology {
    /// The topology the settings describe.
    pub fn from_settings(settings: &AmqpSettings) -> Self {
        Self {
            prefix: settings.prefix.clone(),
            delivery_limit: settings.delivery_limit,
            delay_tiers: settings
                .delay_tiers_ms
                .iter()
                .copied()
                .map(Duration::from_millis)
                .collect(),
            quorum_initial_group_size: settings.quorum_initial_group_size,
        }
    }

    /// The main topic exchange every message is published to.
    pub fn exchange(&self) -> String {
        self.prefix.clone()
    }

    /// Where work queues dead-letter to.
    pub fn dead_letter_exchange(&self) -> String {
        format!("{}.dlx", self.prefix)
    }

    /// The headers exchange in front of the delay tiers.
    pub fn delay_exchange(&self) -> String {
        format!("{}.delay", self.prefix)
    }

    /// A work queue's full name.
    pub fn queue(&self, queue: WorkQueue) -> String {
        format!("{}.{}", self.prefix, queue.suffix())
    }

    /// The dead-letter queue's full name.
    pub fn dead_letter_queue(&self) -> String {
        format!("{}.dlq", self.prefix)
    }

    /// The configured delay tiers, shortest first.
    pub fn delay_tiers(&self) -> &[Duration] {
        &self.delay_tiers
    }

    /// The tier queue holding messages for `tier`.
    pub fn delay_queue(&self, tier: Duration) -> String {
        format!("{}.delay.{}ms", self.prefix, tier.as_millis())
    }

    /// The tier a delay of `wanted` goes to: the shortest tier at least as long, else the longest.
    pub fn tier_for(&self, wanted: Duration) -> Duration {
        self.delay_tiers
            .iter()
            .copied()
            .find(|tier| *tier >= wanted)
            .unwrap_or_else(|| *self.delay_tiers.last().expect("validated non-empty"))
    }

    /// Every queue name, for deleting a test topology or checking depths.
    pub fn all_queues(&self) -> Vec<String> {
        let mut names: Vec<String> = WorkQueue::ALL.iter().map(|q| self.queue(*q)).collect();
        names.push(self.dead_letter_queue());
        names.extend(self.delay_tiers.iter().map(|t| self.delay_queue(*t)));
        names
    }

    /// Every exchange name.
    pub fn all_exchanges(&self) -> Vec<String> {
        vec![self.exchange(), self.dead_letter_exchange(), self.delay_exchange()]
    }

    /// Declares everything. Idempotent: declaring an existing entity with the same arguments is a
    /// no-op, so every process does this at start-up. (Different arguments make the broker close
    /// the channel with PRECONDITION_FAILED, which is reported, not papered over.)
    pub async fn declare(&self, channel: &Channel) -> lapin::Result<()> {
        self.declare_replicated(channel).await?;
        self.declare_dead_letter_queue(channel).await
    }

    /// Declares the exchanges, the work queues and the delay tiers: everything but the
    /// dead-letter queue. On a cluster, all of it survives the loss of a node (exchanges and
    /// bindings live on every node, quorum queues on a majority).
    pub async fn declare_replicated(&self, channel: &Channel) -> lapin::Result<()> {
        let durable = ExchangeDeclareOptions { durable: true, ..Default::default() };
        for (exchange, kind) in [
            (self.exchange(), ExchangeKind::Topic),
            (self.dead_letter_exchange(), ExchangeKind::Topic),
            (self.delay_exchange(), ExchangeKind::Headers),
        ] {
            channel.exchange_declare(exchange.into(), kind, durable, FieldTable::default()).await?;
        }

        let queue_options = QueueDeclareOptions { durable: true, ..Default::default() };
        for queue in WorkQueue::ALL {
            let mut args = self.quorum_args();
            args.insert(
                "x-delivery-limit".into(),
                AMQPValue::LongInt(i32::try_from(self.delivery_limit).unwrap_or(i32::MAX)),
            );
            args.insert("x-dead-letter-exchange".into(), string(&self.dead_letter_exchange()));
            channel.queue_declare(self.queue(queue).into(), queue_options, args).await?;
            channel
                .queue_bind(
                    self.queue(queue).into(),
                    self.exchange().into(),
                    queue.binding().into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await?;
        }

        for tier in &self.delay_tiers {
            let mut args = self.quorum_args();
            args.insert(
                "x-message-ttl".into(),
                AMQPValue::LongLongInt(i64::try_from(tier.as_millis()).unwrap_or(i64::MAX)),
            );
            // No dead-letter routing key: an expired message keeps its own and lands in its queue.
            args.insert("x-dead-letter-exchange".into(), string(&self.exchange()));
            channel.queue_declare(self.delay_queue(*tier).into(), queue_options, args).await?;
            let mut binding = FieldTable::default();
            binding.insert("x-match".into(), string("all"));
            binding.insert(DELAY_HEADER.into(), string(&tier.as_millis().to_string()));
            channel
                .queue_bind(
                    self.delay_queue(*tier).into(),
                    self.delay_exchange().into(),
                    ShortString::from(""),
                    QueueBindOptions::default(),
                    binding,
                )
                .await?;
        }
        Ok(())
    }

    /// Declares the dead-letter queue and its binding (after the exchanges). A classic queue: on
    /// a cluster it lives on one node, and while that node is down the broker refuses to declare
    /// it (NOT_FOUND, closing the channel); see [`is_home_node_down`].
    pub async fn declare_dead_letter_queue(&self, channel: &Channel) -> lapin::Result<()> {
        let queue_options = QueueDeclareOptions { durable: true, ..Default::default() };
        channel
            .queue_declare(self.dead_letter_queue().into(), queue_options, FieldTable::default())
            .await?;
        channel
            .queue_bind(
                self.dead_letter_queue().into(),
                self.dead_letter_exchange().into(),
                "#".into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
        Ok(())
    }

    fn quorum_args(&self) -> FieldTable {
        let mut args = FieldTable::default();
        args.insert("x-queue-type".into(), string("quorum"));
        args.insert("x-dead-letter-strategy".into(), string("at-least-once"));
        args.insert("x-overflow".into(), string("reject-publish"));
        if let Some(size) = self.quorum_initial_group_size {
            args.insert(
                "x-quorum-initial-group-size".into(),
                AMQPValue::LongInt(i32::try_from(size).unwrap_or(i32::MAX)),
            );
        }
        args
    }
}

/// Whether `error` is the broker's refusal to declare a durable classic queue whose node is down
/// (404 NOT_FOUND: "home node … of durable queue … is down or inaccessible").
pub fn is_home_node_down(error: &lapin::Error) -> bool {
    use lapin::protocol::{AMQPErrorKind, AMQPSoftError};
    match error.kind() {
        lapin::ErrorKind::ProtocolError(amqp) => {
            matches!(amqp.kind(), AMQPErrorKind::Soft(AMQPSoftError::NOTFOUND))
                && amqp.get_message().as_str().contains("down or inaccessible")
        }
        _ => false,
    }
}

#[cfg(test)]
impl Topology {
    /// Prefix `gengate`, delay tiers of 1, 5 and 30 s.
    pub(crate) fn example() -> Topology {
        Topology {
            prefix: "gengate".into(),
            delivery_limit: 5,
            delay_tiers: [1000, 5000, 30000].map(Duration::from_millis).to_vec(),
            quorum_initial_group_size: None,
        }
    }
}

fn string(value: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(value))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topology() -> Topology {
        Topology::example()
    }

    #[test]
    fn names_follow_the_prefix() {
        let t = topology();
        assert_eq!(t.exchange(), "gengate");
        assert_eq!(t.dead_letter_exchange(), "gengate.dlx");
        assert_eq!(t.queue(WorkQueue::Jobs), "gengate.jobs");
        assert_eq!(t.queue(WorkQueue::Events), "gengate.events");
        assert_eq!(t.queue(WorkQueue::Poll), "gengate.poll");
        assert_eq!(t.queue(WorkQueue::Archive), "gengate.archive");
        assert_eq!(t.queue(WorkQueue::Notify), "gengate.notify");
        assert_eq!(t.dead_letter_queue(), "gengate.dlq");
        assert_eq!(t.delay_queue(Duration::from_secs(5)), "gengate.delay.5000ms");
        assert_eq!(t.all_queues().len(), 9, "five work queues, the DLQ and three delay tiers");
    }

    #[test]
    fn quorum_queues_get_the_initial_group_size_when_one_is_set() {
        let mut t = topology();
        assert!(!t.quorum_args().contains_key("x-quorum-initial-group-size"));
        t.quorum_initial_group_size = Some(3);
        assert_eq!(
            t.quorum_args().inner().get("x-quorum-initial-group-size"),
            Some(&AMQPValue::LongInt(3))
        );
    }

    #[test]
    fn a_dead_letter_queue_on_a_node_that_is_down_is_recognised() {
        use lapin::protocol::{AMQPError, AMQPErrorKind, AMQPSoftError};
        let refusal = |kind, message: &str| {
            lapin::Error::from(lapin::ErrorKind::ProtocolError(AMQPError::new(
                AMQPErrorKind::Soft(kind),
                message.into(),
            )))
        };
        let down = "NOT_FOUND - home node 'rabbit@b' of durable queue 'gengate.dlq' in vhost '/' is down or inaccessible";
        assert!(is_home_node_down(&refusal(AMQPSoftError::NOTFOUND, down)));
        assert!(!is_home_node_down(&refusal(AMQPSoftError::NOTFOUND, "NOT_FOUND - no exchange")));
        assert!(!is_home_node_down(&refusal(AMQPSoftError::PRECONDITIONFAILED, down)));
    }

    #[test]
    fn a_delay_goes_to_the_shortest_tier_that_covers_it() {
        let t = topology();
        assert_eq!(t.tier_for(Duration::from_millis(1)), Duration::from_secs(1));
        assert_eq!(t.tier_for(Duration::from_secs(1)), Duration::from_secs(1));
        assert_eq!(t.tier_for(Duration::from_secs(2)), Duration::from_secs(5));
        assert_eq!(t.tier_for(Duration::from_secs(3600)), Duration::from_secs(30));
    }
}
