//! Idempotency claims in Redis, for webhook deliveries. `SET NX` is the atomic claim, so
//! of concurrent deliveries with one `webhook-id` exactly one runs. A claim is
//! `pending <token> <hash>` until its answer replaces it; only the holder of the token may
//! record the answer or let the claim go, so a claim that expired and was taken over is
//! never overwritten by its first owner.

use std::sync::LazyLock;
use std::time::Duration;

use async_trait::async_trait;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};
use tracing::instrument;

use super::{Cache, cache_error};
use crate::app::ports::{IdempotencyLedger, LedgerError};
use crate::app::records::{Claim, StoredAnswer, Ticket};

/// A claim with no answer after this belongs to a process that died: it expires and the
/// sender's next retry runs.
const PENDING_TTL: Duration = Duration::from_secs(60);

/// Replaces (with an answer) or deletes the claim only while it is still ours.
static IF_STILL_OURS: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
          if ARGV[2] == '' then return redis.call('DEL', KEYS[1]) end
          redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
          return 1",
    )
});

/// Webhook claims, kept in Redis for `ttl` once answered.
#[derive(Clone)]
pub struct ClaimLedger {
    pub cache: Cache,
    pub ttl: Duration,
}

impl ClaimLedger {
    fn name(&self, ticket: &Ticket) -> String {
        format!(
            "{}claim:{}:{}",
            self.cache.prefix, ticket.principal, ticket.key
        )
    }

    /// What the key holds while this request runs.
    fn marker(ticket: &Ticket) -> String {
        format!(
            "pending {} {}",
            ticket.token.simple(),
            STANDARD.encode(&ticket.hash)
        )
    }

    /// Replaces (with `value`) or deletes (`value` empty) the claim only while it is ours.
    async fn if_still_ours(
        &self,
        ticket: &Ticket,
        value: &str,
        ttl: Duration,
    ) -> Result<(), LedgerError> {
        let mut invocation = IF_STILL_OURS.prepare_invoke();
        invocation
            .key(self.name(ticket))
            .arg(Self::marker(ticket))
            .arg(value)
            .arg(ttl.as_millis() as u64);
        let mut connection = self.cache.connection.clone();
        let _: i64 = self
            .cache
            .guarded(invocation.invoke_async(&mut connection))
            .await
            .map_err(cache_error)?;
        Ok(())
    }
}

#[async_trait]
impl IdempotencyLedger for ClaimLedger {
    #[instrument(skip_all)]
    async fn claim(&self, ticket: &Ticket) -> Result<Claim, LedgerError> {
        let name = self.name(ticket);
        let claimed: Option<String> = self
            .cache
            .run(
                redis::cmd("SET")
                    .arg(&name)
                    .arg(Self::marker(ticket))
                    .arg("NX")
                    .arg("PX")
                    .arg(PENDING_TTL.as_millis() as u64),
            )
            .await
            .map_err(cache_error)?;
        if claimed.is_some() {
            return Ok(Claim::Owned);
        }
        let existing: Option<String> = self
            .cache
            .run(redis::cmd("GET").arg(&name))
            .await
            .map_err(cache_error)?;
        Ok(read_claim(
            existing.as_deref(),
            &STANDARD.encode(&ticket.hash),
        ))
    }

    #[instrument(skip_all)]
    async fn record(&self, ticket: &Ticket, answer: StoredAnswer) -> Result<(), LedgerError> {
        let hash = STANDARD.encode(&ticket.hash);
        let value = json!({"hash": hash, "status": answer.status, "body": answer.body});
        self.if_still_ours(ticket, &value.to_string(), self.ttl)
            .await
    }

    #[instrument(skip_all)]
    async fn release(&self, ticket: &Ticket) -> Result<(), LedgerError> {
        self.if_still_ours(ticket, "", Duration::ZERO).await
    }
}

/// What an existing claim says to a request whose body hashes to `hash`.
fn read_claim(existing: Option<&str>, hash: &str) -> Claim {
    let Some(existing) = existing else {
        // Released (or expired) in between: the caller's next try may own it.
        return Claim::InProgress;
    };
    if let Some(pending) = existing.strip_prefix("pending ") {
        return match pending.split_once(' ') {
            Some((_, claimed)) if claimed != hash => Claim::Mismatch,
            _ => Claim::InProgress,
        };
    }
    let Ok(answer) = serde_json::from_str::<Value>(existing) else {
        return Claim::InProgress;
    };
    if answer["hash"].as_str() != Some(hash) {
        return Claim::Mismatch;
    }
    match (answer["status"].as_u64(), answer.get("body")) {
        (Some(status), Some(body)) => Claim::Answered(StoredAnswer {
            status: status as u16,
            body: body.clone(),
        }),
        _ => Claim::InProgress,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_existing_claim_is_read_against_the_request_hash() {
        assert_eq!(read_claim(None, "h"), Claim::InProgress);
        assert_eq!(read_claim(Some("pending t1 h"), "h"), Claim::InProgress);
        assert_eq!(read_claim(Some("pending t1 other"), "h"), Claim::Mismatch);
        let answered = r#"{"hash": "h", "status": 202, "body": {"id": 1}}"#;
        assert_eq!(
            read_claim(Some(answered), "h"),
            Claim::Answered(StoredAnswer {
                status: 202,
                body: json!({"id": 1})
            })
        );
        assert_eq!(read_claim(Some(answered), "other"), Claim::Mismatch);
    }
}
