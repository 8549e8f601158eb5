//! CloudEvents 1.0 (HTTP binding, JSON format) read into the gateway's own events.
//!
//! `type` must be one of the spec's event types and `data` is validated by its schema.
//! The CloudEvent `id` is the event id: a UUID is used as it is; any other id becomes a
//! UUID derived from `source` and `id` (which CloudEvents defines as unique together), so a
//! redelivered CloudEvent is recognised and not published twice. `source`, `id`, `time`
//! and `subject` are kept in `metadata.cloudEvent`; `metadata.source` stays the
//! authenticated principal. Extension attributes are not carried.

use serde::Serialize;
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use uuid::Uuid;

use super::envelope::ValidEvent;
use super::problem::{FieldError, pointer_child};

pub const SPEC_VERSION: &str = "1.0";

/// The CloudEvent attributes an event keeps, in `metadata.cloudEvent`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CloudEventOrigin {
    pub id: String,
    pub source: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub time: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
}

/// Where the attributes came from, which decides how errors point at them.
#[derive(Clone, Copy)]
enum Mode<'a> {
    /// Members of a JSON object at this pointer.
    Structured(&'a str),
    /// `ce-*` headers; the body is `data`.
    Binary,
}

impl Mode<'_> {
    fn pointer(self, attribute: &str) -> String {
        match self {
            Mode::Structured(at) => pointer_child(at, attribute),
            Mode::Binary => format!("/headers/ce-{attribute}"),
        }
    }
}

/// A structured-mode CloudEvent (one JSON object), with errors below `at`.
pub fn parse_structured(value: Value, at: &str) -> Result<ValidEvent, Vec<FieldError>> {
    let Value::Object(mut object) = value else {
        return Err(vec![FieldError::new(
            at,
            "must be a CloudEvent JSON object",
        )]);
    };
    let data = object.remove("data");
    let mut errors = Vec::new();
    if object.contains_key("data_base64") {
        errors.push(FieldError::new(
            pointer_child(at, "data_base64"),
            "binary data is not accepted; send JSON `data`",
        ));
    }
    let attributes = object
        .into_iter()
        .filter_map(|(name, value)| match value {
            Value::String(text) => Some((name, text)),
            _ => {
                errors.push(FieldError::new(
                    pointer_child(at, &name),
                    "must be a string",
                ));
                None
            }
        })
        .collect();
    read(attributes, data, Mode::Structured(at), errors)
}

/// A binary-mode CloudEvent: the `ce-*` headers (names lower-case, without the prefix) and
/// the body as `data`. Errors in `data` point into the body.
pub fn parse_binary(
    attributes: Map<String, Value>,
    data: Value,
) -> Result<ValidEvent, Vec<FieldError>> {
    let attributes = attributes
        .into_iter()
        .filter_map(|(name, value)| value.as_str().map(|text| (name, text.to_owned())))
        .collect();
    read(attributes, Some(data), Mode::Binary, Vec::new()).map_err(|errors| {
        errors
            .into_iter()
            .map(|e| match e.pointer.strip_prefix("/data") {
                Some(inside) => FieldError::new(inside, e.message),
                None => e,
            })
            .collect()
    })
}

fn read(
    mut attributes: std::collections::HashMap<String, String>,
    data: Option<Value>,
    mode: Mode<'_>,
    mut errors: Vec<FieldError>,
) -> Result<ValidEvent, Vec<FieldError>> {
    let mut required = |name: &str| match attributes.remove(name) {
        Some(value) if !value.is_empty() => Some(value),
        Some(_) => {
            errors.push(FieldError::new(mode.pointer(name), "must not be empty"));
            None
        }
        // Present but not a string: already named.
        None if errors.iter().any(|e| e.pointer == mode.pointer(name)) => None,
        None => {
            errors.push(FieldError::new(mode.pointer(name), "is required"));
            None
        }
    };
    let spec_version = required("specversion");
    let id = required("id");
    let source = required("source");
    let event_type = required("type");
    if spec_version.as_deref().is_some_and(|v| v != SPEC_VERSION) {
        errors.push(FieldError::new(
            mode.pointer("specversion"),
            format!("must be \"{SPEC_VERSION}\""),
        ));
    }
    if let Some(content_type) = attributes.get("datacontenttype")
        && !is_json_media_type(content_type)
    {
        errors.push(FieldError::new(
            mode.pointer("datacontenttype"),
            "must be application/json: data is validated as JSON",
        ));
    }
    let time = attributes.remove("time");
    if time
        .as_deref()
        .is_some_and(|t| OffsetDateTime::parse(t, &Rfc3339).is_err())
    {
        errors.push(FieldError::new(
            mode.pointer("time"),
            "must be an RFC 3339 date-time",
        ));
    }
    let (Some(id), Some(source), Some(event_type)) = (id, source, event_type) else {
        return Err(errors);
    };
    let native = json!({
        "id": event_id(&source, &id),
        "type": event_type,
        "data": data.unwrap_or(Value::Null),
    });
    let at = match mode {
        Mode::Structured(at) => at,
        Mode::Binary => "",
    };
    let parsed = ValidEvent::parse(native, at);
    if let Err(found) = &parsed {
        errors.extend(found.iter().cloned().map(|mut e| {
            if e.pointer == pointer_child(at, "type") {
                e.pointer = mode.pointer("type");
            }
            e
        }));
    }
    let mut event = match parsed {
        Ok(event) if errors.is_empty() => event,
        _ => return Err(errors),
    };
    event.origin = Some(CloudEventOrigin {
        id,
        source,
        time,
        subject: attributes.remove("subject"),
    });
    Ok(event)
}

