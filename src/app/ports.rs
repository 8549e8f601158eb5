//! The ports: what the application needs from RabbitMQ, PostgreSQL and Redis, as small
//! traits the adapters (`bus`, `store`, `cache`) implement. Application code names only
//! these, so another adapter (a clustered Redis, TLS connections, another limiter store)
//! slots in without touching it; the unit tests put in-memory ones in their place.

use std::sync::Arc;

use async_trait::async_trait;
use uuid::Uuid;

use super::records::{
    CacheLookups, CacheStats, Claim, DeadLetter, DeadLetterFilter, EventPage, GcraReply,
    GcraRequest, Held, OutgoingMessage, Owner, PageCursor, PendingEvent, QueueDepth, ScheduleStats,
    ScheduledEvent, StoredAnswer, StoredEvent, Ticket,
};
use crate::runtime::breaker::CircuitState;
use crate::runtime::metrics::PublishOutcome;

/// An adapter's own error, kept as the cause of the application's.
pub type Cause = Arc<dyn std::error::Error + Send + Sync>;

/// Why a message was not confirmed; none of these may be answered 202. Some mean it was
/// never sent; [`PublishError::may_be_published`] tells the ones that leave the outcome
/// open (sent, but no confirm came back).
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// Not sent: no connection, or the channel was already broken.
    #[error("the broker is unreachable")]
    Unavailable(#[source] Option<Cause>),
    /// Sent, but the channel or connection failed before the broker confirmed it: it may
    /// or may not be on the bus.
    #[error("the broker connection failed before it confirmed the message")]
    ConfirmLost(#[source] Cause),
    #[error("the broker refused the message (nack)")]
    Nacked,
    #[error("no queue is bound for routing key {routing_key}")]
    Unroutable { routing_key: String },
    /// Sent (or about to be), and no confirm within the timeout: it may be on the bus.
    #[error("the broker did not confirm within {0:?}")]
    ConfirmTimeout(std::time::Duration),
    #[error("the channel is not in confirm mode, so delivery is unknown")]
    NotConfirmed,
    #[error("the event could not be encoded")]
    Encode(#[source] serde_json::Error),
}

impl PublishError {
    /// The broker may take the message later (unreachable, refused for now, slow); the
    /// others will fail the same way every time.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            PublishError::Unavailable(_)
                | PublishError::ConfirmLost(_)
                | PublishError::Nacked
                | PublishError::ConfirmTimeout(_)
        )
    }

    /// The message may be on the bus although it was not confirmed: whoever cannot hold
    /// it in the outbox must not call it refused.
    pub fn may_be_published(&self) -> bool {
        matches!(
            self,
            PublishError::ConfirmLost(_)
                | PublishError::ConfirmTimeout(_)
                | PublishError::NotConfirmed
        )
    }

    pub fn outcome(&self) -> PublishOutcome {
        match self {
            PublishError::Unavailable(_) => PublishOutcome::Unavailable,
            PublishError::ConfirmLost(_) => PublishOutcome::ConfirmLost,
            PublishError::Nacked => PublishOutcome::Nacked,
            PublishError::Unroutable { .. } => PublishOutcome::Unroutable,
            PublishError::ConfirmTimeout(_) => PublishOutcome::Timeout,
            PublishError::NotConfirmed => PublishOutcome::NotConfirmed,
            PublishError::Encode(_) => PublishOutcome::EncodeFailed,
        }
    }
}

/// The database could not take or give what was asked.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("the database is unavailable: {0}")]
    Unavailable(Cause),
    /// The connection failed during the COMMIT: the rows may or may not be written.
    #[error("the database connection failed during the commit: {0}")]
    CommitUnknown(Cause),
    /// The database answered and refused this statement for the values it carried (a
    /// client's error, never the database's: see `store::refused_for_content`).
    #[error("the database refused the statement: {0}")]
    Refused(Cause),
    #[error("the database schema is not ready yet")]
    NotReady,
    #[error("a database task failed")]
    TaskFailed,
    #[error("circuit open: PostgreSQL failed repeatedly; not calling it for a few seconds")]
    CircuitOpen,
}

/// Redis did not answer, or answered with an error.
#[derive(Debug, Clone, thiserror::Error)]
#[error("redis: {0}")]
pub struct CacheError(pub Cause);

/// The broker, as publishing and health see it.
#[async_trait]
pub trait EventBus: Send + Sync {
    fn is_connected(&self) -> bool;

    /// Why the last attempt to connect failed (a TLS reason in plain words), until one
    /// succeeds.
    fn last_error(&self) -> Option<String> {
        None
    }

    /// Publishes `messages` (persistent, mandatory) in this order and awaits every
    /// confirm; one outcome per message.
    async fn publish_in_order(
        &self,
        messages: Vec<OutgoingMessage>,
    ) -> Vec<Result<(), PublishError>>;

    /// Message and consumer counts of every declared queue.
    async fn queue_depths(&self) -> Result<Vec<QueueDepth>, PublishError>;
}

/// The events table and its outbox, as publishing writes them.
#[async_trait]
pub trait Outbox: Send + Sync {
    /// Writes events (critical ones with their record) and their outbox rows in one
    /// transaction, scheduled ones to the schedule instead. Returns, per event, whether it
    /// was new or where the earlier event with its id stands.
    async fn hold(&self, events: Vec<PendingEvent>, owner: Owner) -> Result<Vec<Held>, StoreError>;

