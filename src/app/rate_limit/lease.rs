//! Leases: events one caller holds in this process, taken from the shared budget ahead of
//! need, so a busy caller does not cost a Redis call per request.

use std::time::{Duration, Instant};

use super::Decision;
use super::Policy;
use super::gcra::decision;

/// How long leased events stay spendable, and the window a caller's demand is measured in.
pub(super) const LEASE_WINDOW: Duration = Duration::from_millis(100);

/// A refill not settled by then is taken as lost (its request was dropped mid-call), so
/// it no longer stops the next one.
const REFILL_LOST_AFTER: Duration = Duration::from_secs(1);

/// Events one caller holds in this process, taken from the shared budget ahead of need.
pub(super) struct Lease {
    /// Leased events not spent yet.
    pub(super) tokens: u64,
    /// When unspent events lapse.
    pub(super) until: Instant,
    /// Lapsed events, given back to the shared budget with the next call to Redis.
    pub(super) owed_back: u64,
    /// Since when a call to Redis that takes a lease is under way (one at a time).
    pub(super) refilling: Option<Instant>,
    /// What Redis reported at the grant, for the headers of requests the lease serves.
    pub(super) remaining: u64,
    pub(super) reset_at: Instant,
    /// Events charged in the current window, and in the one before: the next lease's size.
    pub(super) window_start: Instant,
    pub(super) demand: u64,
    pub(super) last_demand: u64,
}

/// What a charge the lease could not serve asks of Redis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Ask {
    /// Events still to charge, after those the lease held (`reserved`).
    pub(super) cost: u32,
    pub(super) reserved: u64,
    /// Events to take beyond `cost`, as the next lease.
    pub(super) extra: u64,
    /// Lapsed events to give back first.
    pub(super) refund: u64,
}

impl Lease {
    pub(super) fn new(now: Instant) -> Self {
        Lease {
            tokens: 0,
            until: now,
            owed_back: 0,
            refilling: None,
            remaining: 0,
            reset_at: now,
            window_start: now,
            demand: 0,
            last_demand: 0,
        }
    }

    /// Serves `cost` events from the lease; else reserves what it holds and says what to
    /// ask Redis for.
    pub(super) fn charge(
        &mut self,
        policy: Policy,
        now: Instant,
        cost: u32,
    ) -> Result<Decision, Ask> {
        self.record(now, u64::from(cost));
        if now >= self.until {
            self.owed_back += std::mem::take(&mut self.tokens);
        }
        let wanted = u64::from(cost);
        if self.tokens >= wanted {
            self.tokens -= wanted;
            return Ok(decision(
                policy,
                true,
                self.remaining + self.tokens,
                self.reset_at.saturating_duration_since(now).as_micros() as u64,
                0,
            ));
        }
        let reserved = std::mem::take(&mut self.tokens);
        // The demand of the last full window, less this charge; one refill at a time.
        let extra = if self.refill_under_way(now) {
            0
        } else {
            self.last_demand
                .saturating_sub(wanted)
                .min(policy.lease_cap())
        };
        if extra > 0 {
            self.refilling = Some(now);
        }
        Err(Ask {
            cost: (wanted - reserved) as u32,
            reserved,
            extra,
            refund: std::mem::take(&mut self.owed_back),
        })
    }

    /// Whether a refill is under way: started, not settled, and not yet taken as lost.
    pub(super) fn refill_under_way(&self, now: Instant) -> bool {
        self.refilling
            .is_some_and(|since| now.duration_since(since) < REFILL_LOST_AFTER)
    }

    /// Counts `cost` towards this window's demand, starting a new window when it is due.
    fn record(&mut self, now: Instant, cost: u64) {
        let age = now.duration_since(self.window_start);
        if age >= LEASE_WINDOW {
            // A window with no charges in it (or a longer pause) leaves no demand behind.
            self.last_demand = if age < 2 * LEASE_WINDOW {
                self.demand
            } else {
                0
            };
            self.demand = 0;
            self.window_start = now;
        }
        self.demand += cost;
    }

