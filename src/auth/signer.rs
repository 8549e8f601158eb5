//! Minting tokens with the configured key, for the `token` command and for tests.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::Serialize;

use super::DEVELOPMENT_SECRET;
use crate::config::Settings;

const TTL_ABOVE_ZERO: &str =
    "must be longer than zero: a token with no lifetime is expired when it is issued";

/// The `token` command's `--ttl`: a duration such as `15m` or `1h`, longer than zero.
pub fn parse_ttl(text: &str) -> Result<Duration, String> {
    if text.trim_start().starts_with('-') {
        return Err(TTL_ABOVE_ZERO.into());
    }
    match humantime::parse_duration(text) {
        Ok(ttl) if ttl.is_zero() => Err(TTL_ABOVE_ZERO.into()),
        Ok(ttl) => Ok(ttl),
        Err(error) => Err(error.to_string()),
    }
}

/// What the `token` command writes.
#[derive(Debug, Serialize)]
struct MintedClaims<'a> {
    sub: &'a str,
    scope: &'a str,
    exp: u64,
    iat: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    iss: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    aud: Option<&'a str>,
}

fn encoding_key_from_pem(pem: &[u8]) -> anyhow::Result<(EncodingKey, Algorithm)> {
    if let Ok(key) = EncodingKey::from_rsa_pem(pem) {
        return Ok((key, Algorithm::RS256));
    }
    if let Ok(key) = EncodingKey::from_ec_pem(pem) {
        return Ok((key, Algorithm::ES256));
    }
    Ok((EncodingKey::from_ed_pem(pem)?, Algorithm::EdDSA))
}

/// Mints tokens with the configured key, for the `token` command and for tests.
pub struct TokenSigner {
    key: EncodingKey,
    algorithm: Algorithm,
    issuer: Option<String>,
    audience: Option<String>,
}

impl TokenSigner {
    pub fn from_settings(settings: &Settings) -> anyhow::Result<Self> {
        if settings.identity.jwt_jwks_url.is_some() || settings.identity.jwt_oidc_discovery {
            bail!(
                "tokens come from the identity provider (JWT_JWKS_URL / JWT_OIDC_DISCOVERY); \
                 the token command signs only with a local key: unset those to mint \
                 development tokens with JWT_SECRET or JWT_PRIVATE_KEY_FILE"
            );
        }
        let (key, algorithm) = match (&settings.jwt_public_key_file, &settings.jwt_secret) {
            (Some(_), _) => {
                let Some(path) = &settings.jwt_private_key_file else {
                    bail!(
                        "JWT_PUBLIC_KEY_FILE is set: minting a token needs JWT_PRIVATE_KEY_FILE too"
                    );
                };
                let pem = std::fs::read(path).with_context(|| {
                    format!("JWT_PRIVATE_KEY_FILE: cannot read {}", path.display())
                })?;
                encoding_key_from_pem(&pem).with_context(|| {
                    format!(
                        "JWT_PRIVATE_KEY_FILE: {} is not an RSA, EC or Ed25519 private key",
                        path.display()
                    )
                })?
            }
            (None, Some(secret)) => (
                EncodingKey::from_secret(secret.expose().as_bytes()),
                Algorithm::HS256,
            ),
            (None, None) => (
                EncodingKey::from_secret(DEVELOPMENT_SECRET.as_bytes()),
                Algorithm::HS256,
            ),
        };
        Ok(TokenSigner {
            key,
            algorithm,
            issuer: settings.jwt_issuer.clone(),
            audience: settings.jwt_audience.clone(),
        })
    }

    /// A token for `subject` with `scope`, valid for `ttl` from now.
    pub fn mint(&self, subject: &str, scope: &str, ttl: Duration) -> anyhow::Result<String> {
        anyhow::ensure!(!ttl.is_zero(), "--ttl {TTL_ABOVE_ZERO}");
        anyhow::ensure!(
            !subject.starts_with(crate::domain::WEBHOOK_SUBJECT_PREFIX),
            "--sub may not start with {}, which names webhook senders",
            crate::domain::WEBHOOK_SUBJECT_PREFIX
        );
        let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
        let claims = MintedClaims {
            sub: subject,
            scope,
            exp: now + ttl.as_secs(),
            iat: now,
            iss: self.issuer.as_deref(),
            aud: self.audience.as_deref(),
        };
        Ok(jsonwebtoken::encode(
            &Header::new(self.algorithm),
            &claims,
            &self.key,
        )?)
    }
}
