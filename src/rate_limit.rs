//! Per-caller rate limits: a GCRA budget of `RATE_LIMIT_RPS` events per second with bursts
//! of `RATE_LIMIT_BURST`, kept in Redis so every gateway process shares it. While Redis is
//! unreachable each process keeps the same budget in memory: limits stay bounded (at most
//! one budget per process) instead of failing open or refusing everyone.
//!
//! A busy caller does not cost a Redis call per request: when Redis grants a charge it
//! also grants a lease of the caller's demand in the last window (one at a time per
//! caller), which later requests spend in memory. Leased events are taken from the shared
//! budget up front, so over time a lease never lets more through than the budget; what a
//! process does not spend within [`LEASE_WINDOW`] is given back with its next call.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tracing::{info, warn};

use crate::cache::Cache;
use crate::metrics::Metrics;

/// Local budgets kept before idle ones are swept, so the map cannot grow without bound.
const LOCAL_SWEEP_AT: usize = 100_000;

/// How long leased events stay spendable, and the window a caller's demand is measured in.
const LEASE_WINDOW: Duration = Duration::from_millis(100);

/// A refill not settled by then is taken as lost (its request was dropped mid-call), so
/// it no longer stops the next one.
const REFILL_LOST_AFTER: Duration = Duration::from_secs(1);

/// The budget each caller gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    pub per_second: u32,
    pub burst: u32,
}

impl Policy {
    /// `None` when `per_second` is 0: limiting is off.
    pub fn new(per_second: u32, burst: u32) -> Option<Self> {
        (per_second > 0).then_some(Policy {
            per_second,
            burst: burst.max(1),
        })
    }

    fn interval_micros(self) -> u64 {
        (1_000_000 / u64::from(self.per_second)).max(1)
    }

    /// The most events one process may hold in a lease: an eighth of the burst, and no
    /// more than the rate refills in one window. Small budgets (a burst under 8, or under
    /// 10 events per second) are never leased: every charge goes to Redis.
    fn lease_cap(self) -> u64 {
        let per_window = u64::from(self.per_second) * LEASE_WINDOW.as_millis() as u64 / 1000;
        (u64::from(self.burst) / 8).min(per_window)
    }
}

/// What the limiter decided, with what the `RateLimit-*` headers report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    pub limit: u32,
    pub remaining: u64,
    /// Until the budget is full again.
    pub reset: Duration,
    /// Until this request would be allowed (zero when it was).
    pub retry_after: Duration,
}

