//! Whether the outbox owes the broker events. Shared by publishing and the outbox relay:
//! while it does, new events queue behind the held ones (so a user's events keep their
//! order), and every event held wakes the relay.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use tokio::sync::Notify;

#[derive(Clone)]
pub struct Backlog {
    wake: Arc<Notify>,
    owed: Arc<AtomicBool>,
    /// Bumped at every `added`, so a count taken before it cannot clear it.
    generation: Arc<AtomicU64>,
    /// The outbox was counted at least once since start.
    counted: Arc<AtomicBool>,
}

impl Default for Backlog {
    /// Starts owing: rows may be left from before a restart, and the first count of the
    /// outbox clears it.
    fn default() -> Self {
        Backlog {
            wake: Arc::default(),
            owed: Arc::new(AtomicBool::new(true)),
            generation: Arc::default(),
            counted: Arc::default(),
        }
    }
}

impl Backlog {
    pub fn has_backlog(&self) -> bool {
        self.owed.load(Ordering::Acquire)
    }

    /// Whether the relay knows what the outbox holds; the gateway is ready only then.
    pub fn is_counted(&self) -> bool {
        self.counted.load(Ordering::Acquire)
    }

    /// Events were held for the relay: it owes them, and is woken.
    pub fn added(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.owed.store(true, Ordering::Release);
        self.wake.notify_one();
    }

    /// Events became due for the relay without making a backlog (scheduled ones released).
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Until someone holds events for the relay.
    pub async fn woken(&self) {
        self.wake.notified().await
    }

    /// Read before counting the outbox, for [`Self::counted`].
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// The outbox was counted: clears the backlog only if nothing was added since
    /// `generation` was read.
    pub fn counted(&self, generation: u64, owed: bool) {
        self.counted.store(true, Ordering::Release);
        if owed {
            self.owed.store(true, Ordering::Release);
        } else if self.generation.load(Ordering::Acquire) == generation {
            self.owed.store(false, Ordering::Release);
        }
    }
}
