use rustls::pki_types::ServerName;
use rustls::{AlertDescription, CertificateError};

use super::*;

fn io(error: rustls::Error) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, error)
}

#[test]
fn an_unknown_issuer_names_the_ca_setting_of_its_dependency() {
    let error = io(rustls::Error::InvalidCertificate(
        CertificateError::UnknownIssuer,
    ));
    let reason = describe(&error, Peer::RabbitMq);
    assert!(reason.tls);
    assert_eq!(
        reason.text,
        "TLS: the server's certificate is not signed by a trusted CA (AMQP_TLS_CA_FILE)"
    );
    let wrapped = anyhow::Error::new(io(rustls::Error::InvalidCertificate(
        CertificateError::UnknownIssuer,
    )))
    .context("connecting");
    assert!(
        describe_anyhow(&wrapped, Peer::Redis)
            .text
            .contains("REDIS_TLS_CA_FILE")
    );
}

#[test]
fn a_name_mismatch_says_which_name_was_expected_and_which_were_presented() {
    let expected = ServerName::try_from("127.0.0.2").unwrap().to_owned();
    let error = io(rustls::Error::InvalidCertificate(
        CertificateError::NotValidForNameContext {
            expected,
            presented: vec![
                "DnsName(\"localhost\")".into(),
                "IpAddress(127.0.0.1)".into(),
            ],
        },
    ));
    assert_eq!(
        describe(&error, Peer::Postgres).text,
        "TLS: the server's certificate is not valid for 127.0.0.2 (it names localhost, \
         127.0.0.1; the host in DATABASE_URL)"
    );
}

#[test]
fn expiry_alerts_and_plain_text_servers_have_words_of_their_own() {
    let expired = io(rustls::Error::InvalidCertificate(CertificateError::Expired));
    assert_eq!(
        describe(&expired, Peer::Redis).text,
        "TLS: the server's certificate has expired"
    );
    let alert = io(rustls::Error::AlertReceived(
        AlertDescription::CertificateRequired,
    ));
    assert!(
        describe(&alert, Peer::RabbitMq)
            .text
            .contains("requires a client certificate (AMQP_TLS_CERT_FILE")
    );
    let plain = io(rustls::Error::InvalidMessage(
        rustls::InvalidMessage::InvalidContentType,
    ));
    assert!(describe(&plain, Peer::Redis).text.contains("plain-text"));
}

#[test]
fn a_tls_error_kept_only_as_text_gets_the_same_words() {
    for error in [
        rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer),
        rustls::Error::InvalidCertificate(CertificateError::NotValidForNameContext {
            expected: ServerName::try_from("127.0.0.2").unwrap().to_owned(),
            presented: vec![
                "DnsName(\"localhost\")".into(),
                "IpAddress(127.0.0.1)".into(),
            ],
        }),
        rustls::Error::InvalidCertificate(CertificateError::NotValidForNameContext {
            expected: ServerName::try_from("db.internal").unwrap().to_owned(),
            presented: vec!["DnsName(\"other\")".into()],
        }),
        rustls::Error::InvalidCertificate(CertificateError::ExpiredContext {
            time: rustls::pki_types::UnixTime::since_unix_epoch(std::time::Duration::from_secs(20)),
            not_after: rustls::pki_types::UnixTime::since_unix_epoch(
                std::time::Duration::from_secs(10),
            ),
        }),
        rustls::Error::AlertReceived(AlertDescription::CertificateRequired),
        rustls::Error::InvalidMessage(rustls::InvalidMessage::InvalidContentType),
    ] {
        let typed = describe(&io(error.clone()), Peer::Redis);
        let words = anyhow::anyhow!("{error}").context("connecting");
        assert_eq!(describe_anyhow(&words, Peer::Redis), typed, "{error}");
    }
}

#[test]
fn other_failures_keep_their_own_text_once_and_short() {
    let refused = anyhow::Error::new(std::io::Error::from(std::io::ErrorKind::ConnectionRefused))
        .context("connecting to the database");
    let reason = describe_anyhow(&refused, Peer::Postgres);
    assert!(!reason.tls);
    assert_eq!(
        reason.text,
        "connecting to the database: connection refused"
    );
    let long = anyhow::anyhow!("{}", "x".repeat(1000));
    assert!(describe_anyhow(&long, Peer::Redis).text.chars().count() <= MAX_REASON + 1);
}

#[test]
fn the_last_error_is_kept_until_cleared() {
    let last = LastError::default();
    assert_eq!(last.get(), None);
    last.set(&Reason {
        tls: false,
        text: "down".into(),
    });
    assert_eq!(last.clone().get().as_deref(), Some("down"));
    last.clear();
    assert_eq!(last.get(), None);
}
