//! Group commit: one task takes every write waiting in its queue and commits them in one
//! transaction, so throughput is not one fsync per request. A COMMIT whose connection
//! died is not taken for a failure: the rows are looked up before anyone is answered.
//! Marks of confirmed events that fail are kept and tried again, so a confirmed event is
//! not published a second time when its lease ends.

use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::warn;
use uuid::Uuid;

use super::StoreError;
use super::rows::insert_rows;
use crate::app::records::{Held, Owner, PendingEvent};
use crate::runtime::backoff::Backoff;
use crate::runtime::worker::Workers;

/// How long rows whose COMMIT was lost are written again before the answer is "unknown".
const LOOK_UP_FOR: Duration = Duration::from_secs(3);
/// Marks of confirmed events kept for another try while the database fails; beyond this
/// the relay publishes the rest again after their lease.
const MAX_OWED_MARKS: usize = 100_000;
const RETRY_MARKS_AFTER: Duration = Duration::from_secs(1);

/// A hold waiting for its round: the events, who publishes them, and where to answer.
type PendingHold = (
    Vec<PendingEvent>,
    Owner,
    oneshot::Sender<Result<Vec<Held>, StoreError>>,
);

pub(super) enum WriteJob {
    /// New events to hold; the answer says which were new.
    Hold {
        events: Vec<PendingEvent>,
        owner: Owner,
        answer: oneshot::Sender<Result<Vec<Held>, StoreError>>,
    },
    /// Events the broker confirmed; nobody waits for this.
    Confirmed(Vec<Uuid>),
}

/// Where the writer writes, how much per round, and how long a request's own rows are
/// left to it before the relay may publish them.
#[derive(Clone)]
pub(super) struct Target {
    pub pool: PgPool,
    pub max_rows: usize,
    pub lease: Duration,
}

/// Starts the writer; when the workers stop it takes no new writes, commits those
/// already queued, and ends.
pub(super) fn spawn(target: Target, workers: &Workers) -> mpsc::Sender<WriteJob> {
    let (sender, receiver) = mpsc::channel(target.max_rows * 4);
    workers.spawn("group commit", run(target, receiver, workers.token()));
    sender
}

