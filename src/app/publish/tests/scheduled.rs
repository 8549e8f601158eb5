//! Scheduled events: committed to the schedule, not sent, answered `scheduled`, and no
//! backlog that other events would queue behind.

use serde_json::json;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::*;

fn scheduled(event_type: &str) -> ValidEvent {
    let mut event = event(event_type);
    let due = OffsetDateTime::now_utc() + time::Duration::hours(1);
    let text = due.format(&Rfc3339).unwrap();
    event.deliver_at =
        Some(crate::domain::schedule::DeliverAt::parse(&json!(text), "/deliverAt".into()).unwrap());
    event
}

#[tokio::test]
async fn a_scheduled_event_is_committed_and_not_sent() {
    let h = harness(MemoryBus::default());
    let event = scheduled("analytics.event_tracked");
    let receipt = h
        .publishing
        .publish(&caller(), &event, "c-1")
        .await
        .unwrap();
    assert_eq!(receipt.status, ReceiptStatus::Scheduled);
    let due = event.deliver_at.as_ref().unwrap().text();
    assert_eq!(receipt.deliver_at.as_deref(), Some(due.as_str()));
    assert!(h.outbox.rows.lock().unwrap().contains_key(&event.id));
    assert!(
        h.bus.published.lock().unwrap().is_empty(),
        "not before its time"
    );
    assert!(!h.backlog.has_backlog(), "others need not queue behind it");
    assert_eq!(*h.cache.forgotten.lock().unwrap(), vec!["u-1".to_owned()]);
}

#[tokio::test]
async fn a_critical_scheduled_event_waits_for_its_time_and_its_batch_neighbour_does_not() {
    let h = harness(MemoryBus::default());
    let events = [
        scheduled("achievement.completed"),
        event("analytics.event_tracked"),
    ];
    let accepted = h
        .publishing
        .accept_batch(&caller(), &events, "batch-1".into())
        .await
        .unwrap();
    let results = accepted.body["results"].as_array().unwrap();
    assert_eq!(results[0]["status"], "scheduled");
    assert_eq!(results[0]["persisted"], true);
    assert_eq!(results[1]["status"], "published");
    let neighbour = events[1].id;
    assert_eq!(
        *h.bus.published.lock().unwrap(),
        vec![neighbour],
        "only the neighbour went out"
    );
    assert!(h.outbox.rows.lock().unwrap().contains_key(&events[0].id));
}
