//! Idempotency claims in Redis, for webhook deliveries: `SET NX` is the atomic claim, so
//! of concurrent deliveries with one `webhook-id` exactly one runs.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};
use tracing::instrument;

use super::Cache;
use crate::domain::claim::{Claim, StoredAnswer};

/// A claim with no answer after this belongs to a process that died: it expires and the
/// sender's next retry runs.
const PENDING_TTL: Duration = Duration::from_secs(60);

impl Cache {
    fn claim_key(&self, principal: &str, key: &str) -> String {
        format!("{}claim:{principal}:{key}", self.prefix)
    }

    #[instrument(skip_all)]
    pub async fn claim(
        &self,
        principal: &str,
        key: &str,
        hash: &[u8],
    ) -> redis::RedisResult<Claim> {
        let name = self.claim_key(principal, key);
        let hash = STANDARD.encode(hash);
        let pending = json!({ "hash": hash }).to_string();
        let claimed: Option<String> = self
            .run(
                redis::cmd("SET")
                    .arg(&name)
                    .arg(pending)
                    .arg("NX")
                    .arg("PX")
                    .arg(PENDING_TTL.as_millis() as u64),
            )
            .await?;
        if claimed.is_some() {
            return Ok(Claim::Owned);
        }
        let existing: Option<String> = self.run(redis::cmd("GET").arg(&name)).await?;
        let Some(existing) = existing.and_then(|text| serde_json::from_str::<Value>(&text).ok())
        else {
            // Released (or expired) in between: the caller's next try may own it.
            return Ok(Claim::InProgress);
        };
        if existing["hash"].as_str() != Some(hash.as_str()) {
            return Ok(Claim::Mismatch);
        }
        Ok(match (existing["status"].as_u64(), existing.get("body")) {
            (Some(status), Some(body)) => Claim::Answered(StoredAnswer {
                status: status as u16,
                body: body.clone(),
            }),
            _ => Claim::InProgress,
        })
    }

    #[instrument(skip_all)]
    pub async fn record_answer(
        &self,
        principal: &str,
        key: &str,
        hash: &[u8],
        answer: StoredAnswer,
        ttl: Duration,
    ) -> redis::RedisResult<()> {
        let value =
            json!({"hash": STANDARD.encode(hash), "status": answer.status, "body": answer.body});
        self.run(
            redis::cmd("SET")
                .arg(self.claim_key(principal, key))
                .arg(value.to_string())
                .arg("PX")
                .arg(ttl.as_millis() as u64),
        )
        .await
    }

    /// The request failed: drop its claim so a retry runs again.
    #[instrument(skip_all)]
    pub async fn release(&self, principal: &str, key: &str) -> redis::RedisResult<()> {
        self.run(redis::cmd("DEL").arg(self.claim_key(principal, key)))
            .await
    }
}
