//! The schedule's worker: releases scheduled events to the outbox when they fall due (the
//! relay publishes them from there, with its retries and per-user order), counts the
//! schedule for `/health` and `/metrics`, and drops settled events after
//! `IDEMPOTENCY_TTL`. Any number of gateways may run it: one releases at a time.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::app::ports::{ScheduleStore, StoreProbe};
use crate::app::publish::Backlog;
use crate::app::records::ScheduleStats;
use crate::app::schedule::ScheduleFacts;
use crate::runtime::metrics::{Metrics, ScheduleGauge};
use crate::runtime::worker::Workers;
use crate::store::{Store, StoreError};

/// How often due events are looked for: the most an event waits past its time while the
/// gateway keeps up.
const TICK: Duration = Duration::from_millis(100);
/// Most events released per transaction.
const RELEASE_BATCH: i64 = 1000;
/// How often settled events are dropped and the schedule is counted (a count reads every
/// row of it).
const COUNT_EVERY: Duration = Duration::from_secs(5);

#[derive(Clone)]
pub struct ScheduleRelease {
    pub store: Store,
    pub backlog: Backlog,
    pub metrics: Arc<Metrics>,
    pub facts: ScheduleFacts,
    pub settled_ttl: Duration,
}

impl ScheduleRelease {
    /// Starts the release, and beside it (so a long count never delays a release) the
    /// counting and dropping of settled events.
    pub fn spawn(self, workers: &Workers) {
        workers.spawn(
            "schedule counts",
            self.clone().count_and_expire(workers.token()),
        );
        workers.spawn("schedule release", self.run(workers.token()));
    }

    async fn count_and_expire(self, shutdown: CancellationToken) {
        let mut ticks = tokio::time::interval(COUNT_EVERY);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = ticks.tick() => {}
            }
            self.expire().await;
            self.count().await;
        }
    }

    async fn run(self, shutdown: CancellationToken) {
        // Said once per outage, not ten times a second.
        let mut failing = false;
        loop {
            if self.store.is_ready() {
                match self.release().await {
                    Ok(()) if failing => {
                        info!("releasing due scheduled events again");
                        failing = false;
                    }
                    Ok(()) => {}
                    Err(error) if !failing => {
                        warn!(%error, "cannot release due scheduled events; trying every 100 ms");
                        failing = true;
                    }
                    Err(_) => {}
                }
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(TICK) => {}
            }
        }
    }

    /// Releases every due event, a batch per transaction, waking the relay for each.
    async fn release(&self) -> Result<(), StoreError> {
        loop {
            let moved = self.store.release_due(RELEASE_BATCH).await?;
            if moved > 0 {
                debug!(moved, "released due scheduled events");
                self.backlog.wake();
            }
            if moved < RELEASE_BATCH.unsigned_abs() {
                return Ok(());
            }
        }
    }

    async fn count(&self) {
        if !self.store.is_ready() {
            return;
        }
        match self.store.stats().await {
            Ok(stats) => {
                record(&self.metrics, &stats);
                self.facts.set(stats);
            }
            Err(error) => debug!(%error, "cannot count the schedule"),
        }
    }

    async fn expire(&self) {
        if !self.store.is_ready() {
            return;
        }
        match self
            .store
            .expire_schedule(self.settled_ttl.as_secs_f64())
            .await
        {
            Ok(0) => {}
            Ok(dropped) => info!(dropped, "dropped settled scheduled events"),
            Err(error) => warn!(%error, "cannot drop settled scheduled events"),
        }
    }
}

fn record(metrics: &Metrics, stats: &ScheduleStats) {
    metrics.scheduled(ScheduleGauge::Scheduled, stats.pending);
    metrics.scheduled(ScheduleGauge::Overdue, stats.overdue);
    metrics.scheduled(ScheduleGauge::Released, stats.released);
    metrics.scheduled(ScheduleGauge::Published, stats.published);
    metrics.scheduled(ScheduleGauge::Cancelled, stats.cancelled);
}
