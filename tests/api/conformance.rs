//! The served document against the gateway itself: Schemathesis (installed by
//! `scripts/test`) generates requests from `/openapi.json`, valid and invalid, and checks
//! every answer against the document: no server error, only documented statuses, content
//! types and bodies, and invalid input refused.

use crate::helpers::*;

const CHECKS: &str = "not_a_server_error,status_code_conformance,content_type_conformance,\
                      response_schema_conformance,negative_data_rejection";

#[tokio::test]
async fn schemathesis_finds_nothing_in_the_served_document() {
    let mut settings = test_settings();
    // Thousands of requests in seconds: a 429 would only hide what they test.
    settings.rate_limit_rps = 0;
    let app = spawn_app_with(settings).await;
    let token = app.token("conformance", "events:publish events:read admin");
    let url = format!("{}/openapi.json", app.base);
    // A fixed seed: the same requests every run, so a failure can be replayed.
    let args = [
        "run",
        &url,
        "--checks",
        CHECKS,
        "--max-examples",
        "50",
        "--seed",
        "1",
    ]
    .into_iter()
    .chain([
        "--no-color",
        "-H",
        &format!("Authorization: Bearer {token}"),
    ])
    .map(str::to_owned)
    .collect();
    run_tool("st", args).await;
}
