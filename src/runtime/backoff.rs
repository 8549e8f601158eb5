//! The one backoff schedule type: a first wait that doubles after every failure, up to a
//! cap. Consumer retries and the outbox relay's retries use it with the `RETRY_*`
//! settings, exactly; every reconnect loop uses it with [`Backoff::RECONNECT`], jittered.

use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{error, warn};

use super::reason::{LastError, Peer, describe_anyhow};

/// Waits of `initial`, `2 × initial`, `4 × initial`, … never longer than `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
}

impl Backoff {
    /// How reconnect loops wait for a dependency that is down. The cap is what decides
    /// how soon the gateway is back once the dependency is: at most a second later,
    /// while a dependency that stays down sees one connection attempt a second or less.
    pub const RECONNECT: Backoff = Backoff {
        initial: Duration::from_millis(100),
        max: Duration::from_secs(1),
    };

    /// The wait after failure number `failures` (1-based; 0 waits nothing).
    pub fn delay(&self, failures: u32) -> Duration {
        if failures == 0 {
            return Duration::ZERO;
        }
        let factor = 2u32.saturating_pow(failures - 1);
        self.initial.saturating_mul(factor).min(self.max)
    }

    /// [`Self::delay`] scaled into its upper half by `unit` (from 0 to 1, drawn at
    /// random), so gateways that lost a dependency together do not return in step, and no
    /// wait is longer than the schedule's.
    pub fn jittered(&self, failures: u32, unit: f64) -> Duration {
        self.delay(failures)
            .mul_f64(0.5 + unit.clamp(0.0, 1.0) / 2.0)
    }
}

/// The spec's retry strategy, read as the spec's own call reads it: `retry(..., {retries:
/// MAX_RETRIES, factor: 2, minTimeout: 1000, maxTimeout: 60000})` (p-retry) makes the
/// first try and then up to `retries` more, waiting [`Backoff`] before each. With the
/// spec's 3, that is tries at 0 s, 1 s, 3 s and 7 s.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    pub retries: u32,
    pub backoff: Backoff,
}

impl RetryPolicy {
    /// How long to wait after failed attempt `attempt` (1-based: the first try is 1), or
    /// `None` when it was the last one.
    pub fn delay_after(&self, attempt: u32) -> Option<Duration> {
        (attempt <= self.retries).then(|| self.backoff.delay(attempt.max(1)))
    }

    /// Every distinct delay the policy can ask for, shortest first.
    pub fn delays(&self) -> Vec<Duration> {
        let mut delays: Vec<Duration> = (1..=self.retries)
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
    peer: Option<Peer>,
    last_error: Option<LastError>,
}

impl Reconnect {
    pub fn new(what: &'static str, schedule: Backoff) -> Self {
        Reconnect {
            what,
            schedule,
            failures: 0,
            peer: None,
            last_error: None,
        }
    }

    /// Failures to reach `peer`: a TLS failure is logged at error level, naming `peer` and
    /// the reason (a certificate that does not verify will not heal by waiting).
    pub fn to(mut self, peer: Peer) -> Self {
        self.peer = Some(peer);
        self
    }

    /// Keeps the reason of the last failure in `last_error` (for `/health`) until the next
    /// success.
    pub fn recording(mut self, last_error: LastError) -> Self {
        self.last_error = Some(last_error);
        self
    }

    /// Connected: the next failure waits the shortest time again.
    pub fn succeeded(&mut self) {
        self.failures = 0;
        if let Some(last_error) = &self.last_error {
            last_error.clear();
        }
    }

    /// Logs the failure and waits the next delay; `false` when `stop` came first.
    pub async fn wait_after(&mut self, failure: &anyhow::Error, stop: &CancellationToken) -> bool {
        self.failures += 1;
        let delay = self.schedule.jittered(self.failures, fastrand::f64());
        let retry_in_ms = delay.as_millis() as u64;
        let detail = format!("{failure:#}");
        match self.peer.map(|peer| (peer, describe_anyhow(failure, peer))) {
            Some((peer, reason)) => {
                if let Some(last_error) = &self.last_error {
                    last_error.set(&reason);
                }
                if reason.tls {
                    error!(error = detail, retry_in_ms, "{}: {reason}", peer.name());
                } else {
                    warn!(error = detail, retry_in_ms, "{}", self.what);
                }
            }
            None => warn!(error = detail, retry_in_ms, "{}", self.what),
        }
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
    fn the_spec_schedule_is_a_first_try_and_three_retries_after_1_2_and_4_seconds() {
        let spec = RetryPolicy {
            retries: 3,
            backoff: SPEC,
        };
        let waits: Vec<Option<Duration>> = (1..=4).map(|a| spec.delay_after(a)).collect();
        let secs = |s| Some(Duration::from_secs(s));
        assert_eq!(waits, vec![secs(1), secs(2), secs(4), None]);
        assert_eq!(spec.delays().len(), 3, "one retry queue per wait");
        let long = RetryPolicy {
            retries: 10,
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

    #[test]
    fn a_reconnect_never_waits_more_than_a_second_nor_less_than_half_its_step() {
        let waits: Vec<u128> = (1..=8)
            .map(|failures| Backoff::RECONNECT.jittered(failures, 1.0).as_millis())
            .collect();
        assert_eq!(waits, vec![100, 200, 400, 800, 1000, 1000, 1000, 1000]);
        for failures in [1, 5, 50, u32::MAX] {
            let step = Backoff::RECONNECT.delay(failures);
            for unit in [0.0, 0.3, 0.999, -1.0, 2.0] {
                let wait = Backoff::RECONNECT.jittered(failures, unit);
                assert!(wait >= step / 2 && wait <= step, "{wait:?} for {step:?}");
            }
        }
        let total: Duration = (1..=10).map(|f| Backoff::RECONNECT.jittered(f, 0.0)).sum();
        assert!(
            total >= Duration::from_millis(3_500),
            "a broker down for ten tries is tried about once a second, not hammered: {total:?}"
        );
    }
}
