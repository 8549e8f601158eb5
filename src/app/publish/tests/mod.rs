//! The publish decisions against in-memory ports: what is committed first, what goes
//! straight to the broker, what the outbox takes when the broker refuses, and what each
//! answer says. The integration suite (tests/api) proves the same against the real
//! services.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use serde_json::json;
use uuid::Uuid;

use super::{NotTaken, Publishing, PublishingParts, ReceiptStatus, Submission};
use crate::app::ports::{EventBus, Outbox, PublishError, ReadCache, StoreError};
use crate::app::publish::Backlog;
use crate::app::records::{Held, OutgoingMessage, Owner, PendingEvent, QueueDepth};
use crate::domain::{EventType, Principal, Scopes, ValidEvent};
use crate::runtime::metrics::Metrics;

mod outcomes;
mod scheduled;

/// A broker that confirms everything but what it was told to refuse, by routing key, or
/// fails every message with `fail` (a lost or late confirm, say).
#[derive(Default)]
struct MemoryBus {
    down: bool,
    nack: HashSet<&'static str>,
    unroutable: HashSet<&'static str>,
    fail: Option<fn() -> PublishError>,
    published: Mutex<Vec<Uuid>>,
}

#[async_trait]
impl EventBus for MemoryBus {
    fn is_connected(&self) -> bool {
        !self.down
    }

    async fn publish_in_order(
        &self,
        messages: Vec<OutgoingMessage>,
    ) -> Vec<Result<(), PublishError>> {
        let mut published = self.published.lock().unwrap();
        messages
            .into_iter()
            .map(|message| {
                let key = message.routing_key;
                if let Some(fail) = self.fail {
                    Err(fail())
                } else if self.down || self.nack.contains(key) {
                    Err(PublishError::Nacked)
                } else if self.unroutable.contains(key) {
                    Err(PublishError::Unroutable {
                        routing_key: key.to_owned(),
                    })
                } else {
                    published.push(message.message_id);
                    Ok(())
                }
            })
            .collect()
    }

    async fn queue_depths(&self) -> Result<Vec<QueueDepth>, PublishError> {
        Ok(Vec::new())
    }
}

/// An outbox that remembers every row, who owns it, and what became of it; or that fails
/// every hold with `fail`.
#[derive(Default)]
struct MemoryOutbox {
    fail: Option<fn() -> StoreError>,
    rows: Mutex<HashMap<Uuid, Owner>>,
    confirmed: Mutex<Vec<Uuid>>,
    released: Mutex<Vec<Uuid>>,
    forgotten: Mutex<Vec<Uuid>>,
}

#[async_trait]
impl Outbox for MemoryOutbox {
    async fn hold(&self, events: Vec<PendingEvent>, owner: Owner) -> Result<Vec<Held>, StoreError> {
        if let Some(fail) = self.fail {
            return Err(fail());
        }
        let mut rows = self.rows.lock().unwrap();
        let confirmed = self.confirmed.lock().unwrap();
        let released = self.released.lock().unwrap();
        Ok(events
            .iter()
            .map(|event| match rows.get(&event.id) {
                None => {
                    rows.insert(event.id, owner);
                    Held::New
                }
                Some(_) if confirmed.contains(&event.id) => Held::Published,
                Some(Owner::Request) if !released.contains(&event.id) => Held::Unsettled,
                Some(_) => Held::Owed,
            })
            .collect())
    }

    async fn confirmed(&self, ids: Vec<Uuid>) -> Result<(), StoreError> {
        self.confirmed.lock().unwrap().extend(ids);
        Ok(())
    }

    async fn release(&self, id: Uuid) -> Result<(), StoreError> {
        self.released.lock().unwrap().push(id);
        Ok(())
    }

    async fn forget(&self, id: Uuid) -> Result<bool, StoreError> {
        self.forgotten.lock().unwrap().push(id);
        Ok(self.rows.lock().unwrap().remove(&id).is_some())
    }
}

