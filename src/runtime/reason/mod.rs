//! Why a dependency cannot be used, in the words an operator reads in a log line and in
//! `/health` (`lastError`): a failed TLS handshake says what about the certificate was
//! wrong and which setting to look at; any other failure is the error's own text.

use std::error::Error;
use std::fmt;
use std::sync::{Arc, Mutex};

mod text;
mod words;

use text::tls_error_from_text;
use words::tls_words;

/// The three dependencies, and the settings their TLS reasons point at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peer {
    RabbitMq,
    Redis,
    Postgres,
}

impl Peer {
    pub fn name(self) -> &'static str {
        match self {
            Peer::RabbitMq => "RabbitMQ",
            Peer::Redis => "Redis",
            Peer::Postgres => "PostgreSQL",
        }
    }

    /// The setting naming the CAs that sign the server's certificate.
    fn ca_setting(self) -> &'static str {
        match self {
            Peer::RabbitMq => "AMQP_TLS_CA_FILE",
            Peer::Redis => "REDIS_TLS_CA_FILE",
            Peer::Postgres => "DATABASE_TLS_CA_FILE or sslrootcert",
        }
    }

    /// Where the host name the certificate must carry comes from.
    fn host_setting(self) -> &'static str {
        match self {
            Peer::RabbitMq => "the host in AMQP_URL",
            Peer::Redis => "REDIS_HOST",
            Peer::Postgres => "the host in DATABASE_URL",
        }
    }

    fn client_settings(self) -> &'static str {
        match self {
            Peer::RabbitMq => "AMQP_TLS_CERT_FILE, AMQP_TLS_KEY_FILE",
            Peer::Redis => "REDIS_TLS_CERT_FILE, REDIS_TLS_KEY_FILE",
            Peer::Postgres => "DATABASE_TLS_CERT_FILE, DATABASE_TLS_KEY_FILE",
        }
    }

    /// The setting that turns TLS on or off.
    fn transport_setting(self) -> &'static str {
        match self {
            Peer::RabbitMq => "amqps:// in AMQP_URL",
            Peer::Redis => "REDIS_TLS",
            Peer::Postgres => "sslmode in DATABASE_URL",
        }
    }
}

/// One failure, described.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reason {
    /// The TLS handshake (or the certificate) failed, not the network or the service.
    pub tls: bool,
    pub text: String,
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// The longest reason kept: `/health` is read by people, not a place for error dumps.
const MAX_REASON: usize = 300;

/// Describes `error` (and its sources) as a failure to reach `peer`.
pub fn describe(error: &(dyn Error + 'static), peer: Peer) -> Reason {
    let mut next = Some(error);
    while let Some(current) = next {
        if let Some(failure) = current.downcast_ref::<TlsFailure>() {
            return Reason {
                tls: true,
                text: format!("TLS: {}", failure.words),
            };
        }
        next = current.source();
    }
    if let Some(tls) = tls_error(error) {
        return Reason {
            tls: true,
            text: format!("TLS: {}", tls_words(tls, peer)),
        };
    }
    let text = chain_text(error);
    // Some clients keep only the text of the TLS error (redis's connection manager shares
    // one failure among its users, so it keeps a copy of the words, not the error).
    if let Some(tls) = tls_error_from_text(&text) {
        return Reason {
            tls: true,
            text: format!("TLS: {}", tls_words(&tls, peer)),
        };
    }
    if text.contains("server does not support TLS") {
        return Reason {
            tls: true,
            text: format!(
                "TLS: the server does not offer TLS ({}); not connecting in plain text",
                peer.transport_setting()
            ),
        };
    }
    if peer == Peer::Postgres
        && text.contains("no pg_hba.conf entry")
        && text.contains("no encryption")
    {
        return Reason {
            tls: true,
            text: format!(
                "the server accepts only TLS connections: set sslmode=verify-full in DATABASE_URL ({})",
                shorten(&text)
            ),
        };
    }
    Reason {
        tls: false,
        text: shorten(&text),
    }
}

/// A TLS failure an adapter recognised by itself (from what it knows of its settings), in
/// words, with the error it saw.
#[derive(Debug)]
pub struct TlsFailure {
    pub words: String,
    pub source: Box<dyn Error + Send + Sync>,
}

impl fmt::Display for TlsFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.words)
    }
}

impl Error for TlsFailure {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        Some(&*self.source)
    }
}

/// [`describe`] for an `anyhow` error, which is no `dyn Error` itself.
pub fn describe_anyhow(error: &anyhow::Error, peer: Peer) -> Reason {
    let source: &(dyn Error + 'static) = error.as_ref();
    describe(source, peer)
}

/// The `rustls::Error` behind `error`, if any. An `io::Error` hides the error it wraps from
/// `source()` (it returns that error's source), so each link is also looked into.
fn tls_error<'a>(error: &'a (dyn Error + 'static)) -> Option<&'a rustls::Error> {
    let mut next = Some(error);
    while let Some(current) = next {
        if let Some(tls) = inside(current) {
            return Some(tls);
        }
        next = current.source();
    }
    None
}

/// `error` itself, or what an `io::Error` (however deep) wraps.
fn inside<'a>(error: &'a (dyn Error + 'static)) -> Option<&'a rustls::Error> {
    if let Some(tls) = error.downcast_ref::<rustls::Error>() {
        return Some(tls);
    }
    let wrapped = error.downcast_ref::<std::io::Error>()?.get_ref()?;
    inside(wrapped)
}

/// The error and its sources on one line, each once (a wrapper often repeats its source).
fn chain_text(error: &(dyn Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut next = Some(error);
    while let Some(current) = next {
        let text = current.to_string();
        if !parts.iter().any(|part| part.contains(&text)) {
            parts.push(text);
        }
        next = current.source();
    }
    parts.join(": ")
}

fn shorten(text: &str) -> String {
    if text.len() <= MAX_REASON {
        return text.to_owned();
    }
    let mut end = MAX_REASON;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

/// The last reason a dependency could not be reached, shared between whoever connects
/// (and records it) and `/health` (which shows it); `None` once connected again.
#[derive(Debug, Clone, Default)]
pub struct LastError(Arc<Mutex<Option<String>>>);

impl LastError {
    pub fn set(&self, reason: &Reason) {
        *self.lock() = Some(reason.text.clone());
    }

    pub fn clear(&self) {
        *self.lock() = None;
    }

    pub fn get(&self) -> Option<String> {
        self.lock().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<String>> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests;
