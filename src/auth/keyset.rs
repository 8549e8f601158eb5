//! The identity provider's key set as the gateway holds it: fetched in the background,
//! kept as long as the provider's `Cache-Control` allows (within a floor and a ceiling),
//! and fetched again early, at most once per interval, when a token names a `kid` it
//! does not have.

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::jwks::{Fetched, KeySetClient, PublicKey};
use crate::runtime::backoff::Backoff;

/// How often the key set is fetched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RefreshPolicy {
    /// Shortest time between fetches caused by an unknown `kid`.
    pub min_refresh: Duration,
    /// Shortest and longest time a fetched set is kept.
    pub cache_min: Duration,
    pub cache_max: Duration,
}

impl RefreshPolicy {
    /// How long a set fetched with this `max-age` is kept.
    pub fn lifetime(&self, max_age: Option<Duration>) -> Duration {
        max_age
            .unwrap_or(self.cache_min)
            .clamp(self.cache_min, self.cache_max.max(self.cache_min))
    }

    /// Whether a fetch made at `last` (if any) leaves room for another at `now`.
    pub fn may_fetch(&self, last: Option<Instant>, now: Instant) -> bool {
        last.is_none_or(|last| now.saturating_duration_since(last) >= self.min_refresh)
    }

    /// Waits between failed fetches: quick at first, never longer than the floor.
    fn backoff(&self) -> Backoff {
        Backoff {
            initial: Duration::from_millis(250).min(self.cache_min),
            max: self.cache_min.min(Duration::from_secs(30)),
        }
    }
}

/// One fetched set; `generation` changes only when its keys do.
pub struct KeySet {
    pub generation: u64,
    fingerprint: [u8; 32],
    keys: std::collections::HashMap<String, Arc<PublicKey>>,
}

/// What the held set says about a `kid`.
pub enum Lookup {
    /// Nothing has been fetched yet.
    NotLoaded,
    Missing,
    Found(Arc<PublicKey>, u64),
}

pub struct RemoteKeys {
    client: KeySetClient,
    policy: RefreshPolicy,
    current: RwLock<Option<Arc<KeySet>>>,
    /// When the last fetch started; held while one runs, so there is one at a time.
    last_fetch: Mutex<Option<Instant>>,
}

impl RemoteKeys {
    pub fn new(client: KeySetClient, policy: RefreshPolicy) -> Self {
        RemoteKeys {
            client,
            policy,
            current: RwLock::new(None),
            last_fetch: Mutex::new(None),
        }
    }

    pub fn is_loaded(&self) -> bool {
        self.held().is_some()
    }

    /// The generation of the held set, if any.
    pub fn generation(&self) -> Option<u64> {
        self.held().map(|set| set.generation)
    }

    pub fn lookup(&self, kid: &str) -> Lookup {
        match self.held() {
            None => Lookup::NotLoaded,
            Some(set) => match set.keys.get(kid) {
                Some(key) => Lookup::Found(key.clone(), set.generation),
                None => Lookup::Missing,
            },
        }
    }

    /// For a `kid` the held set lacks: fetch the set again unless a fetch started less
    /// than `min_refresh` ago, then look again. Callers that arrive while a fetch runs
    /// wait for it and fetch nothing themselves.
    pub async fn lookup_after_refresh(&self, kid: &str) -> Lookup {
        let mut last = self.last_fetch.lock().await;
        if self.policy.may_fetch(*last, Instant::now()) {
            *last = Some(Instant::now());
            if let Err(error) = self.fetch_and_hold().await {
                warn!(
                    error = format!("{error:#}"),
                    "identity provider's key set not refreshed; keeping the last one"
                );
            }
        }
        drop(last);
        self.lookup(kid)
    }

    /// Fetches the set until `shutdown`, each time when the held one's lifetime ends,
    /// sooner after a failure (the last good set is kept meanwhile).
    pub async fn refresh_in_background(self: Arc<Self>, shutdown: CancellationToken) {
        let mut failures = 0;
        loop {
            let fetched = {
                let mut last = self.last_fetch.lock().await;
                *last = Some(Instant::now());
                self.fetch_and_hold().await
            };
            let wait = match fetched {
                Ok(lifetime) => {
                    failures = 0;
                    lifetime
                }
                Err(error) => {
                    failures += 1;
                    let held = if self.is_loaded() {
                        "keeping the last one"
                    } else {
                        "tokens are answered 503 until it is"
                    };
                    warn!(
                        error = format!("{error:#}"),
                        failures, "identity provider's key set not fetched; {held}"
                    );
                    self.policy.backoff().jittered(failures, fastrand::f64())
                }
            };
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = shutdown.cancelled() => return,
            }
        }
    }

    /// Fetches the set and holds it; the answer is how long to keep it.
    async fn fetch_and_hold(&self) -> anyhow::Result<Duration> {
        let Fetched {
            keys,
            max_age,
            fingerprint,
        } = self.client.fetch().await?;
        let mut current = self.current.write().unwrap_or_else(|p| p.into_inner());
        let generation = match current.as_ref() {
            Some(held) if held.fingerprint == fingerprint => held.generation,
            Some(held) => held.generation + 1,
            None => 1,
        };
        if current
            .as_ref()
            .is_none_or(|held| held.generation != generation)
        {
            info!(
                keys = keys.len(),
                generation, "identity provider's key set loaded"
            );
        }
        *current = Some(Arc::new(KeySet {
            generation,
            fingerprint,
            keys,
        }));
        Ok(self.policy.lifetime(max_age))
    }

    fn held(&self) -> Option<Arc<KeySet>> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: RefreshPolicy = RefreshPolicy {
        min_refresh: Duration::from_secs(30),
        cache_min: Duration::from_secs(60),
        cache_max: Duration::from_secs(3600),
    };

    #[test]
    fn the_provider_s_max_age_is_kept_within_the_floor_and_the_ceiling() {
        let secs = Duration::from_secs;
        assert_eq!(POLICY.lifetime(Some(secs(300))), secs(300));
        assert_eq!(POLICY.lifetime(Some(secs(5))), secs(60), "floor");
        assert_eq!(POLICY.lifetime(Some(Duration::ZERO)), secs(60), "no-cache");
        assert_eq!(POLICY.lifetime(Some(secs(86_400))), secs(3600), "ceiling");
        assert_eq!(POLICY.lifetime(None), secs(60), "no Cache-Control");
    }

    #[test]
    fn an_unknown_kid_fetches_at_most_once_per_interval() {
        let start = Instant::now();
        assert!(POLICY.may_fetch(None, start));
        assert!(!POLICY.may_fetch(Some(start), start));
        assert!(!POLICY.may_fetch(Some(start), start + Duration::from_secs(29)));
        assert!(POLICY.may_fetch(Some(start), start + Duration::from_secs(30)));
    }

    #[test]
    fn failed_fetches_are_retried_sooner_than_the_floor() {
        let backoff = POLICY.backoff();
        assert_eq!(backoff.delay(1), Duration::from_millis(250));
        assert_eq!(backoff.delay(20), Duration::from_secs(30));
    }
}
