//! Bearer tokens: verifying them into a [`Principal`], and minting them for the `token`
//! command. The accepted algorithms follow the configured key; `none` never passes.

use std::collections::HashMap;
use std::sync::Mutex;

use anyhow::Context;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use sha2::{Digest, Sha256};

mod signer;

pub use signer::TokenSigner;

use crate::config::Settings;
use crate::domain::{Principal, Scopes, WEBHOOK_SUBJECT_PREFIX};

/// Used when no key is configured, so a newcomer can try the gateway at once.
/// `GATEWAY_ENV=production` refuses to start with it.
pub const DEVELOPMENT_SECRET: &str = "event-gateway-development-secret-change-me";

/// Leeway for `exp` and `nbf`, for clocks that disagree a little.
const CLOCK_LEEWAY_SECS: u64 = 30;

/// Verified tokens remembered at most; past it, expired ones go, or all of them.
const VERIFIED_CAPACITY: usize = 10_000;

/// What the gateway reads from a token; `exp`, `nbf`, `iss` and `aud` (a string or an
/// array) are checked by the validation itself.
#[derive(Debug, Deserialize)]
struct Claims {
    /// Required by the validation, which says so by name when it is missing.
    sub: Option<String>,
    #[serde(default)]
    scope: String,
    /// Required and checked by the validation; read again to know how long to trust it.
    exp: Option<f64>,
}

/// A token that passed verification, until its `exp` (with the leeway) passes.
struct Verified {
    principal: Principal,
    valid_until: u64,
}

/// Why a token was refused, in the caller's words: jsonwebtoken's own say
/// `ExpiredSignature` or `JSON error: expected value at line 1 column 1`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct TokenRefused(String);

impl TokenRefused {
    fn new(token: &str, error: &jsonwebtoken::errors::Error) -> Self {
        use jsonwebtoken::errors::ErrorKind as Kind;
        let reason = match error.kind() {
            Kind::ExpiredSignature => "the token has expired",
            Kind::ImmatureSignature => "the token is not valid yet (its nbf is in the future)",
            Kind::InvalidSignature => "the token's signature does not verify",
            Kind::InvalidIssuer => "the token's issuer (iss) is not the one this gateway trusts",
            Kind::InvalidAudience => "the token's audience (aud) does not name this gateway",
            Kind::MissingRequiredClaim(claim) => {
                return Self(format!("the token has no {claim} claim"));
            }
            Kind::InvalidClaimFormat(claim) => {
                return Self(format!("the token's {claim} claim has the wrong type"));
            }
            Kind::InvalidAlgorithm | Kind::UnsupportedAlgorithm | Kind::InvalidAlgorithmName => {
                "the token is signed with an algorithm this gateway does not accept"
            }
            // Well-formed JSON of the wrong shape: in the header, an `alg` such as `none`.
            Kind::Json(json) if json.is_data() && jsonwebtoken::decode_header(token).is_err() => {
                "the token's header names no algorithm this gateway accepts"
            }
            Kind::Json(json) if json.is_data() => {
                "the token's claims have the wrong types (sub and scope are strings, exp a number)"
            }
            Kind::InvalidToken | Kind::Base64(_) | Kind::Utf8(_) | Kind::Json(_) => {
                "the token is not a JWT (three base64url parts: header.claims.signature)"
            }
            _ => "the token cannot be verified with the configured key",
        };
        Self(reason.into())
    }
}

/// Where the verification key came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeySource {
    DevelopmentSecret,
    Secret,
    PublicKeyFile,
}

/// Checks bearer tokens against the configured key, issuer and audience.
pub struct TokenVerifier {
    key: DecodingKey,
    validation: Validation,
    source: KeySource,
    /// Tokens verified lately, by their SHA-256: a caller sends the same token with every
    /// request, and its base64, JSON and signature (an RSA one costs tens of microseconds)
    /// need checking only once.
    verified: Mutex<HashMap<[u8; 32], Verified>>,
}

