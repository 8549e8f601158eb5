//! The bus described: the AsyncAPI document served, printed and committed agree, and the
//! AsyncAPI project's own parser (`@asyncapi/parser`, installed by `scripts/test`) finds
//! no error in it.

use event_gateway::config::Settings;
use serde_json::Value;

use crate::helpers::*;

/// The committed document is the one for the spec's names.
fn default_named() -> Settings {
    let mut settings = Settings::from_env().expect("settings");
    settings.amqp_exchange = "gamification".into();
    settings.amqp_queue_prefix = String::new();
    settings
}

#[tokio::test]
async fn the_served_printed_and_committed_documents_agree() {
    let committed = include_str!("../../openapi/asyncapi.json");
    let generated = event_gateway::asyncapi_json(&default_named()).unwrap();
    assert_eq!(
        committed.trim_end(),
        generated,
        "openapi/asyncapi.json is stale: run `cargo run -- asyncapi > openapi/asyncapi.json`"
    );
    let app = spawn_app().await;
    let served: Value = app.get("/asyncapi.json").await.json().await.unwrap();
    let expected: Value =
        serde_json::from_str(&event_gateway::asyncapi_json(&app.settings).unwrap()).unwrap();
    assert_eq!(served, expected, "served for this gateway's own names");
    let exchange = &app.topology.exchange;
    assert_eq!(
        served["channels"]["AchievementCompleted"]["bindings"]["amqp"]["exchange"]["name"],
        exchange.as_str()
    );
    assert_eq!(
        served["channels"]["QuestQueue"]["address"],
        app.queue("quest").as_str()
    );
}

#[tokio::test]
async fn the_asyncapi_parser_finds_no_error() {
    let root = env!("CARGO_MANIFEST_DIR");
    let args = vec![
        format!("{root}/tests/asyncapi/validate.mjs"),
        format!("{root}/openapi/asyncapi.json"),
    ];
    let printed = run_tool("node", args).await;
    let report: Value = serde_json::from_str(printed.trim()).unwrap();
    assert_eq!(report["parsed"], true);
    assert_eq!(report["errors"], Value::Array(Vec::new()));
}
