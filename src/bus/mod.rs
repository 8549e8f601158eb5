//! The RabbitMQ adapter: where the broker is (and TLS to it), the topology, the confirmed
//! publisher (the [`EventBus`] port) with its supervised connection, and the consumers'
//! side of the broker (subscribing, acking, confirmed republishing to retry queues and the
//! dead-letter exchange, and the header codec those use).
//!
//! [`EventBus`]: crate::app::ports::EventBus

pub mod asyncapi;
mod broker;
mod confirm_book;
mod confirms;
pub mod consume;
mod link;
pub mod publisher;
mod send_gate;
pub mod topology;

pub use crate::app::ports::PublishError;
pub use broker::Broker;
pub use publisher::{BusSettings, Publisher};
pub use topology::Topology;
