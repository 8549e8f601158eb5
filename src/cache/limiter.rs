//! The rate limiter's shared budgets: one GCRA step per charge, atomically in Redis
//! (`gcra.lua`, which mirrors the Rust step in `app/rate_limit/gcra.rs`), so every
//! gateway process spends from the same budget.

use std::sync::LazyLock;

use async_trait::async_trait;
use tracing::instrument;

use super::{Cache, cache_error};
use crate::app::ports::{CacheError, LimiterStore};
use crate::app::records::{GcraReply, GcraRequest};

static SCRIPT: LazyLock<redis::Script> =
    LazyLock::new(|| redis::Script::new(include_str!("gcra.lua")));

#[async_trait]
impl LimiterStore for Cache {
    #[instrument(skip_all)]
    async fn gcra(&self, key: &str, request: GcraRequest) -> Result<GcraReply, CacheError> {
        let mut invocation = SCRIPT.prepare_invoke();
        invocation
            .key(format!("{}ratelimit:{key}", self.prefix))
            .arg(request.interval_micros)
            .arg(request.burst)
            .arg(request.cost)
            .arg(request.extra)
            .arg(request.refund);
        let mut connection = self.connection.clone();
        let (allowed, remaining, reset, retry, taken): (u8, u64, u64, u64, u64) = self
            .guarded(invocation.invoke_async(&mut connection))
            .await
            .map_err(cache_error)?;
        Ok(GcraReply {
            allowed: allowed == 1,
            remaining,
            reset,
            retry,
            taken,
        })
    }
}
