//! PostgreSQL's `sslmode`, settled from DATABASE_URL (as libpq reads it) and the
//! DATABASE_TLS_* settings, and written back into the URL sqlx is given.

use std::path::Path;

use anyhow::{anyhow, bail};
use url::{Host, Url};

use super::{TlsSettings, client_tls, read_ca};
use crate::config::{Secret, Settings};

/// PostgreSQL: the URL sqlx is given (with the `sslmode` and certificate files settled).
#[derive(Debug, Clone)]
pub struct DatabaseEndpoint {
    pub url: Secret,
    pub ssl_mode: SslMode,
    /// The server is on this machine (a loopback address or a Unix socket).
    pub local: bool,
}

/// libpq's `sslmode`s the gateway takes (`allow` is not one: sqlx connects in plain text
/// with it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }

    fn parse(text: &str, origin: &str) -> anyhow::Result<SslMode> {
        Ok(match text.to_ascii_lowercase().as_str() {
            "disable" => SslMode::Disable,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            "allow" => bail!(
                "sslmode=allow in {origin} is not supported (it would connect in plain text): use disable, prefer, require, verify-ca or verify-full"
            ),
            _ => bail!(
                "sslmode in {origin} must be disable, prefer, require, verify-ca or verify-full"
            ),
        })
    }
}

impl Settings {
    /// DATABASE_URL as sqlx is given it: the `sslmode` settled (see the README's
    /// Production section) and the DATABASE_TLS_* files in it, each file checked.
    pub fn database_endpoint(&self) -> anyhow::Result<DatabaseEndpoint> {
        let mut url = Url::parse(self.database_url.expose())
            .map_err(|error| anyhow!("DATABASE_URL is not a valid URL: {error}"))?;
        if !matches!(url.scheme(), "postgres" | "postgresql") {
            bail!("DATABASE_URL must start with postgres:// or postgresql://");
        }
        let tls = &self.tls;
        let query = Query::of(&url);
        let explicit = match (&query.ssl_mode, std::env::var("PGSSLMODE")) {
            (Some(mode), _) => Some(SslMode::parse(mode, "DATABASE_URL")?),
            (None, Ok(mode)) => Some(SslMode::parse(&mode, "PGSSLMODE")?),
            (None, Err(_)) => None,
        };
        let ca = tls
            .database_tls_ca_file
            .clone()
            .map(|path| ("DATABASE_TLS_CA_FILE", path))
            .or_else(|| {
                query
                    .root_cert
                    .clone()
                    .map(|path| ("sslrootcert in DATABASE_URL", path.into()))
            });
        if let Some((setting, path)) = &ca {
            read_ca(setting, path)?;
        }
        let identity = database_identity(tls, &query)?;
        let local = is_local(&url, &query);
        let ssl_mode = settle_ssl_mode(explicit, ca.is_some(), identity, local)?;
        rewrite_query(&mut url, ssl_mode, tls);
        Ok(DatabaseEndpoint {
            url: url
                .to_string()
                .parse()
                .map_err(|_| anyhow!("DATABASE_URL is empty"))?,
            ssl_mode,
            local,
        })
    }
}

/// The TLS-related parameters of a PostgreSQL URL, as sqlx reads them (the last one wins).
#[derive(Default)]
struct Query {
    ssl_mode: Option<String>,
    root_cert: Option<String>,
    client_cert: Option<String>,
    client_key: Option<String>,
    host: Option<String>,
}

const SSL_MODE_KEYS: [&str; 2] = ["sslmode", "ssl-mode"];
const ROOT_CERT_KEYS: [&str; 3] = ["sslrootcert", "ssl-root-cert", "ssl-ca"];
const CLIENT_CERT_KEYS: [&str; 2] = ["sslcert", "ssl-cert"];
const CLIENT_KEY_KEYS: [&str; 2] = ["sslkey", "ssl-key"];

impl Query {
    fn of(url: &Url) -> Query {
        let mut query = Query::default();
        for (key, value) in url.query_pairs() {
            let slot = match &*key {
                key if SSL_MODE_KEYS.contains(&key) => &mut query.ssl_mode,
                key if ROOT_CERT_KEYS.contains(&key) => &mut query.root_cert,
                key if CLIENT_CERT_KEYS.contains(&key) => &mut query.client_cert,
                key if CLIENT_KEY_KEYS.contains(&key) => &mut query.client_key,
                "host" | "hostaddr" => &mut query.host,
                _ => continue,
            };
            *slot = Some(value.into_owned());
        }
        query
    }
}