impl TokenVerifier {
    pub fn from_settings(settings: &Settings) -> anyhow::Result<Self> {
        let (key, algorithms, source) = match (&settings.jwt_public_key_file, &settings.jwt_secret)
        {
            (Some(path), _) => {
                let pem = std::fs::read(path).with_context(|| {
                    format!("JWT_PUBLIC_KEY_FILE: cannot read {}", path.display())
                })?;
                let (key, algorithm) = decoding_key_from_pem(&pem).with_context(|| {
                    format!(
                        "JWT_PUBLIC_KEY_FILE: {} is not an RSA, EC or Ed25519 public key",
                        path.display()
                    )
                })?;
                (key, vec![algorithm], KeySource::PublicKeyFile)
            }
            (None, Some(secret)) => (
                DecodingKey::from_secret(secret.expose().as_bytes()),
                vec![Algorithm::HS256],
                KeySource::Secret,
            ),
            (None, None) => (
                DecodingKey::from_secret(DEVELOPMENT_SECRET.as_bytes()),
                vec![Algorithm::HS256],
                KeySource::DevelopmentSecret,
            ),
        };
        let mut validation = Validation::new(algorithms[0]);
        validation.algorithms = algorithms;
        validation.leeway = CLOCK_LEEWAY_SECS;
        validation.validate_nbf = true;
        let mut required = vec!["exp", "sub"];
        if let Some(issuer) = &settings.jwt_issuer {
            validation.set_issuer(&[issuer]);
            required.push("iss");
        }
        match &settings.jwt_audience {
            Some(audience) => {
                validation.set_audience(&[audience]);
                required.push("aud");
            }
            None => validation.validate_aud = false,
        }
        validation.set_required_spec_claims(&required);
        Ok(TokenVerifier {
            key,
            validation,
            source,
            verified: Mutex::new(HashMap::new()),
        })
    }

    pub fn source(&self) -> KeySource {
        self.source
    }

    /// The principal a valid token speaks for; any failure is a reason to answer 401.
    pub fn verify(&self, token: &str) -> Result<Principal, TokenRefused> {
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        // The clock the validation reads `exp` on.
        let now = jsonwebtoken::get_current_timestamp();
        if let Some(principal) = self.recall(&digest, now) {
            return Ok(principal);
        }
        let claims = jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation)
            .map_err(|error| TokenRefused::new(token, &error))?
            .claims;
        let (Some(subject), Some(exp)) = (claims.sub, claims.exp) else {
            return Err(TokenRefused("the token lacks its sub or exp claim".into()));
        };
        if subject.is_empty() || subject.contains('\0') {
            return Err(TokenRefused(
                "the token's subject (sub) is empty or holds a NUL".into(),
            ));
        }
        if subject.starts_with(WEBHOOK_SUBJECT_PREFIX) {
            return Err(TokenRefused(format!(
                "a token's subject (sub) may not start with {WEBHOOK_SUBJECT_PREFIX}, which names webhook senders"
            )));
        }
        let principal = Principal {
            scopes: Scopes::parse(&claims.scope),
            subject,
        };
        // The validation let it through, so this is the same test it made of `exp`.
        let valid_until = (exp.max(0.0) as u64).saturating_add(CLOCK_LEEWAY_SECS);
        self.remember(digest, &principal, valid_until, now);
        Ok(principal)
    }

    /// The principal of a token verified before, while its `exp` holds.
    fn recall(&self, digest: &[u8; 32], now: u64) -> Option<Principal> {
        let verified = self.verified.lock().unwrap_or_else(|p| p.into_inner());
        verified
            .get(digest)
            .filter(|entry| now <= entry.valid_until)
            .map(|entry| entry.principal.clone())
    }

    fn remember(&self, digest: [u8; 32], principal: &Principal, valid_until: u64, now: u64) {
        let mut verified = self.verified.lock().unwrap_or_else(|p| p.into_inner());
        if verified.len() >= VERIFIED_CAPACITY {
            verified.retain(|_, entry| now <= entry.valid_until);
            if verified.len() >= VERIFIED_CAPACITY {
                verified.clear();
            }
        }
        verified.insert(
            digest,
            Verified {
                principal: principal.clone(),
                valid_until,
            },
        );
    }
}

