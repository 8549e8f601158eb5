//! Where token keys come from when an identity provider publishes them (a JWKS, found
//! directly or by OpenID Connect discovery), and how much clock skew tokens are allowed.

use std::time::Duration;

use clap::Args;

use super::values::positive_duration;

/// The identity provider's settings, flattened into [`super::Settings`].
#[derive(Debug, Clone, Args)]
pub struct Identity {
    /// URL of the identity provider's key set (a JWKS), e.g.
    /// `https://sso.example/realms/game/protocol/openid-connect/certs`. Tokens are then
    /// verified with its RS256, ES256 and EdDSA keys, chosen by `kid`. Excludes JWT_SECRET
    /// and JWT_PUBLIC_KEY_FILE.
    #[arg(long, env = "JWT_JWKS_URL", global = true)]
    pub jwt_jwks_url: Option<String>,

    /// Find the key set by OpenID Connect discovery: `<JWT_ISSUER>/.well-known/openid-configuration`
    /// names it (`jwks_uri`). Needs JWT_ISSUER; excludes JWT_JWKS_URL.
    #[arg(long, env = "JWT_OIDC_DISCOVERY", default_value_t = false, action = clap::ArgAction::Set, global = true)]
    pub jwt_oidc_discovery: bool,

    /// Shortest time between two fetches of the key set caused by tokens naming an unknown
    /// `kid`: a flood of made-up `kid`s costs the provider one fetch per interval.
    #[arg(long, env = "JWT_JWKS_MIN_REFRESH", default_value = "30s", value_parser = positive_duration, global = true)]
    pub jwt_jwks_min_refresh: Duration,

    /// Shortest time a fetched key set is kept before it is fetched again, whatever the
    /// provider's `Cache-Control` says (also the lifetime when it says nothing).
    #[arg(long, env = "JWT_JWKS_CACHE_MIN", default_value = "1m", value_parser = positive_duration, global = true)]
    pub jwt_jwks_cache_min: Duration,

    /// Longest time a fetched key set is kept: a key the provider removed stops verifying
    /// tokens no later than this.
    #[arg(long, env = "JWT_JWKS_CACHE_MAX", default_value = "1h", value_parser = positive_duration, global = true)]
    pub jwt_jwks_cache_max: Duration,

    /// Clock skew allowed when checking `exp`, `nbf` and `iat`: a token is accepted until
    /// `exp + JWT_LEEWAY`, and refused when its `iat` is more than this in the future.
    #[arg(long, env = "JWT_LEEWAY", default_value = "5s", value_parser = humantime::parse_duration, global = true)]
    pub jwt_leeway: Duration,
}
