//! The background workers, each started into a [`crate::runtime::worker::Workers`]
//! group: the outbox relay, the schedule's release, the cache-invalidating consumers,
//! and the gauges that need a look at the broker or the database.

pub mod consumers;
pub mod gauges;
pub mod relay;
pub mod scheduler;
