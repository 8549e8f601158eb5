//! The rows one hold writes: critical events' records, then outbox rows, each with the
//! trace it was made in; scheduled events go to the schedule instead.

use std::time::Duration;

use sqlx::{Postgres, Transaction};
use tracing::instrument;
use uuid::Uuid;

use super::schedule;
use crate::app::records::{EventRecord, Held, Owner, PendingEvent};

/// Writes every event of a round, one answer each in order: scheduled events to the
/// schedule, the others as [`insert_owed`] does.
pub(super) async fn insert_rows(
    tx: &mut Transaction<'static, Postgres>,
    rows: &[(&PendingEvent, Owner)],
    lease: Duration,
    retrying: bool,
) -> Result<Vec<Held>, sqlx::Error> {
    if rows.iter().all(|(e, _)| e.schedule.is_none()) {
        return insert_owed(tx, rows, lease, retrying).await;
    }
    let (scheduled, owed): (Vec<usize>, Vec<usize>) =
        (0..rows.len()).partition(|&i| rows[i].0.schedule.is_some());
    let mut held = vec![Held::Unsettled; rows.len()];
    let events: Vec<&PendingEvent> = scheduled.iter().map(|&i| rows[i].0).collect();
    let answers = schedule::insert(tx, &events, retrying).await?;
    for (&i, answer) in scheduled.iter().zip(answers) {
        held[i] = answer;
    }
    if !owed.is_empty() {
        let picked: Vec<(&PendingEvent, Owner)> = owed.iter().map(|&i| rows[i]).collect();
        let answers = insert_owed(tx, &picked, lease, retrying).await?;
        for (&i, answer) in owed.iter().zip(answers) {
            held[i] = answer;
        }
    }
    Ok(held)
}

/// Inserts critical records, then outbox rows for every event not seen before; of an id
/// seen before, tells where the earlier event stands. After a lost COMMIT (`retrying`), a
/// row that holds exactly this event's bytes is the lost COMMIT's: this request's own.
#[instrument(skip_all, fields(rows = rows.len()))]
async fn insert_owed(
    tx: &mut Transaction<'static, Postgres>,
    rows: &[(&PendingEvent, Owner)],
    lease: Duration,
    retrying: bool,
) -> Result<Vec<Held>, sqlx::Error> {
    let new_records = insert_records(tx, rows).await?;
    let outboxed: Vec<(&PendingEvent, Owner)> = rows
        .iter()
        .filter(|(e, _)| e.record.is_none() || new_records.contains(&e.id))
        .copied()
        .collect();
    let fresh = insert_outbox_rows(tx, &outboxed, lease).await?;
    let new = new_in_round(rows.iter().map(|(e, _)| e.id), &fresh);
    let known: Vec<&PendingEvent> = rows
        .iter()
        .zip(&new)
        .filter(|(_, new)| !**new)
        .map(|((e, _), _)| *e)
        .collect();
    let standing = if known.is_empty() {
        Vec::new()
    } else {
        where_they_stand(tx, &known).await?
    };
    Ok(rows
        .iter()
        .zip(new)
        .map(|((e, _), new)| match new {
            true => Held::New,
            false => standing
                .iter()
                .find(|s| s.id == e.id)
                .map_or(Held::Unsettled, |s| s.held(retrying)),
        })
        .collect())
}

/// Which of a round's ids were written now: those `fresh`, and an id written twice in one
/// round only the first time.
pub(super) fn new_in_round(ids: impl Iterator<Item = Uuid>, fresh: &[Uuid]) -> Vec<bool> {
    let mut seen = Vec::new();
    ids.map(|id| {
        let first = !seen.contains(&id);
        seen.push(id);
        first && fresh.contains(&id)
    })
    .collect()
}

/// An earlier event with an id being held again.
#[derive(sqlx::FromRow)]
struct Standing {
    id: Uuid,
    /// Its outbox row holds these very bytes.
    same: Option<bool>,
    /// Its outbox row is still left to the request that made it.
    leased: Option<bool>,
    published: bool,
}

impl Standing {
    fn held(&self, retrying: bool) -> Held {
        match (self.same, self.leased) {
            (Some(true), _) if retrying => Held::New,
            // The request that made it is still at work: it may yet drop the row.
            (Some(_), Some(true)) => Held::Unsettled,
            (Some(_), _) => Held::Owed,
            (None, _) if self.published => Held::Published,
            // A record neither owed nor published (moved to the dead letters).
            (None, _) => Held::Unsettled,
        }
    }
}