/// A cache that holds nothing and counts the listings dropped.
#[derive(Default)]
struct MemoryCache {
    forgotten: Mutex<Vec<String>>,
}

#[async_trait]
impl ReadCache for MemoryCache {
    async fn event(&self, _: Uuid) -> Option<String> {
        None
    }
    async fn put_event(&self, _: Uuid, _: &str) {}
    async fn user_events(&self, _: &str, _: &str) -> Option<String> {
        None
    }
    async fn put_user_events(&self, _: &str, _: &str, _: &str) {}
    async fn forget_user_events(&self, user_id: &str) {
        self.forgotten.lock().unwrap().push(user_id.to_owned());
    }
}

struct Harness {
    bus: Arc<MemoryBus>,
    outbox: Arc<MemoryOutbox>,
    cache: Arc<MemoryCache>,
    backlog: Backlog,
    publishing: Publishing,
}

/// `achievement.completed` is critical, as by default; the backlog starts counted empty.
fn harness(bus: MemoryBus) -> Harness {
    harness_with(bus, MemoryOutbox::default())
}

fn harness_with(bus: MemoryBus, outbox: MemoryOutbox) -> Harness {
    let (bus, outbox, cache) = (
        Arc::new(bus),
        Arc::new(outbox),
        Arc::<MemoryCache>::default(),
    );
    let backlog = Backlog::default();
    backlog.counted(backlog.generation(), false);
    let publishing = Publishing::new(PublishingParts {
        bus: bus.clone(),
        outbox: Arc::clone(&outbox) as Arc<dyn Outbox>,
        listings: cache.clone(),
        backlog: backlog.clone(),
        metrics: Arc::new(Metrics::new().unwrap()),
        critical: HashSet::from([EventType::AchievementCompleted]),
        sealer: None,
    });
    Harness {
        bus,
        outbox,
        cache,
        backlog,
        publishing,
    }
}

fn event(event_type: &str) -> ValidEvent {
    let data = match event_type {
        "achievement.completed" => json!({"achievementId": "a-1", "userId": "u-1", "points": 5}),
        _ => {
            json!({"analyticsId": "x-1", "userId": "u-1", "type": "ui", "category": "menu", "event": "opened"})
        }
    };
    ValidEvent::parse(json!({"type": event_type, "data": data}), "").unwrap()
}

fn caller() -> Principal {
    Principal {
        subject: "game-backend".into(),
        scopes: Scopes::parse("events:publish"),
    }
}

#[tokio::test]
async fn a_critical_event_is_committed_first_then_published_and_marked() {
    let h = harness(MemoryBus::default());
    let event = event("achievement.completed");
    let receipt = h
        .publishing
        .publish(&caller(), &event, "c-1")
        .await
        .unwrap();
    assert_eq!(receipt.status, ReceiptStatus::Published);
    assert!(receipt.persisted);
    assert_eq!(h.outbox.rows.lock().unwrap()[&event.id], Owner::Request);
    assert_eq!(*h.bus.published.lock().unwrap(), vec![event.id]);
    assert_eq!(*h.outbox.confirmed.lock().unwrap(), vec![event.id]);
    assert_eq!(*h.cache.forgotten.lock().unwrap(), vec!["u-1".to_owned()]);
}

#[tokio::test]
async fn an_ordinary_event_goes_straight_to_the_broker() {
    let h = harness(MemoryBus::default());
    let event = event("analytics.event_tracked");
    let receipt = h
        .publishing
        .publish(&caller(), &event, "c-1")
        .await
        .unwrap();
    assert_eq!(receipt.status, ReceiptStatus::Published);
    assert!(!receipt.persisted);
    assert!(
        h.outbox.rows.lock().unwrap().is_empty(),
        "nothing committed"
    );
    assert_eq!(*h.bus.published.lock().unwrap(), vec![event.id]);
}