fn decoding_key_from_pem(pem: &[u8]) -> anyhow::Result<(DecodingKey, Algorithm)> {
    if let Ok(key) = DecodingKey::from_rsa_pem(pem) {
        return Ok((key, Algorithm::RS256));
    }
    if let Ok(key) = DecodingKey::from_ec_pem(pem) {
        return Ok((key, Algorithm::ES256));
    }
    Ok((DecodingKey::from_ed_pem(pem)?, Algorithm::EdDSA))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use jsonwebtoken::{EncodingKey, Header};

    use super::*;

    fn pair() -> (TokenVerifier, TokenSigner) {
        let mut settings = Settings::from_env().expect("settings");
        settings.jwt_public_key_file = None;
        settings.jwt_secret = Some("a-unit-test-secret-of-some-length".parse().expect("secret"));
        (
            TokenVerifier::from_settings(&settings).expect("verifier"),
            TokenSigner::from_settings(&settings).expect("signer"),
        )
    }

    #[test]
    fn a_verified_token_is_remembered_until_it_expires() {
        let (verifier, signer) = pair();
        let token = signer
            .mint("backend", "events:publish", Duration::from_secs(60))
            .expect("token");
        let first = verifier.verify(&token).expect("valid");
        assert_eq!(first.subject, "backend");
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let valid_until = verifier.verified.lock().unwrap()[&digest].valid_until;
        let expected = jsonwebtoken::get_current_timestamp() + 60 + CLOCK_LEEWAY_SECS;
        assert!(
            valid_until.abs_diff(expected) <= 2,
            "{valid_until} vs {expected}"
        );
        assert_eq!(verifier.recall(&digest, valid_until), Some(first.clone()));
        assert_eq!(verifier.recall(&digest, valid_until + 1), None, "expired");
        assert_eq!(verifier.verify(&token).expect("remembered"), first);
    }

    #[test]
    fn a_token_that_fails_is_not_remembered() {
        let (verifier, signer) = pair();
        let token = signer
            .mint("backend", "events:publish", Duration::from_secs(60))
            .expect("token");
        let forged = format!("{}x", &token[..token.len() - 1]);
        for _ in 0..2 {
            assert!(verifier.verify(&forged).is_err());
        }
        assert!(verifier.verified.lock().unwrap().is_empty());
    }

    #[test]
    fn refusals_say_what_is_wrong_in_plain_words() {
        use base64::Engine;
        let (verifier, _) = pair();
        let now = jsonwebtoken::get_current_timestamp();
        let signed = |claims: serde_json::Value, secret: &str| {
            let key = EncodingKey::from_secret(secret.as_bytes());
            jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &key).expect("token")
        };
        let secret = "a-unit-test-secret-of-some-length";
        let b64 = |text: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(text);
        let cases = [
            (
                signed(serde_json::json!({"sub": "svc", "exp": now - 3600}), secret),
                "the token has expired",
            ),
            (
                signed(
                    serde_json::json!({"sub": "svc", "exp": now + 60}),
                    "another",
                ),
                "the token's signature does not verify",
            ),
            (
                signed(serde_json::json!({"sub": "svc"}), secret),
                "the token has no exp claim",
            ),
            (
                signed(serde_json::json!({"sub": 7, "exp": now + 60}), secret),
                "the token's claims have the wrong types (sub and scope are strings, exp a number)",
            ),
            (
                format!("{}.{}.", b64(r#"{"alg":"none"}"#), b64(r#"{"sub":"svc"}"#)),
                "the token's header names no algorithm this gateway accepts",
            ),
            (
                signed(
                    serde_json::json!({"sub": "webhook:shop", "exp": now + 60}),
                    secret,
                ),
                "a token's subject (sub) may not start with webhook:, which names webhook senders",
            ),
            (
                "not.a.jwt".into(),
                "the token is not a JWT (three base64url parts: header.claims.signature)",
            ),
            (
                "abc".into(),
                "the token is not a JWT (three base64url parts: header.claims.signature)",
            ),
        ];
        for (token, expected) in cases {
            let refused = verifier.verify(&token).expect_err(expected);
            assert_eq!(refused.to_string(), expected);
        }
    }
}
