//! Group commit: one task takes every write waiting in its queue and commits them in one
//! transaction, so throughput is not one fsync per request.

use std::time::Duration;

use sqlx::{PgPool, Postgres, Transaction};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::{instrument, warn};
use uuid::Uuid;

use super::StoreError;
use crate::app::records::{EventRecord, Owner, PendingEvent};
use crate::runtime::worker::Workers;

/// How long a request may take to publish its own row before the relay may.
const REQUEST_LEASE: Duration = Duration::from_secs(30);

/// A hold waiting for its round: the events, who publishes them, and where to answer.
type PendingHold = (
    Vec<PendingEvent>,
    Owner,
    oneshot::Sender<Result<Vec<bool>, StoreError>>,
);

pub(super) enum WriteJob {
    /// New events to hold; the answer says which were new.
    Hold {
        events: Vec<PendingEvent>,
        owner: Owner,
        answer: oneshot::Sender<Result<Vec<bool>, StoreError>>,
    },
    /// Events the broker confirmed; nobody waits for this.
    Confirmed(Vec<Uuid>),
}

/// Starts the writer; when the workers stop it takes no new writes, commits those
/// already queued, and ends.
pub(super) fn spawn(pool: PgPool, max_rows: usize, workers: &Workers) -> mpsc::Sender<WriteJob> {
    let (sender, receiver) = mpsc::channel(max_rows * 4);
    workers.spawn(
        "group commit",
        run(pool, receiver, max_rows, workers.token()),
    );
    sender
}

pub(super) async fn submit(
    writer: &mpsc::Sender<WriteJob>,
    events: Vec<PendingEvent>,
    owner: Owner,
) -> Result<Vec<bool>, StoreError> {
    let (answer, answered) = oneshot::channel();
    writer
        .send(WriteJob::Hold {
            events,
            owner,
            answer,
        })
        .await
        .map_err(|_| StoreError::TaskFailed)?;
    answered.await.map_err(|_| StoreError::TaskFailed)?
}

/// Queues confirmed ids to be marked in the next transaction.
pub(super) async fn confirm(
    writer: &mpsc::Sender<WriteJob>,
    ids: Vec<Uuid>,
) -> Result<(), StoreError> {
    writer
        .send(WriteJob::Confirmed(ids))
        .await
        .map_err(|_| StoreError::TaskFailed)
}

async fn run(
    pool: PgPool,
    mut receiver: mpsc::Receiver<WriteJob>,
    max_rows: usize,
    stop: CancellationToken,
) {
    loop {
        // A round is never cut short: stopping only closes the queue to new writes.
        let next = tokio::select! {
            job = receiver.recv() => job,
            () = stop.cancelled() => {
                receiver.close();
                receiver.recv().await
            }
        };
        let Some(first) = next else {
            return;
        };
        let (holds, confirmed) = gather(first, &mut receiver, max_rows);
        // Stopping: a round that fails is not retried write by write, so a database that
        // is down cannot hold up shutdown for long.
        commit(&pool, holds, &confirmed, !stop.is_cancelled()).await;
    }
}

/// `first` and whatever queued up while the last transaction committed: one round.
fn gather(
    first: WriteJob,
    receiver: &mut mpsc::Receiver<WriteJob>,
    max_rows: usize,
) -> (Vec<PendingHold>, Vec<Uuid>) {
    let mut jobs = vec![first];
    while jobs.len() < max_rows {
        match receiver.try_recv() {
            Ok(job) => jobs.push(job),
            Err(_) => break,
        }
    }
    let mut holds = Vec::new();
    let mut confirmed = Vec::new();
    for job in jobs {
        match job {
            WriteJob::Hold {
                events,
                owner,
                answer,
            } => holds.push((events, owner, answer)),
            WriteJob::Confirmed(ids) => confirmed.extend(ids),
        }
    }
    (holds, confirmed)
}

