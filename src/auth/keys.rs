//! Which keys verify tokens, from the settings: one local key (a secret or a PEM file),
//! or the identity provider's key set.

use std::sync::Arc;

use anyhow::{Context, bail};
use jsonwebtoken::{Algorithm, DecodingKey};

use super::jwks::{KeySetClient, KeySetSource, PublicKey};
use super::keyset::{RefreshPolicy, RemoteKeys};
use super::{DEVELOPMENT_SECRET, KeySource};
use crate::config::{GatewayEnv, Settings};

pub enum Keys {
    Local(Arc<PublicKey>, KeySource),
    Remote(Arc<RemoteKeys>),
}

impl Keys {
    pub fn from_settings(settings: &Settings) -> anyhow::Result<Self> {
        if let Some(source) = key_set_source(settings)? {
            let identity = &settings.identity;
            if identity.jwt_jwks_cache_min > identity.jwt_jwks_cache_max {
                bail!(
                    "JWT_JWKS_CACHE_MIN ({}) is longer than JWT_JWKS_CACHE_MAX ({}): the floor must not exceed the ceiling",
                    humantime::format_duration(identity.jwt_jwks_cache_min),
                    humantime::format_duration(identity.jwt_jwks_cache_max)
                );
            }
            let policy = RefreshPolicy {
                min_refresh: identity.jwt_jwks_min_refresh,
                cache_min: identity.jwt_jwks_cache_min,
                cache_max: identity.jwt_jwks_cache_max,
            };
            let client = KeySetClient::new(source)?;
            return Ok(Keys::Remote(Arc::new(RemoteKeys::new(client, policy))));
        }
        let (key, algorithm, source) = match (&settings.jwt_public_key_file, &settings.jwt_secret) {
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
                (key, algorithm, KeySource::PublicKeyFile)
            }
            (None, Some(secret)) => (
                DecodingKey::from_secret(secret.expose().as_bytes()),
                Algorithm::HS256,
                KeySource::Secret,
            ),
            (None, None) => (
                DecodingKey::from_secret(DEVELOPMENT_SECRET.as_bytes()),
                Algorithm::HS256,
                KeySource::DevelopmentSecret,
            ),
        };
        Ok(Keys::Local(Arc::new(PublicKey { key, algorithm }), source))
    }

    pub fn source(&self) -> KeySource {
        match self {
            Keys::Local(_, source) => *source,
            Keys::Remote(_) => KeySource::IdentityProvider,
        }
    }

    pub fn remote(&self) -> Option<Arc<RemoteKeys>> {
        match self {
            Keys::Local(..) => None,
            Keys::Remote(remote) => Some(remote.clone()),
        }
    }

    /// The generation of the keys held: always 0 for a local key; none while the
    /// provider's set has not been fetched yet.
    pub fn generation(&self) -> Option<u64> {
        match self {
            Keys::Local(..) => Some(0),
            Keys::Remote(remote) => remote.generation(),
        }
    }
}

/// Where the identity provider's key set is, if tokens are verified with one; the error
/// names the settings that do not fit together.
pub fn key_set_source(settings: &Settings) -> anyhow::Result<Option<KeySetSource>> {
    let identity = &settings.identity;
    let source = match (&identity.jwt_jwks_url, identity.jwt_oidc_discovery) {
        (None, false) => return Ok(None),
        (Some(_), true) => {
            bail!("JWT_JWKS_URL and JWT_OIDC_DISCOVERY=true both say where the key set is; set one")
        }
        (Some(url), false) => KeySetSource::Url(checked_url("JWT_JWKS_URL", url, settings)?),
        (None, true) => {
            let Some(issuer) = &settings.jwt_issuer else {
                bail!("JWT_OIDC_DISCOVERY=true needs JWT_ISSUER, the URL discovery starts from");
            };
            KeySetSource::Discovery {
                issuer: checked_url("JWT_ISSUER", issuer, settings)?,
            }
        }
    };
    if settings.jwt_secret.is_some() || settings.jwt_public_key_file.is_some() {
        bail!(
            "JWT_JWKS_URL / JWT_OIDC_DISCOVERY cannot be combined with JWT_SECRET or JWT_PUBLIC_KEY_FILE: \
             tokens are verified either with the identity provider's keys or with a local key; unset one"
        );
    }
    Ok(Some(source))
}

/// An http(s) URL; production accepts only https, as keys fetched in the clear could be
/// anyone's.
fn checked_url(name: &str, url: &str, settings: &Settings) -> anyhow::Result<String> {
    let https = url.starts_with("https://");
    if !https && !url.starts_with("http://") {
        bail!("{name} must be an http:// or https:// URL");
    }
    if !https && settings.gateway_env == GatewayEnv::Production {
        bail!(
            "GATEWAY_ENV=production needs an https:// {name}: keys fetched in the clear could be anyone's"
        );
    }
    Ok(url.to_owned())
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
    use super::*;

    fn refusal(change: impl FnOnce(&mut Settings)) -> String {
        let mut settings = Settings::from_env().expect("settings");
        settings.jwt_secret = None;
        settings.jwt_public_key_file = None;
        change(&mut settings);
        match key_set_source(&settings) {
            Ok(source) => format!("accepted: {source:?}"),
            Err(error) => error.to_string(),
        }
    }

    #[test]
    fn settings_that_do_not_fit_together_are_refused_by_name() {
        let url = Some("https://sso.example/certs".to_owned());
        assert!(refusal(|s| s.identity.jwt_jwks_url = url.clone()).starts_with("accepted"));
        let both = refusal(|s| {
            s.identity.jwt_jwks_url = url.clone();
            s.jwt_secret = Some("secret".parse().expect("secret"));
        });
        assert!(
            both.starts_with(
                "JWT_JWKS_URL / JWT_OIDC_DISCOVERY cannot be combined with JWT_SECRET"
            ),
            "{both}"
        );
        let discovery = refusal(|s| {
            s.identity.jwt_oidc_discovery = true;
            s.jwt_issuer = None;
        });
        assert!(
            discovery.starts_with("JWT_OIDC_DISCOVERY=true needs JWT_ISSUER"),
            "{discovery}"
        );
        let twice = refusal(|s| {
            s.identity.jwt_jwks_url = url.clone();
            s.identity.jwt_oidc_discovery = true;
        });
        assert!(
            twice.starts_with("JWT_JWKS_URL and JWT_OIDC_DISCOVERY=true"),
            "{twice}"
        );
        let clear = refusal(|s| {
            s.identity.jwt_jwks_url = Some("http://sso.example/certs".into());
            s.gateway_env = GatewayEnv::Production;
        });
        assert!(
            clear.starts_with("GATEWAY_ENV=production needs an https:// JWT_JWKS_URL"),
            "{clear}"
        );
        let not_a_url = refusal(|s| s.identity.jwt_jwks_url = Some("sso.example/certs".into()));
        assert_eq!(not_a_url, "JWT_JWKS_URL must be an http:// or https:// URL");
    }
}
