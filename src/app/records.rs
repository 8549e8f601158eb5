//! The plain data that crosses the ports: what the application hands the adapters and
//! gets back from them. No behaviour beyond encoding a page cursor.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Serialize;
use serde_json::Value;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::domain::EventType;
use crate::domain::trace::TraceContext;

/// One message to publish; the body is the serialized envelope. It is owned so that the
/// publish can finish even if the caller stops waiting.
#[derive(Debug, Clone)]
pub struct OutgoingMessage {
    pub message_id: Uuid,
    pub routing_key: &'static str,
    pub correlation_id: String,
    pub timestamp_secs: u64,
    pub body: Vec<u8>,
    /// The `traceparent`/`tracestate` headers it goes out with.
    pub trace: Option<TraceContext>,
}

/// Messages and consumers of one queue, as the broker reports them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct QueueDepth {
    pub name: String,
    pub message_count: u32,
    pub consumer_count: u32,
}

/// Health facts Redis reports.
#[derive(Debug, Clone, PartialEq)]
pub struct CacheStats {
    pub used_memory: String,
}

/// The gateway's own cached reads since it started: found in Redis, or not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CacheLookups {
    pub hits: u64,
    pub misses: u64,
}

/// A critical event's row: what the receipt endpoints read back.
#[derive(Debug, Clone)]
pub struct EventRecord {
    pub event_type: &'static str,
    pub user_id: Option<String>,
    pub source: String,
    pub accepted_at: OffsetDateTime,
}

/// What holding one event found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Held {
    /// Its row is written now.
    New,
    /// Its id was held before (a retry of an accepted event): still owed to the broker.
    Owed,
    /// Its id was held before and has been published.
    Published,
    /// Its id was held before by a request still at work (or its event is neither owed
    /// nor published): whether it will go out is not known yet.
    Unsettled,
    /// Its id was scheduled before, and waits for its time.
    Scheduled,
    /// Its id was scheduled before, and cancelled: it will never be published.
    Cancelled,
}

/// One event to hold: its broker message and, for critical events, its record.
#[derive(Debug, Clone)]
pub struct PendingEvent {
    pub id: Uuid,
    pub routing_key: &'static str,
    pub ordering_key: String,
    pub correlation_id: String,
    pub timestamp_secs: i64,
    pub body: Vec<u8>,
    pub record: Option<EventRecord>,
    /// When it is scheduled (`deliverAt`): held in the schedule until then, not the outbox.
    pub schedule: Option<ScheduledRecord>,
    /// The trace of the request that made it, kept with its outbox row.
    pub trace: Option<TraceContext>,
}

/// A scheduled event's row: when it is due, whether it is critical (its record is written
/// when it is released), and what reads and cancels need.
#[derive(Debug, Clone)]
pub struct ScheduledRecord {
    pub deliver_at: OffsetDateTime,
    pub critical: bool,
    pub record: EventRecord,
}

/// Where a scheduled event stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScheduleState {
    /// Waiting for its time.
    Scheduled,
    /// Due, and moved to the outbox, which publishes it.
    Released,
    Published,
    Cancelled,
}

impl ScheduleState {
    pub fn as_str(self) -> &'static str {
        match self {
            ScheduleState::Scheduled => "scheduled",
            ScheduleState::Released => "released",
            ScheduleState::Published => "published",
            ScheduleState::Cancelled => "cancelled",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        [
            ScheduleState::Scheduled,
            ScheduleState::Released,
            ScheduleState::Published,
            ScheduleState::Cancelled,
        ]
        .into_iter()
        .find(|state| state.as_str() == text)
    }
}

/// A scheduled event as a cancel sees it: who scheduled it, for whom, and where it stands.
#[derive(Debug, Clone)]
pub struct ScheduledEvent {
    pub event_type: EventType,
    pub source: String,
    pub user_id: Option<String>,
    pub state: ScheduleState,
}

/// What the schedule holds, for `/health` and `/metrics`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScheduleStats {
    /// Events waiting for their time.
    pub pending: i64,
    /// Pending events whose time has come and that are not yet released to the outbox.
    pub overdue: i64,
    /// When the next pending event is due (RFC 3339), if any.
    pub next_due: Option<String>,
    /// Events released to the outbox and not marked published since (the relay marks
    /// them when the broker confirms them).
    pub released: i64,
    /// Published events, kept for IDEMPOTENCY_TTL after they went out.
    pub published: i64,
    /// Cancelled events, kept until IDEMPOTENCY_TTL after the time they were due.
    pub cancelled: i64,
}

impl PendingEvent {
    pub fn message(&self) -> OutgoingMessage {
        OutgoingMessage {
            message_id: self.id,
            routing_key: self.routing_key,
            correlation_id: self.correlation_id.clone(),
            timestamp_secs: self.timestamp_secs.unsigned_abs(),
            body: self.body.clone(),
            trace: self.trace.clone(),
        }
    }
}