/// Commits one round and answers each hold with which of its events were new; after a
/// failure, retries each hold on its own when `one_by_one`, else answers them all with it.
async fn commit(pool: &PgPool, holds: Vec<PendingHold>, confirmed: &[Uuid], one_by_one: bool) {
    let rows: Vec<(&PendingEvent, Owner)> = holds
        .iter()
        .flat_map(|(events, owner, _)| events.iter().map(|event| (event, *owner)))
        .collect();
    match commit_round(pool, &rows, confirmed).await {
        Ok(fresh) => {
            let mut offset = 0;
            for (events, _, answer) in holds {
                let count = events.len();
                // The request may have gone; its rows are written either way.
                let _ = answer.send(Ok(fresh[offset..offset + count].to_vec()));
                offset += count;
            }
        }
        Err(error) if one_by_one => {
            warn!(%error, jobs = holds.len(), "group commit failed; retrying its writes one by one");
            commit_one_by_one(pool, holds, confirmed).await;
        }
        Err(error) => {
            warn!(%error, jobs = holds.len(), "group commit failed while stopping");
            let error = StoreError::from(error);
            for (_, _, answer) in holds {
                let _ = answer.send(Err(error.clone()));
            }
        }
    }
}

/// After a failed round, one bad write (or a database that is gone) must not fail the
/// others: each gets its own transaction and its own answer.
async fn commit_one_by_one(pool: &PgPool, holds: Vec<PendingHold>, confirmed: &[Uuid]) {
    if !confirmed.is_empty()
        && let Err(error) = commit_round(pool, &[], confirmed).await
    {
        warn!(%error, "could not mark confirmed events; the relay will publish them again after their lease");
    }
    for (events, owner, answer) in holds {
        let rows: Vec<(&PendingEvent, Owner)> = events.iter().map(|e| (e, owner)).collect();
        let outcome = commit_round(pool, &rows, &[])
            .await
            .map_err(StoreError::from);
        let _ = answer.send(outcome);
    }
}

async fn commit_round(
    pool: &PgPool,
    rows: &[(&PendingEvent, Owner)],
    confirmed: &[Uuid],
) -> Result<Vec<bool>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let fresh = if rows.is_empty() {
        Vec::new()
    } else {
        insert_rows(&mut tx, rows).await?
    };
    if !confirmed.is_empty() {
        super::outbox::complete_in(&mut tx, confirmed).await?;
    }
    tx.commit().await?;
    Ok(fresh)
}

pub(super) async fn insert(
    pool: &PgPool,
    events: &[PendingEvent],
    owner: Owner,
) -> Result<Vec<bool>, StoreError> {
    let rows: Vec<(&PendingEvent, Owner)> = events.iter().map(|e| (e, owner)).collect();
    Ok(commit_round(pool, &rows, &[]).await?)
}

pub(super) async fn mark_confirmed(pool: &PgPool, ids: &[Uuid]) -> Result<(), StoreError> {
    commit_round(pool, &[], ids).await?;
    Ok(())
}

/// Inserts critical records, then outbox rows for every event not seen before.
#[instrument(skip_all, fields(rows = rows.len()))]
async fn insert_rows(
    tx: &mut Transaction<'static, Postgres>,
    rows: &[(&PendingEvent, Owner)],
) -> Result<Vec<bool>, sqlx::Error> {
    let new_records = insert_records(tx, rows).await?;
    let outboxed: Vec<(&PendingEvent, Owner)> = rows
        .iter()
        .filter(|(e, _)| e.record.is_none() || new_records.contains(&e.id))
        .copied()
        .collect();
    let fresh = insert_outbox_rows(tx, &outboxed).await?;
    // An id written twice in one round is new only the first time.
    let mut seen = Vec::with_capacity(rows.len());
    Ok(rows
        .iter()
        .map(|(e, _)| {
            let first = !seen.contains(&e.id);
            seen.push(e.id);
            first && fresh.contains(&e.id)
        })
        .collect())
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
) -> Result<Vec<Uuid>, sqlx::Error> {
    let lease = REQUEST_LEASE.as_secs_f64();
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
