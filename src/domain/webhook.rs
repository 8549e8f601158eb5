//! Standard Webhooks verification: `HMAC-SHA256(secret, "{id}.{timestamp}.{body}")`,
//! base64, sent as space-separated `v1,<signature>` entries in `webhook-signature`.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// How far a `webhook-timestamp` may be from the gateway's clock, either way.
pub const TOLERANCE_SECS: i64 = 5 * 60;

/// Longest `webhook-id` kept for replay detection.
pub const MAX_ID_LEN: usize = 255;

/// The sources allowed to send webhooks, each with one or more secrets (several while a
/// key rotates). Parsed from `shop=whsec_…,crm=plain-secret,shop=whsec_new`.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct WebhookSecrets(HashMap<String, Vec<Vec<u8>>>);

impl fmt::Debug for WebhookSecrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut sources: Vec<&String> = self.0.keys().collect();
        sources.sort();
        write!(f, "WebhookSecrets({sources:?}, secrets: ***)")
    }
}

impl FromStr for WebhookSecrets {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let mut sources: HashMap<String, Vec<Vec<u8>>> = HashMap::new();
        let entries = text.split(',').map(str::trim).filter(|e| !e.is_empty());
        for (number, entry) in (1..).zip(entries) {
            // A bad entry is named by its place, not by its source: a secret pasted without
            // its source reads as one.
            let (source, secret) = entry
                .split_once('=')
                .ok_or_else(|| format!("entry {number} is not source=secret"))?;
            let source = source.trim();
            if !super::is_plain_name(source) {
                return Err(format!(
                    "the source of entry {number} must be 1 to 64 characters of [A-Za-z0-9._-]"
                ));
            }
            sources
                .entry(source.to_owned())
                .or_default()
                .push(secret_bytes(number, secret.trim())?);
        }
        Ok(WebhookSecrets(sources))
    }
}

/// A `whsec_` secret is base64 key material; any other secret is used as its bytes.
fn secret_bytes(number: usize, secret: &str) -> Result<Vec<u8>, String> {
    let bytes = match secret.strip_prefix("whsec_") {
        Some(encoded) => STANDARD
            .decode(encoded)
            .map_err(|_| format!("the whsec_ secret of entry {number} is not valid base64"))?,
        None => secret.as_bytes().to_vec(),
    };
    if bytes.is_empty() {
        return Err(format!("the secret of entry {number} is empty"));
    }
    Ok(bytes)
}

/// Why a webhook was refused. Every reason is a 401; an unknown source reads exactly
/// like a bad signature so callers cannot probe which sources exist.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    #[error("missing the {0} header")]
    MissingHeader(&'static str),
    #[error("webhook-id must be at most 255 characters")]
    LongId,
    #[error("webhook-timestamp must be whole seconds since the Unix epoch")]
    BadTimestamp,
    #[error("webhook-timestamp is more than 5 minutes away from the gateway's clock")]
    OutsideTolerance,
    #[error("no webhook-signature entry matches")]
    NoMatchingSignature,
}

/// The three Standard Webhooks headers, as received.
pub struct SignedRequest<'a> {
    pub id: &'a str,
    pub timestamp: &'a str,
    pub signatures: &'a str,
    pub body: &'a [u8],
}

impl WebhookSecrets {
    /// Checks the signature against every secret of `source`, then the timestamp against
    /// `now` (Unix seconds).
    pub fn verify(
        &self,
        source: &str,
        request: &SignedRequest<'_>,
        now: i64,
    ) -> Result<(), Rejection> {
        let timestamp: i64 = request
            .timestamp
            .parse()
            .map_err(|_| Rejection::BadTimestamp)?;
        let offered: Vec<Vec<u8>> = request
            .signatures
            .split_ascii_whitespace()
            .filter_map(|entry| entry.strip_prefix("v1,"))
            .filter_map(|encoded| STANDARD.decode(encoded).ok())
            .collect();
        // Every source costs as many MACs as the source with the most keys, padded with a
        // throwaway key, so timing tells nothing about which sources exist.
        let throwaway = b"no such source".as_slice();
        let secrets = self.0.get(source).map_or(&[][..], Vec::as_slice);
        let rounds = self.0.values().map(Vec::len).max().unwrap_or(1);
        let mut signed = false;
        for round in 0..rounds {
            let secret = secrets.get(round).map_or(throwaway, Vec::as_slice);
            let expected = mac(secret, request);
            // `verify_slice` compares in constant time.
            signed |= offered
                .iter()
                .any(|signature| expected.clone().verify_slice(signature).is_ok());
        }
        if !signed || secrets.is_empty() {
            return Err(Rejection::NoMatchingSignature);
        }
        if now.abs_diff(timestamp) > TOLERANCE_SECS.unsigned_abs() {
            return Err(Rejection::OutsideTolerance);
        }
        Ok(())
    }
}

