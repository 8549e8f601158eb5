//! Gauges that need a look at the broker or the database, refreshed in the background so
//! a scrape of `/metrics` never waits on them.

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use crate::bus::Publisher;
use crate::metrics::Metrics;
use crate::store::Store;

const EVERY: Duration = Duration::from_secs(5);

pub fn spawn(
    publisher: Publisher,
    store: Store,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(EVERY);
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = ticks.tick() => {}
            }
            match publisher.queue_depths().await {
                Ok(depths) => {
                    for depth in depths {
                        metrics
                            .queue_messages
                            .with_label_values(&[depth.name.as_str()])
                            .set(i64::from(depth.message_count));
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
    })
}
