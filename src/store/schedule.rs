//! Scheduled events: written before their 202 (in the group commit, like outbox rows),
//! released to the outbox when due by one gateway at a time, marked published by the
//! relay, cancelled on request, and dropped once settled for `IDEMPOTENCY_TTL`.

use async_trait::async_trait;
use sqlx::{PgPool, Postgres, Transaction};
use time::OffsetDateTime;
use tracing::instrument;
use uuid::Uuid;

use super::rows::new_in_round;
use super::{Store, StoreError};
use crate::app::ports::ScheduleStore;
use crate::app::records::{
    Held, PendingEvent, ScheduleState, ScheduleStats, ScheduledEvent, ScheduledRecord,
};
use crate::domain::envelope::rfc3339_millis;

// UNPREPARED: a claim of a queue-like table is not kept as a prepared statement. PostgreSQL
// turns a statement prepared on a connection into a generic plan after five runs, made
// for the table as it was then; one made while the schedule (or the outbox) was nearly
// empty reads the whole table for every due row once it has grown (measured: a release
// took 59 ms, then 1.2 s per tick, until an ANALYZE; BENCHMARKS.md). Planning it each
// time costs about a millisecond.

/// The advisory lock that lets one gateway at a time release due events, so that events
/// due together reach the outbox (and so the bus) in the order they were accepted.
const RELEASE_LOCK: i64 = 0x6576_6e74_7363_6864;

/// Writes scheduled events; of an id scheduled before, tells where that event stands.
/// After a lost COMMIT (`retrying`), a row that holds exactly this event's bytes is the
/// lost COMMIT's: this request's own.
#[instrument(skip_all, fields(rows = rows.len()))]
pub(super) async fn insert(
    tx: &mut Transaction<'static, Postgres>,
    rows: &[&PendingEvent],
    retrying: bool,
) -> Result<Vec<Held>, sqlx::Error> {
    let fresh = insert_new(tx, rows).await?;
    let new = new_in_round(rows.iter().map(|e| e.id), &fresh);
    let known: Vec<&PendingEvent> = rows
        .iter()
        .zip(&new)
        .filter(|(_, new)| !**new)
        .map(|(e, _)| *e)
        .collect();
    let earlier = earlier_ones(tx, &known).await?;
    Ok(rows
        .iter()
        .zip(new)
        .map(|(e, new)| match new {
            true => Held::New,
            false => earlier
                .iter()
                .find(|s| s.id == e.id)
                .map_or(Held::Unsettled, |s| s.held(retrying)),
        })
        .collect())
}

/// Inserts the rows of events not scheduled before; returns their ids.
async fn insert_new(
    tx: &mut Transaction<'static, Postgres>,
    rows: &[&PendingEvent],
) -> Result<Vec<Uuid>, sqlx::Error> {
    let scheduled: Vec<Scheduled> = rows
        .iter()
        .filter_map(|e| e.schedule.as_ref().map(|s| (*e, s)))
        .collect();
    let trace = |e: &PendingEvent| e.trace.clone();
    sqlx::query_scalar(
        "INSERT INTO scheduled_events (event_id, deliver_at, type, user_id, ordering_key,
                                       correlation_id, source, timestamp_secs, body, critical,
                                       traceparent, tracestate, accepted_at)
         SELECT * FROM UNNEST($1::uuid[], $2::timestamptz[], $3::text[], $4::text[], $5::text[],
                              $6::text[], $7::text[], $8::int8[], $9::bytea[], $10::bool[],
                              $11::text[], $12::text[], $13::timestamptz[])
         ON CONFLICT (event_id) DO NOTHING
         RETURNING event_id",
    )
    .bind(column(&scheduled, |e, _| e.id))
    .bind(column(&scheduled, |_, s| s.deliver_at))
    .bind(column(&scheduled, |_, s| s.record.event_type))
    .bind(column(&scheduled, |_, s| s.record.user_id.clone()))
    .bind(column(&scheduled, |e, _| e.ordering_key.clone()))
    .bind(column(&scheduled, |e, _| e.correlation_id.clone()))
    .bind(column(&scheduled, |_, s| s.record.source.clone()))
    .bind(column(&scheduled, |e, _| e.timestamp_secs))
    .bind(column(&scheduled, |e, _| e.body.clone()))
    .bind(column(&scheduled, |_, s| s.critical))
    .bind(column(&scheduled, |e, _| {
        trace(e).map(|t| t.parent.to_string())
    }))
    .bind(column(&scheduled, |e, _| {
        trace(e).and_then(|t| t.state).map(|s| s.to_string())
    }))
    .bind(column(&scheduled, |_, s| s.record.accepted_at))
    .fetch_all(&mut **tx)
    .await
}

