//! The message both clients publish, and how: persistent, JSON, one routing key, a bounded
//! wait for the confirm.

use std::time::Duration;

use serde_json::json;

pub const ROUTING_KEY: &str = "analytics.event_tracked";
pub const CONTENT_TYPE: &str = "application/json";
pub const PERSISTENT: u8 = 2;
/// A confirm later than this counts as missing.
pub const CONFIRM_TIMEOUT: Duration = Duration::from_secs(10);

/// An analytics event envelope of about 400 bytes, as the gateway puts on the bus.
pub fn event_body() -> Vec<u8> {
    json!({
        "id": "0193a5c2-7d4e-7b1a-9c3f-2e8d4b6a1f05",
        "type": ROUTING_KEY,
        "source": "amqp-clients-bench",
        "correlationId": "6f1c2b9e-3d4a-4e8f-9b7c-1a2d3e4f5a6b",
        "occurredAt": "2026-11-26T10:00:00Z",
        "receivedAt": "2026-11-26T10:00:00.125Z",
        "data": {
            "analyticsId": "analytics-1",
            "userId": "user-1",
            "type": "click",
            "category": "ui",
            "event": "button",
            "value": 1,
            "page": "/levels/42/summary",
            "sessionId": "session-8c4e1f7a",
            "locale": "en-GB"
        }
    })
    .to_string()
    .into_bytes()
}
