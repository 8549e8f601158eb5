use std::path::PathBuf;

use clap::Parser;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};

use super::*;
use crate::config::EnvOnly;

fn settings(args: &[&str]) -> Settings {
    let mut all = vec!["event-gateway"];
    all.extend_from_slice(args);
    EnvOnly::try_parse_from(all).expect("settings").settings
}

/// A folder of PEM files: a CA, a client certificate it signs with its key, an unrelated
/// key, and a file that is no PEM at all. Removed when dropped.
struct Files(PathBuf);

impl Files {
    fn new() -> Files {
        let dir =
            std::env::temp_dir().join(format!("eg-tls-unit-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        let client_key = KeyPair::generate().unwrap();
        let client = CertificateParams::new(vec!["client".to_owned()])
            .unwrap()
            .signed_by(&client_key, &ca)
            .unwrap();
        let write = |name: &str, text: String| std::fs::write(dir.join(name), text).unwrap();
        write("ca.pem", ca.pem());
        write("client.pem", client.pem());
        write("client.key", client_key.serialize_pem());
        write("other.key", KeyPair::generate().unwrap().serialize_pem());
        write("junk.pem", "not a certificate\n".into());
        Files(dir)
    }

    fn path(&self, name: &str) -> String {
        self.0.join(name).to_string_lossy().into_owned()
    }
}

impl Drop for Files {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn failure(settings: &Settings) -> String {
    format!("{:#}", settings.endpoints().expect_err("refused"))
}

#[test]
fn the_defaults_are_plain_text_to_the_local_services() {
    let endpoints = settings(&[]).endpoints().expect("endpoints");
    assert!(endpoints.broker.tls.is_none());
    assert!(endpoints.redis.tls.is_none());
    assert!(endpoints.redis.url.expose().starts_with("redis://"));
    assert_eq!(endpoints.database.ssl_mode, SslMode::Disable);
    assert!(endpoints.database.local);
    assert_eq!(
        endpoints.database.url.expose(),
        "postgres://postgres@127.0.0.1:5432/gamification?sslmode=disable"
    );
}

#[test]
fn a_remote_database_without_sslmode_prefers_tls_as_libpq_does() {
    let remote = settings(&[
        "--database-url",
        "postgres://u:pw@db.internal/app?application_name=x",
    ]);
    let database = remote.database_endpoint().expect("endpoint");
    assert_eq!(database.ssl_mode, SslMode::Prefer);
    assert!(!database.local);
    assert_eq!(
        database.url.expose(),
        "postgres://u:pw@db.internal/app?application_name=x&sslmode=prefer"
    );
    let explicit = settings(&[
        "--database-url",
        "postgres://db.internal/app?sslmode=verify-full",
    ]);
    assert_eq!(
        explicit.database_endpoint().unwrap().ssl_mode,
        SslMode::VerifyFull
    );
}

#[test]
fn a_database_ca_means_verification() {
    let files = Files::new();
    let ca = files.path("ca.pem");
    let implied = settings(&[
        "--database-tls-ca-file",
        &ca,
        "--database-url",
        "postgres://db/app",
    ]);
    let database = implied.database_endpoint().expect("endpoint");
    assert_eq!(database.ssl_mode, SslMode::VerifyFull);
    assert!(database.url.expose().ends_with(&format!(
        "sslmode=verify-full&sslrootcert={}",
        url::form_urlencoded::byte_serialize(ca.as_bytes()).collect::<String>()
    )));
    let require = settings(&[
        "--database-tls-ca-file",
        &ca,
        "--database-url",
        "postgres://db/app?sslmode=require",
    ]);
    assert_eq!(
        require.database_endpoint().unwrap().ssl_mode,
        SslMode::VerifyCa
    );
    let in_url = settings(&[
        "--database-url",
        &format!("postgres://db/app?sslrootcert={ca}"),
    ]);
    assert_eq!(
        in_url.database_endpoint().unwrap().ssl_mode,
        SslMode::VerifyFull
    );
    for mode in ["disable", "prefer"] {
        let url = format!("postgres://db/app?sslmode={mode}");
        let refused = settings(&["--database-tls-ca-file", &ca, "--database-url", &url]);
        assert!(
            failure(&refused).contains(&format!("sslmode={mode}")),
            "{mode}"
        );
    }
}

#[test]
fn unknown_or_plain_text_sslmodes_are_refused_without_quoting_the_url() {
    for (mode, words) in [("allow", "not supported"), ("sometimes", "must be disable")] {
        let url = format!("postgres://u:s3cret@db/app?sslmode={mode}");
        let message = failure(&settings(&["--database-url", &url]));
        assert!(message.contains(words), "{message}");
        assert!(!message.contains("s3cret"), "{message}");
    }
    let message = failure(&settings(&[
        "--database-url",
        "postgres://u:s3cret@[db/app",
    ]));
    assert!(
        message.starts_with("DATABASE_URL is not a valid URL"),
        "{message}"
    );
    assert!(!message.contains("s3cret"), "{message}");
    let message = failure(&settings(&["--amqp-url", "amqps://u:s3cret@[broker/%2f"]));
    assert!(
        message.starts_with("AMQP_URL is not a valid URL"),
        "{message}"
    );
    assert!(!message.contains("s3cret"), "{message}");
}

#[test]
fn tls_files_next_to_a_plain_text_address_are_refused() {
    let files = Files::new();
    let ca = files.path("ca.pem");
    let message = failure(&settings(&["--amqp-tls-ca-file", &ca]));
    assert!(
        message.starts_with("AMQP_TLS_CA_FILE is set but AMQP_URL is amqp:// (plain text)"),
        "{message}"
    );
    let message = failure(&settings(&["--redis-tls-ca-file", &ca]));
    assert!(
        message.starts_with("REDIS_TLS_CA_FILE is set but REDIS_TLS is false"),
        "{message}"
    );
    let message = failure(&settings(&[
        "--database-tls-ca-file",
        &ca,
        "--database-url",
        "postgres://db/app?sslmode=disable",
    ]));
    assert!(message.contains("sslmode=disable"), "{message}");
}

#[test]
fn a_file_that_cannot_be_read_or_parsed_is_named_with_its_setting_and_path() {
    let files = Files::new();
    let tls = |extra: &[&str]| {
        let mut args = vec!["--amqp-url", "amqps://u:s3cret@broker/%2f"];
        args.extend_from_slice(extra);
        failure(&settings(&args))
    };
    let missing = files.path("missing.pem");
    let message = tls(&["--amqp-tls-ca-file", &missing]);
    assert!(
        message.starts_with(&format!("AMQP_TLS_CA_FILE ({missing}): cannot read it")),
        "{message}"
    );
    let junk = files.path("junk.pem");
    let message = tls(&["--amqp-tls-ca-file", &junk]);
    assert!(
        message.starts_with(&format!("AMQP_TLS_CA_FILE ({junk}): no certificate")),
        "{message}"
    );
    let message = tls(&["--amqp-tls-cert-file", &files.path("client.pem")]);
    assert_eq!(
        message,
        "AMQP_TLS_CERT_FILE is set without AMQP_TLS_KEY_FILE"
    );
    let message = tls(&[
        "--amqp-tls-cert-file",
        &files.path("client.pem"),
        "--amqp-tls-key-file",
        &junk,
    ]);
    assert!(
        message.starts_with("AMQP_TLS_KEY_FILE")
            && message.contains("no unencrypted PEM private key"),
        "{message}"
    );
    let message = tls(&[
        "--amqp-tls-cert-file",
        &files.path("client.pem"),
        "--amqp-tls-key-file",
        &files.path("other.key"),
    ]);
    assert!(
        message.contains("does not fit AMQP_TLS_CERT_FILE"),
        "{message}"
    );
    assert!(!message.contains("s3cret"), "{message}");
    let message = failure(&settings(&[
        "--redis-tls",
        "true",
        "--redis-tls-key-file",
        &files.path("client.key"),
    ]));
    assert_eq!(
        message,
        "REDIS_TLS_KEY_FILE is set without REDIS_TLS_CERT_FILE"
    );
}

#[test]
fn good_files_make_a_tls_client_whose_debug_output_holds_no_key() {
    let files = Files::new();
    let endpoints = settings(&[
        "--amqp-url",
        "amqps://broker/%2f",
        "--amqp-tls-ca-file",
        &files.path("ca.pem"),
        "--amqp-tls-cert-file",
        &files.path("client.pem"),
        "--amqp-tls-key-file",
        &files.path("client.key"),
        "--redis-tls",
        "true",
    ])
    .endpoints()
    .expect("endpoints");
    let broker = endpoints.broker.tls.expect("TLS to the broker");
    assert!(
        broker
            .ca_pem
            .as_deref()
            .is_some_and(|pem| pem.contains("BEGIN CERTIFICATE"))
    );
    assert!(broker.identity.is_some());
    assert_eq!(
        format!("{broker:?}"),
        r#"ClientTls { ca: Some("set"), identity: Some("set") }"#
    );
    let redis = endpoints.redis.tls.expect("TLS to Redis");
    assert!(redis.ca_pem.is_none() && redis.identity.is_none());
    assert!(
        endpoints
            .redis
            .url
            .expose()
            .starts_with("rediss://127.0.0.1:6379/")
    );
}
