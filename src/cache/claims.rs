//! Idempotency claims in Redis, for webhook deliveries. `SET NX` is the atomic claim, so
//! of concurrent deliveries with one `webhook-id` exactly one runs. A claim is
//! `pending <token> <hash>` until its answer replaces it; only the holder of the token may
//! record the answer or let the claim go, so a claim that expired and was taken over is
//! never overwritten by its first owner.

use std::sync::LazyLock;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};
use tracing::instrument;
use uuid::Uuid;

use super::Cache;
use crate::domain::claim::{Claim, StoredAnswer};

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

/// One request's hold on a key.
pub struct PendingClaim {
    name: String,
    marker: String,
    hash: String,
}

impl Cache {
    /// Claims `key` for `principal`; `Ok((Claim::Owned, Some(claim)))` when this request
    /// is the first.
    #[instrument(skip_all)]
    pub async fn claim(
        &self,
        principal: &str,
        key: &str,
        hash: &[u8],
    ) -> redis::RedisResult<(Claim, Option<PendingClaim>)> {
        let name = format!("{}claim:{principal}:{key}", self.prefix);
        let hash = STANDARD.encode(hash);
        let marker = format!("pending {} {hash}", Uuid::new_v4().simple());
        let claimed: Option<String> = self
            .run(
                redis::cmd("SET")
                    .arg(&name)
                    .arg(&marker)
                    .arg("NX")
                    .arg("PX")
                    .arg(PENDING_TTL.as_millis() as u64),
            )
            .await?;
        if claimed.is_some() {
            return Ok((Claim::Owned, Some(PendingClaim { name, marker, hash })));
        }
        let existing: Option<String> = self.run(redis::cmd("GET").arg(&name)).await?;
        Ok((read_claim(existing.as_deref(), &hash), None))
    }

    /// Replaces the claim with its answer, kept for `ttl`.
    #[instrument(skip_all)]
    pub async fn record_answer(
        &self,
        claim: &PendingClaim,
        answer: StoredAnswer,
        ttl: Duration,
    ) -> redis::RedisResult<()> {
        let value = json!({"hash": claim.hash, "status": answer.status, "body": answer.body});
        self.if_still_ours(claim, &value.to_string(), ttl).await
    }

    /// The request failed: drop its claim so a retry runs again.
    #[instrument(skip_all)]
    pub async fn release(&self, claim: &PendingClaim) -> redis::RedisResult<()> {
        self.if_still_ours(claim, "", Duration::ZERO).await
    }

    async fn if_still_ours(
        &self,
        claim: &PendingClaim,
        value: &str,
        ttl: Duration,
    ) -> redis::RedisResult<()> {
        let mut invocation = IF_STILL_OURS.prepare_invoke();
        invocation
            .key(&claim.name)
            .arg(&claim.marker)
            .arg(value)
            .arg(ttl.as_millis() as u64);
        let mut connection = self.connection.clone();
        let _: i64 = self
            .guarded(invocation.invoke_async(&mut connection))
            .await?;
        Ok(())
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