/// `application/json`, or any `+json` type, with or without parameters.
pub fn is_json_media_type(content_type: &str) -> bool {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// The CloudEvent's id when it is a UUID; otherwise a UUID (version 8) hashed from
/// `source` and `id`, the pair CloudEvents defines as unique.
fn event_id(source: &str, id: &str) -> Uuid {
    Uuid::parse_str(id).unwrap_or_else(|_| {
        let digest = Sha256::digest(format!("{source}\n{id}").as_bytes());
        let mut bytes = [0u8; 16];
        bytes.copy_from_slice(&digest[..16]);
        Uuid::new_v8(bytes)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::EventType;

    fn structured(value: Value) -> Result<ValidEvent, Vec<String>> {
        parse_structured(value, "")
            .map_err(|errors| errors.into_iter().map(|e| e.pointer).collect())
    }

    #[test]
    fn a_structured_event_keeps_its_id_type_and_origin() {
        let id = Uuid::new_v4();
        let event = structured(json!({"specversion": "1.0", "id": id.to_string(),
            "source": "/game/server-7", "type": "quest.started", "subject": "q1",
            "time": "2026-11-26T10:00:00Z", "datacontenttype": "application/json",
            "data": {"questId": "q1", "userId": "u1"}}))
        .unwrap();
        assert_eq!(event.id, id);
        assert!(event.id_given);
        assert_eq!(event.event_type, EventType::QuestStarted);
        let origin = event.origin.unwrap();
        assert_eq!(origin.source, "/game/server-7");
        assert_eq!(origin.subject.as_deref(), Some("q1"));
    }

    #[test]
    fn other_ids_map_to_one_stable_uuid_per_source() {
        let event = |source: &str| {
            structured(
                json!({"specversion": "1.0", "id": "order-42", "source": source,
                "type": "quest.started", "data": {"questId": "q1", "userId": "u1"}}),
            )
            .unwrap()
            .id
        };
        assert_eq!(event("/a"), event("/a"));
        assert_ne!(event("/a"), event("/b"));
    }

    #[test]
    fn every_missing_attribute_and_bad_field_is_named() {
        assert_eq!(
            structured(
                json!({"specversion": "0.3", "type": "quest.started", "source": 7,
                "data": {"questId": ""}})
            ),
            Err(vec![
                "/source".to_owned(),
                "/id".into(),
                "/specversion".into(),
            ])
        );
        assert_eq!(
            structured(json!({"specversion": "1.0", "id": "1", "source": "/s",
                "type": "quest.started", "data": {"questId": "", "userId": "u"}})),
            Err(vec!["/data/questId".to_owned()])
        );
    }

    #[test]
    fn binary_mode_points_at_headers_and_into_the_body() {
        let headers = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), json!(v)))
                .collect::<Map<String, Value>>()
        };
        let errors = parse_binary(
            headers(&[("specversion", "1.0"), ("id", "1"), ("source", "/s")]),
            json!({"questId": "q"}),
        )
        .unwrap_err();
        assert_eq!(errors[0].pointer, "/headers/ce-type");
        let errors = parse_binary(
            headers(&[
                ("specversion", "1.0"),
                ("id", "1"),
                ("source", "/s"),
                ("type", "quest.started"),
            ]),
            json!({"questId": "q", "userId": "u", "points": -1}),
        )
        .unwrap_err();
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].pointer, "/points");
    }

    #[test]
    fn json_content_types() {
        assert!(is_json_media_type("application/json"));
        assert!(is_json_media_type("Application/JSON; charset=utf-8"));
        assert!(is_json_media_type("application/cloudevents+json"));
        assert!(!is_json_media_type("text/plain"));
        assert!(!is_json_media_type("application/x-www-form-urlencoded"));
        assert!(!is_json_media_type(""));
    }
}
