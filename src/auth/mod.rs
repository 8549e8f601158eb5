//! Bearer tokens: verifying them into a [`Principal`], and minting them for the `token`
//! command. The accepted algorithms follow the configured key, or the identity provider's
//! key set (RS256, ES256 and EdDSA keys, chosen by `kid`); `none` never passes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use jsonwebtoken::{Algorithm, Header, Validation};
use serde::Deserialize;
use serde::de::IgnoredAny;
use sha2::{Digest, Sha256};

mod jwks;
mod keys;
mod keyset;
mod refusal;
mod signer;

pub use keyset::RemoteKeys;
pub use refusal::{TokenError, TokenRefused};

use self::refusal::refuse_critical_extensions;
pub use signer::{TokenSigner, parse_ttl};

use self::jwks::PublicKey;
use self::keys::Keys;
use self::keyset::Lookup;
use crate::app::ports::KeyProbe;
use crate::config::Settings;
use crate::domain::{Principal, Scopes, WEBHOOK_SUBJECT_PREFIX};

/// Used when no key is configured, so a newcomer can try the gateway at once.
/// `GATEWAY_ENV=production` refuses to start with it.
pub const DEVELOPMENT_SECRET: &str = "event-gateway-development-secret-change-me";

/// Verified tokens remembered at most; past it, expired ones go, or all of them.
const VERIFIED_CAPACITY: usize = 10_000;

/// The algorithms a key can verify; each key verifies exactly one.
const ALGORITHMS: [Algorithm; 4] = [
    Algorithm::RS256,
    Algorithm::ES256,
    Algorithm::EdDSA,
    Algorithm::HS256,
];

/// What the gateway reads from a token; `exp`, `nbf`, `iss` and `aud` (a string or an
/// array) are checked by the validation itself when configured.
#[derive(Debug, Deserialize)]
struct Claims {
    /// Required by the validation, which says so by name when it is missing.
    sub: Option<String>,
    #[serde(default)]
    scope: String,
    /// Required and checked by the validation; read again to know how long to trust it.
    exp: Option<f64>,
    iat: Option<f64>,
    /// Read to refuse a token minted for another service when JWT_AUDIENCE is unset.
    #[serde(default)]
    aud: Option<IgnoredAny>,
}

/// A token that passed verification, until its `exp` (with the leeway) passes or the key
/// set that verified it changes.
struct Verified {
    principal: Principal,
    valid_until: u64,
    generation: u64,
}

/// Where the verification key came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeySource {
    DevelopmentSecret,
    Secret,
    PublicKeyFile,
    /// JWT_JWKS_URL, or OpenID Connect discovery.
    IdentityProvider,
}

/// Checks bearer tokens against the configured key, issuer and audience.
pub struct TokenVerifier {
    keys: Keys,
    /// One per entry of [`ALGORITHMS`], each accepting only its algorithm.
    validations: Vec<Validation>,
    leeway: u64,
    audience_required: bool,
    /// Tokens verified lately, by their SHA-256: a caller sends the same token with every
    /// request, and its base64, JSON and signature (an RSA one costs tens of microseconds)
    /// need checking only once.
    verified: Mutex<HashMap<[u8; 32], Verified>>,
}

impl TokenVerifier {
    pub fn from_settings(settings: &Settings) -> anyhow::Result<Self> {
        let keys = Keys::from_settings(settings)?;
        let leeway = settings.identity.jwt_leeway.as_secs();
        Ok(TokenVerifier {
            keys,
            validations: ALGORITHMS
                .iter()
                .map(|algorithm| validation(settings, *algorithm, leeway))
                .collect(),
            leeway,
            audience_required: settings.jwt_audience.is_some(),
            verified: Mutex::new(HashMap::new()),
        })
    }

    pub fn source(&self) -> KeySource {
        self.keys.source()
    }

    /// The identity provider's key set, to be fetched in the background, if tokens are
    /// verified with one.
    pub fn remote_keys(&self) -> Option<Arc<RemoteKeys>> {
        self.keys.remote()
    }

    /// The principal a valid token speaks for; a refusal is a 401, keys not fetched yet a
    /// 503.
    pub async fn verify(&self, token: &str) -> Result<Principal, TokenError> {
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        // The clock the validation reads `exp` on.
        let now = jsonwebtoken::get_current_timestamp();
        if let Some(generation) = self.keys.generation()
            && let Some(principal) = self.recall(&digest, now, generation)
        {
            return Ok(principal);
        }
        let header = jsonwebtoken::decode_header(token).map_err(|e| TokenRefused::header(&e))?;
        refuse_critical_extensions(&header)?;
        let (key, generation) = self.key_for(&header).await?;
        let claims = jsonwebtoken::decode::<Claims>(token, &key.key, self.validation(&key))
            .map_err(|error| TokenRefused::new(&error))?
            .claims;
        let (principal, valid_until) = self.principal(claims, now)?;
        self.remember(digest, &principal, valid_until, generation, now);
        Ok(principal)
    }

