//! compose.yaml, checked against the code: no Docker engine runs here, so the file is read
//! and every setting, port and path it gives the gateway is compared with the gateway's own.

use std::collections::BTreeMap;

use clap::{Args, FromArgMatches};
use event_gateway::config::Settings;
use serde::Deserialize;

use crate::helpers::*;

#[derive(Debug, Deserialize)]
struct Compose {
    services: BTreeMap<String, Service>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Service {
    environment: BTreeMap<String, String>,
    ports: Vec<String>,
    depends_on: BTreeMap<String, Dependency>,
    healthcheck: Option<Healthcheck>,
}

#[derive(Debug, Deserialize)]
struct Dependency {
    condition: String,
}

#[derive(Debug, Deserialize)]
struct Healthcheck {
    test: Vec<String>,
}

const BACKING_SERVICES: [&str; 3] = ["rabbitmq", "redis", "postgres"];

fn compose() -> Compose {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/compose.yaml");
    let text = std::fs::read_to_string(path).expect("compose.yaml");
    serde_yaml_ng::from_str(&text).expect("compose.yaml parses")
}

fn gateway(compose: &Compose) -> &Service {
    compose.services.get("gateway").expect("a gateway service")
}

/// The settings' command-line arguments, as clap knows them.
fn settings_command() -> clap::Command {
    Settings::augment_args(clap::Command::new("settings").no_binary_name(true))
}

/// `${NAME:-default}` as compose reads it when NAME is unset.
fn interpolated(value: &str) -> &str {
    value
        .strip_prefix("${")
        .and_then(|rest| rest.strip_suffix('}'))
        .and_then(|inner| inner.split_once(":-"))
        .map_or(value, |(_, default)| default)
}

/// The host of a URL such as `amqp://user:pw@host:5672/%2f`.
fn url_host(url: &str) -> &str {
    let authority = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = authority.split('/').next().unwrap_or_default();
    let host_port = authority.rsplit('@').next().unwrap_or_default();
    host_port.split(':').next().unwrap_or_default()
}

#[test]
fn the_gateway_is_given_real_settings_that_parse() {
    let compose = compose();
    let environment = &gateway(&compose).environment;
    let command = settings_command();
    let mut flags = Vec::new();
    for (name, value) in environment {
        let arg = command
            .get_arguments()
            .find(|arg| arg.get_env().is_some_and(|env| env == name.as_str()))
            .unwrap_or_else(|| panic!("compose.yaml sets {name}, which is no setting"));
        let long = arg.get_long().expect("every setting has a flag");
        flags.push(format!("--{long}={}", interpolated(value)));
    }
    let matches = command
        .try_get_matches_from(&flags)
        .unwrap_or_else(|error| panic!("compose.yaml's settings do not parse: {error}"));
    let settings = Settings::from_arg_matches(&matches).expect("settings");
    assert_eq!(url_host(settings.amqp_url.expose()), "rabbitmq");
    assert_eq!(settings.redis_host, "redis");
    assert_eq!(url_host(settings.database_url.expose()), "postgres");
    for host in BACKING_SERVICES {
        assert!(compose.services.contains_key(host), "no service {host}");
    }
}

#[tokio::test]
async fn its_port_and_health_check_are_the_gateways() {
    let compose = compose();
    let gateway = gateway(&compose);
    let addr = match gateway.environment.get("HTTP_ADDR") {
        Some(addr) => interpolated(addr).to_owned(),
        None => {
            let command = settings_command();
            let http_addr = command
                .get_arguments()
                .find(|arg| arg.get_id() == "http_addr")
                .expect("HTTP_ADDR");
            http_addr.get_default_values()[0]
                .to_string_lossy()
                .into_owned()
        }
    };
    let port: u16 = addr
        .parse::<std::net::SocketAddr>()
        .expect("HTTP_ADDR")
        .port();
    assert_eq!(port, 8080, "the README and the Dockerfile say 8080");
    assert!(
        gateway
            .ports
            .iter()
            .any(|mapping| mapping.rsplit(':').next() == Some(&port.to_string())),
        "compose.yaml publishes {:?}, not the gateway's port {port}",
        gateway.ports
    );

    let test = &gateway.healthcheck.as_ref().expect("a health check").test;
    let url = test
        .iter()
        .find(|word| word.starts_with("http://"))
        .expect("the health check names a URL");
    let prefix = format!("http://127.0.0.1:{port}/");
    let path = url
        .strip_prefix(&prefix)
        .unwrap_or_else(|| panic!("{url} is not the gateway's own port {port}"));
    assert_eq!(path, "health/live");
    let app = spawn_app().await;
    let answer = app
        .http
        .get(format!("{}/{path}", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200, "GET /{path}");
}

#[test]
fn the_gateway_waits_for_healthy_services() {
    let compose = compose();
    let depends_on = &gateway(&compose).depends_on;
    let mut named: Vec<&str> = depends_on.keys().map(String::as_str).collect();
    named.sort_unstable();
    let mut expected = BACKING_SERVICES.to_vec();
    expected.sort_unstable();
    assert_eq!(named, expected);
    for (service, dependency) in depends_on {
        assert_eq!(dependency.condition, "service_healthy", "{service}");
        let checked = compose.services[service].healthcheck.as_ref();
        assert!(
            checked.is_some_and(|check| !check.test.is_empty()),
            "{service} has no health check"
        );
    }
}