async fn where_they_stand(
    tx: &mut Transaction<'static, Postgres>,
    known: &[&PendingEvent],
) -> Result<Vec<Standing>, sqlx::Error> {
    sqlx::query_as(
        "SELECT x.id, o.body = x.body AS same,
                (o.attempts = 0 AND o.next_attempt_at > now()) AS leased,
                coalesce(e.state = 'published', false) AS published
         FROM UNNEST($1::uuid[], $2::bytea[]) AS x(id, body)
         LEFT JOIN outbox o ON o.event_id = x.id
         LEFT JOIN events e ON e.id = x.id",
    )
    .bind(known.iter().map(|e| e.id).collect::<Vec<_>>())
    .bind(known.iter().map(|e| e.body.clone()).collect::<Vec<_>>())
    .fetch_all(&mut **tx)
    .await
}

/// The critical events' records; returns the ids that were new.
async fn insert_records(
    tx: &mut Transaction<'static, Postgres>,
    rows: &[(&PendingEvent, Owner)],
) -> Result<Vec<Uuid>, sqlx::Error> {
    let records: Vec<(&PendingEvent, &EventRecord)> = rows
        .iter()
        .filter_map(|(e, _)| e.record.as_ref().map(|record| (*e, record)))
        .collect();
    if records.is_empty() {
        return Ok(Vec::new());
    }
    sqlx::query_scalar(
        "INSERT INTO events (id, type, user_id, correlation_id, source, envelope, accepted_at)
         SELECT * FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[],
                              $6::text[]::jsonb[], $7::timestamptz[])
         ON CONFLICT (id) DO NOTHING
         RETURNING id",
    )
    .bind(records.iter().map(|(e, _)| e.id).collect::<Vec<_>>())
    .bind(
        records
            .iter()
            .map(|(_, r)| r.event_type)
            .collect::<Vec<_>>(),
    )
    .bind(
        records
            .iter()
            .map(|(_, r)| r.user_id.clone())
            .collect::<Vec<_>>(),
    )
    .bind(
        records
            .iter()
            .map(|(e, _)| e.correlation_id.clone())
            .collect::<Vec<_>>(),
    )
    .bind(
        records
            .iter()
            .map(|(_, r)| r.source.clone())
            .collect::<Vec<_>>(),
    )
    .bind(
        records
            .iter()
            .map(|(e, _)| String::from_utf8_lossy(&e.body).into_owned())
            .collect::<Vec<_>>(),
    )
    .bind(
        records
            .iter()
            .map(|(_, r)| r.accepted_at)
            .collect::<Vec<_>>(),
    )
    .fetch_all(&mut **tx)
    .await
}

/// Outbox rows, with the trace each was made in; a request's own rows wait out its lease
/// before the relay may take them. Returns the ids that were new.
async fn insert_outbox_rows(
    tx: &mut Transaction<'static, Postgres>,
    rows: &[(&PendingEvent, Owner)],
    lease: Duration,
) -> Result<Vec<Uuid>, sqlx::Error> {
    let lease = lease.as_secs_f64();
    sqlx::query_scalar(
        "INSERT INTO outbox (event_id, routing_key, ordering_key, correlation_id, timestamp_secs,
                             body, critical, next_attempt_at, traceparent, tracestate)
         SELECT e, r, o, c, t, b, k, now() + make_interval(secs => l), tp, ts
         FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::text[], $5::int8[], $6::bytea[],
                     $7::bool[], $8::float8[], $9::text[], $10::text[])
              AS x(e, r, o, c, t, b, k, l, tp, ts)
         ON CONFLICT (event_id) DO NOTHING
         RETURNING event_id",
    )
    .bind(rows.iter().map(|(e, _)| e.id).collect::<Vec<_>>())
    .bind(rows.iter().map(|(e, _)| e.routing_key).collect::<Vec<_>>())
    .bind(
        rows.iter()
            .map(|(e, _)| e.ordering_key.clone())
            .collect::<Vec<_>>(),
    )
    .bind(
        rows.iter()
            .map(|(e, _)| e.correlation_id.clone())
            .collect::<Vec<_>>(),
    )
    .bind(
        rows.iter()
            .map(|(e, _)| e.timestamp_secs)
            .collect::<Vec<_>>(),
    )
    .bind(rows.iter().map(|(e, _)| e.body.clone()).collect::<Vec<_>>())
    .bind(
        rows.iter()
            .map(|(e, _)| e.record.is_some())
            .collect::<Vec<_>>(),
    )
    .bind(
        rows.iter()
            .map(|(_, owner)| if *owner == Owner::Request { lease } else { 0.0 })
            .collect::<Vec<_>>(),
    )
    .bind(
        rows.iter()
            .map(|(e, _)| e.trace.as_ref().map(|t| t.parent.to_string()))
            .collect::<Vec<_>>(),
    )
    .bind(
        rows.iter()
            .map(|(e, _)| e.trace.as_ref().and_then(|t| t.state.as_deref()))
            .collect::<Vec<_>>(),
    )
    .fetch_all(&mut **tx)
    .await
}
