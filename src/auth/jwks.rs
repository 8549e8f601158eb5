//! Fetching an identity provider's key set (RFC 7517), directly or by OpenID Connect
//! discovery, and reading the keys the gateway can verify with out of it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use jsonwebtoken::{Algorithm, DecodingKey};
use serde::Deserialize;
use serde_json::Value;
use tracing::debug;

/// Longest a fetch (connecting, the headers and the body) may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

/// Largest key set or discovery document read; a provider's is a few KiB.
const MAX_BODY_BYTES: usize = 512 * 1024;

/// A key of the set, with the one algorithm it verifies.
pub struct PublicKey {
    pub key: DecodingKey,
    pub algorithm: Algorithm,
}

/// The keys of a fetched set by `kid`, and how long the provider lets it be cached.
pub struct Fetched {
    pub keys: HashMap<String, Arc<PublicKey>>,
    /// `max-age` of its `Cache-Control`, zero for `no-cache` or `no-store`.
    pub max_age: Option<Duration>,
    /// A digest of the usable keys, to tell a changed set from the same one fetched again.
    pub fingerprint: [u8; 32],
}

/// Where the key set is.
#[derive(Debug, Clone)]
pub enum KeySetSource {
    Url(String),
    /// `<issuer>/.well-known/openid-configuration` names it.
    Discovery {
        issuer: String,
    },
}

/// Fetches the key set; with discovery, the `jwks_uri` found first is kept.
pub struct KeySetClient {
    http: reqwest::Client,
    source: KeySetSource,
    discovered: tokio::sync::OnceCell<String>,
}

impl KeySetClient {
    pub fn new(source: KeySetSource) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(FETCH_TIMEOUT)
            .connect_timeout(FETCH_TIMEOUT)
            .build()
            .context("building the HTTP client for the identity provider")?;
        Ok(KeySetClient {
            http,
            source,
            discovered: tokio::sync::OnceCell::new(),
        })
    }

    /// The key set as the provider publishes it now.
    pub async fn fetch(&self) -> anyhow::Result<Fetched> {
        let url = self.key_set_url().await?;
        let (body, max_age) = self.get(url).await?;
        let keys = usable_keys(&body).with_context(|| format!("{url} is not a JWKS"))?;
        Ok(Fetched {
            fingerprint: fingerprint(&keys),
            keys: keys.into_iter().map(|(kid, (key, _))| (kid, key)).collect(),
            max_age,
        })
    }

    async fn key_set_url(&self) -> anyhow::Result<&str> {
        match &self.source {
            KeySetSource::Url(url) => Ok(url),
            KeySetSource::Discovery { issuer } => self
                .discovered
                .get_or_try_init(|| self.discover(issuer))
                .await
                .map(String::as_str),
        }
    }

    /// OpenID Connect Discovery 1.0 §4: the document must name the same issuer.
    async fn discover(&self, issuer: &str) -> anyhow::Result<String> {
        #[derive(Deserialize)]
        struct Configuration {
            issuer: String,
            jwks_uri: String,
        }
        let url = format!(
            "{}/.well-known/openid-configuration",
            issuer.trim_end_matches('/')
        );
        let (body, _) = self.get(&url).await?;
        let configuration: Configuration = serde_json::from_slice(&body)
            .with_context(|| format!("{url} has no issuer and jwks_uri"))?;
        if configuration.issuer != issuer {
            bail!(
                "{url} names the issuer {:?}, not JWT_ISSUER {issuer:?}",
                configuration.issuer
            );
        }
        Ok(configuration.jwks_uri)
    }

    /// The body (at most [`MAX_BODY_BYTES`]) of a 200 answer, and its `max-age`.
    async fn get(&self, url: &str) -> anyhow::Result<(Vec<u8>, Option<Duration>)> {
        let mut response = self
            .http
            .get(url)
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
            .with_context(|| format!("fetching {url}"))?;
        if !response.status().is_success() {
            bail!("{url} answered {}", response.status());
        }
        let max_age = response
            .headers()
            .get(reqwest::header::CACHE_CONTROL)
            .and_then(|value| value.to_str().ok())
            .and_then(max_age);
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .with_context(|| format!("reading {url}"))?
        {
            if body.len() + chunk.len() > MAX_BODY_BYTES {
                bail!("{url} sent more than {MAX_BODY_BYTES} bytes");
            }
            body.extend_from_slice(&chunk);
        }
        Ok((body, max_age))
    }
}

/// `max-age` of a `Cache-Control` value; `no-cache` and `no-store` are zero.
pub fn max_age(cache_control: &str) -> Option<Duration> {
    let mut age = None;
    for directive in cache_control.split(',').map(str::trim) {
        let (name, value) = directive.split_once('=').unwrap_or((directive, ""));
        match name.to_ascii_lowercase().as_str() {
            "no-cache" | "no-store" => return Some(Duration::ZERO),
            "max-age" => {
                age = value
                    .trim_matches('"')
                    .parse()
                    .ok()
                    .map(Duration::from_secs)
            }
            _ => {}
        }
    }
    age
}