/// The client certificate and key, from the settings or else from the URL; `true` if set.
fn database_identity(tls: &TlsSettings, query: &Query) -> anyhow::Result<bool> {
    let from_settings = client_tls(
        ("DATABASE_TLS_CA_FILE", None),
        (
            "DATABASE_TLS_CERT_FILE",
            tls.database_tls_cert_file.as_deref(),
        ),
        (
            "DATABASE_TLS_KEY_FILE",
            tls.database_tls_key_file.as_deref(),
        ),
    )?;
    if from_settings.identity.is_some() {
        return Ok(true);
    }
    let cert = query.client_cert.as_deref().map(Path::new);
    let key = query.client_key.as_deref().map(Path::new);
    let from_url = client_tls(
        ("sslrootcert in DATABASE_URL", None),
        ("sslcert in DATABASE_URL", cert),
        ("sslkey in DATABASE_URL", key),
    )?;
    Ok(from_url.identity.is_some())
}

/// A loopback address, `localhost`, a Unix socket, or no host at all (sqlx's default).
fn is_local(url: &Url, query: &Query) -> bool {
    if let Some(host) = &query.host {
        return host.starts_with('/') || host == "localhost" || is_loopback(host);
    }
    match url.host() {
        None => true,
        // postgres:// is no special scheme: its host stays text, an IPv4 address included.
        Some(Host::Domain(domain)) => {
            domain == "localhost"
                || is_loopback(domain)
                || domain.to_ascii_lowercase().starts_with("%2f")
        }
        Some(Host::Ipv4(ip)) => ip.is_loopback(),
        Some(Host::Ipv6(ip)) => ip.is_loopback(),
    }
}

fn is_loopback(host: &str) -> bool {
    host.trim_matches(['[', ']'])
        .parse::<std::net::IpAddr>()
        .is_ok_and(|ip| ip.is_loopback())
}

/// The `sslmode` used: the URL's (or PGSSLMODE's); without one, `verify-full` when a CA is
/// given, `disable` for a local server and `prefer` (libpq's default) for any other. A CA
/// makes `require` into `verify-ca`, as libpq does; certificates next to a mode that never
/// checks them are an error.
fn settle_ssl_mode(
    explicit: Option<SslMode>,
    ca: bool,
    identity: bool,
    local: bool,
) -> anyhow::Result<SslMode> {
    let mode = match explicit {
        Some(SslMode::Require) if ca => SslMode::VerifyCa,
        Some(mode) => mode,
        None if ca => SslMode::VerifyFull,
        None if local => SslMode::Disable,
        None => SslMode::Prefer,
    };
    if mode == SslMode::Disable && (ca || identity) {
        bail!(
            "DATABASE_TLS_* (or sslrootcert/sslcert) is set but sslmode=disable: the gateway never connects in plain text when TLS is configured"
        );
    }
    if mode == SslMode::Prefer && ca {
        bail!(
            "a CA (DATABASE_TLS_CA_FILE or sslrootcert) is set but sslmode=prefer never checks the server's certificate: use sslmode=verify-full"
        );
    }
    Ok(mode)
}

/// Writes the settled `sslmode`, and the DATABASE_TLS_* files in place of the URL's own.
fn rewrite_query(url: &mut Url, ssl_mode: SslMode, tls: &TlsSettings) {
    let replaced = |key: &str| {
        SSL_MODE_KEYS.contains(&key)
            || (tls.database_tls_ca_file.is_some() && ROOT_CERT_KEYS.contains(&key))
            || (tls.database_tls_cert_file.is_some()
                && (CLIENT_CERT_KEYS.contains(&key) || CLIENT_KEY_KEYS.contains(&key)))
    };
    let kept: Vec<(String, String)> = url
        .query_pairs()
        .filter(|(key, _)| !replaced(key))
        .map(|(key, value)| (key.into_owned(), value.into_owned()))
        .collect();
    let mut pairs = url.query_pairs_mut();
    pairs.clear();
    for (key, value) in &kept {
        pairs.append_pair(key, value);
    }
    pairs.append_pair("sslmode", ssl_mode.as_str());
    let files = [
        ("sslrootcert", &tls.database_tls_ca_file),
        ("sslcert", &tls.database_tls_cert_file),
        ("sslkey", &tls.database_tls_key_file),
    ];
    for (key, path) in files {
        if let Some(path) = path {
            pairs.append_pair(key, &path.to_string_lossy());
        }
    }
}