/// A scheduled event and its schedule.
type Scheduled<'a> = (&'a PendingEvent, &'a ScheduledRecord);

/// One value of every scheduled event, for one `UNNEST` array.
fn column<T>(
    scheduled: &[Scheduled],
    value: impl Fn(&PendingEvent, &ScheduledRecord) -> T,
) -> Vec<T> {
    scheduled.iter().map(|(e, s)| value(e, s)).collect()
}

/// An earlier scheduled event with an id being scheduled again.
#[derive(sqlx::FromRow)]
struct Earlier {
    id: Uuid,
    same: bool,
    state: String,
}

impl Earlier {
    fn held(&self, retrying: bool) -> Held {
        if self.same && retrying {
            return Held::New;
        }
        match ScheduleState::parse(&self.state) {
            Some(ScheduleState::Scheduled) => Held::Scheduled,
            Some(ScheduleState::Released) => Held::Owed,
            Some(ScheduleState::Published) => Held::Published,
            Some(ScheduleState::Cancelled) => Held::Cancelled,
            None => Held::Unsettled,
        }
    }
}

async fn earlier_ones(
    tx: &mut Transaction<'static, Postgres>,
    known: &[&PendingEvent],
) -> Result<Vec<Earlier>, sqlx::Error> {
    if known.is_empty() {
        return Ok(Vec::new());
    }
    sqlx::query_as(
        "SELECT x.id, s.body = x.body AS same, s.state
         FROM UNNEST($1::uuid[], $2::bytea[]) AS x(id, body)
         JOIN scheduled_events s ON s.event_id = x.id",
    )
    .bind(known.iter().map(|e| e.id).collect::<Vec<_>>())
    .bind(known.iter().map(|e| e.body.clone()).collect::<Vec<_>>())
    .fetch_all(&mut **tx)
    .await
}

/// Scheduled events the relay published: their schedule rows say so.
pub(super) async fn mark_published_in(
    tx: &mut Transaction<'static, Postgres>,
    ids: &[Uuid],
) -> Result<(), sqlx::Error> {
    if ids.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "UPDATE scheduled_events SET state = 'published', settled_at = now()
         WHERE event_id = ANY($1) AND state = 'released'",
    )
    .bind(ids)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

impl Store {
    /// Moves up to `limit` due events to the outbox (critical ones with their record), in
    /// due time and then acceptance order, unless another gateway is doing so right now.
    /// Returns how many it moved.
    #[instrument(skip_all)]
    pub async fn release_due(&self, limit: i64) -> Result<u64, StoreError> {
        let pool = self.pool()?.clone();
        self.guarded(async move { release_due(&pool, limit).await })
            .await
    }

    /// Drops published events (and released ones the outbox no longer holds) settled
    /// longer than `ttl_secs` ago, and cancelled ones once their time, too, is that long
    /// past: until then a late retry with the same id finds it cancelled and is refused,
    /// rather than scheduling it again. A thousand rows per statement.
    pub async fn expire_schedule(&self, ttl_secs: f64) -> Result<u64, StoreError> {
        let pool = self.pool()?.clone();
        self.guarded(async move {
            let mut dropped = 0;
            loop {
                let gone = sqlx::query(
                    "DELETE FROM scheduled_events WHERE seq IN (
                         SELECT s.seq FROM scheduled_events s
                         WHERE s.state <> 'scheduled'
                           AND s.settled_at < now() - make_interval(secs => $1)
                           AND (s.state <> 'cancelled'
                                OR s.deliver_at < now() - make_interval(secs => $1))
                           AND (s.state <> 'released'
                                OR NOT EXISTS (SELECT 1 FROM outbox o
                                               WHERE o.event_id = s.event_id))
                         LIMIT 1000)",
                )
                .bind(ttl_secs)
                .execute(&pool)
                .await?
                .rows_affected();
                dropped += gone;
                if gone < 1000 {
                    return Ok(dropped);
                }
            }
        })
        .await
    }
}

