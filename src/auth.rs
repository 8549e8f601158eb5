//! Bearer tokens: verifying them into a [`Principal`], and minting them for the `token`
//! command. The accepted algorithms follow the configured key; `none` never passes.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::config::Settings;
use crate::domain::{Principal, Scopes};

/// Used when no key is configured, so a newcomer can try the gateway at once.
/// `GATEWAY_ENV=production` refuses to start with it.
pub const DEVELOPMENT_SECRET: &str = "event-gateway-development-secret-change-me";

/// Leeway for `exp` and `nbf`, for clocks that disagree a little.
const CLOCK_LEEWAY_SECS: u64 = 30;

/// What the gateway reads from a token; `exp`, `nbf`, `iss` and `aud` (a string or an
/// array) are checked by the validation itself.
#[derive(Debug, Deserialize)]
struct Claims {
    sub: String,
    #[serde(default)]
    scope: String,
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
        })
    }

    pub fn source(&self) -> KeySource {
        self.source
    }

    /// The principal a valid token speaks for; any failure is a reason to answer 401.
    pub fn verify(&self, token: &str) -> Result<Principal, jsonwebtoken::errors::Error> {
        let claims = jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation)?.claims;
        if claims.sub.is_empty() || claims.sub.contains('\0') {
            return Err(jsonwebtoken::errors::ErrorKind::InvalidSubject.into());
        }
        Ok(Principal {
            scopes: Scopes::parse(&claims.scope),
            subject: claims.sub,
        })
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
