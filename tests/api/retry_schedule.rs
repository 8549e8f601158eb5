//! The consumers' retries keep the spec's schedule as measured time: the first try, then
//! retries 1 s, 2 s and 4 s later (`RETRY_MAX_ATTEMPTS=3`, 1 s doubling), so a Redis
//! outage of a few seconds delays cache invalidations but dead-letters none.

use std::time::Duration;

use tokio::time::Instant;

use crate::consumers::{dead_letters, existing, set_keys};
use crate::helpers::*;
use crate::proxy::Proxy;

const STALE: [&str; 3] = ["quests:quest-1", "quests:user:user-1", "user_data:user-1"];

/// How many retries and handled messages the metrics show for `queue`.
async fn counts(app: &TestApp, queue: &str) -> (f64, f64) {
    let text = app.get("/metrics").await.text().await.unwrap();
    let retries = metric(
        &text,
        &format!(r#"gateway_event_retries_total{{queue="{queue}"}}"#),
    );
    let handled = metric(
        &text,
        &format!(r#"gateway_events_consumed_total{{outcome="handled",queue="{queue}"}}"#),
    );
    (retries, handled)
}

#[tokio::test]
async fn a_five_second_redis_outage_is_outwaited_on_the_specs_schedule() {
    let redis = Proxy::start("127.0.0.1:6379").await;
    let mut settings = test_settings();
    settings.consumers_enabled = true;
    settings.consumer_prefetch = 1;
    settings.redis_host = redis.addr.ip().to_string();
    settings.redis_port = redis.addr.port();
    let app = spawn_app_with(settings).await;
    set_keys(&app, &STALE).await;
    let queue = app.queue("quest");

    redis.cut().await;
    let start = Instant::now();
    assert_eq!(app.publish(&event("quest.started")).await.status(), 202);
    // When each retry was scheduled (each failed try), then when the message was handled.
    let mut moments = Vec::new();
    let mut restored = false;
    while start.elapsed() < Duration::from_secs(15) {
        if !restored && start.elapsed() >= Duration::from_secs(5) {
            redis.restore();
            restored = true;
        }
        let (retries, handled) = counts(&app, &queue).await;
        if retries as usize > moments.len() {
            moments.push(start.elapsed());
        }
        if handled == 1.0 {
            moments.push(start.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let gaps: Vec<f64> = moments
        .windows(2)
        .map(|pair| (pair[1] - pair[0]).as_secs_f64())
        .collect();
    assert_eq!(
        gaps.len(),
        3,
        "three failed tries during the outage, then handled on the fourth: at {moments:?}"
    );
    for (gap, scheduled) in gaps.iter().zip([1.0, 2.0, 4.0]) {
        assert!(
            (scheduled - 0.25..scheduled + 1.0).contains(gap),
            "waits {gaps:?} between tries, the schedule says 1 s, 2 s, 4 s"
        );
    }
    assert!(existing(&app, &STALE).await.is_empty(), "the keys are gone");
    let letters = dead_letters(&app, "").await;
    assert_eq!(
        letters["deadLetters"],
        serde_json::json!([]),
        "none dead-lettered"
    );
}
