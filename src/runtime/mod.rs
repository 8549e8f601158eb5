//! What every part of the gateway shares: the one backoff schedule, circuit breakers,
//! work that must finish after its caller leaves, what a request handed to publishing,
//! background workers, the metrics, trace context (with OTLP export), and the words for
//! why a dependency cannot be reached.

pub mod backoff;
pub mod breaker;
pub mod detached;
pub mod in_flight;
pub mod metrics;
pub mod reason;
pub mod telemetry;
pub mod worker;
