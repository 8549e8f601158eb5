//! Whether a detached publish started sending, so that a caller who gives up on it can
//! tell the truth about it.

use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

/// Waiting, then either sending or closed: closed before it opened, it never sends.
#[derive(Default)]
pub(super) struct SendGate(AtomicU8);

impl SendGate {
    const WAITING: u8 = 0;
    const SENDING: u8 = 1;
    const CLOSED: u8 = 2;

    /// The publish may start sending, unless the gate was closed.
    pub(super) fn open(&self) -> bool {
        self.swap_from_waiting(Self::SENDING)
    }

    /// Nothing was sent, and now nothing will be.
    pub(super) fn close_unsent(&self) -> bool {
        self.swap_from_waiting(Self::CLOSED)
    }

    fn swap_from_waiting(&self, to: u8) -> bool {
        let swapped =
            self.0
                .compare_exchange(Self::WAITING, to, Ordering::AcqRel, Ordering::Acquire);
        swapped.is_ok()
    }
}

/// The publish waited for an in-flight slot until its confirm timeout, and was not sent.
#[derive(Debug, thiserror::Error)]
#[error("no in-flight slot within {0:?}; not sent")]
pub(super) struct NoSlot(pub(super) Duration);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_gate_closed_before_sending_never_opens() {
        let gate = SendGate::default();
        assert!(gate.close_unsent());
        assert!(!gate.open(), "the caller already said it was not sent");
    }

    #[test]
    fn a_gate_opened_cannot_be_called_unsent() {
        let gate = SendGate::default();
        assert!(gate.open());
        assert!(!gate.close_unsent(), "it may be on the bus");
    }
}
