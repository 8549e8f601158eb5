//! The command line as a person meets it: the binary itself, run with its help.

use std::process::{Command, Output};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

fn gateway(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_event-gateway"))
        .args(args)
        .env_clear()
        .output()
        .expect("run event-gateway")
}

fn stdout(args: &[&str]) -> String {
    let output = gateway(args);
    assert!(output.status.success(), "{args:?}: {output:?}");
    String::from_utf8(output.stdout).expect("UTF-8")
}

const TOKEN_OPTIONS: [&str; 8] = [
    "--sub",
    "--scope",
    "--ttl",
    "--jwt-secret",
    "--jwt-public-key-file",
    "--jwt-private-key-file",
    "--jwt-issuer",
    "--jwt-audience",
];

const SERVER_SETTINGS: [&str; 4] = [
    "--http-addr",
    "--amqp-url",
    "--database-url",
    "--log-format",
];

#[test]
fn token_help_lists_only_what_minting_reads() {
    let help = stdout(&["token", "--help"]);
    for option in TOKEN_OPTIONS {
        assert!(
            help.contains(option),
            "token --help lacks {option}:\n{help}"
        );
    }
    for setting in SERVER_SETTINGS {
        assert!(
            !help.contains(setting),
            "token --help lists {setting}:\n{help}"
        );
    }
    for help in [stdout(&["--help"]), stdout(&["serve", "--help"])] {
        for setting in SERVER_SETTINGS.iter().chain(&["--jwt-secret"]) {
            assert!(help.contains(setting), "--help lacks {setting}:\n{help}");
        }
    }
}

#[test]
fn token_still_takes_every_setting() {
    let token = stdout(&[
        "--jwt-audience",
        "games",
        "token",
        "--sub",
        "svc",
        "--scope",
        "events:publish",
        "--jwt-issuer",
        "https://auth.example",
        "--http-addr",
        "127.0.0.1:9",
    ]);
    let claims = token.trim().split('.').nth(1).expect("a JWT");
    let claims: serde_json::Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(claims).expect("base64")).expect("JSON");
    assert_eq!(claims["iss"], "https://auth.example");
    assert_eq!(claims["aud"], "games");
    let refused = gateway(&[
        "token",
        "--sub",
        "svc",
        "--scope",
        "x",
        "--http-addr",
        "nowhere",
    ]);
    assert!(
        !refused.status.success(),
        "a bad hidden setting is still refused"
    );
}
