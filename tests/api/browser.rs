//! Swagger UI in a real browser (Debian's Chromium, driven by playwright-core from
//! tests/browser): the first click publishes an event, and the page loads nothing from
//! anywhere but the gateway. `scripts/test` installs both.

use serde_json::Value;

use crate::helpers::*;

#[tokio::test]
async fn swagger_ui_publishes_on_the_first_click() {
    let app = spawn_app().await;
    let token = app.token("swagger-newcomer", "events:publish");
    let root = env!("CARGO_MANIFEST_DIR");
    let screenshot = format!("{root}/target/swagger-first-click.png");
    let base = app.base.clone();
    let script = format!("{root}/tests/browser/swagger.mjs");
    let printed = run_tool("node", vec![script, base, token, screenshot]).await;
    let seen: Value = serde_json::from_str(printed.trim()).unwrap();
    assert_eq!(seen["status"], "202");
    assert_eq!(
        seen["elsewhere"],
        Value::Array(Vec::new()),
        "only the gateway"
    );
    let receipt: Value = serde_json::from_str(seen["body"].as_str().unwrap()).unwrap();
    assert_eq!(receipt["status"], "published");
    // The example carries no id: the gateway made one, and it is what went out.
    let message = app.next_message(&app.queue("achievement")).await;
    let message_id = message
        .properties
        .message_id()
        .as_ref()
        .map(|id| id.to_string());
    assert_eq!(message_id.as_deref(), receipt["id"].as_str());
}
