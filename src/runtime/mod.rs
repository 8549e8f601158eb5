//! What every part of the gateway shares: the one backoff schedule, circuit breakers,
//! work that must finish after its caller leaves, what a request handed to publishing,
//! background workers, the metrics, and trace context (with OTLP export).

pub mod backoff;
pub mod breaker;
pub mod detached;
pub mod in_flight;
pub mod metrics;
pub mod telemetry;
pub mod worker;
