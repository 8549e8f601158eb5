//! Gauges that need a look at the broker or the database, refreshed in the background so
//! a scrape of `/metrics` never waits on them.

use std::sync::Arc;
use std::time::Duration;

use tracing::debug;

use crate::app::ports::{EventBus, StoreProbe};
use crate::bus::Publisher;
use crate::runtime::metrics::Metrics;
use crate::runtime::worker::Workers;
use crate::store::Store;

const EVERY: Duration = Duration::from_secs(5);

pub fn spawn(publisher: Publisher, store: Store, metrics: Arc<Metrics>, workers: &Workers) {
    let stop = workers.token();
    workers.spawn("gauges", async move {
        let mut ticks = tokio::time::interval(EVERY);
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = ticks.tick() => {}
            }
            // A stalled broker must not hold up a shutdown: a look is dropped on stop.
            tokio::select! {
                () = stop.cancelled() => return,
                () = refresh(&publisher, &store, &metrics) => {}
            }
        }
    });
}

async fn refresh(publisher: &Publisher, store: &Store, metrics: &Metrics) {
    match publisher.queue_depths().await {
        Ok(depths) => {
            for depth in depths {
                metrics.queue_depth(&depth.name, depth.message_count);
            }
        }
        Err(error) => debug!(%error, "queue depths unavailable"),
    }
    if store.is_ready() {
        match store.dead_letter_count().await {
            Ok(count) => metrics.dead_letters.set(count),
            Err(error) => debug!(%error, "dead-letter count unavailable"),
        }
    }
}