/// One JWK, with the members the gateway reads.
#[derive(Deserialize)]
struct Jwk {
    kty: String,
    kid: Option<String>,
    #[serde(rename = "use")]
    usage: Option<String>,
    alg: Option<String>,
    crv: Option<String>,
    n: Option<String>,
    e: Option<String>,
    x: Option<String>,
    y: Option<String>,
}

type Usable = (Arc<PublicKey>, String);

/// The keys of a JWKS that sign tokens with an algorithm the gateway accepts; others
/// (encryption keys, HS* or `none`, other curves, keys without a `kid`) are skipped.
fn usable_keys(body: &[u8]) -> anyhow::Result<HashMap<String, Usable>> {
    #[derive(Deserialize)]
    struct KeySet {
        keys: Vec<Value>,
    }
    let set: KeySet = serde_json::from_slice(body).context("no \"keys\" array")?;
    let mut usable = HashMap::new();
    for value in set.keys {
        let text = value.to_string();
        match serde_json::from_value::<Jwk>(value).map_err(anyhow::Error::from) {
            Ok(jwk) => match public_key(&jwk) {
                Ok((kid, key)) => {
                    usable.insert(kid, (Arc::new(key), text));
                }
                Err(why) => debug!(kid = jwk.kid, %why, "key set: key skipped"),
            },
            Err(why) => debug!(%why, "key set: key skipped"),
        }
    }
    Ok(usable)
}

fn public_key(jwk: &Jwk) -> anyhow::Result<(String, PublicKey)> {
    let Some(kid) = jwk.kid.clone() else {
        bail!("no kid");
    };
    if jwk.usage.as_deref().is_some_and(|usage| usage != "sig") {
        bail!("not a signing key");
    }
    let part = |value: &Option<String>, name: &str| {
        value
            .as_deref()
            .with_context(|| format!("no {name}"))
            .map(str::to_owned)
    };
    let (key, algorithm) = match (jwk.kty.as_str(), jwk.crv.as_deref()) {
        ("RSA", _) => (
            DecodingKey::from_rsa_components(&part(&jwk.n, "n")?, &part(&jwk.e, "e")?)?,
            Algorithm::RS256,
        ),
        ("EC", Some("P-256")) => (
            DecodingKey::from_ec_components(&part(&jwk.x, "x")?, &part(&jwk.y, "y")?)?,
            Algorithm::ES256,
        ),
        ("OKP", Some("Ed25519")) => (
            DecodingKey::from_ed_components(&part(&jwk.x, "x")?)?,
            Algorithm::EdDSA,
        ),
        (kty, crv) => bail!("kty {kty} with crv {crv:?} is not accepted"),
    };
    let named = format!("{algorithm:?}");
    if jwk.alg.as_deref().is_some_and(|alg| alg != named) {
        bail!("alg {:?} is not accepted for this key", jwk.alg);
    }
    Ok((kid, PublicKey { key, algorithm }))
}

fn fingerprint(keys: &HashMap<String, Usable>) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    let mut kids: Vec<&String> = keys.keys().collect();
    kids.sort();
    let mut digest = Sha256::new();
    for kid in kids {
        digest.update(kid.as_bytes());
        digest.update(keys[kid].1.as_bytes());
    }
    digest.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_control_gives_the_max_age() {
        assert_eq!(
            max_age("public, max-age=300"),
            Some(Duration::from_secs(300))
        );
        assert_eq!(max_age("no-cache"), Some(Duration::ZERO));
        assert_eq!(max_age("max-age=60, no-store"), Some(Duration::ZERO));
        assert_eq!(max_age("public"), None);
        assert_eq!(max_age("max-age=soon"), None);
    }

    #[test]
    fn only_signing_keys_of_accepted_algorithms_are_kept() {
        let x = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo";
        let keys = serde_json::json!({"keys": [
            {"kty": "OKP", "crv": "Ed25519", "kid": "ok", "x": x},
            {"kty": "OKP", "crv": "Ed25519", "kid": "ok-alg", "alg": "EdDSA", "use": "sig", "x": x},
            {"kty": "OKP", "crv": "Ed25519", "kid": "enc", "use": "enc", "x": x},
            {"kty": "OKP", "crv": "Ed25519", "kid": "wrong-alg", "alg": "RS256", "x": x},
            {"kty": "OKP", "crv": "Ed25519", "x": x},
            {"kty": "oct", "kid": "hmac", "k": "c2VjcmV0"},
            {"kty": "EC", "crv": "P-384", "kid": "p384", "x": x, "y": x},
            {"kty": "RSA", "kid": "no-n", "e": "AQAB"},
            "not an object",
        ]});
        let usable = usable_keys(keys.to_string().as_bytes()).expect("a key set");
        let mut kids: Vec<&str> = usable.keys().map(String::as_str).collect();
        kids.sort();
        assert_eq!(kids, ["ok", "ok-alg"]);
        assert_eq!(usable["ok"].0.algorithm, Algorithm::EdDSA);
        assert!(usable_keys(b"{\"keys\": 1}").is_err());
    }
}
