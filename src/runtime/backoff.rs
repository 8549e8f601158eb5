//! The one backoff schedule type: a first wait that doubles after every failure, up to a
//! cap. Consumer retries and the outbox relay's retries use it with the `RETRY_*`
//! settings; every reconnect loop uses it with [`Backoff::RECONNECT`].

use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::warn;

/// Waits of `initial`, `2 × initial`, `4 × initial`, … never longer than `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
}

impl Backoff {
    /// How reconnect loops wait for a dependency that is down.
    pub const RECONNECT: Backoff = Backoff {
        initial: Duration::from_millis(100),
        max: Duration::from_secs(10),
    };

    /// The wait after failure number `failures` (1-based; 0 waits nothing).
    pub fn delay(&self, failures: u32) -> Duration {
        if failures == 0 {
            return Duration::ZERO;
        }
        let factor = 2u32.saturating_pow(failures - 1);
        self.initial.saturating_mul(factor).min(self.max)
    }
}

/// The spec's retry strategy: a few attempts, with [`Backoff`] between them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    pub max_attempts: u32,
    pub backoff: Backoff,
}

impl RetryPolicy {
    /// How long to wait after failed attempt `attempt` (1-based), or `None` when it was
    /// the last one.
    pub fn delay_after(&self, attempt: u32) -> Option<Duration> {
        (attempt < self.max_attempts).then(|| self.backoff.delay(attempt.max(1)))
    }

    /// Every distinct delay the policy can ask for, shortest first.
    pub fn delays(&self) -> Vec<Duration> {
        let mut delays: Vec<Duration> = (1..self.max_attempts)
            .filter_map(|a| self.delay_after(a))
            .collect();
        delays.dedup();
        delays
    }
}

/// A reconnect loop's memory of how often in a row it failed, and what it logs then.
pub struct Reconnect {
    what: &'static str,
    schedule: Backoff,
    failures: u32,
}

impl Reconnect {
    pub fn new(what: &'static str, schedule: Backoff) -> Self {
        Reconnect {
            what,
            schedule,
            failures: 0,
        }
    }

    /// Connected: the next failure waits the shortest time again.
    pub fn succeeded(&mut self) {
        self.failures = 0;
    }

    /// Logs the failure and waits the next delay; `false` when `stop` came first.
    pub async fn wait_after(&mut self, error: &anyhow::Error, stop: &CancellationToken) -> bool {
        self.failures += 1;
        let delay = self.schedule.delay(self.failures);
        warn!(
            error = format!("{error:#}"),
            retry_in_ms = delay.as_millis() as u64,
            "{}",
            self.what
        );
        tokio::select! {
            () = stop.cancelled() => false,
            () = tokio::time::sleep(delay) => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPEC: Backoff = Backoff {
        initial: Duration::from_secs(1),
        max: Duration::from_secs(60),
    };

    #[test]
    fn the_spec_schedule_doubles_from_one_second_up_to_a_minute() {
        let spec = RetryPolicy {
            max_attempts: 3,
            backoff: SPEC,
        };
        assert_eq!(spec.delay_after(1), Some(Duration::from_secs(1)));
        assert_eq!(spec.delay_after(2), Some(Duration::from_secs(2)));
        assert_eq!(spec.delay_after(3), None);
        let long = RetryPolicy {
            max_attempts: 10,
            ..spec
        };
        assert_eq!(long.delay_after(7), Some(Duration::from_secs(60)));
        assert_eq!(long.delays().last(), Some(&Duration::from_secs(60)));
        assert_eq!(long.delays().len(), 7, "1, 2, 4, 8, 16, 32, 60");
    }

    #[test]
    fn a_schedule_never_overflows_and_starts_at_nothing() {
        assert_eq!(SPEC.delay(0), Duration::ZERO);
        assert_eq!(SPEC.delay(1_000), Duration::from_secs(60));
        assert_eq!(Backoff::RECONNECT.delay(2), Duration::from_millis(200));
    }
}
