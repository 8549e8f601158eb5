//! Swagger UI in a real browser (Debian's Chromium, driven by playwright-core from
//! tests/browser): the first click publishes an event, and the page loads nothing from
//! anywhere but the gateway. `scripts/test` installs both.

use std::process::Command;

use serde_json::Value;

use crate::helpers::*;

#[tokio::test]
async fn swagger_ui_publishes_on_the_first_click() {
    let app = spawn_app().await;
    let token = app.token("swagger-newcomer", "events:publish");
    let root = env!("CARGO_MANIFEST_DIR");
    let screenshot = format!("{root}/target/swagger-first-click.png");
    let base = app.base.clone();
    let run = tokio::task::spawn_blocking(move || {
        Command::new("node")
            .arg(format!("{root}/tests/browser/swagger.mjs"))
            .args([base.as_str(), token.as_str(), screenshot.as_str()])
            .output()
    })
    .await
    .unwrap()
    .expect("node runs (scripts/test installs tests/browser and chromium)");
    let printed = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "{printed}\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
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
