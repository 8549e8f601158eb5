//! The outbox's rows: claimed by the relay under row and per-user locks, completed when
//! the broker confirms, rescheduled with backoff when it does not.

use std::time::Duration;

use sqlx::{PgPool, Postgres, Transaction};
use tracing::instrument;
use uuid::Uuid;

use super::{Store, StoreError, schedule};
use crate::domain::trace::{TraceContext, TraceParent};

/// How long a scheduled event released to the outbox may wait for the relay before it is
/// a backlog that new events queue behind.
const RELEASED_GRACE: Duration = Duration::from_secs(2);

/// A message owed to the broker.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct OutboxRow {
    pub event_id: Uuid,
    pub routing_key: String,
    pub ordering_key: String,
    pub correlation_id: String,
    pub timestamp_secs: i64,
    pub body: Vec<u8>,
    /// Attempts that failed so far.
    pub attempts: i32,
    pub traceparent: Option<String>,
    pub tracestate: Option<String>,
    /// Released by the schedule (its schedule row is marked when it is published).
    pub scheduled: bool,
}

impl OutboxRow {
    /// The trace of the request that held it.
    pub fn trace(&self) -> Option<TraceContext> {
        let parent = TraceParent::parse(self.traceparent.as_deref()?)?;
        Some(TraceContext {
            parent,
            state: self.tracestate.as_deref().map(Into::into),
        })
    }
}

/// A row the broker did not take for now: why, and how long until it is tried again.
pub struct Retry {
    pub id: Uuid,
    pub error: String,
    pub after: Duration,
}

/// Rows this process holds: nobody else publishes them, nor any later row of the same
/// ordering key, until [`ClaimedBatch::finish`] commits.
pub struct ClaimedBatch {
    tx: Transaction<'static, Postgres>,
    pub rows: Vec<OutboxRow>,
}

impl Store {
    /// Claims up to `limit` due rows, oldest first, at most one per ordering key: only
    /// the oldest row of a key can be claimed, and its row lock keeps every other process
    /// off that key until this one commits, so a user's events leave in order.
    #[instrument(skip_all)]
    pub async fn claim_due(&self, limit: i64) -> Result<ClaimedBatch, StoreError> {
        let claimed = async {
            let mut tx = self.pool()?.begin().await?;
            let rows = sqlx::query_as::<_, OutboxRow>(
                "SELECT event_id, routing_key, ordering_key, correlation_id, timestamp_secs, body,
                        attempts, traceparent, tracestate, scheduled
                 FROM outbox
                 WHERE next_attempt_at <= now()
                   AND NOT EXISTS (SELECT 1 FROM outbox earlier
                                   WHERE earlier.ordering_key = outbox.ordering_key
                                     AND earlier.seq < outbox.seq)
                 ORDER BY seq
                 LIMIT $1
                 FOR UPDATE SKIP LOCKED",
            )
            .bind(limit)
            // Planned afresh each time, for the outbox as it is now (store/schedule.rs,
            // UNPREPARED).
            .persistent(false)
            .fetch_all(&mut *tx)
            .await?;
            Ok(ClaimedBatch { tx, rows })
        }
        .await;
        self.breaker.record(&claimed);
        claimed
    }

    /// Rows in the outbox, and how many of them the relay owes the broker (due, or backing
    /// off after a failed attempt) rather than a request publishing its own. A scheduled
    /// event just released is no backlog for [`RELEASED_GRACE`] (the relay publishes it
    /// within a round): new events need not queue behind it, unless it waits longer (the
    /// broker down, the relay behind), when a user's next events must not overtake it.
    pub async fn outbox_counts(&self) -> Result<(i64, i64), StoreError> {
        let pool = self.pool()?.clone();
        self.guarded(async move {
            Ok(sqlx::query_as(
                "SELECT count(*),
                        count(*) FILTER (WHERE attempts > 0
                                            OR next_attempt_at <= now() - CASE WHEN scheduled
                                                THEN make_interval(secs => $1) ELSE interval '0' END)
                 FROM outbox",
            )
            .bind(RELEASED_GRACE.as_secs_f64())
            .fetch_one(&pool)
            .await?)
        })
        .await
    }
}

