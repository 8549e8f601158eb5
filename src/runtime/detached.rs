//! Work that must finish even if the caller stops waiting: a client that goes away, or a
//! request timeout, drops the handler's future, and with it anything it was awaiting.

use tracing::Instrument;

use super::{in_flight, telemetry};

/// The detached work panicked, so its outcome is unknown.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("a detached task panicked")]
pub struct Panicked;

/// Runs `work` in a task of its own and waits for it. If this future is dropped, `work`
/// still runs to its end: a claim is settled, a row committed, a confirm awaited. It runs
/// in the caller's span and trace, so its logs, spans and messages belong to the request,
/// and with the request's handover, so it publishes nothing the request refused already.
pub async fn finish_detached<T: Send + 'static>(
    work: impl Future<Output = T> + Send + 'static,
) -> Result<T, Panicked> {
    tokio::spawn(in_flight::in_current_request(
        telemetry::in_current_request(work.in_current_span()),
    ))
    .await
    .map_err(|_| Panicked)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn the_work_finishes_after_its_caller_gave_up() {
        let done = Arc::new(AtomicBool::new(false));
        let flag = done.clone();
        let waiting = finish_detached(async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            flag.store(true, Ordering::Release);
        });
        assert!(
            tokio::time::timeout(Duration::from_millis(1), waiting)
                .await
                .is_err()
        );
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert!(done.load(Ordering::Acquire));
    }
}
