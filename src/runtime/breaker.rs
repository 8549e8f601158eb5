//! A circuit breaker: after repeated failures, stop calling a dependency for a while and
//! fail fast, then let one call through to see whether it is back.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use prometheus::IntGauge;

/// Failures in a row that open the circuit.
const THRESHOLD: u32 = 5;
/// How long an open circuit fails fast before it lets a trial call through: one call a
/// second is no load on a dependency that is down, and callers are let back within about
/// a second of its return.
const COOL_DOWN: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CircuitState {
    Closed,
    Open,
}

impl CircuitState {
    pub fn as_str(self) -> &'static str {
        match self {
            CircuitState::Closed => "closed",
            CircuitState::Open => "open",
        }
    }
}

/// What a failed call says about the dependency behind it.
pub trait Fault {
    /// `false` when the dependency answered and refused this one call for what it carried
    /// (a client's error): it is up, so the call counts as a success.
    fn is_dependency_failure(&self) -> bool;

    /// `false` when the call never reached the dependency (its circuit was open, say):
    /// it tells nothing either way, and changes nothing.
    fn reached_dependency(&self) -> bool {
        true
    }
}

#[derive(Debug, Default)]
struct Inner {
    failures: u32,
    open_until: Option<Instant>,
}

/// Shared by every caller of one dependency; `gauge` shows 1 while it is open.
#[derive(Debug)]
pub struct CircuitBreaker {
    inner: Mutex<Inner>,
    gauge: IntGauge,
}

impl CircuitBreaker {
    pub fn new(gauge: IntGauge) -> Self {
        CircuitBreaker {
            inner: Mutex::new(Inner::default()),
            gauge,
        }
    }

    /// Whether a call may go ahead now. While open, one call per cool-down is let through
    /// as a trial.
    pub fn allow(&self) -> bool {
        let Ok(mut inner) = self.inner.lock() else {
            return true;
        };
        match inner.open_until {
            Some(until) if Instant::now() < until => false,
            Some(_) => {
                // Half-open: this caller is the trial; others wait out another cool-down.
                inner.open_until = Some(Instant::now() + COOL_DOWN);
                true
            }
            None => true,
        }
    }

    pub fn record<T, E: Fault>(&self, outcome: &Result<T, E>) {
        if outcome.as_ref().is_err_and(|e| !e.reached_dependency()) {
            return;
        }
        let Ok(mut inner) = self.inner.lock() else {
            return;
        };
        if outcome
            .as_ref()
            .err()
            .is_none_or(|e| !e.is_dependency_failure())
        {
            inner.failures = 0;
            inner.open_until = None;
        } else {
            inner.failures += 1;
            if inner.failures >= THRESHOLD {
                inner.open_until = Some(Instant::now() + COOL_DOWN);
            }
        }
        self.gauge.set(i64::from(inner.open_until.is_some()));
    }

    pub fn state(&self) -> CircuitState {
        match self.inner.lock().map(|inner| inner.open_until.is_some()) {
            Ok(true) => CircuitState::Open,
            _ => CircuitState::Closed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    enum Failed {
        Down,
        Refused,
        NotCalled,
    }

    impl Fault for Failed {
        fn is_dependency_failure(&self) -> bool {
            !matches!(self, Failed::Refused)
        }

        fn reached_dependency(&self) -> bool {
            !matches!(self, Failed::NotCalled)
        }
    }

    fn breaker() -> CircuitBreaker {
        CircuitBreaker::new(IntGauge::new("t", "t").unwrap())
    }

    #[test]
    fn opens_after_repeated_failures_and_closes_on_success() {
        let breaker = breaker();
        for _ in 0..THRESHOLD - 1 {
            breaker.record::<(), _>(&Err(Failed::Down));
        }
        assert!(breaker.allow(), "still closed below the threshold");
        breaker.record::<(), _>(&Err(Failed::Down));
        assert_eq!(breaker.state(), CircuitState::Open);
        assert!(!breaker.allow(), "open: fail fast");
        assert_eq!(breaker.gauge.get(), 1);
        breaker.record::<(), Failed>(&Ok(()));
        assert_eq!(breaker.state(), CircuitState::Closed);
        assert!(breaker.allow());
        assert_eq!(breaker.gauge.get(), 0);
    }

    #[test]
    fn refusals_of_a_call_for_its_content_never_open_it() {
        let breaker = breaker();
        for _ in 0..THRESHOLD * 2 {
            breaker.record::<(), _>(&Err(Failed::Refused));
        }
        assert_eq!(breaker.state(), CircuitState::Closed);
        for _ in 0..THRESHOLD - 1 {
            breaker.record::<(), _>(&Err(Failed::Down));
        }
        breaker.record::<(), _>(&Err(Failed::Refused));
        breaker.record::<(), _>(&Err(Failed::Down));
        assert!(breaker.allow(), "an answer shows the dependency is up");
    }

    #[test]
    fn a_call_that_never_reached_it_neither_opens_nor_closes_it() {
        let breaker = breaker();
        for _ in 0..THRESHOLD {
            breaker.record::<(), _>(&Err(Failed::Down));
        }
        for _ in 0..THRESHOLD {
            breaker.record::<(), _>(&Err(Failed::NotCalled));
        }
        assert_eq!(breaker.state(), CircuitState::Open, "not closed by no news");
        breaker.record::<(), Failed>(&Ok(()));
        for _ in 0..THRESHOLD * 2 {
            breaker.record::<(), _>(&Err(Failed::NotCalled));
        }
        assert_eq!(
            breaker.state(),
            CircuitState::Closed,
            "not opened by no news"
        );
    }

    #[test]
    fn an_open_circuit_lets_a_trial_through_within_about_a_second() {
        let breaker = breaker();
        for _ in 0..THRESHOLD {
            breaker.record::<(), _>(&Err(Failed::Down));
        }
        assert!(!breaker.allow());
        std::thread::sleep(COOL_DOWN + Duration::from_millis(50));
        assert!(breaker.allow(), "the trial call");
        assert!(!breaker.allow(), "only one");
    }
}