impl ClaimedBatch {
    /// Records what the broker confirmed, what failed for now (retried later) and what can
    /// never be published (moved to the dead letters, so it stops blocking its user), and
    /// releases the locks.
    #[instrument(skip_all, fields(published = published.len(), failed = failed.len()))]
    pub async fn finish(
        mut self,
        published: &[Uuid],
        failed: &[Retry],
        unpublishable: &[(Uuid, String)],
    ) -> Result<(), StoreError> {
        complete_in(&mut self.tx, published).await?;
        let released: Vec<Uuid> = self
            .rows
            .iter()
            .filter(|row| row.scheduled && published.contains(&row.event_id))
            .map(|row| row.event_id)
            .collect();
        schedule::mark_published_in(&mut self.tx, &released).await?;
        let (ids, errors): (Vec<Uuid>, Vec<String>) = unpublishable.iter().cloned().unzip();
        sqlx::query(
            "WITH gone AS (
                 DELETE FROM outbox USING UNNEST($1::uuid[], $2::text[]) AS x(id, error)
                 WHERE outbox.event_id = x.id
                 RETURNING outbox.event_id, outbox.routing_key, outbox.attempts, outbox.body,
                           outbox.traceparent, outbox.tracestate, x.error)
             INSERT INTO dead_letters (id, event_id, routing_key, queue, attempts, last_error, body,
                                       traceparent, tracestate)
             SELECT gen_random_uuid(), event_id::text, routing_key, 'outbox', attempts + 1, error, body,
                    traceparent, tracestate
             FROM gone",
        )
        .bind(&ids)
        .bind(&errors)
        .execute(&mut *self.tx)
        .await?;
        // Each waits as long as the relay's backoff schedule says for its attempt.
        sqlx::query(
            "UPDATE outbox
             SET attempts = attempts + 1,
                 next_attempt_at = now() + make_interval(secs => x.after),
                 last_error = x.error
             FROM UNNEST($1::uuid[], $2::text[], $3::float8[]) AS x(id, error, after)
             WHERE outbox.event_id = x.id",
        )
        .bind(failed.iter().map(|r| r.id).collect::<Vec<_>>())
        .bind(failed.iter().map(|r| r.error.clone()).collect::<Vec<_>>())
        .bind(
            failed
                .iter()
                .map(|r| r.after.as_secs_f64())
                .collect::<Vec<_>>(),
        )
        .execute(&mut *self.tx)
        .await?;
        self.tx.commit().await?;
        Ok(())
    }
}

pub(super) async fn complete_in(
    tx: &mut Transaction<'static, Postgres>,
    ids: &[Uuid],
) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM outbox WHERE event_id = ANY($1)")
        .bind(ids)
        .execute(&mut **tx)
        .await?;
    sqlx::query(
        "UPDATE events SET state = 'published', published_at = now()
         WHERE id = ANY($1) AND state = 'accepted'",
    )
    .bind(ids)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

pub(super) async fn release(pool: &PgPool, id: Uuid) -> Result<(), StoreError> {
    sqlx::query("UPDATE outbox SET next_attempt_at = now() WHERE event_id = $1")
        .bind(id)
        .execute(pool)
        .await?;
    Ok(())
}

/// Drops an event its request could not publish, if its row is still left to that request
/// (the relay, once its lease ended, may have published it). Returns whether it did.
pub(super) async fn forget(pool: &PgPool, id: Uuid) -> Result<bool, StoreError> {
    let mut tx = pool.begin().await?;
    let dropped = sqlx::query(
        "DELETE FROM outbox WHERE event_id = $1 AND attempts = 0 AND next_attempt_at > now()",
    )
    .bind(id)
    .execute(&mut *tx)
    .await?
    .rows_affected()
        == 1;
    if dropped {
        sqlx::query("DELETE FROM events WHERE id = $1 AND state = 'accepted'")
            .bind(id)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(dropped)
}