fn refusing_bus() -> MemoryBus {
    MemoryBus {
        nack: HashSet::from(["analytics.event_tracked", "achievement.completed"]),
        ..MemoryBus::default()
    }
}

#[tokio::test]
async fn what_the_broker_refuses_is_queued_in_the_outbox_for_the_relay() {
    let h = harness(refusing_bus());
    let plain = event("analytics.event_tracked");
    let receipt = h
        .publishing
        .publish(&caller(), &plain, "c-1")
        .await
        .unwrap();
    assert_eq!(receipt.status, ReceiptStatus::Queued);
    assert_eq!(h.outbox.rows.lock().unwrap()[&plain.id], Owner::Relay);
    assert!(h.backlog.has_backlog(), "new events now queue behind it");
    assert!(h.bus.published.lock().unwrap().is_empty());
}

#[tokio::test]
async fn a_committed_row_the_broker_refuses_is_handed_to_the_relay_at_once() {
    let h = harness(refusing_bus());
    let critical = event("achievement.completed");
    let receipt = h
        .publishing
        .publish(&caller(), &critical, "c-1")
        .await
        .unwrap();
    assert_eq!(receipt.status, ReceiptStatus::Queued);
    assert_eq!(h.outbox.rows.lock().unwrap()[&critical.id], Owner::Request);
    assert_eq!(*h.outbox.released.lock().unwrap(), vec![critical.id]);
    assert!(h.outbox.confirmed.lock().unwrap().is_empty());
    assert!(h.backlog.has_backlog());
}

#[tokio::test]
async fn while_the_outbox_owes_the_broker_new_events_queue_behind_it() {
    let h = harness(MemoryBus::default());
    h.backlog.added();
    let event = event("analytics.event_tracked");
    let receipt = h
        .publishing
        .publish(&caller(), &event, "c-1")
        .await
        .unwrap();
    assert_eq!(receipt.status, ReceiptStatus::Queued);
    assert_eq!(h.outbox.rows.lock().unwrap()[&event.id], Owner::Relay);
    assert!(
        h.bus.published.lock().unwrap().is_empty(),
        "order: the relay goes first"
    );
}

#[tokio::test]
async fn an_id_accepted_before_is_answered_as_safe_and_not_published_again() {
    let h = harness(MemoryBus::default());
    let event = event("achievement.completed");
    h.publishing
        .publish(&caller(), &event, "c-1")
        .await
        .unwrap();
    let again = h.publishing.publish(&caller(), &event, "c-1").await;
    assert_eq!(again.unwrap().status, ReceiptStatus::Published);
    assert_eq!(h.bus.published.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn a_partly_failed_batch_names_what_became_of_each_event() {
    let bus = MemoryBus {
        unroutable: HashSet::from(["achievement.completed"]),
        ..MemoryBus::default()
    };
    let h = harness(bus);
    let events = [
        event("analytics.event_tracked"),
        event("achievement.completed"),
    ];
    let refused = h
        .publishing
        .accept_batch(&caller(), &events, "batch-1".into())
        .await
        .unwrap_err();
    assert!(matches!(
        refused.first,
        NotTaken::Publish(PublishError::Unroutable { .. })
    ));
    let statuses: Vec<ReceiptStatus> = refused.results.iter().map(|r| r.status).collect();
    assert_eq!(statuses, [ReceiptStatus::Published, ReceiptStatus::Failed]);
    // An unroutable critical event was not accepted: its committed row is dropped.
    assert_eq!(*h.outbox.forgotten.lock().unwrap(), vec![events[1].id]);
    let submissions = vec![Submission {
        event: event("analytics.event_tracked"),
        correlation_id: "c-2".into(),
    }];
    let outcomes = h.publishing.publish_all(&caller(), submissions).await;
    assert_eq!(
        outcomes[0].as_ref().unwrap().status,
        ReceiptStatus::Published
    );
}
