//! RabbitMQ: the topology (names and arguments), the process's connection, confirmed publishing.

pub mod broker;
pub mod envelope;
pub mod topology;

pub use broker::{Broker, BrokerError, Outgoing};
pub use envelope::{Envelope, MessageKind};
pub use topology::{Topology, WorkQueue};
