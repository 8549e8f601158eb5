//! Prometheus metrics, declared once. Labels come from small closed sets (event type,
//! outcome, method, matched route, status), never from ids or raw input.

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts,
    Registry, TextEncoder,
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
    /// Time from handing a message to the broker until its confirm arrived.
    pub publish_confirm_seconds: Histogram,
    /// 1 while the publisher holds a live broker connection, else 0.
    pub broker_connected: IntGauge,
    /// Events waiting in the PostgreSQL outbox.
    pub outbox_depth: IntGauge,
    /// Events the outbox relay published.
    pub outbox_published: IntCounter,
    /// HTTP requests by method, matched route and status code.
    pub http_requests: IntCounterVec,
    /// HTTP request latency by method and matched route.
    pub http_request_seconds: HistogramVec,
}

impl Metrics {
    pub fn new() -> prometheus::Result<Self> {
        let registry = Registry::new();
        let events_published = IntCounterVec::new(
            Opts::new(
                "gateway_events_published_total",
                "Events taken or refused, by event type and outcome.",
            ),
            &["type", "outcome"],
        )?;
        let publish_confirm_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "gateway_publish_confirm_duration_seconds",
                "Time from publishing a message until the broker confirmed it.",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
        )?;
        let broker_connected = IntGauge::new(
            "gateway_broker_connected",
            "1 while the publisher holds a live broker connection, else 0.",
        )?;
        let outbox_depth = IntGauge::new(
            "gateway_outbox_depth",
            "Events waiting in the PostgreSQL outbox.",
        )?;
        let outbox_published = IntCounter::new(
            "gateway_outbox_published_total",
            "Events the outbox relay published.",
        )?;
        let http_requests = IntCounterVec::new(
            Opts::new(
                "gateway_http_requests_total",
                "HTTP requests by method, matched route and status.",
            ),
            &["method", "route", "status"],
        )?;
        let http_request_seconds = HistogramVec::new(
            HistogramOpts::new(
                "gateway_http_request_duration_seconds",
                "HTTP request latency by method and matched route.",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["method", "route"],
        )?;
        registry.register(Box::new(events_published.clone()))?;
        registry.register(Box::new(publish_confirm_seconds.clone()))?;
        registry.register(Box::new(broker_connected.clone()))?;
        registry.register(Box::new(outbox_depth.clone()))?;
        registry.register(Box::new(outbox_published.clone()))?;
        registry.register(Box::new(http_requests.clone()))?;
        registry.register(Box::new(http_request_seconds.clone()))?;
        Ok(Metrics {
            registry,
            events_published,
            publish_confirm_seconds,
            broker_connected,
            outbox_depth,
            outbox_published,
            http_requests,
            http_request_seconds,
        })
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> prometheus::Result<String> {
        let mut buffer = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut buffer)?;
        String::from_utf8(buffer).map_err(|e| prometheus::Error::Msg(e.to_string()))
    }
}
