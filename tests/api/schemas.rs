//! `GET /v1/schemas/{type}` against the gateway itself: a real JSON Schema validator
//! (the `jsonschema` crate, 2020-12) over the validation suite's accepted and refused
//! examples; the schema and the gateway never disagree.

use serde_json::{Value, json};

use crate::helpers::*;
use crate::validation::refused_cases;

async fn schema(app: &TestApp, event_type: &str) -> jsonschema::Validator {
    let response = app.get(&format!("/v1/schemas/{event_type}")).await;
    assert_eq!(response.status(), 200, "{event_type}");
    assert_eq!(header(&response, "content-type"), "application/schema+json");
    let schema: Value = response.json().await.unwrap();
    assert_eq!(
        schema["$schema"],
        "https://json-schema.org/draft/2020-12/schema"
    );
    jsonschema::draft202012::new(&schema).expect("a valid 2020-12 schema")
}

#[tokio::test]
async fn the_schemas_and_the_gateway_never_disagree() {
    let app = spawn_app().await;
    let list: Value = app.get("/v1/schemas").await.json().await.unwrap();
    let types: Vec<String> = list["schemas"]
        .as_array()
        .unwrap()
        .iter()
        .map(|entry| entry["type"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(types.len(), 18);
    let mut examples: Vec<(String, Value, bool)> = types
        .iter()
        .map(|t| (t.clone(), json!({"type": t, "data": valid_data(t)}), true))
        .collect();
    examples.extend(
        refused_cases()
            .into_iter()
            .map(|(t, data, _)| (t.to_owned(), json!({"type": t, "data": data}), false)),
    );
    // The envelope's own rules too: an unknown field, a bad id, metadata the client may not set.
    examples.push((
        "quest.created".into(),
        json!({"type": "quest.created", "data": {"questId": "q"}, "color": 1}),
        false,
    ));
    examples.push((
        "quest.created".into(),
        json!({"type": "quest.created", "id": "nope", "data": {"questId": "q"}}),
        false,
    ));
    examples.push((
        "quest.created".into(),
        json!({"type": "quest.created", "data": {"questId": "q"}, "metadata": {"color": "red"}}),
        false,
    ));
    examples.push((
        "quest.created".into(),
        json!({"type": "quest.created", "data": {"questId": "q"}, "metadata": null}),
        true,
    ));
    // A scheduled event (the gateway's window is checked at the call, the schema's is not).
    examples.push((
        "quest.created".into(),
        json!({"type": "quest.created", "data": {"questId": "q"},
            "deliverAt": crate::scheduled::in_(std::time::Duration::from_secs(60))}),
        true,
    ));
    examples.push((
        "quest.created".into(),
        json!({"type": "quest.created", "data": {"questId": "q"}, "deliverAt": 1765022400}),
        false,
    ));
    for (event_type, body, valid) in examples {
        let by_schema = schema(&app, &event_type).await.is_valid(&body);
        let status = app.publish(&body).await.status().as_u16();
        let by_gateway = status == 202;
        assert_eq!(by_schema, valid, "the schema on {body}");
        assert_eq!(by_gateway, valid, "the gateway ({status}) on {body}");
    }
    assert_eq!(app.get("/v1/schemas/quest.exploded").await.status(), 404);
}
