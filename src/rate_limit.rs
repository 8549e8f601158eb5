//! Per-caller rate limits: a GCRA budget of `RATE_LIMIT_RPS` events per second with bursts
//! of `RATE_LIMIT_BURST`, kept in Redis so every gateway process shares it. While Redis is
//! unreachable each process keeps the same budget in memory: limits stay bounded (at most
//! one budget per process) instead of failing open or refusing everyone.

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
/// caller's next event, in microseconds on some clock where `now` is also read.
/// Mirrors `src/cache/gcra.lua`.
fn gcra(policy: Policy, tat: Option<u64>, now: u64, cost: u32) -> (Option<u64>, Decision) {
    let interval = policy.interval_micros();
    let window = u64::from(policy.burst) * interval;
    let tat = tat.unwrap_or(now).max(now);
    let new_tat = tat + u64::from(cost) * interval;
    // Allowed when `new_tat - window <= now`, written so nothing goes below zero.
    if new_tat > now + window {
        let remaining = (now + window - tat) / interval;
        let retry = new_tat - window - now;
        return (None, decision(policy, false, remaining, tat - now, retry));
    }
    let remaining = (now + window - new_tat) / interval;
    (
        Some(new_tat),
        decision(policy, true, remaining, new_tat - now, 0),
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
        let (new_tat, decision) = gcra(policy, self.tats.get(key).copied(), now, cost);
        if let Some(tat) = new_tat {
            self.tats.insert(key.to_owned(), tat);
        }
        decision
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
        let (decision, store) = match self
            .cache
            .gcra(&key, policy.interval_micros(), policy.burst, cost)
            .await
        {
            Ok((allowed, remaining, reset, retry)) => {
                if self.degraded.swap(false, Ordering::Relaxed) {
                    info!("Redis answers again: rate limits are shared again");
                }
                (decision(policy, allowed, remaining, reset, retry), "redis")
            }
            Err(error) => {
                // Once per outage, not once per request.
                if !self.degraded.swap(true, Ordering::Relaxed) {
                    warn!(%error, "Redis is unreachable: each process keeps rate limits itself");
                }
                let mut local = self.local.lock().unwrap_or_else(|p| p.into_inner());
                (local.check(policy, &key, cost), "local")
            }
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
            let (next, decision) = gcra(POLICY, tat, now, cost);
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
    fn zero_rate_turns_limiting_off() {
        assert_eq!(Policy::new(0, 10), None);
        assert_eq!(Policy::new(5, 0).map(|p| p.burst), Some(1));
    }
}
