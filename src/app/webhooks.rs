//! A webhook delivery whose signature checked out: its events are published once per
//! `webhook-id`, charged to the source only when the delivery runs (a replay is answered,
//! not charged), with ids scoped to the source: derived from the delivery where the sender
//! gave none.

use std::time::Duration;

use serde_json::Value;

use super::App;
use super::idempotency::{Accepted, Answer, IdempotencyKey, Ledger, OnceError};
use super::publish::{BatchNotTaken, NotTaken};
use super::rate_limit::{Budget, ChargeRefused};
use crate::domain::event_id::{RequestKey, scope_ids};
use crate::domain::{Principal, ValidEvent};

/// A webhook's replay window must outlast the 10 minutes a signature is valid, or a
/// captured delivery could be sent again and published again.
pub const MIN_REPLAY_WINDOW: Duration = Duration::from_secs(10 * 60);

/// A verified delivery.
pub struct Delivery {
    pub source: String,
    pub webhook_id: String,
    /// The body as sent, compared when the same `webhook-id` comes again.
    pub request: Value,
    pub events: Vec<ValidEvent>,
    /// The body was one event, not `{"events": [...]}`.
    pub single: bool,
    pub correlation_id: String,
}

/// Why a delivery's events were not taken.
#[derive(Debug, thiserror::Error)]
pub enum WebhookRefused {
    #[error(transparent)]
    Charge(#[from] ChargeRefused),
    #[error(transparent)]
    NotTaken(#[from] NotTaken),
    #[error(transparent)]
    Batch(#[from] BatchNotTaken),
}

impl App {
    pub async fn receive_webhook(
        &self,
        mut delivery: Delivery,
    ) -> Result<Answer, OnceError<WebhookRefused>> {
        let principal = Principal::webhook(&delivery.source);
        // A retry of a delivery that failed half-way publishes the same event ids again,
        // so consumers can drop what did get through the first time.
        let key = RequestKey::Webhook(&delivery.webhook_id);
        scope_ids(&principal.subject, Some(key), &mut delivery.events);
        let key = IdempotencyKey {
            key: format!("webhook-id:{}", delivery.webhook_id),
            pointer: "/headers/webhook-id",
        };
        let subject = principal.subject.clone();
        let request = std::mem::take(&mut delivery.request);
        let app = self.clone();
        let work = Box::pin(async move { app.run_delivery(principal, delivery).await });
        self.idempotency
            .once(Ledger::Cache, &subject, Some((key, request)), work)
            .await
    }

    async fn run_delivery(
        &self,
        principal: Principal,
        mut delivery: Delivery,
    ) -> Result<Accepted, WebhookRefused> {
        // After the replay guard: a retried delivery is answered as the first one was.
        self.scheduling.check(&delivery.events).await?;
        let budget = Budget::Webhook(&delivery.source);
        self.limiter
            .charge_events(budget, delivery.events.len(), 0)
            .await?;
        let publishing = &self.publishing;
        if delivery.single
            && let Some(event) = delivery.events.pop()
        {
            Ok(publishing
                .accept_one(&principal, &event, delivery.correlation_id)
                .await?)
        } else {
            let correlation_id = delivery.correlation_id;
            Ok(publishing
                .accept_batch(&principal, &delivery.events, correlation_id)
                .await?)
        }
    }
}
