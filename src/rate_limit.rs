//! Per-caller rate limits: a GCRA budget of `RATE_LIMIT_RPS` events per second with bursts
//! of `RATE_LIMIT_BURST`, kept in Redis so every gateway process shares it. While Redis is
//! unreachable each process keeps the same budget in memory: limits stay bounded (at most
//! one budget per process) instead of failing open or refusing everyone.
//!
//! A busy caller does not cost a Redis call per request: when Redis grants a charge it
//! also grants up to one window's worth of the caller's recent demand as a lease, which
//! later requests spend in memory. Leased events are taken from the shared budget up
//! front, so a lease never lets more through than the budget; what a process does not
//! spend within [`LEASE_WINDOW`] lapses (at most [`Policy::lease_cap`] events per caller).

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
    /// What Redis reported at the grant, for the headers of requests the lease serves.
    remaining: u64,
    reset_at: Instant,
    /// Events charged in the current window, and in the one before: the next lease's size.
    window_start: Instant,
    demand: u64,
    last_demand: u64,
}

impl Lease {
    fn new(now: Instant) -> Self {
        Lease {
            tokens: 0,
            until: now,
            remaining: 0,
            reset_at: now,
            window_start: now,
            demand: 0,
            last_demand: 0,
        }
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

    /// Spends `cost` leased events, if the lease still holds them.
    fn spend(&mut self, policy: Policy, now: Instant, cost: u64) -> Option<Decision> {
        if now >= self.until || self.tokens < cost {
            return None;
        }
        self.tokens -= cost;
        Some(decision(
            policy,
            true,
            self.remaining + self.tokens,
            self.reset_at.saturating_duration_since(now).as_micros() as u64,
            0,
        ))
    }

    /// How many events to ask for beyond the charge: the recent demand, capped.
    fn wanted(&self, policy: Policy) -> u64 {
        self.last_demand.max(self.demand).min(policy.lease_cap())
    }

    /// Keeps what Redis granted beyond `cost`, with what is left of the current lease.
    fn grant(&mut self, now: Instant, granted: u64, cost: u64, remaining: u64, reset: Duration) {
        let left = if now < self.until { self.tokens } else { 0 };
        self.tokens = left + granted.saturating_sub(cost);
        self.until = now + LEASE_WINDOW;
        self.remaining = remaining;
        self.reset_at = now + reset;
    }
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
        let (decision, store) = match self.spend_lease(policy, &key, cost) {
            Ok(decision) => (decision, "lease"),
            Err(extra) => self.charge_shared(policy, &key, cost, extra).await,
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

    /// Serves a charge from this process's lease; else says how many events to lease.
    fn spend_lease(&self, policy: Policy, key: &str, cost: u32) -> Result<Decision, u64> {
        if policy.lease_cap() == 0 {
            return Err(0);
        }
        let now = Instant::now();
        let mut leases = self.leases.lock().unwrap_or_else(|p| p.into_inner());
        if leases.len() >= LOCAL_SWEEP_AT {
            leases.retain(|_, lease| now.duration_since(lease.window_start) < 2 * LEASE_WINDOW);
        }
        let lease = match leases.get_mut(key) {
            Some(lease) => lease,
            None => leases.entry(key.to_owned()).or_insert(Lease::new(now)),
        };
        lease.record(now, u64::from(cost));
        lease
            .spend(policy, now, u64::from(cost))
            .ok_or_else(|| lease.wanted(policy))
    }

    /// Charges the budget shared in Redis (taking `extra` events as a lease), or this
    /// process's own budget while Redis is unreachable.
    async fn charge_shared(
        &self,
        policy: Policy,
        key: &str,
        cost: u32,
        extra: u64,
    ) -> (Decision, &'static str) {
        match self
            .cache
            .gcra(key, policy.interval_micros(), policy.burst, cost, extra)
            .await
        {
            Ok((allowed, remaining, reset, retry, taken)) => {
                if self.degraded.swap(false, Ordering::Relaxed) {
                    info!("Redis answers again: rate limits are shared again");
                }
                let decision = decision(policy, allowed, remaining, reset, retry);
                if taken > u64::from(cost) {
                    let mut leases = self.leases.lock().unwrap_or_else(|p| p.into_inner());
                    if let Some(lease) = leases.get_mut(key) {
                        lease.grant(
                            Instant::now(),
                            taken,
                            u64::from(cost),
                            remaining,
                            decision.reset,
                        );
                    }
                }
                (decision, "redis")
            }
            Err(error) => {
                // Once per outage, not once per request.
                if !self.degraded.swap(true, Ordering::Relaxed) {
                    warn!(%error, "Redis is unreachable: each process keeps rate limits itself");
                }
                let mut local = self.local.lock().unwrap_or_else(|p| p.into_inner());
                (local.check(policy, key, cost), "local")
            }
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

    #[test]
    fn a_lease_serves_charges_until_it_runs_out_or_lapses() {
        let policy = Policy {
            per_second: 1000,
            burst: 2000,
        };
        assert_eq!(policy.lease_cap(), 100);
        let start = Instant::now();
        let mut lease = Lease::new(start);
        lease.record(start, 1);
        assert!(
            lease.spend(policy, start, 1).is_none(),
            "nothing leased yet"
        );
        assert_eq!(lease.wanted(policy), 1);
        // Redis took 1 + 3 and said 1996 remain.
        lease.grant(start, 4, 1, 1996, Duration::from_millis(4));
        for left in [2, 1, 0] {
            let decision = lease.spend(policy, start, 1).expect("leased");
            assert!(decision.allowed);
            assert_eq!(decision.remaining, 1996 + left);
        }
        assert!(lease.spend(policy, start, 1).is_none(), "spent");
        lease.grant(start, 10, 1, 1980, Duration::from_millis(20));
        assert!(
            lease.spend(policy, start, 10).is_none(),
            "a batch larger than the lease"
        );
        let lapsed = start + LEASE_WINDOW;
        assert!(lease.spend(policy, lapsed, 1).is_none(), "lapsed");
    }

    #[test]
    fn a_lease_follows_recent_demand_within_the_cap() {
        let policy = Policy {
            per_second: 1000,
            burst: 2000,
        };
        let start = Instant::now();
        let mut lease = Lease::new(start);
        for _ in 0..30 {
            lease.record(start, 1);
        }
        assert_eq!(lease.wanted(policy), 30);
        // The next window remembers the last one's demand.
        lease.record(start + LEASE_WINDOW, 1);
        assert_eq!(lease.wanted(policy), 30);
        lease.record(start + LEASE_WINDOW, 500);
        assert_eq!(lease.wanted(policy), policy.lease_cap());
        // After a pause, a caller starts small again.
        lease.record(start + 5 * LEASE_WINDOW, 1);
        assert_eq!(lease.wanted(policy), 1);
        // Small budgets are never leased.
        assert_eq!(POLICY.lease_cap(), 0);
    }

    #[test]
    fn zero_rate_turns_limiting_off() {
        assert_eq!(Policy::new(0, 10), None);
        assert_eq!(Policy::new(5, 0).map(|p| p.burst), Some(1));
    }
}
