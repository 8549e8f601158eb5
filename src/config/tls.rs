//! TLS to RabbitMQ, Redis and PostgreSQL: the settings (a CA file, a client certificate and
//! key per dependency), their files read and checked at start, and what each connection is
//! told. Plain text stays the default for the local services; TLS settings next to a
//! plain-text address are an error, never a silent downgrade.

use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::{Context, anyhow, bail};
use clap::Args;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use url::Url;

use super::{Secret, Settings};

mod database;

pub use database::{DatabaseEndpoint, SslMode};

/// The TLS settings of the three dependencies. Every file is PEM.
#[derive(Debug, Clone, Default, Args)]
pub struct TlsSettings {
    /// CA certificates RabbitMQ's certificate must chain to (with `amqps://` in AMQP_URL),
    /// trusted besides the built-in public roots.
    #[arg(long, env = "AMQP_TLS_CA_FILE", global = true)]
    pub amqp_tls_ca_file: Option<PathBuf>,

    /// Client certificate (chain) for mutual TLS with RabbitMQ; needs AMQP_TLS_KEY_FILE.
    #[arg(long, env = "AMQP_TLS_CERT_FILE", global = true)]
    pub amqp_tls_cert_file: Option<PathBuf>,

    /// Private key of AMQP_TLS_CERT_FILE (PKCS#8, PKCS#1 or SEC1, unencrypted).
    #[arg(long, env = "AMQP_TLS_KEY_FILE", global = true)]
    pub amqp_tls_key_file: Option<PathBuf>,

    /// Connect to Redis over TLS (`rediss://`), checking its certificate against REDIS_HOST.
    #[arg(long, env = "REDIS_TLS", default_value_t = false, action = clap::ArgAction::Set, global = true)]
    pub redis_tls: bool,

    /// CA certificates Redis's certificate must chain to (with REDIS_TLS); replaces the
    /// built-in public roots.
    #[arg(long, env = "REDIS_TLS_CA_FILE", global = true)]
    pub redis_tls_ca_file: Option<PathBuf>,

    /// Client certificate (chain) for mutual TLS with Redis; needs REDIS_TLS_KEY_FILE.
    #[arg(long, env = "REDIS_TLS_CERT_FILE", global = true)]
    pub redis_tls_cert_file: Option<PathBuf>,

    /// Private key of REDIS_TLS_CERT_FILE.
    #[arg(long, env = "REDIS_TLS_KEY_FILE", global = true)]
    pub redis_tls_key_file: Option<PathBuf>,

    /// CA certificates PostgreSQL's certificate must chain to (`sslrootcert`), trusted
    /// besides the built-in public roots; without an `sslmode` in DATABASE_URL it means
    /// `verify-full`.
    #[arg(long, env = "DATABASE_TLS_CA_FILE", global = true)]
    pub database_tls_ca_file: Option<PathBuf>,

    /// Client certificate for PostgreSQL (`sslcert`); needs DATABASE_TLS_KEY_FILE.
    #[arg(long, env = "DATABASE_TLS_CERT_FILE", global = true)]
    pub database_tls_cert_file: Option<PathBuf>,

    /// Private key of DATABASE_TLS_CERT_FILE (`sslkey`).
    #[arg(long, env = "DATABASE_TLS_KEY_FILE", global = true)]
    pub database_tls_key_file: Option<PathBuf>,
}

/// What a TLS connection trusts and presents, read from the files at start.
#[derive(Clone, Default)]
pub struct ClientTls {
    /// The CA certificates to trust, as PEM; `None`: the built-in public roots only.
    pub ca_pem: Option<String>,
    pub identity: Option<ClientIdentity>,
}

/// A client certificate chain and its key, as PEM.
#[derive(Clone)]
pub struct ClientIdentity {
    pub cert_pem: Vec<u8>,
    pub key_pem: Vec<u8>,
}

/// Never the key: only what is set.
impl fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientTls")
            .field("ca", &self.ca_pem.as_ref().map(|_| "set"))
            .field("identity", &self.identity.as_ref().map(|_| "set"))
            .finish()
    }
}

/// Where RabbitMQ is and how: `tls` is set exactly when the URL is `amqps://`.
#[derive(Debug, Clone)]
pub struct BrokerEndpoint {
    pub url: Secret,
    pub tls: Option<ClientTls>,
}

/// Where Redis is and how: `tls` is set exactly when REDIS_TLS is.
#[derive(Debug, Clone)]
pub struct RedisEndpoint {
    pub url: Secret,
    pub tls: Option<ClientTls>,
}

/// The three connections, checked at start.
#[derive(Debug, Clone)]
pub struct Endpoints {
    pub broker: BrokerEndpoint,
    pub redis: RedisEndpoint,
    pub database: DatabaseEndpoint,
}

impl Settings {
    /// The connections these settings describe, with every TLS file read and checked: an
    /// error names the setting and the path (never a file's contents or a URL).
    pub fn endpoints(&self) -> anyhow::Result<Endpoints> {
        Ok(Endpoints {
            broker: self.broker_endpoint()?,
            redis: self.redis_endpoint()?,
            database: self.database_endpoint()?,
        })
    }