    /// Takes the answer to `ask`, with the events Redis took (`None`: Redis was not
    /// reached and this process decided alone). A grant's events beyond the charge are
    /// the new lease; a refusal leaves the reserved events this caller's.
    pub(super) fn settle(
        &mut self,
        now: Instant,
        ask: Ask,
        decision: &Decision,
        taken: Option<u64>,
    ) {
        if ask.extra > 0 {
            self.refilling = None;
        }
        if !decision.allowed {
            self.tokens += ask.reserved;
        }
        match taken {
            Some(taken) if decision.allowed => {
                self.tokens += taken.saturating_sub(u64::from(ask.cost));
                self.until = now + LEASE_WINDOW;
                self.remaining = decision.remaining;
                self.reset_at = now + decision.reset;
            }
            Some(_) => {}
            None => self.owed_back += ask.refund,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: Policy = Policy {
        per_second: 10,
        burst: 3,
    };

    const BUSY: Policy = Policy {
        per_second: 1000,
        burst: 2000,
    };

    fn granted(remaining: u64) -> Decision {
        decision(BUSY, true, remaining, 5_000, 0)
    }

    #[test]
    fn a_lease_serves_charges_until_it_runs_out_and_lapsed_events_are_given_back() {
        assert_eq!(BUSY.lease_cap(), 100);
        let start = Instant::now();
        let mut lease = Lease::new(start);
        let ask = lease
            .charge(BUSY, start, 1)
            .expect_err("nothing leased yet");
        assert_eq!(ask.extra, 0, "a caller with no recent demand gets no lease");
        // Redis took 1 + 3 and says 1996 remain.
        let ask = Ask { extra: 3, ..ask };
        lease.settle(start, ask, &granted(1996), Some(4));
        for left in [2, 1, 0] {
            let decision = lease.charge(BUSY, start, 1).expect("leased");
            assert!(decision.allowed);
            assert_eq!(decision.remaining, 1996 + left);
        }
        // A batch larger than the lease reserves what is left and asks only for the rest.
        lease.settle(start, ask, &granted(1990), Some(4));
        let ask = lease
            .charge(BUSY, start, 5)
            .expect_err("larger than the lease");
        assert_eq!((ask.cost, ask.reserved), (2, 3));
        // Refused: the reserved events stay the caller's.
        lease.settle(start, ask, &decision(BUSY, false, 0, 0, 1), Some(0));
        assert!(lease.charge(BUSY, start, 3).is_ok());
        // Events not spent within the window are given back with the next call.
        lease.settle(start, ask, &granted(1980), Some(6));
        let lapsed = start + LEASE_WINDOW;
        let ask = lease.charge(BUSY, lapsed, 1).expect_err("lapsed");
        assert_eq!((ask.reserved, ask.refund), (0, 4));
        // Redis was not reached: the refund waits for the next call.
        lease.settle(lapsed, ask, &granted(0), None);
        let ask = lease
            .charge(BUSY, lapsed, 1)
            .expect_err("still nothing leased");
        assert_eq!(ask.refund, 4);
    }

    #[test]
    fn a_lease_is_the_last_windows_demand_within_the_cap_one_refill_at_a_time() {
        let start = Instant::now();
        let mut lease = Lease::new(start);
        for _ in 0..30 {
            let ask = lease.charge(BUSY, start, 1).expect_err("no lease");
            assert_eq!(ask.extra, 0, "the current window does not size the lease");
            lease.settle(start, ask, &decision(BUSY, false, 0, 0, 1), Some(0));
        }
        let next = start + LEASE_WINDOW;
        let ask = lease.charge(BUSY, next, 1).expect_err("no lease");
        assert_eq!(ask.extra, 29, "the last window's 30, less this charge");
        let concurrent = lease.charge(BUSY, next, 1).expect_err("refill under way");
        assert_eq!(concurrent.extra, 0, "one refill at a time");
        // A refill whose request was dropped mid-call stops blocking after a while.
        let mut dropped = Lease {
            refilling: Some(next),
            ..Lease::new(start)
        };
        dropped.record(start, 30);
        let ask = dropped.charge(BUSY, next, 1).expect_err("no lease");
        assert_eq!(ask.extra, 0, "the first refill may still answer");
        let later = next + REFILL_LOST_AFTER;
        dropped.record(later - LEASE_WINDOW, 30);
        let ask_later = dropped.charge(BUSY, later, 1).expect_err("no lease");
        assert_eq!(ask_later.extra, 29, "a lost refill no longer blocks");
        lease.settle(next, concurrent, &granted(100), Some(1));
        lease.settle(next, ask, &granted(100), Some(30));
        assert_eq!(lease.tokens, 29);
        // Demand beyond the cap is capped.
        let mut busy = Lease::new(start);
        busy.record(start, 500);
        let ask = busy.charge(BUSY, next, 1).expect_err("no lease");
        assert_eq!(ask.extra, BUSY.lease_cap());
        busy.settle(next, ask, &decision(BUSY, false, 0, 0, 1), Some(0));
        // After a pause, a caller starts with no lease again.
        let ask = busy
            .charge(BUSY, start + 5 * LEASE_WINDOW, 1)
            .expect_err("no lease");
        assert_eq!(ask.extra, 0);
        // Small budgets are never leased.
        assert_eq!(POLICY.lease_cap(), 0);
    }
}
