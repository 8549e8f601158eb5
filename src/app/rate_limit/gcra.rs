//! The GCRA step both budget stores run: Redis (in `src/cache/gcra.lua`, which mirrors
//! [`gcra`]) and this process alone while Redis is unreachable ([`LocalBudgets`]).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::{Decision, LOCAL_SWEEP_AT, Policy};

/// The GCRA step shared by both stores: `tat` is the theoretical arrival time of the
/// caller's next event, in microseconds on some clock where `now` is also read. When
/// `cost` fits, up to `extra` more events are taken with it, as far as the budget holds
/// them; the second value is how many were taken in all. Mirrors `src/cache/gcra.lua`.
pub(super) fn gcra(
    policy: Policy,
    tat: Option<u64>,
    now: u64,
    cost: u32,
    extra: u64,
) -> (Option<u64>, Decision, u64) {
    let interval = policy.interval_micros();
    let window = u64::from(policy.burst) * interval;
    let tat = tat.unwrap_or(now).max(now);
    // The events that fit now; `tat <= now + window` holds once something was allowed.
    let fit = (now + window).saturating_sub(tat) / interval;
    let cost = u64::from(cost);
    if fit < cost {
        let retry = tat + cost * interval - window - now;
        return (None, decision(policy, false, fit, tat - now, retry), 0);
    }
    let taken = fit.min(cost + extra);
    let new_tat = tat + taken * interval;
    (
        Some(new_tat),
        decision(policy, true, fit - taken, new_tat - now, 0),
        taken,
    )
}

pub(super) fn decision(
    policy: Policy,
    allowed: bool,
    remaining: u64,
    reset: u64,
    retry: u64,
) -> Decision {
    Decision {
        allowed,
        limit: policy.burst,
        remaining,
        reset: Duration::from_micros(reset),
        retry_after: Duration::from_micros(retry),
    }
}

/// The in-process store, used while Redis is unreachable.
pub(super) struct LocalBudgets {
    epoch: Instant,
    tats: HashMap<String, u64>,
}

impl LocalBudgets {
    pub(super) fn new() -> Self {
        LocalBudgets {
            epoch: Instant::now(),
            tats: HashMap::new(),
        }
    }

    pub(super) fn check(&mut self, policy: Policy, key: &str, cost: u32) -> Decision {
        let now = self.epoch.elapsed().as_micros() as u64;
        if self.tats.len() >= LOCAL_SWEEP_AT {
            self.tats.retain(|_, tat| *tat > now);
        }
        let (new_tat, decision, _) = gcra(policy, self.tats.get(key).copied(), now, cost, 0);
        if let Some(tat) = new_tat {
            self.tats.insert(key.to_owned(), tat);
        }
        decision
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: Policy = Policy {
        per_second: 10,
        burst: 3,
    };

    #[test]
    fn a_burst_passes_then_the_rate_holds() {
        let mut budgets = LocalBudgets {
            epoch: Instant::now(),
            tats: HashMap::new(),
        };
        let mut tat = None;
        let mut at = |now: u64, cost| {
            let (next, decision, _) = gcra(POLICY, tat, now, cost, 0);
            tat = next.or(tat);
            decision
        };
        let first = at(0, 1);
        assert!(first.allowed);
        assert_eq!(first.remaining, 2);
        assert_eq!(first.limit, 3);
        assert!(at(0, 2).allowed);
        let refused = at(0, 1);
        assert!(!refused.allowed);
        assert_eq!(refused.remaining, 0);
        assert_eq!(refused.retry_after, Duration::from_millis(100));
        assert_eq!(refused.reset, Duration::from_millis(300));
        // One event's worth of time later, one event passes.
        assert!(at(100_000, 1).allowed);
        assert!(!at(100_000, 1).allowed);
        // A cost the budget cannot cover now is refused without spending anything.
        assert!(!at(150_000, 2).allowed);
        assert!(at(400_000, 3).allowed);
        assert!(budgets.check(POLICY, "k", 3).allowed);
        assert!(!budgets.check(POLICY, "k", 1).allowed);
        assert!(budgets.check(POLICY, "other", 1).allowed);
    }

    #[test]
    fn a_charge_takes_its_lease_only_as_far_as_the_budget_holds_it() {
        // 10 events of burst: a charge of 2 with 5 more leased takes 7.
        let policy = Policy {
            per_second: 10,
            burst: 10,
        };
        let (tat, first, taken) = gcra(policy, None, 0, 2, 5);
        assert_eq!((first.allowed, first.remaining, taken), (true, 3, 7));
        // 3 are left: the next charge gets its 1 and a lease of 2, not the 5 it asked.
        let (tat, second, taken) = gcra(policy, tat, 0, 1, 5);
        assert_eq!((second.allowed, second.remaining, taken), (true, 0, 3));
        let (_, third, taken) = gcra(policy, tat, 0, 1, 5);
        assert_eq!((third.allowed, taken), (false, 0));
    }
}
