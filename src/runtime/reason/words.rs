//! The words for a TLS failure: what about the certificate or the handshake went wrong, and
//! the setting to look at.

use rustls::pki_types::ServerName;
use rustls::{AlertDescription, CertificateError};

use super::Peer;

pub(super) fn tls_words(error: &rustls::Error, peer: Peer) -> String {
    use rustls::Error as E;
    match error {
        E::InvalidCertificate(certificate) => certificate_words(certificate, peer),
        E::AlertReceived(alert) => alert_words(*alert, peer),
        E::NoCertificatesPresented => "the server presented no certificate".into(),
        E::InvalidMessage(_)
        | E::InappropriateMessage { .. }
        | E::InappropriateHandshakeMessage { .. } => format!(
            "the server did not answer in TLS (is the port a plain-text one? {})",
            peer.transport_setting()
        ),
        E::PeerIncompatible(why) => {
            format!("the server and the gateway share no TLS version or cipher suite ({why:?})")
        }
        E::PeerMisbehaved(why) => format!("the server broke the TLS protocol ({why:?})"),
        other => format!("the TLS handshake failed ({other})"),
    }
}

fn certificate_words(error: &CertificateError, peer: Peer) -> String {
    use CertificateError as C;
    match error {
        C::UnknownIssuer => format!(
            "the server's certificate is not signed by a trusted CA ({})",
            peer.ca_setting()
        ),
        C::NotValidForNameContext {
            expected,
            presented,
        } => format!(
            "the server's certificate is not valid for {} (it names {}; {})",
            server_name(expected),
            if presented.is_empty() {
                "no host".to_owned()
            } else {
                presented
                    .iter()
                    .map(|name| plain_name(name))
                    .collect::<Vec<_>>()
                    .join(", ")
            },
            peer.host_setting()
        ),
        C::NotValidForName => format!(
            "the server's certificate is not valid for the host the gateway connects to ({})",
            peer.host_setting()
        ),
        C::Expired | C::ExpiredContext { .. } => "the server's certificate has expired".into(),
        C::NotValidYet | C::NotValidYetContext { .. } => {
            "the server's certificate is not valid yet (check the clocks)".into()
        }
        C::Revoked => "the server's certificate is revoked".into(),
        C::InvalidPurpose | C::InvalidPurposeContext { .. } => {
            "the server's certificate is not meant for a TLS server (extended key usage)".into()
        }
        C::BadSignature | C::BadEncoding | C::UnhandledCriticalExtension => {
            "the server's certificate is malformed or its signature does not verify".into()
        }
        other => format!("the server's certificate was refused ({other})"),
    }
}

fn alert_words(alert: AlertDescription, peer: Peer) -> String {
    use AlertDescription as A;
    match alert {
        A::CertificateRequired => format!(
            "the server requires a client certificate ({})",
            peer.client_settings()
        ),
        A::BadCertificate | A::UnknownCA | A::CertificateUnknown | A::UnsupportedCertificate => {
            format!(
                "the server refused the gateway's client certificate ({alert:?}; {})",
                peer.client_settings()
            )
        }
        A::CertificateExpired => format!(
            "the server refused the gateway's client certificate: expired ({})",
            peer.client_settings()
        ),
        A::HandshakeFailure => format!(
            "the server refused the TLS handshake (handshake_failure: it may require a client certificate, {}, or share no cipher suite)",
            peer.client_settings()
        ),
        A::ProtocolVersion => {
            "the server refused the TLS handshake: no TLS version in common".into()
        }
        other => format!("the server refused the TLS handshake ({other:?})"),
    }
}

fn server_name(name: &ServerName<'_>) -> String {
    match name {
        ServerName::DnsName(dns) => dns.as_ref().to_owned(),
        ServerName::IpAddress(ip) => std::net::IpAddr::from(*ip).to_string(),
        other => format!("{other:?}"),
    }
}

/// `DnsName("db.internal")` or `IpAddress(10.0.0.5)` (webpki's words) as the bare name.
fn plain_name(presented: &str) -> &str {
    presented
        .strip_prefix("DnsName(\"")
        .and_then(|rest| rest.strip_suffix("\")"))
        .or_else(|| {
            presented
                .strip_prefix("IpAddress(")
                .and_then(|rest| rest.strip_suffix(')'))
        })
        .unwrap_or(presented)
}