/// The GCRA step shared by both stores: `tat` is the theoretical arrival time of the
/// caller's next event, in microseconds on some clock where `now` is also read. When
/// `cost` fits, up to `extra` more events are taken with it, as far as the budget holds
/// them; the second value is how many were taken in all. Mirrors `src/cache/gcra.lua`.
fn gcra(
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

fn decision(policy: Policy, allowed: bool, remaining: u64, reset: u64, retry: u64) -> Decision {
    Decision {
        allowed,
        limit: policy.burst,
        remaining,
        reset: Duration::from_micros(reset),
        retry_after: Duration::from_micros(retry),
    }
}

/// The in-process store, used while Redis is unreachable.
struct LocalBudgets {
    epoch: Instant,
    tats: HashMap<String, u64>,
}

impl LocalBudgets {
    fn check(&mut self, policy: Policy, key: &str, cost: u32) -> Decision {
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

/// Events one caller holds in this process, taken from the shared budget ahead of need.
struct Lease {
    /// Leased events not spent yet.
    tokens: u64,
    /// When unspent events lapse.
    until: Instant,
    /// Lapsed events, given back to the shared budget with the next call to Redis.
    owed_back: u64,
    /// Since when a call to Redis that takes a lease is under way (one at a time).
    refilling: Option<Instant>,
    /// What Redis reported at the grant, for the headers of requests the lease serves.
    remaining: u64,
    reset_at: Instant,
    /// Events charged in the current window, and in the one before: the next lease's size.
    window_start: Instant,
    demand: u64,
    last_demand: u64,
}

/// What a charge the lease could not serve asks of Redis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Ask {
    /// Events still to charge, after those the lease held (`reserved`).
    cost: u32,
    reserved: u64,
    /// Events to take beyond `cost`, as the next lease.
    extra: u64,
    /// Lapsed events to give back first.
    refund: u64,
}

impl Lease {
    fn new(now: Instant) -> Self {
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
    fn charge(&mut self, policy: Policy, now: Instant, cost: u32) -> Result<Decision, Ask> {
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
    fn refill_under_way(&self, now: Instant) -> bool {
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
    fn settle(&mut self, now: Instant, ask: Ask, decision: &Decision, taken: Option<u64>) {
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

/// Who made a decision: Redis, or this process alone while Redis was unreachable.
fn store(taken: Option<u64>) -> &'static str {
    if taken.is_some() { "redis" } else { "local" }
}

/// Who a budget belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Budget<'a> {
    /// A token's `sub`.
    Subject(&'a str),
    /// A webhook source, once its signature checked out.
    Webhook(&'a str),
    /// A client address, for calls without valid credentials.
    Address(IpAddr),
}

impl Budget<'_> {
    fn key(&self) -> String {
        match self {
            Budget::Subject(sub) => format!("sub:{sub}"),
            Budget::Webhook(source) => format!("webhook:{source}"),
            // An IPv4 client of a dual-stack listener arrives as `::ffff:a.b.c.d`.
            Budget::Address(ip) => match ip.to_canonical() {
                IpAddr::V4(ip) => format!("ip:{ip}"),
                // One host usually holds a whole /64: it is one caller.
                IpAddr::V6(ip) => {
                    let network = u128::from(ip) & !((1u128 << 64) - 1);
                    format!("ip:{}/64", Ipv6Addr::from(network))
                }
            },
        }
    }
}

#[derive(Clone)]
pub struct RateLimiter {
    policy: Option<Policy>,
    cache: Cache,
    local: Arc<Mutex<LocalBudgets>>,
    leases: Arc<Mutex<HashMap<String, Lease>>>,
    /// Whether the last call to Redis failed.
    degraded: Arc<AtomicBool>,
    metrics: Arc<Metrics>,
}

impl RateLimiter {
    pub fn new(policy: Option<Policy>, cache: Cache, metrics: Arc<Metrics>) -> Self {
        RateLimiter {
            policy,
            cache,
            local: Arc::new(Mutex::new(LocalBudgets {
                epoch: Instant::now(),
                tats: HashMap::new(),
            })),
            leases: Arc::new(Mutex::new(HashMap::new())),
            degraded: Arc::new(AtomicBool::new(false)),
            metrics,
        }
    }

    /// The most events a caller may send at once; `None` when limiting is off.
    pub fn burst(&self) -> Option<u32> {
        self.policy.map(|policy| policy.burst)
    }

    /// Charges `cost` events to `budget`; `None` when limiting is off. A cost above the
    /// burst is never allowed: callers check [`Self::burst`] first.
    pub async fn charge(&self, budget: Budget<'_>, cost: u32) -> Option<Decision> {
        let policy = self.policy?;
        let cost = cost.max(1);
        let key = budget.key();
        let (decision, store) = if policy.lease_cap() == 0 {
            let (decision, taken) = self.charge_shared(policy, &key, cost, 0, 0).await;
            (decision, store(taken))
        } else {
            self.charge_leased(policy, &key, cost).await
        };
        let outcome = if decision.allowed {
            "allowed"
        } else {
            "limited"
        };
        self.metrics
            .rate_limit_decisions
            .with_label_values(&[outcome, store])
            .inc();
        Some(decision)
    }

    /// A charge served from this process's lease when it holds enough; else from Redis,
    /// which also grants the next lease.
    async fn charge_leased(
        &self,
        policy: Policy,
        key: &str,
        cost: u32,
    ) -> (Decision, &'static str) {
        let now = Instant::now();
        let ask = {
            let mut leases = self.leases();
            if leases.len() >= LOCAL_SWEEP_AT {
                leases.retain(|_, lease| {
                    lease.refill_under_way(now)
                        || now.duration_since(lease.window_start) < 2 * LEASE_WINDOW
                });
            }
            let lease = match leases.get_mut(key) {
                Some(lease) => lease,
                None => leases.entry(key.to_owned()).or_insert(Lease::new(now)),
            };
            match lease.charge(policy, now, cost) {
                Ok(decision) => return (decision, "lease"),
                Err(ask) => ask,
            }
        };
        let (mut decision, taken) = self
            .charge_shared(policy, key, ask.cost, ask.extra, ask.refund)
            .await;
        let mut leases = self.leases();
        let lease = leases.entry(key.to_owned()).or_insert(Lease::new(now));
        lease.settle(Instant::now(), ask, &decision, taken);
        if decision.allowed {
            // The caller may still send what its lease holds.
            decision.remaining += lease.tokens;
        }
        (decision, store(taken))
    }

    /// Charges the budget shared in Redis (taking up to `extra` more events as a lease,
    /// after giving `refund` back), with the events taken; or, while Redis is unreachable,
    /// this process's own budget (`None` taken).
    async fn charge_shared(
        &self,
        policy: Policy,
        key: &str,
        cost: u32,
        extra: u64,
        refund: u64,
    ) -> (Decision, Option<u64>) {
        match self
            .cache
            .gcra(
                key,
                policy.interval_micros(),
                policy.burst,
                cost,
                extra,
                refund,
            )
            .await
        {
            Ok((allowed, remaining, reset, retry, taken)) => {
                if self.degraded.swap(false, Ordering::Relaxed) {
                    info!("Redis answers again: rate limits are shared again");
                }
                (
                    decision(policy, allowed, remaining, reset, retry),
                    Some(taken),
                )
            }
            Err(error) => {
                // Once per outage, not once per request.
                if !self.degraded.swap(true, Ordering::Relaxed) {
                    warn!(%error, "Redis is unreachable: each process keeps rate limits itself");
                }
                let mut local = self.local.lock().unwrap_or_else(|p| p.into_inner());
                (local.check(policy, key, cost), None)
            }
        }
    }

    fn leases(&self) -> std::sync::MutexGuard<'_, HashMap<String, Lease>> {
        self.leases.lock().unwrap_or_else(|p| p.into_inner())
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

    #[test]
    fn zero_rate_turns_limiting_off() {
        assert_eq!(Policy::new(0, 10), None);
        assert_eq!(Policy::new(5, 0).map(|p| p.burst), Some(1));
    }
}
