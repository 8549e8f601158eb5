//! A small identity provider inside the test: it publishes a key set (JWKS) and an OpenID
//! Connect discovery document on 127.0.0.1, can swap its keys or fail, counts the
//! requests for its key set, and mints tokens with the fixture keys.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use tokio::net::TcpListener;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");

#[derive(Default)]
struct Published {
    base: String,
    kids: Mutex<Vec<String>>,
    failing: AtomicBool,
    key_set_requests: AtomicUsize,
    discovery_requests: AtomicUsize,
}

pub struct IdentityProvider {
    /// The issuer: discovery is at `<base>/.well-known/openid-configuration`.
    pub base: String,
    published: Arc<Published>,
    server: tokio::task::JoinHandle<()>,
}

impl IdentityProvider {
    /// A provider publishing the fixture keys named by `kids` (`rsa-1`, `ec-1`, `ed-1`).
    pub async fn start(kids: &[&str]) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let published = Arc::new(Published {
            base: base.clone(),
            ..Published::default()
        });
        let app = axum::Router::new()
            .route("/jwks", get(key_set))
            .route("/.well-known/openid-configuration", get(discovery))
            .with_state(published.clone());
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        let provider = IdentityProvider {
            base,
            published,
            server,
        };
        provider.publish(kids);
        provider
    }

    pub fn jwks_url(&self) -> String {
        format!("{}/jwks", self.base)
    }

    /// Publishes exactly these keys from now on.
    pub fn publish(&self, kids: &[&str]) {
        *self.published.kids.lock().unwrap() = kids.iter().map(|kid| kid.to_string()).collect();
    }

    /// Answers 500 (or serves again).
    pub fn fail(&self, failing: bool) {
        self.published.failing.store(failing, Ordering::SeqCst);
    }

    pub fn key_set_requests(&self) -> usize {
        self.published.key_set_requests.load(Ordering::SeqCst)
    }

    pub fn discovery_requests(&self) -> usize {
        self.published.discovery_requests.load(Ordering::SeqCst)
    }
}

impl Drop for IdentityProvider {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn key_set(State(published): State<Arc<Published>>) -> Response {
    published.key_set_requests.fetch_add(1, Ordering::SeqCst);
    if published.failing.load(Ordering::SeqCst) {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    }
    let all: Value = serde_json::from_str(
        &std::fs::read_to_string(format!("{FIXTURES}/jwks-public.json")).unwrap(),
    )
    .unwrap();
    let kids = published.kids.lock().unwrap().clone();
    let keys: Vec<Value> = all["keys"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|key| kids.iter().any(|kid| key["kid"] == kid.as_str()))
        .cloned()
        .collect();
    (
        [(header::CACHE_CONTROL, "public, max-age=3600")],
        Json(json!({ "keys": keys })),
    )
        .into_response()
}

async fn discovery(State(published): State<Arc<Published>>) -> Json<Value> {
    published.discovery_requests.fetch_add(1, Ordering::SeqCst);
    Json(json!({
        "issuer": published.base,
        "jwks_uri": format!("{}/jwks", published.base),
        "id_token_signing_alg_values_supported": ["RS256", "ES256", "EdDSA"],
    }))
}

/// A token signed with the fixture key `key` (`rsa-1`, `ec-1` or `ed-1`), its header
/// naming `kid` (the key's own, another, or none).
pub fn signed_by(key: &str, kid: Option<&str>, claims: &Value) -> String {
    let (file, algorithm) = match key {
        "rsa-1" => ("rs256-private.pem", Algorithm::RS256),
        "ec-1" => ("es256-private.pem", Algorithm::ES256),
        _ => ("ed25519-private.pem", Algorithm::EdDSA),
    };
    let pem = std::fs::read(format!("{FIXTURES}/{file}")).expect("fixture key");
    let encoding = match algorithm {
        Algorithm::RS256 => EncodingKey::from_rsa_pem(&pem),
        Algorithm::ES256 => EncodingKey::from_ec_pem(&pem),
        _ => EncodingKey::from_ed_pem(&pem),
    }
    .expect("fixture key");
    let mut header = Header::new(algorithm);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&header, claims, &encoding).expect("token")
}
