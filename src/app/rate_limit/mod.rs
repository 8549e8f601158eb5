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

mod gcra;
mod lease;

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tracing::{info, warn};

use gcra::{LocalBudgets, decision};
use lease::{LEASE_WINDOW, Lease};

use super::ports::LimiterStore;
use super::records::{GcraReply, GcraRequest};
use crate::runtime::metrics::{LimitStore, Metrics};

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

/// Who made a decision: Redis, or this process alone while Redis was unreachable.
fn store(taken: Option<u64>) -> LimitStore {
    if taken.is_some() {
        LimitStore::Redis
    } else {
        LimitStore::Local
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
    shared: Arc<dyn LimiterStore>,
    local: Arc<Mutex<LocalBudgets>>,
    leases: Arc<Mutex<HashMap<String, Lease>>>,
    /// Whether the last call to Redis failed.
    degraded: Arc<AtomicBool>,
    metrics: Arc<Metrics>,
}

impl RateLimiter {
    pub fn new(
        policy: Option<Policy>,
        shared: Arc<dyn LimiterStore>,
        metrics: Arc<Metrics>,
    ) -> Self {
        RateLimiter {
            policy,
            shared,
            local: Arc::new(Mutex::new(LocalBudgets::new())),
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
        self.metrics.rate_limit_decision(decision.allowed, store);
        Some(decision)
    }

    /// A charge served from this process's lease when it holds enough; else from Redis,
    /// which also grants the next lease.
    async fn charge_leased(&self, policy: Policy, key: &str, cost: u32) -> (Decision, LimitStore) {
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
                Ok(decision) => return (decision, LimitStore::Lease),
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
        let request = GcraRequest {
            interval_micros: policy.interval_micros(),
            burst: policy.burst,
            cost,
            extra,
            refund,
        };
        match self.shared.gcra(key, request).await {
            Ok(reply) => {
                if self.degraded.swap(false, Ordering::Relaxed) {
                    info!("Redis answers again: rate limits are shared again");
                }
                let GcraReply {
                    allowed,
                    remaining,
                    reset,
                    retry,
                    taken,
                } = reply;
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

    /// Charges a request of `count` events to `budget`, of which `paid` were charged at
    /// admission. More events than the burst can never fit: that is refused as too large,
    /// not as limited, which a client would retry for ever.
    pub async fn charge_events(
        &self,
        budget: Budget<'_>,
        count: usize,
        paid: usize,
    ) -> Result<Option<Decision>, ChargeRefused> {
        if let Some(burst) = self.burst()
            && count > burst as usize
        {
            return Err(ChargeRefused::OverBurst { count, burst });
        }
        let rest = u32::try_from(count.saturating_sub(paid)).unwrap_or(u32::MAX);
        if rest == 0 {
            return Ok(None);
        }
        match self.charge(budget, rest).await {
            Some(decision) if !decision.allowed => Err(ChargeRefused::Limited(decision)),
            decision => Ok(decision),
        }
    }
}

/// Why a request of several events was refused.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ChargeRefused {
    #[error("{count} events at once exceed this caller's burst of {burst}")]
    OverBurst { count: usize, burst: u32 },
    #[error("rate limited")]
    Limited(Decision),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_rate_turns_limiting_off() {
        assert_eq!(Policy::new(0, 10), None);
        assert_eq!(Policy::new(5, 0).map(|p| p.burst), Some(1));
    }
}