/// Who publishes a newly written outbox row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner {
    /// The request publishes it now; the relay takes over only if the lease runs out.
    Request,
    /// The relay publishes it.
    Relay,
}

/// A persisted event and its delivery state.
#[derive(Debug, Clone)]
pub struct StoredEvent {
    pub id: Uuid,
    pub user_id: Option<String>,
    pub envelope: Value,
    pub state: String,
    pub accepted_at: OffsetDateTime,
    pub published_at: Option<OffsetDateTime>,
    /// When it is (or was) scheduled for, if it was scheduled.
    pub deliver_at: Option<OffsetDateTime>,
}

/// One page of a user's persisted events, newest first.
#[derive(Debug, Clone)]
pub struct EventPage {
    pub events: Vec<StoredEvent>,
    pub next: Option<PageCursor>,
}

/// A message the consumers (or the relay) gave up on.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    pub id: Uuid,
    pub event_id: Option<String>,
    pub routing_key: String,
    pub queue: String,
    pub attempts: i32,
    pub last_error: String,
    pub body: Vec<u8>,
    pub failed_at: OffsetDateTime,
    pub replayed_at: Option<OffsetDateTime>,
    /// The message's `traceparent` and `tracestate` headers, when it had them.
    pub traceparent: Option<String>,
    pub tracestate: Option<String>,
}

/// Which dead letters to list.
#[derive(Debug, Clone, Default)]
pub struct DeadLetterFilter {
    pub routing_key: Option<String>,
    pub replayed: Option<bool>,
    /// Only those that failed before this one (newest first paging).
    pub before: Option<(OffsetDateTime, Uuid)>,
}

/// The first answer, as the client got it.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredAnswer {
    pub status: u16,
    pub body: Value,
}

/// What a ledger says to a request that presents a key.
#[derive(Debug, Clone, PartialEq)]
pub enum Claim {
    /// This request is the first: it runs, then records its answer.
    Owned,
    /// An earlier request answered this.
    Answered(StoredAnswer),
    /// An earlier request with this key is still running.
    InProgress,
    /// The key was used with another request body.
    Mismatch,
}

/// One request's claim on a key: who, which key, the hash of its body, and a token only
/// this request knows (so a claim that expired and was taken over is never overwritten).
#[derive(Debug, Clone)]
pub struct Ticket {
    pub principal: String,
    pub key: String,
    pub hash: Vec<u8>,
    pub token: Uuid,
}

/// One charge asked of the shared store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GcraRequest {
    pub interval_micros: u64,
    pub burst: u32,
    pub cost: u32,
    /// Events to take beyond `cost` if the budget holds them (a lease).
    pub extra: u64,
    /// Lapsed leased events to give back first.
    pub refund: u64,
}

/// The store's answer: allowed, events remaining, microseconds until the budget is full
/// and until this charge would pass, and how many events were taken in all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GcraReply {
    pub allowed: bool,
    pub remaining: u64,
    pub reset: u64,
    pub retry: u64,
    pub taken: u64,
}

/// Where the next page starts in a newest-first listing: just after the row with this
/// time and id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageCursor {
    at_micros: i64,
    pub id: Uuid,
}

impl PageCursor {
    pub fn after(at: OffsetDateTime, id: Uuid) -> Self {
        PageCursor {
            at_micros: (at.unix_timestamp_nanos() / 1_000) as i64,
            id,
        }
    }

    /// The time and id this cursor points after, for the next page's query.
    pub fn position(&self) -> Option<(OffsetDateTime, Uuid)> {
        Some((self.at()?, self.id))
    }

    /// An opaque token for clients.
    pub fn encode(&self) -> String {
        URL_SAFE_NO_PAD.encode(format!("{}.{}", self.at_micros, self.id))
    }

    pub fn decode(token: &str) -> Option<Self> {
        let text = String::from_utf8(URL_SAFE_NO_PAD.decode(token).ok()?).ok()?;
        let (micros, id) = text.split_once('.')?;
        Some(PageCursor {
            at_micros: micros.parse().ok()?,
            id: id.parse().ok()?,
        })
    }

    pub fn at(&self) -> Option<OffsetDateTime> {
        OffsetDateTime::from_unix_timestamp_nanos(i128::from(self.at_micros) * 1_000).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_reject_garbage() {
        let cursor = PageCursor {
            at_micros: 1_769_860_800_123_456,
            id: Uuid::now_v7(),
        };
        assert_eq!(PageCursor::decode(&cursor.encode()), Some(cursor));
        assert_eq!(PageCursor::decode("not-a-cursor"), None);
        assert_eq!(PageCursor::decode(&URL_SAFE_NO_PAD.encode("12.nope")), None);
    }
}
