//! The application layer: the gateway's use cases, written against the ports. The HTTP
//! edge parses and authorises a request, calls one function here, and maps its result
//! to an answer; it never reaches an adapter.
//!
//! - [`publish`]: a valid event becomes a safe one (confirmed, or held in the outbox).
//! - [`idempotency`]: the first answer to a key is kept and replayed to every retry.
//! - [`webhooks`]: a verified delivery, published once per `webhook-id`.
//! - [`replay`]: dead letters listed and published again through [`publish`].
//! - [`reads`]: persisted events read back, cache-aside.
//! - [`schedule`]: scheduled events' window, cancelling, and what `/health` says of them.
//! - [`rate_limit`]: per-caller budgets shared through a [`ports::LimiterStore`].
//! - [`health`]: what `/health` and `/health/ready` report.
//! - [`ports`]: the traits the adapters implement; [`records`]: the data crossing them.

pub mod health;
pub mod idempotency;
pub mod ports;
pub mod publish;
pub mod rate_limit;
pub mod reads;
pub mod records;
pub mod replay;
pub mod schedule;
pub mod webhooks;

use serde_json::Value;

use self::health::Health;
use self::idempotency::{Answer, Idempotency, IdempotencyKey, Ledger, OnceError};
use self::publish::{BatchNotTaken, NotTaken, Publishing};
use self::rate_limit::RateLimiter;
use self::reads::Reads;
use self::replay::Replay;
use self::schedule::Scheduling;
use crate::domain::{Principal, ValidEvent};

/// Every use case, as the HTTP edge calls them. Cheap to clone.
#[derive(Clone)]
pub struct App {
    pub publishing: Publishing,
    pub idempotency: Idempotency,
    pub replay: Replay,
    pub reads: Reads,
    pub scheduling: Scheduling,
    pub limiter: RateLimiter,
    pub health: Health,
}

/// An idempotency key and the request it was sent with (compared on a retry).
pub type Keyed = Option<(IdempotencyKey, Value)>;

impl App {
    /// Publishes one event, once per key (when there is one).
    pub async fn publish_event(
        &self,
        principal: Principal,
        event: ValidEvent,
        correlation_id: String,
        key: Keyed,
    ) -> Result<Answer, OnceError<NotTaken>> {
        let subject = principal.subject.clone();
        let (publishing, scheduling) = (self.publishing.clone(), self.scheduling.clone());
        // A retry is answered as the first request was, even once its `deliverAt` passed.
        let work = Box::pin(async move {
            scheduling.check(std::slice::from_ref(&event)).await?;
            publishing
                .accept_one(&principal, &event, correlation_id)
                .await
        });
        self.idempotency
            .once(Ledger::Database, &subject, key, work)
            .await
    }

    /// Publishes a batch, once per key (when there is one).
    pub async fn publish_batch(
        &self,
        principal: Principal,
        events: Vec<ValidEvent>,
        correlation_id: String,
        key: Keyed,
    ) -> Result<Answer, OnceError<BatchNotTaken>> {
        let subject = principal.subject.clone();
        let (publishing, scheduling) = (self.publishing.clone(), self.scheduling.clone());
        let work = Box::pin(async move {
            scheduling
                .check(&events)
                .await
                .map_err(BatchNotTaken::before_any)?;
            publishing
                .accept_batch(&principal, &events, correlation_id)
                .await
        });
        self.idempotency
            .once(Ledger::Database, &subject, key, work)
            .await
    }
}
