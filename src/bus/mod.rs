//! The RabbitMQ adapter: topology and the confirmed publisher.

pub mod publisher;
pub mod topology;

pub use publisher::{BusSettings, OutgoingMessage, PublishError, Publisher, QueueDepth};
pub use topology::Topology;
