//! Where RabbitMQ is and how to reach it: AMQP_URL parsed once at start, and for
//! `amqps://` the TLS configuration (CA file and client certificate, on rustls; the server's
//! certificate is checked against the URL's host).

use std::fmt;
use std::io::ErrorKind;

use anyhow::anyhow;
use lapin::tcp::{OwnedIdentity, OwnedTLSConfig};
use lapin::uri::{AMQPScheme, AMQPUri};
use lapin::{Connection, ConnectionProperties};

use crate::config::BrokerEndpoint;
use crate::runtime::reason::TlsFailure;

/// Cheap to clone; its `Debug` shows neither the password nor the key.
#[derive(Clone)]
pub struct Broker {
    uri: AMQPUri,
    tls: OwnedTLSConfig,
}

impl Broker {
    /// Parses the endpoint's URL; the error never quotes it (it holds the password).
    pub fn new(endpoint: &BrokerEndpoint) -> anyhow::Result<Broker> {
        let text = endpoint.url.expose();
        let mut uri: AMQPUri = text.parse().map_err(|error: String| {
            let password = url::Url::parse(text)
                .ok()
                .and_then(|url| url.password().map(str::to_owned));
            let mut words = error.replace(text, "<AMQP_URL>");
            if let Some(password) = password.filter(|p| !p.is_empty()) {
                words = words.replace(&password, "***");
            }
            anyhow!("AMQP_URL is not a valid AMQP URL: {words}")
        })?;
        // amq-protocol-uri takes the host from `Url::domain`, which is `None` for an IPv6
        // address: it would connect (and check the certificate) as `localhost` instead.
        if let Some(host) = url::Url::parse(text)
            .ok()
            .and_then(|url| literal_host(&url))
        {
            uri.authority.host = host;
        }
        let tls = endpoint
            .tls
            .as_ref()
            .map(|client| OwnedTLSConfig {
                identity: client
                    .identity
                    .as_ref()
                    .map(|identity| OwnedIdentity::PKCS8 {
                        pem: identity.cert_pem.clone(),
                        key: identity.key_pem.clone(),
                    }),
                cert_chain: client.ca_pem.clone(),
            })
            .unwrap_or_default();
        Ok(Broker { uri, tls })
    }

    /// A broker at a plain-text URL (tests).
    pub fn plain(url: &str) -> anyhow::Result<Broker> {
        let url = url.parse().map_err(|error: String| anyhow!(error))?;
        Broker::new(&BrokerEndpoint { url, tls: None })
    }

    pub fn is_tls(&self) -> bool {
        self.uri.scheme == AMQPScheme::AMQPS
    }

    /// The host the connection goes to (and, with TLS, the name its certificate must carry).
    pub fn host(&self) -> &str {
        &self.uri.authority.host
    }

    /// Opens a connection (TCP, then TLS for `amqps://`, then AMQP).
    pub async fn open(&self, properties: ConnectionProperties) -> anyhow::Result<Connection> {
        let opened = Connection::connect_uri_with_config(
            self.uri.clone(),
            properties,
            self.tls.clone(),
            lapin::runtime::default_runtime()?,
        )
        .await;
        opened.map_err(|error| self.explain(error))
    }

    /// A broker that wants a client certificate refuses one that is missing right after
    /// the TLS 1.3 handshake, by an alert that a reset often overtakes: say what it likely
    /// means when no client certificate is set.
    fn explain(&self, error: lapin::Error) -> anyhow::Error {
        let closed = matches!(error.kind(), lapin::ErrorKind::IOError(io) if matches!(
            io.kind(),
            ErrorKind::ConnectionReset | ErrorKind::UnexpectedEof | ErrorKind::ConnectionAborted | ErrorKind::BrokenPipe
        ));
        if closed && self.is_tls() && self.tls.identity.is_none() {
            anyhow::Error::new(TlsFailure {
                words: "the server closed the connection during the handshake; it may require a client certificate (AMQP_TLS_CERT_FILE, AMQP_TLS_KEY_FILE are not set)".into(),
                source: Box::new(error),
            })
        } else {
            error.into()
        }
    }
}

/// The host of an IP-literal URL, as the TCP connection and the certificate check want it.
fn literal_host(url: &url::Url) -> Option<String> {
    match url.host()? {
        url::Host::Ipv6(ip) => Some(ip.to_string()),
        url::Host::Ipv4(ip) => Some(ip.to_string()),
        url::Host::Domain(_) => None,
    }
}

impl fmt::Debug for Broker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Broker")
            .field("host", &self.uri.authority.host)
            .field("port", &self.uri.authority.port)
            .field("tls", &self.is_tls())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_host_is_the_one_written_in_the_url() {
        for (url, host, port) in [
            ("amqp://guest:guest@127.0.0.1:5672/%2f", "127.0.0.1", 5672),
            ("amqps://u:p@10.1.2.3/%2f", "10.1.2.3", 5671),
            ("amqps://u:p@[::1]:5671/%2f", "::1", 5671),
            ("amqps://broker.internal/%2f", "broker.internal", 5671),
        ] {
            let broker = Broker::plain(url).expect(url);
            assert_eq!(
                (broker.host(), broker.uri.authority.port),
                (host, port),
                "{url}"
            );
            assert_eq!(broker.is_tls(), url.starts_with("amqps"), "{url}");
        }
        // What the workaround is for (drop it once amq-protocol-uri keeps the address).
        let raw: AMQPUri = "amqps://u:p@[::1]:5671/%2f".parse().unwrap();
        assert_eq!(raw.authority.host, "localhost");
    }

    #[test]
    fn a_bad_url_is_refused_without_its_password() {
        let error = Broker::plain("amqp://user:s3cret@host:notaport/%2f").unwrap_err();
        let message = format!("{error:#}");
        assert!(
            message.starts_with("AMQP_URL is not a valid AMQP URL"),
            "{message}"
        );
        assert!(!message.contains("s3cret"), "{message}");
        let debug = format!(
            "{:?}",
            Broker::plain("amqps://user:s3cret@host/%2f").unwrap()
        );
        assert!(!debug.contains("s3cret"), "{debug}");
    }
}
