//! RabbitMQ: the topology (names and arguments), the messages and their routes, the process's
//! connection, confirmed publishing.

pub mod broker;
pub mod envelope;
pub mod route;
pub mod topology;

pub use broker::{Broker, BrokerError};
pub use envelope::{Envelope, Message, MessageKind, PayloadError, payloads};
pub use route::{DeadLetterNote, Parcel, Route};
pub use topology::{Topology, WorkQueue};