    /// The broker confirmed these events: mark critical ones published, drop their rows.
    async fn confirmed(&self, ids: Vec<Uuid>) -> Result<(), StoreError>;

    /// The request could not publish its own row: hand it to the relay now.
    async fn release(&self, id: Uuid) -> Result<(), StoreError>;

    /// The event can never be published (unroutable): it was not accepted, so forget it,
    /// unless its row is no longer left to the request (then `false`: the relay may have
    /// published it).
    async fn forget(&self, id: Uuid) -> Result<bool, StoreError>;
}

/// Scheduled events, as cancels and health see them (they are written by
/// [`Outbox::hold`], with the other events of their request).
#[async_trait]
pub trait ScheduleStore: Send + Sync {
    async fn scheduled_event(&self, id: Uuid) -> Result<Option<ScheduledEvent>, StoreError>;

    /// Which of `ids` were taken before: scheduled, in the outbox, or persisted.
    async fn known(&self, ids: Vec<Uuid>) -> Result<Vec<Uuid>, StoreError>;

    /// Cancels it if it still waits for its time; `false` if it does not.
    async fn cancel(&self, id: Uuid) -> Result<bool, StoreError>;

    async fn stats(&self) -> Result<ScheduleStats, StoreError>;
}

/// Persisted (critical) events read back.
#[async_trait]
pub trait EventArchive: Send + Sync {
    async fn event(&self, id: Uuid) -> Result<Option<StoredEvent>, StoreError>;

    /// A user's events, newest first; `limit` is the page size.
    async fn user_events(
        &self,
        user_id: String,
        event_type: Option<&'static str>,
        limit: i64,
        cursor: Option<PageCursor>,
    ) -> Result<EventPage, StoreError>;
}

/// Dead letters, as operators list and replay them.
#[async_trait]
pub trait DeadLetterArchive: Send + Sync {
    /// Newest first; one more than `limit` tells whether a next page exists.
    async fn dead_letters(
        &self,
        filter: DeadLetterFilter,
        limit: i64,
    ) -> Result<Vec<DeadLetter>, StoreError>;

    async fn dead_letter(&self, id: Uuid) -> Result<Option<DeadLetter>, StoreError>;

    /// Marks it replayed if nobody did yet: only the caller that gets `true` republishes.
    async fn claim_replay(&self, id: Uuid) -> Result<bool, StoreError>;

    /// The republish failed: let a later replay try again.
    async fn unclaim_replay(&self, id: Uuid) -> Result<(), StoreError>;
}

/// Where idempotency claims and first answers are kept.
#[async_trait]
pub trait IdempotencyLedger: Send + Sync {
    async fn claim(&self, ticket: &Ticket) -> Result<Claim, LedgerError>;

    /// Replaces this request's claim with its answer.
    async fn record(&self, ticket: &Ticket, answer: StoredAnswer) -> Result<(), LedgerError>;

    /// The request failed: drop its claim so a retry runs again.
    async fn release(&self, ticket: &Ticket) -> Result<(), LedgerError>;
}

/// A ledger that could not be reached, by kind: they are answered differently.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LedgerError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Cache(#[from] CacheError),
}

/// The gateway's own cached reads. A cache that fails reads as a miss and stores nothing.
#[async_trait]
pub trait ReadCache: Send + Sync {
    /// A published event, as the JSON the read endpoint answers.
    async fn event(&self, id: Uuid) -> Option<String>;
    async fn put_event(&self, id: Uuid, json: &str);
    /// One page of a user's listing, by its query.
    async fn user_events(&self, user_id: &str, query: &str) -> Option<String>;
    async fn put_user_events(&self, user_id: &str, query: &str, page: &str);
    /// Drops every cached listing of this user's events.
    async fn forget_user_events(&self, user_id: &str);
}

/// Where the rate limiter keeps the budgets every gateway process shares.
#[async_trait]
pub trait LimiterStore: Send + Sync {
    /// One GCRA step for `key`, atomically.
    async fn gcra(&self, key: &str, request: GcraRequest) -> Result<GcraReply, CacheError>;
}

/// Whether the keys that verify tokens are at hand (the identity provider's key set has
/// been fetched), for `/health/ready`.
pub trait KeyProbe: Send + Sync {
    fn keys_loaded(&self) -> bool;
}

/// PostgreSQL's health, for `/health` and `/health/ready`.
#[async_trait]
pub trait StoreProbe: Send + Sync {
    /// The schema is migrated, so the database may be used.
    fn is_ready(&self) -> bool;
    fn circuit(&self) -> CircuitState;
    /// One round trip, even while the circuit is open.
    async fn ping(&self) -> Result<(), StoreError>;
    /// Why preparing the database (connect, create, migrate) last failed, until it is ready.
    fn last_error(&self) -> Option<String> {
        None
    }
}

/// Redis's health, and how the gateway's own cached reads fare, for `/health`.
#[async_trait]
pub trait CacheProbe: Send + Sync {
    fn circuit(&self) -> CircuitState;
    async fn stats(&self) -> Result<CacheStats, CacheError>;
    /// The [`ReadCache`] lookups since start (a Redis that fails counts as a miss).
    fn lookups(&self) -> CacheLookups;
}