    fn broker_endpoint(&self) -> anyhow::Result<BrokerEndpoint> {
        let tls = &self.tls;
        let url = Url::parse(self.amqp_url.expose())
            .map_err(|error| anyhow!("AMQP_URL is not a valid URL: {error}"))?;
        let files = [
            ("AMQP_TLS_CA_FILE", &tls.amqp_tls_ca_file),
            ("AMQP_TLS_CERT_FILE", &tls.amqp_tls_cert_file),
            ("AMQP_TLS_KEY_FILE", &tls.amqp_tls_key_file),
        ];
        let secure = match url.scheme() {
            "amqps" => true,
            "amqp" => {
                refuse_plain_text(&files, "AMQP_URL is amqp:// (plain text): use amqps://")?;
                false
            }
            _ => bail!("AMQP_URL must start with amqp:// or amqps://"),
        };
        let client = secure
            .then(|| {
                client_tls(
                    ("AMQP_TLS_CA_FILE", tls.amqp_tls_ca_file.as_deref()),
                    ("AMQP_TLS_CERT_FILE", tls.amqp_tls_cert_file.as_deref()),
                    ("AMQP_TLS_KEY_FILE", tls.amqp_tls_key_file.as_deref()),
                )
            })
            .transpose()?;
        Ok(BrokerEndpoint {
            url: self.amqp_url.clone(),
            tls: client,
        })
    }

    fn redis_endpoint(&self) -> anyhow::Result<RedisEndpoint> {
        let tls = &self.tls;
        let files = [
            ("REDIS_TLS_CA_FILE", &tls.redis_tls_ca_file),
            ("REDIS_TLS_CERT_FILE", &tls.redis_tls_cert_file),
            ("REDIS_TLS_KEY_FILE", &tls.redis_tls_key_file),
        ];
        if !tls.redis_tls {
            refuse_plain_text(&files, "REDIS_TLS is false: set REDIS_TLS=true")?;
        }
        let client = tls
            .redis_tls
            .then(|| {
                client_tls(
                    ("REDIS_TLS_CA_FILE", tls.redis_tls_ca_file.as_deref()),
                    ("REDIS_TLS_CERT_FILE", tls.redis_tls_cert_file.as_deref()),
                    ("REDIS_TLS_KEY_FILE", tls.redis_tls_key_file.as_deref()),
                )
            })
            .transpose()?;
        let url = self
            .redis_url()
            .parse()
            .map_err(|_| anyhow!("REDIS_HOST must not be empty"))?;
        Ok(RedisEndpoint { url, tls: client })
    }
}

/// TLS files next to a plain-text address: the operator asked for TLS, so no connection.
fn refuse_plain_text(
    files: &[(&'static str, &Option<PathBuf>)],
    remedy: &str,
) -> anyhow::Result<()> {
    match files.iter().find(|(_, path)| path.is_some()) {
        Some((setting, _)) => bail!(
            "{setting} is set but {remedy}; the gateway never connects in plain text when TLS is configured"
        ),
        None => Ok(()),
    }
}

/// Reads and checks a CA file and a client certificate and key.
pub(super) fn client_tls(
    ca: (&'static str, Option<&Path>),
    cert: (&'static str, Option<&Path>),
    key: (&'static str, Option<&Path>),
) -> anyhow::Result<ClientTls> {
    let ca_pem = ca.1.map(|path| read_ca(ca.0, path)).transpose()?;
    let identity = match (cert.1, key.1) {
        (Some(cert_path), Some(key_path)) => {
            Some(read_identity((cert.0, cert_path), (key.0, key_path))?)
        }
        (None, None) => None,
        (Some(_), None) => bail!("{} is set without {}", cert.0, key.0),
        (None, Some(_)) => bail!("{} is set without {}", key.0, cert.0),
    };
    Ok(ClientTls { ca_pem, identity })
}

fn read(setting: &str, path: &Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("{setting} ({}): cannot read it", path.display()))
}

fn certificates(
    setting: &str,
    path: &Path,
    pem: &[u8],
) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let certificates = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| anyhow!("{setting} ({}): not a PEM certificate file", path.display()))?;
    if certificates.is_empty() {
        bail!(
            "{setting} ({}): no certificate in it (expected PEM blocks 'BEGIN CERTIFICATE')",
            path.display()
        );
    }
    Ok(certificates)
}

/// A CA file: PEM certificates that each parse as a trust anchor.
pub(super) fn read_ca(setting: &str, path: &Path) -> anyhow::Result<String> {
    let pem = read(setting, path)?;
    let mut roots = rustls::RootCertStore::empty();
    for (index, certificate) in certificates(setting, path, &pem)?.into_iter().enumerate() {
        roots.add(certificate).map_err(|error| {
            anyhow!(
                "{setting} ({}): certificate {} is not a usable CA certificate ({error})",
                path.display(),
                index + 1
            )
        })?;
    }
    String::from_utf8(pem)
        .map_err(|_| anyhow!("{setting} ({}): not a PEM text file", path.display()))
}

/// A certificate chain and the key that goes with it (checked against each other).
fn read_identity(cert: (&str, &Path), key: (&str, &Path)) -> anyhow::Result<ClientIdentity> {
    let cert_pem = read(cert.0, cert.1)?;
    let chain = certificates(cert.0, cert.1, &cert_pem)?;
    let key_pem = read(key.0, key.1)?;
    // The parser's error could quote a line of the key file: it is not repeated.
    let private_key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|_| {
        anyhow!(
            "{} ({}): no unencrypted PEM private key in it (PKCS#8, PKCS#1 or SEC1)",
            key.0,
            key.1.display()
        )
    })?;
    let provider = rustls::crypto::aws_lc_rs::default_provider();
    rustls::sign::CertifiedKey::from_der(chain, private_key, &provider).map_err(|error| {
        anyhow!(
            "{} ({}) does not fit {} ({}): {error}",
            key.0,
            key.1.display(),
            cert.0,
            cert.1.display()
        )
    })?;
    Ok(ClientIdentity { cert_pem, key_pem })
}

#[cfg(test)]
mod tests;
