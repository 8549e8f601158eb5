//! Settings that hold secrets, set wrong in every way we could think of: the error names
//! the setting and what is wrong, and never prints a secret, neither the bad one nor the
//! good ones beside it.

use std::process::Command;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

const SHOP_SECRET: &str = "shop-secret-that-must-not-leak";

/// Runs `event-gateway serve` with only `env` set; it must refuse to start.
fn refusal(env: &[(&str, &str)]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_event-gateway"))
        .arg("serve")
        .env_clear()
        .envs(env.iter().copied())
        .output()
        .expect("run event-gateway");
    assert_eq!(output.status.code(), Some(2), "{env:?}: {output:?}");
    String::from_utf8(output.stderr).expect("UTF-8")
}

#[test]
fn a_malformed_webhook_setting_prints_no_secret() {
    let cases = [
        format!("shop={SHOP_SECRET},crm"),
        format!("shop={SHOP_SECRET},crm=whsec_not*base64"),
        format!("shop={SHOP_SECRET},crm="),
        format!("shop={SHOP_SECRET},bad source={SHOP_SECRET}"),
        // A secret pasted without its source: no part of it may be echoed.
        format!("shop={SHOP_SECRET},{SHOP_SECRET}"),
    ];
    for value in cases {
        let error = refusal(&[("WEBHOOK_SECRETS", &value)]);
        assert!(error.contains("WEBHOOK_SECRETS"), "{value}: {error}");
        assert!(error.contains("entry 2"), "{value}: {error}");
        for leak in [SHOP_SECRET, &SHOP_SECRET[..4], "not*base64"] {
            assert!(!error.contains(leak), "{value} leaks {leak}: {error}");
        }
    }
}

#[test]
fn a_malformed_encryption_key_setting_prints_no_key() {
    let key = STANDARD.encode([7u8; 32]);
    let short = STANDARD.encode([9u8; 16]);
    let cases = [
        format!("k1={key},k2={short}"),
        format!("k1={key},{key}"),
        format!("k1={key},k 2={key}"),
        key.clone(),
    ];
    for value in cases {
        let error = refusal(&[
            ("ENCRYPTION_KEYS", &value),
            ("SENSITIVE_FIELDS", "/data/metadata/email"),
        ]);
        assert!(error.contains("ENCRYPTION_KEYS"), "{value}: {error}");
        for leak in [&key[..8], &short[..8]] {
            assert!(!error.contains(leak), "{value} leaks {leak}: {error}");
        }
    }
}

#[test]
fn connection_urls_and_passwords_are_not_echoed() {
    for (setting, flag) in [
        ("AMQP_URL", "--amqp-url"),
        ("DATABASE_URL", "--database-url"),
        ("REDIS_PASSWORD", "--redis-password"),
    ] {
        let error = refusal(&[(setting, "")]);
        assert!(error.contains(setting) && error.contains(flag), "{error}");
    }
    let error = refusal(&[
        ("JWT_SECRET", SHOP_SECRET),
        ("JWT_PUBLIC_KEY_FILE", "/k.pem"),
    ]);
    assert!(error.contains("cannot be used with"), "{error}");
    assert!(!error.contains(SHOP_SECRET), "{error}");
}