pub(super) async fn submit(
    writer: &mpsc::Sender<WriteJob>,
    events: Vec<PendingEvent>,
    owner: Owner,
) -> Result<Vec<Held>, StoreError> {
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

async fn run(target: Target, mut receiver: mpsc::Receiver<WriteJob>, stop: CancellationToken) {
    let mut owed = Vec::new();
    loop {
        // A round is never cut short: stopping only closes the queue to new writes.
        let next = tokio::select! {
            job = receiver.recv() => job,
            () = stop.cancelled() => {
                receiver.close();
                receiver.recv().await
            }
            () = tokio::time::sleep(RETRY_MARKS_AFTER), if !owed.is_empty() => {
                Some(WriteJob::Confirmed(Vec::new()))
            }
        };
        let Some(first) = next else {
            return;
        };
        let (holds, mut confirmed) = gather(first, &mut receiver, target.max_rows);
        confirmed.append(&mut owed);
        // Stopping: a round that fails is not retried write by write, so a database that
        // is down cannot hold up shutdown for long.
        owed = commit(&target, holds, confirmed, !stop.is_cancelled()).await;
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
/// Returns the confirmed ids still to be marked.
async fn commit(
    target: &Target,
    holds: Vec<PendingHold>,
    confirmed: Vec<Uuid>,
    one_by_one: bool,
) -> Vec<Uuid> {
    let rows: Vec<(&PendingEvent, Owner)> = holds
        .iter()
        .flat_map(|(events, owner, _)| events.iter().map(|event| (event, *owner)))
        .collect();
    let outcome = match commit_round(target, &rows, &confirmed, false).await {
        Err(failed) if failed.unknown && one_by_one => {
            warn!(error = %failed.error, jobs = holds.len(), "the connection failed during a group commit; writing the round again");
            recommit(target, &rows, &confirmed).await
        }
        Err(failed) if one_by_one => {
            warn!(error = %failed.error, jobs = holds.len(), "group commit failed; retrying its writes one by one");
            return commit_one_by_one(target, holds, confirmed).await;
        }
        Err(failed) => {
            warn!(error = %failed.error, jobs = holds.len(), "group commit failed while stopping");
            Err(failed.into_store_error())
        }
        Ok(held) => Ok(held),
    };
    match outcome {
        Ok(held) => {
            let mut offset = 0;
            for (events, _, answer) in holds {
                let count = events.len();
                // The request may have gone; its rows are written either way.
                let _ = answer.send(Ok(held[offset..offset + count].to_vec()));
                offset += count;
            }
            Vec::new()
        }
        Err(error) => {
            for (_, _, answer) in holds {
                let _ = answer.send(Err(error.clone()));
            }
            owe(confirmed)
        }
    }
}

/// Confirmed ids whose mark failed, kept for the next round (up to [`MAX_OWED_MARKS`]).
fn owe(mut confirmed: Vec<Uuid>) -> Vec<Uuid> {
    confirmed.truncate(MAX_OWED_MARKS);
    confirmed
}

/// After a failed round, one bad write must not fail the others: each gets its own
/// transaction and its own answer. Returns the confirmed ids still to be marked.
async fn commit_one_by_one(
    target: &Target,
    holds: Vec<PendingHold>,
    confirmed: Vec<Uuid>,
) -> Vec<Uuid> {
    let mut owed = Vec::new();
    if !confirmed.is_empty()
        && let Err(failed) = commit_round(target, &[], &confirmed, false).await
    {
        warn!(error = %failed.error, "could not mark confirmed events; trying again shortly");
        owed = owe(confirmed);
    }
    for (events, owner, answer) in holds {
        let _ = answer.send(write(target, &events, owner).await);
    }
    owed
}

/// The rows (and marks) of a COMMIT whose outcome is unknown, written again in one
/// transaction until the database answers, for at most [`LOOK_UP_FOR`] in all (then the
/// outcome is still unknown). The insert waits for the lost COMMIT's row locks, so it
/// cannot miss one still under way; a row holding exactly an event's bytes is the lost
/// COMMIT's, so that event counts as new (its request publishes it).
async fn recommit(
    target: &Target,
    rows: &[(&PendingEvent, Owner)],
    confirmed: &[Uuid],
) -> Result<Vec<Held>, StoreError> {
    let started = tokio::time::Instant::now();
    let mut failures = 0;
    loop {
        match commit_round(target, rows, confirmed, true).await {
            Ok(held) => return Ok(held),
            Err(failed) if started.elapsed() >= LOOK_UP_FOR => {
                return Err(StoreError::CommitUnknown(Arc::new(failed.error)));
            }
            Err(_) => {
                failures += 1;
                tokio::time::sleep(Backoff::RECONNECT.delay(failures)).await;
            }
        }
    }
}

/// Why a round failed, and whether its outcome is unknown (the connection failed during
/// the COMMIT) rather than rolled back.
struct RoundFailed {
    error: sqlx::Error,
    unknown: bool,
}

impl RoundFailed {
    fn before_commit(error: sqlx::Error) -> Self {
        RoundFailed {
            error,
            unknown: false,
        }
    }

    /// A COMMIT the database refused is rolled back; one whose connection failed may not be.
    fn at_commit(error: sqlx::Error) -> Self {
        let unknown = !matches!(error, sqlx::Error::Database(_));
        RoundFailed { error, unknown }
    }

    fn into_store_error(self) -> StoreError {
        if self.unknown {
            StoreError::CommitUnknown(Arc::new(self.error))
        } else {
            self.error.into()
        }
    }
}

async fn commit_round(
    target: &Target,
    rows: &[(&PendingEvent, Owner)],
    confirmed: &[Uuid],
    retrying: bool,
) -> Result<Vec<Held>, RoundFailed> {
    let mut tx = target
        .pool
        .begin()
        .await
        .map_err(RoundFailed::before_commit)?;
    let fresh = if rows.is_empty() {
        Vec::new()
    } else {
        insert_rows(&mut tx, rows, target.lease, retrying)
            .await
            .map_err(RoundFailed::before_commit)?
    };
    if !confirmed.is_empty() {
        super::outbox::complete_in(&mut tx, confirmed)
            .await
            .map_err(RoundFailed::before_commit)?;
    }
    tx.commit().await.map_err(RoundFailed::at_commit)?;
    Ok(fresh)
}

/// Holds `events` in a transaction of their own; a lost COMMIT is looked up.
pub(super) async fn write(
    target: &Target,
    events: &[PendingEvent],
    owner: Owner,
) -> Result<Vec<Held>, StoreError> {
    let rows: Vec<(&PendingEvent, Owner)> = events.iter().map(|e| (e, owner)).collect();
    match commit_round(target, &rows, &[], false).await {
        Ok(held) => Ok(held),
        Err(failed) if failed.unknown => recommit(target, &rows, &[]).await,
        Err(failed) => Err(failed.into_store_error()),
    }
}

pub(super) async fn mark_confirmed(target: &Target, ids: &[Uuid]) -> Result<(), StoreError> {
    commit_round(target, &[], ids, false)
        .await
        .map_err(RoundFailed::into_store_error)?;
    Ok(())
}
