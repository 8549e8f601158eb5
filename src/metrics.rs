//! Prometheus metrics, declared once with their help text. Names follow
//! `gateway_<name>_<unit>[_total]`; labels come from small closed sets (event type, queue,
//! outcome, method, matched route, status), never from ids or raw input.
//!
//! The spec's `EventMetrics` map to: publishedEvents → `gateway_events_published_total`,
//! consumedEvents → `gateway_events_consumed_total`, failedEvents →
//! `gateway_events_failed_total`, retryCount → `gateway_event_retries_total`,
//! processingTime → `gateway_event_processing_duration_seconds`, queueLength →
//! `gateway_queue_messages`.

use prometheus::core::Collector;
use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Latency buckets from 0.5 ms to 10 s.
const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

pub struct Metrics {
    registry: Registry,
    /// Events by type and outcome: `published` (confirmed), `queued` (held in the outbox),
    /// or why they were refused (`unroutable`, `unavailable`, `duplicate`, ...).
    pub events_published: IntCounterVec,
    /// Time from publishing a message until the broker confirmed it.
    pub publish_confirm_seconds: Histogram,
    /// 1 while the publisher holds a live broker connection, else 0.
    pub broker_connected: IntGauge,
    /// Events waiting in the PostgreSQL outbox.
    pub outbox_depth: IntGauge,
    /// Events the outbox relay published.
    pub outbox_published: IntCounter,
    /// Messages the consumers finished with, by queue and outcome
    /// (`handled`, `retried`, `dead_lettered`).
    pub events_consumed: IntCounterVec,
    /// Messages sent to `failed_events`, by queue.
    pub events_failed: IntCounterVec,
    /// Messages scheduled for another attempt, by queue.
    pub event_retries: IntCounterVec,
    /// Time to handle one message, by queue.
    pub processing_seconds: HistogramVec,
    /// Messages waiting in each queue, refreshed in the background.
    pub queue_messages: IntGaugeVec,
    /// Dead letters recorded and not yet replayed.
    pub dead_letters: IntGauge,
    /// 1 while the circuit breaker in front of a dependency (`redis`, `postgres`) is open.
    pub circuit_open: IntGaugeVec,
    /// Rate-limit decisions by outcome (`allowed`, `limited`) and who made them (`redis`,
    /// a `lease` this process holds, or `local` while Redis is unreachable).
    pub rate_limit_decisions: IntCounterVec,
    /// HTTP requests by method, matched route and status code.
    pub http_requests: IntCounterVec,
    /// HTTP request latency by method and matched route.
    pub http_request_seconds: HistogramVec,
}

fn register<T: Collector + Clone + 'static>(
    registry: &Registry,
    metric: T,
) -> prometheus::Result<T> {
    registry.register(Box::new(metric.clone()))?;
    Ok(metric)
}

fn latency(name: &str, help: &str) -> HistogramOpts {
    HistogramOpts::new(name, help).buckets(LATENCY_BUCKETS.to_vec())
}

impl Metrics {
    pub fn new() -> prometheus::Result<Self> {
        let registry = Registry::new();
        let r = &registry;
        Ok(Metrics {
            events_published: register(
                r,
                IntCounterVec::new(
                    Opts::new(
                        "gateway_events_published_total",
                        "Events taken or refused, by event type and outcome.",
                    ),
                    &["type", "outcome"],
                )?,
            )?,
            publish_confirm_seconds: register(
                r,
                Histogram::with_opts(latency(
                    "gateway_publish_confirm_duration_seconds",
                    "Time from publishing a message until the broker confirmed it.",
                ))?,
            )?,
            broker_connected: register(
                r,
                IntGauge::new(
                    "gateway_broker_connected",
                    "1 while the publisher holds a live broker connection, else 0.",
                )?,
            )?,
            outbox_depth: register(
                r,
                IntGauge::new(
                    "gateway_outbox_depth",
                    "Events waiting in the PostgreSQL outbox.",
                )?,
            )?,
            outbox_published: register(
                r,
                IntCounter::new(
                    "gateway_outbox_published_total",
                    "Events the outbox relay published.",
                )?,
            )?,
            events_consumed: register(
                r,
                IntCounterVec::new(
                    Opts::new(
                        "gateway_events_consumed_total",
                        "Messages the consumers finished with, by queue and outcome.",
                    ),
                    &["queue", "outcome"],
                )?,
            )?,
            events_failed: register(
                r,
                IntCounterVec::new(
                    Opts::new(
                        "gateway_events_failed_total",
                        "Messages sent to failed_events, by queue.",
                    ),
                    &["queue"],
                )?,
            )?,
            event_retries: register(
                r,
                IntCounterVec::new(
                    Opts::new(
                        "gateway_event_retries_total",
                        "Messages scheduled for another attempt, by queue.",
                    ),
                    &["queue"],
                )?,
            )?,
            processing_seconds: register(
                r,
                HistogramVec::new(
                    latency(
                        "gateway_event_processing_duration_seconds",
                        "Time to handle one message, by queue.",
                    ),
                    &["queue"],
                )?,
            )?,
            queue_messages: register(
                r,
                IntGaugeVec::new(
                    Opts::new("gateway_queue_messages", "Messages waiting in each queue."),
                    &["queue"],
                )?,
            )?,
            dead_letters: register(
                r,
                IntGauge::new(
                    "gateway_dead_letters",
                    "Dead letters recorded and not yet replayed.",
                )?,
            )?,
            circuit_open: register(
                r,
                IntGaugeVec::new(
                    Opts::new(
                        "gateway_circuit_open",
                        "1 while the circuit breaker in front of a dependency is open.",
                    ),
                    &["dependency"],
                )?,
            )?,
            rate_limit_decisions: register(
                r,
                IntCounterVec::new(
                    Opts::new(
                        "gateway_rate_limit_decisions_total",
                        "Rate-limit decisions by outcome and by where the budget was kept.",
                    ),
                    &["outcome", "store"],
                )?,
            )?,
            http_requests: register(
                r,
                IntCounterVec::new(
                    Opts::new(
                        "gateway_http_requests_total",
                        "HTTP requests by method, matched route and status.",
                    ),
                    &["method", "route", "status"],
                )?,
            )?,
            http_request_seconds: register(
                r,
                HistogramVec::new(
                    latency(
                        "gateway_http_request_duration_seconds",
                        "HTTP request latency by method and matched route.",
                    ),
                    &["method", "route"],
                )?,
            )?,
            registry,
        })
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> prometheus::Result<String> {
        let mut buffer = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut buffer)?;
        String::from_utf8(buffer).map_err(|e| prometheus::Error::Msg(e.to_string()))
    }
}
