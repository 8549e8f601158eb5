//! Background workers, one shape for all: each is started with a name into a group, ends
//! when the group's cancellation token is cancelled, and is joined when the group stops.
//! The gateway keeps two groups, stopped in turn: the workers that feed the connections
//! (relay, consumers, gauges), then the connections themselves (the broker connection,
//! the database preparation, group commit).

use std::sync::Mutex;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::warn;

/// After this long, stopping names the worker it still waits for.
const SLOW_STOP: Duration = Duration::from_secs(3);

/// A group of named background tasks sharing one cancellation token.
#[derive(Default)]
pub struct Workers {
    stop: CancellationToken,
    running: Mutex<Vec<(&'static str, JoinHandle<()>)>>,
}

impl Workers {
    /// The token a worker watches to know it should end.
    pub fn token(&self) -> CancellationToken {
        self.stop.clone()
    }

    /// Starts `work`, which must return soon after [`Self::token`] is cancelled.
    pub fn spawn(&self, name: &'static str, work: impl Future<Output = ()> + Send + 'static) {
        let task = tokio::spawn(work);
        self.running
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .push((name, task));
    }

    /// Cancels the token and waits for every worker to end.
    pub async fn stop(&self) {
        self.stop.cancel();
        let running = std::mem::take(
            &mut *self
                .running
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner()),
        );
        for (name, mut task) in running {
            let ended = tokio::select! {
                ended = &mut task => ended,
                () = tokio::time::sleep(SLOW_STOP) => {
                    warn!(worker = name, "still waiting for a worker to stop");
                    task.await
                }
            };
            if let Err(error) = ended {
                warn!(%error, worker = name, "a background worker ended abnormally");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[tokio::test]
    async fn stop_cancels_every_worker_and_waits_for_it() {
        let workers = Workers::default();
        let ended = Arc::new(AtomicUsize::new(0));
        for name in ["one", "two"] {
            let (stop, ended) = (workers.token(), ended.clone());
            workers.spawn(name, async move {
                stop.cancelled().await;
                tokio::task::yield_now().await;
                ended.fetch_add(1, Ordering::AcqRel);
            });
        }
        workers.stop().await;
        assert_eq!(ended.load(Ordering::Acquire), 2);
    }
}
