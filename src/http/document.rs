//! The OpenAPI document as it is served at `/openapi.json`, printed by `event-gateway
//! openapi` and committed as `openapi/openapi.json`: with its examples, and with
//! `application/json` first among a body's media types, because Swagger UI offers the
//! first one as the default (utoipa keeps them in alphabetical order, which would put
//! CloudEvents first).

use serde::ser::{Serialize, SerializeMap, SerializeSeq, Serializer};
use serde_json::Value;

const FIRST: &str = "application/json";

/// Pretty JSON of `document`, `application/json` first in every `content` object.
pub fn render(document: &utoipa::openapi::OpenApi) -> serde_json::Result<String> {
    let value = serde_json::to_value(document)?;
    serde_json::to_string_pretty(&JsonFirst(&value))
}

struct JsonFirst<'a>(&'a Value);

impl Serialize for JsonFirst<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            Value::Object(object) => {
                let mut map = serializer.serialize_map(Some(object.len()))?;
                let first = object.get_key_value(FIRST);
                for (key, value) in first
                    .into_iter()
                    .chain(object.iter().filter(|(k, _)| *k != FIRST))
                {
                    map.serialize_entry(key, &JsonFirst(value))?;
                }
                map.end()
            }
            Value::Array(items) => {
                let mut seq = serializer.serialize_seq(Some(items.len()))?;
                for item in items {
                    seq.serialize_element(&JsonFirst(item))?;
                }
                seq.end()
            }
            other => other.serialize(serializer),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn json_comes_first_and_nothing_else_moves() {
        let value = json!({"b": 1, "content": {"application/cloudevents+json": 1, "application/json": 2}, "a": [{"z": 0, "application/json": 3}]});
        let text = serde_json::to_string(&JsonFirst(&value)).unwrap();
        assert_eq!(
            text,
            r#"{"a":[{"application/json":3,"z":0}],"b":1,"content":{"application/json":2,"application/cloudevents+json":1}}"#
        );
    }
}