fn mac(secret: &[u8], request: &SignedRequest<'_>) -> Hmac<Sha256> {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret)
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    mac.update(request.id.as_bytes());
    mac.update(b".");
    mac.update(request.timestamp.as_bytes());
    mac.update(b".");
    mac.update(request.body);
    mac
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_790_000_000;

    /// What a sender puts in `webhook-signature`.
    fn sign(secret: &[u8], id: &str, timestamp: i64, body: &[u8]) -> String {
        let timestamp = timestamp.to_string();
        let request = SignedRequest {
            id,
            timestamp: &timestamp,
            signatures: "",
            body,
        };
        format!(
            "v1,{}",
            STANDARD.encode(mac(secret, &request).finalize().into_bytes())
        )
    }

    fn request<'a>(signatures: &'a str, timestamp: &'a str, body: &'a [u8]) -> SignedRequest<'a> {
        SignedRequest {
            id: "msg_1",
            timestamp,
            signatures,
            body,
        }
    }

    #[test]
    fn parses_sources_whsec_keys_and_rotation() {
        let secrets: WebhookSecrets = "shop=whsec_c2VjcmV0LTE=, crm=plain ,shop=second"
            .parse()
            .unwrap();
        assert_eq!(
            secrets.0["shop"],
            vec![b"secret-1".to_vec(), b"second".to_vec()]
        );
        assert_eq!(secrets.0["crm"], vec![b"plain".to_vec()]);
        assert!(!format!("{secrets:?}").contains("plain"));
        for bad in ["shop", "shop=whsec_***", "bad name=x", "shop="] {
            let error = bad.parse::<WebhookSecrets>().unwrap_err();
            assert!(!error.contains("***"), "{error}");
        }
        assert_eq!("".parse::<WebhookSecrets>(), Ok(WebhookSecrets::default()));
    }

    #[test]
    fn accepts_any_rotated_key_and_any_listed_signature() {
        let secrets: WebhookSecrets = "shop=old,shop=new".parse().unwrap();
        let body = br#"{"type":"x"}"#;
        let good = sign(b"new", "msg_1", NOW, body);
        let listed = format!("v1,AAAA {good} v2,whatever");
        let timestamp = NOW.to_string();
        assert_eq!(
            secrets.verify("shop", &request(&listed, &timestamp, body), NOW + 10),
            Ok(())
        );
        assert_eq!(
            secrets.verify("shop", &request(&good, &timestamp, b"{}"), NOW),
            Err(Rejection::NoMatchingSignature),
            "the body is signed"
        );
        assert_eq!(
            secrets.verify("crm", &request(&good, &timestamp, body), NOW),
            Err(Rejection::NoMatchingSignature),
            "an unknown source reads like a bad signature"
        );
    }

    #[test]
    fn refuses_timestamps_outside_five_minutes() {
        let secrets: WebhookSecrets = "shop=k".parse().unwrap();
        let signature = sign(b"k", "msg_1", NOW, b"{}");
        let timestamp = NOW.to_string();
        let at = |now| secrets.verify("shop", &request(&signature, &timestamp, b"{}"), now);
        assert_eq!(at(NOW + TOLERANCE_SECS), Ok(()));
        assert_eq!(at(NOW - TOLERANCE_SECS), Ok(()));
        assert_eq!(
            at(NOW + TOLERANCE_SECS + 1),
            Err(Rejection::OutsideTolerance)
        );
        assert_eq!(
            at(NOW - TOLERANCE_SECS - 1),
            Err(Rejection::OutsideTolerance)
        );
        assert_eq!(
            secrets.verify("shop", &request(&signature, "soon", b"{}"), NOW),
            Err(Rejection::BadTimestamp)
        );
    }
}