    /// The key that verifies a token with this header, and the generation of its set.
    async fn key_for(&self, header: &Header) -> Result<(Arc<PublicKey>, u64), TokenError> {
        let remote = match &self.keys {
            Keys::Remote(remote) => remote,
            Keys::Local(key, _) => return Ok((key.clone(), 0)),
        };
        let Some(kid) = header.kid.as_deref() else {
            return Err(TokenRefused::plain(
                "the token's header names no key (kid); the identity provider's keys are chosen by kid",
            )
            .into());
        };
        let lookup = match remote.lookup(kid) {
            Lookup::Missing => remote.lookup_after_refresh(kid).await,
            held => held,
        };
        match lookup {
            Lookup::Found(key, generation) => Ok((key, generation)),
            Lookup::NotLoaded => Err(TokenError::KeysUnavailable),
            Lookup::Missing => Err(TokenRefused::unknown_kid(kid).into()),
        }
    }

    fn validation(&self, key: &PublicKey) -> &Validation {
        let index = ALGORITHMS
            .iter()
            .position(|algorithm| *algorithm == key.algorithm)
            .unwrap_or_default();
        &self.validations[index]
    }

    /// The checks the validation does not make, and how long the token may be trusted.
    fn principal(&self, claims: Claims, now: u64) -> Result<(Principal, u64), TokenRefused> {
        let (Some(subject), Some(exp)) = (claims.sub, claims.exp) else {
            return Err(TokenRefused::plain("the token lacks its sub or exp claim"));
        };
        if claims
            .iat
            .is_some_and(|iat| iat > now.saturating_add(self.leeway) as f64)
        {
            return Err(TokenRefused::plain(
                "the token's iat is in the future: it says it was issued later than now (more than JWT_LEEWAY)",
            ));
        }
        if !self.audience_required && claims.aud.is_some() {
            return Err(TokenRefused::plain(
                "the token names an audience (aud) and this gateway has none (JWT_AUDIENCE is unset): it was minted for another service",
            ));
        }
        if subject.is_empty() || subject.contains('\0') {
            return Err(TokenRefused::plain(
                "the token's subject (sub) is empty or holds a NUL",
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
        let valid_until = (exp.max(0.0) as u64).saturating_add(self.leeway);
        Ok((principal, valid_until))
    }

    /// The principal of a token verified before, while its `exp` holds and the key set
    /// that verified it is the one held.
    fn recall(&self, digest: &[u8; 32], now: u64, generation: u64) -> Option<Principal> {
        let verified = self.verified.lock().unwrap_or_else(|p| p.into_inner());
        verified
            .get(digest)
            .filter(|entry| now <= entry.valid_until && entry.generation == generation)
            .map(|entry| entry.principal.clone())
    }

    fn remember(
        &self,
        digest: [u8; 32],
        principal: &Principal,
        valid_until: u64,
        generation: u64,
        now: u64,
    ) {
        let mut verified = self.verified.lock().unwrap_or_else(|p| p.into_inner());
        if verified.len() >= VERIFIED_CAPACITY {
            verified.retain(|_, entry| now <= entry.valid_until && entry.generation == generation);
            if verified.len() >= VERIFIED_CAPACITY {
                verified.clear();
            }
        }
        verified.insert(
            digest,
            Verified {
                principal: principal.clone(),
                valid_until,
                generation,
            },
        );
    }
}

impl KeyProbe for TokenVerifier {
    fn keys_loaded(&self) -> bool {
        self.keys.generation().is_some()
    }
}

/// The checks of `exp`, `nbf`, `iss` and `aud` for tokens signed with `algorithm`.
fn validation(settings: &Settings, algorithm: Algorithm, leeway: u64) -> Validation {
    let mut validation = Validation::new(algorithm);
    validation.leeway = leeway;
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
    validation
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

    #[tokio::test]
    async fn a_verified_token_is_remembered_until_it_expires() {
        let (verifier, signer) = pair();
        let token = signer
            .mint("backend", "events:publish", Duration::from_secs(60))
            .expect("token");
        let first = verifier.verify(&token).await.expect("valid");
        assert_eq!(first.subject, "backend");
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let valid_until = verifier.verified.lock().unwrap()[&digest].valid_until;
        let expected = jsonwebtoken::get_current_timestamp() + 60 + verifier.leeway;
        assert!(
            valid_until.abs_diff(expected) <= 2,
            "{valid_until} vs {expected}"
        );
        assert_eq!(
            verifier.recall(&digest, valid_until, 0),
            Some(first.clone())
        );
        assert_eq!(
            verifier.recall(&digest, valid_until + 1, 0),
            None,
            "expired"
        );
        assert_eq!(
            verifier.recall(&digest, valid_until, 1),
            None,
            "another key set"
        );
        assert_eq!(verifier.verify(&token).await.expect("remembered"), first);
    }

    #[tokio::test]
    async fn a_token_that_fails_is_not_remembered() {
        let (verifier, signer) = pair();
        let token = signer
            .mint("backend", "events:publish", Duration::from_secs(60))
            .expect("token");
        let forged = format!("{}x", &token[..token.len() - 1]);
        for _ in 0..2 {
            assert!(verifier.verify(&forged).await.is_err());
        }
        assert!(verifier.verified.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn refusals_say_what_is_wrong_in_plain_words() {
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
                "the token's claims have the wrong types (sub and scope are strings, exp and iat numbers)",
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
            let refused = verifier.verify(&token).await.expect_err(expected);
            assert_eq!(refused.to_string(), expected);
        }
    }
}
