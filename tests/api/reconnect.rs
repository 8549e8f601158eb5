//! How soon the gateway is back once a dependency that was down for a while returns.

use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::*;

/// Long enough that a reconnect backoff which kept doubling (to 10 s, as it once did)
/// waits about 5 s more after the broker's return; a backoff capped at 1 s waits 1 s.
const OUTAGE: Duration = Duration::from_secs(8);
/// A reconnect within a second, the topology declared again, and the outbox's backlog
/// drained, with room to spare on a busy machine; the doubling backoff needs about 5 s.
const BACK_WITHIN: Duration = Duration::from_secs(3);

#[tokio::test]
async fn after_a_long_broker_outage_events_are_published_again_within_seconds() {
    let (app, broker) = spawn_app_behind_proxy().await;
    broker.cut().await;
    eventually(Duration::from_secs(5), || async {
        app.get("/health/ready").await.status() == 503
    })
    .await;
    tokio::time::sleep(OUTAGE).await;

    broker.restore();
    let mut probe = 0;
    // Each probe is another user's, so none waits behind an earlier one held in the outbox.
    eventually(BACK_WITHIN, || {
        probe += 1;
        let body = json!({"type": "analytics.event_tracked", "data": {
            "analyticsId": format!("probe-{probe}"), "userId": format!("probe-{probe}"),
            "type": "probe", "category": "test", "event": "reconnect"}});
        let app = &app;
        async move {
            let response = app.publish(&body).await;
            assert_eq!(response.status(), 202, "safe while the broker is away");
            let receipt: Value = response.json().await.unwrap();
            receipt["status"] == "published"
        }
    })
    .await;
}
