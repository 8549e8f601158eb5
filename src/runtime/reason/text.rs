//! rustls's words read back into its error, for clients that keep only the text of a TLS
//! failure (redis's connection manager shares one failure among its users as a copy of
//! its words).

use rustls::pki_types::ServerName;
use rustls::{AlertDescription, CertificateError};

/// The `rustls::Error` whose `Display` is in `text`, for the failures `tls_words` has
/// words for (anything else TLS keeps rustls's own words).
pub(super) fn tls_error_from_text(text: &str) -> Option<rustls::Error> {
    use rustls::Error as E;
    if let Some(rest) = after(text, "invalid peer certificate: ") {
        return Some(E::InvalidCertificate(certificate_error_from_text(rest)?));
    }
    if let Some(alert) = after(text, "received fatal alert: ") {
        let alert = match alert.split(|c: char| !c.is_alphanumeric()).next()? {
            "CertificateRequired" => AlertDescription::CertificateRequired,
            "BadCertificate" => AlertDescription::BadCertificate,
            "UnknownCA" => AlertDescription::UnknownCA,
            "CertificateUnknown" => AlertDescription::CertificateUnknown,
            "UnsupportedCertificate" => AlertDescription::UnsupportedCertificate,
            "CertificateExpired" => AlertDescription::CertificateExpired,
            "HandshakeFailure" => AlertDescription::HandshakeFailure,
            "ProtocolVersion" => AlertDescription::ProtocolVersion,
            _ => return None,
        };
        return Some(E::AlertReceived(alert));
    }
    if text.contains("received corrupt message of type") {
        return Some(E::InvalidMessage(
            rustls::InvalidMessage::InvalidContentType,
        ));
    }
    if text.contains("peer sent no certificates") {
        return Some(E::NoCertificatesPresented);
    }
    None
}

fn certificate_error_from_text(text: &str) -> Option<CertificateError> {
    use CertificateError as C;
    let word = text.split(|c: char| !c.is_alphanumeric()).next()?;
    Some(match word {
        "UnknownIssuer" => C::UnknownIssuer,
        "NotValidForName" => C::NotValidForName,
        "Expired" => C::Expired,
        "NotValidYet" => C::NotValidYet,
        "Revoked" => C::Revoked,
        "BadSignature" => C::BadSignature,
        "BadEncoding" => C::BadEncoding,
        "InvalidPurpose" => C::InvalidPurpose,
        _ if text.starts_with("certificate expired") => C::Expired,
        _ if text.starts_with("certificate not valid yet") => C::NotValidYet,
        _ if text.starts_with("certificate does not allow extended key usage") => C::InvalidPurpose,
        _ if text.starts_with("certificate not valid for name ") => name_mismatch_from_text(text)?,
        _ => return None,
    })
}

/// `certificate not valid for name "x"; certificate is only valid for A, B or C` (or `is
/// not valid for any names …`).
fn name_mismatch_from_text(text: &str) -> Option<CertificateError> {
    let quoted = after(text, "certificate not valid for name \"")?;
    let (expected, rest) = quoted.split_once('"')?;
    let expected = ServerName::try_from(expected.to_owned()).ok()?;
    let presented = match after(rest, "is only valid for ") {
        Some(names) => {
            let names = names.split(": ").next().unwrap_or(names).trim();
            let (head, last) = names.rsplit_once(" or ").unwrap_or(("", names));
            head.split(", ")
                .filter(|name| !name.is_empty())
                .chain([last])
                .map(str::to_owned)
                .collect()
        }
        None => Vec::new(),
    };
    Some(CertificateError::NotValidForNameContext {
        expected,
        presented,
    })
}

fn after<'a>(text: &'a str, marker: &str) -> Option<&'a str> {
    text.find(marker).map(|at| &text[at + marker.len()..])
}