async fn release_due(pool: &PgPool, limit: i64) -> Result<u64, StoreError> {
    let mut tx = pool.begin().await?;
    let mine: bool = sqlx::query_scalar("SELECT pg_try_advisory_xact_lock($1)")
        .bind(RELEASE_LOCK)
        .fetch_one(&mut *tx)
        .await?;
    if !mine {
        return Ok(0);
    }
    let moved = sqlx::query(
        "WITH due AS (
             SELECT seq FROM scheduled_events
             WHERE state = 'scheduled' AND deliver_at <= now()
             ORDER BY deliver_at, seq
             LIMIT $1
             FOR UPDATE
         ), moved AS (
             UPDATE scheduled_events s SET state = 'released', settled_at = now()
             FROM due WHERE s.seq = due.seq
             RETURNING s.seq, s.event_id, s.deliver_at, s.type, s.user_id, s.ordering_key,
                       s.correlation_id, s.source, s.timestamp_secs, s.body, s.critical,
                       s.traceparent, s.tracestate, s.accepted_at
         ), records AS (
             INSERT INTO events (id, type, user_id, correlation_id, source, envelope, accepted_at)
             SELECT event_id, type, user_id, correlation_id, source,
                    convert_from(body, 'UTF8')::jsonb, accepted_at
             FROM moved WHERE critical
             ON CONFLICT (id) DO NOTHING
         )
         INSERT INTO outbox (event_id, routing_key, ordering_key, correlation_id, timestamp_secs,
                             body, critical, traceparent, tracestate, scheduled)
         SELECT event_id, type, ordering_key, correlation_id, timestamp_secs, body, critical,
                traceparent, tracestate, true
         FROM moved ORDER BY deliver_at, seq
         ON CONFLICT (event_id) DO NOTHING",
    )
    .bind(limit)
    // Planned afresh each time (see `UNPREPARED`).
    .persistent(false)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    tx.commit().await?;
    Ok(moved)
}

#[async_trait]
impl ScheduleStore for Store {
    async fn scheduled_event(&self, id: Uuid) -> Result<Option<ScheduledEvent>, StoreError> {
        let pool = self.pool()?.clone();
        self.guarded(async move {
            let row: Option<(String, String, Option<String>, String)> = sqlx::query_as(
                "SELECT type, source, user_id, state FROM scheduled_events WHERE event_id = $1",
            )
            .bind(id)
            .fetch_optional(&pool)
            .await?;
            Ok(row.and_then(|(event_type, source, user_id, state)| {
                Some(ScheduledEvent {
                    event_type: event_type.parse().ok()?,
                    source,
                    user_id,
                    state: ScheduleState::parse(&state)?,
                })
            }))
        })
        .await
    }

    async fn known(&self, ids: Vec<Uuid>) -> Result<Vec<Uuid>, StoreError> {
        let pool = self.pool()?.clone();
        self.guarded(async move {
            Ok(sqlx::query_scalar(
                "SELECT x.id FROM UNNEST($1::uuid[]) AS x(id)
                 WHERE EXISTS (SELECT 1 FROM scheduled_events WHERE event_id = x.id)
                    OR EXISTS (SELECT 1 FROM outbox WHERE event_id = x.id)
                    OR EXISTS (SELECT 1 FROM events WHERE id = x.id)",
            )
            .bind(ids)
            .fetch_all(&pool)
            .await?)
        })
        .await
    }

    async fn cancel(&self, id: Uuid) -> Result<bool, StoreError> {
        let pool = self.pool()?.clone();
        self.guarded(async move {
            let cancelled = sqlx::query(
                "UPDATE scheduled_events SET state = 'cancelled', settled_at = now()
                 WHERE event_id = $1 AND state = 'scheduled'",
            )
            .bind(id)
            .execute(&pool)
            .await?;
            Ok(cancelled.rows_affected() == 1)
        })
        .await
    }

    async fn stats(&self) -> Result<ScheduleStats, StoreError> {
        let pool = self.pool()?.clone();
        self.guarded(async move {
            let (pending, overdue, next_due, released, published, cancelled): (
                i64,
                i64,
                Option<OffsetDateTime>,
                i64,
                i64,
                i64,
            ) = sqlx::query_as(
                "SELECT count(*) FILTER (WHERE state = 'scheduled'),
                        count(*) FILTER (WHERE state = 'scheduled' AND deliver_at <= now()),
                        min(deliver_at) FILTER (WHERE state = 'scheduled'),
                        count(*) FILTER (WHERE state = 'released'),
                        count(*) FILTER (WHERE state = 'published'),
                        count(*) FILTER (WHERE state = 'cancelled')
                 FROM scheduled_events",
            )
            .fetch_one(&pool)
            .await?;
            Ok(ScheduleStats {
                pending,
                overdue,
                next_due: next_due.map(rfc3339_millis),
                released,
                published,
                cancelled,
            })
        })
        .await
    }
}
