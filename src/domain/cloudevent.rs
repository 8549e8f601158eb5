//! CloudEvents 1.0 (HTTP binding, JSON format) read into the gateway's own events.
//!
//! `type` must be one of the spec's event types and `data` is validated by its schema.
//! The event id is derived from the principal, `source` and `id` (which CloudEvents
//! defines as unique together; see [`event_id`](super::event_id)), so a redelivered
//! CloudEvent is recognised and not published twice, and no other caller can reuse it.
//! `source`, `id`, `time` and `subject` are kept in `metadata.cloudEvent`;
//! `metadata.source` stays the authenticated principal. The extension attribute
//! `deliverat` (RFC 3339) schedules the event; other extension attributes are not
//! carried.

use std::collections::HashMap;

use serde::Serialize;
use serde_json::{Map, Value};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use uuid::Uuid;

use super::data::EventData;
use super::envelope::{ValidEvent, type_list};
use super::event_type::EventType;
use super::problem::{FieldError, pointer_child};
use super::schedule::DeliverAt;

pub const SPEC_VERSION: &str = "1.0";

/// The attributes CloudEvents 1.0 defines; any other is an extension.
const CONTEXT_ATTRIBUTES: [&str; 8] = [
    "specversion",
    "id",
    "source",
    "type",
    "datacontenttype",
    "dataschema",
    "subject",
    "time",
];

/// The extension attribute that schedules an event (lower-case, as CloudEvents names are).
pub const DELIVER_AT: &str = "deliverat";

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

/// Why a CloudEvent was not read. Missing required attributes make it malformed (400);
/// anything else makes it invalid (422). Either way every problem is named.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CloudEventError {
    Missing(Vec<FieldError>),
    Invalid(Vec<FieldError>),
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
pub fn parse_structured(value: Value, at: &str) -> Result<ValidEvent, CloudEventError> {
    let Value::Object(mut object) = value else {
        return Err(CloudEventError::Invalid(vec![FieldError::new(
            at,
            "must be a CloudEvent JSON object",
        )]));
    };
    let data = object.remove("data");
    let mut errors = Vec::new();
    if object.contains_key("data_base64") {
        errors.push(FieldError::new(
            pointer_child(at, "data_base64"),
            "binary data is not accepted; send JSON `data`",
        ));
    }
    // Extension attributes may be of any JSON type; they are not carried.
    let attributes = object
        .into_iter()
        .filter(|(name, _)| CONTEXT_ATTRIBUTES.contains(&name.as_str()) || name == DELIVER_AT)
        .filter_map(|(name, value)| match value {
            // Kept in `metadata.cloudEvent`, where PostgreSQL's jsonb cannot hold U+0000.
            Value::String(text) if text.contains('\0') => {
                errors.push(FieldError::new(
                    pointer_child(at, &name),
                    "must not contain the NUL character (U+0000)",
                ));
                None
            }
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
) -> Result<ValidEvent, CloudEventError> {
    let attributes = attributes
        .into_iter()
        .filter_map(|(name, value)| value.as_str().map(|text| (name, text.to_owned())))
        .collect();
    read(attributes, Some(data), Mode::Binary, Vec::new())
}

fn read(
    mut attributes: HashMap<String, String>,
    data: Option<Value>,
    mode: Mode<'_>,
    mut errors: Vec<FieldError>,
) -> Result<ValidEvent, CloudEventError> {
    let mut missing = Vec::new();
    let mut required = |name: &str| match attributes.remove(name) {
        Some(value) if !value.is_empty() => Some(value),
        Some(_) => {
            errors.push(FieldError::new(mode.pointer(name), "must not be empty"));
            None
        }
        // Present but not a string: already named.
        None if errors.iter().any(|e| e.pointer == mode.pointer(name)) => None,
        None => {
            missing.push(FieldError::new(mode.pointer(name), "is required"));
            None
        }
    };
    let spec_version = required("specversion");
    let id = required("id");
    let source = required("source");
    let event_type = required("type");
    if !missing.is_empty() {
        return Err(CloudEventError::Missing(missing));
    }
    let (time, deliver_at) =
        check_attribute_values(&mut attributes, spec_version.as_deref(), mode, &mut errors);
    let (Some(id), Some(source), Some(event_type)) = (id, source, event_type) else {
        return Err(CloudEventError::Invalid(errors));
    };
    let Some(event_type) = check_type(&event_type, mode, &mut errors) else {
        return Err(CloudEventError::Invalid(errors));
    };
    let data = parse_data(event_type, data, mode);
    match data {
        Ok(data) if errors.is_empty() => Ok(ValidEvent {
            // Scoped to the principal once it is known.
            id: Uuid::now_v7(),
            client_id: None,
            event_type,
            data,
            correlation_id: None,
            origin: Some(CloudEventOrigin {
                id,
                source,
                time,
                subject: attributes.remove("subject"),
            }),
            deliver_at,
        }),
        Ok(_) => Err(CloudEventError::Invalid(errors)),
        Err(found) => {
            errors.extend(found);
            Err(CloudEventError::Invalid(errors))
        }
    }
}

/// The event's `data`; in binary mode the body is `data`, so its errors point into the
/// body.
fn parse_data(
    event_type: EventType,
    data: Option<Value>,
    mode: Mode<'_>,
) -> Result<EventData, Vec<FieldError>> {
    let data_at = match mode {
        Mode::Structured(at) => pointer_child(at, "data"),
        Mode::Binary => String::new(),
    };
    match data {
        Some(data) => EventData::parse(event_type, data, &data_at),
        None => Err(vec![FieldError::new(&data_at, "is required")]),
    }
}

/// Checks the values of `specversion`, `datacontenttype`, `time` and `deliverat`; returns
/// `time` and `deliverat`.
fn check_attribute_values(
    attributes: &mut HashMap<String, String>,
    spec_version: Option<&str>,
    mode: Mode<'_>,
    errors: &mut Vec<FieldError>,
) -> (Option<String>, Option<DeliverAt>) {
    if spec_version.is_some_and(|v| v != SPEC_VERSION) {
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
    let deliver_at = attributes.remove(DELIVER_AT).and_then(|text| {
        DeliverAt::parse(&Value::String(text), mode.pointer(DELIVER_AT))
            .map_err(|error| errors.push(error))
            .ok()
    });
    (time, deliver_at)
}

fn check_type(name: &str, mode: Mode<'_>, errors: &mut Vec<FieldError>) -> Option<EventType> {
    name.parse::<EventType>()
        .map_err(|unknown| {
            errors.push(FieldError::new(
                mode.pointer("type"),
                format!("{unknown}; expected one of {}", type_list()),
            ))
        })
        .ok()
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::EventType;
    use crate::domain::event_id::ChosenId;
    use serde_json::json;

    fn into_errors(error: CloudEventError) -> Vec<FieldError> {
        match error {
            CloudEventError::Missing(errors) | CloudEventError::Invalid(errors) => errors,
        }
    }

    fn structured(value: Value) -> Result<ValidEvent, Vec<String>> {
        parse_structured(value, "")
            .map_err(|error| into_errors(error).into_iter().map(|e| e.pointer).collect())
    }

    #[test]
    fn a_structured_event_keeps_its_id_type_and_origin() {
        let id = Uuid::new_v4().to_string();
        let event = structured(json!({"specversion": "1.0", "id": id,
            "source": "/game/server-7", "type": "quest.started", "subject": "q1",
            "sequence": 7, "traced": true,
            "time": "2026-11-26T10:00:00Z", "datacontenttype": "application/json",
            "data": {"questId": "q1", "userId": "u1"}}))
        .unwrap();
        assert_eq!(
            event.chosen_id(),
            Some(ChosenId::CloudEvent {
                source: "/game/server-7",
                id: &id
            })
        );
        assert_eq!(event.event_type, EventType::QuestStarted);
        let origin = event.origin.unwrap();
        assert_eq!(origin.source, "/game/server-7");
        assert_eq!(origin.subject.as_deref(), Some("q1"));
    }

    #[test]
    fn every_missing_attribute_and_bad_field_is_named() {
        let missing = parse_structured(json!({"type": "quest.started", "data": {}}), "/2");
        let Err(CloudEventError::Missing(errors)) = missing else {
            panic!("{missing:?}")
        };
        let pointers: Vec<&str> = errors.iter().map(|e| e.pointer.as_str()).collect();
        assert_eq!(pointers, ["/2/specversion", "/2/id", "/2/source"]);
        assert_eq!(
            structured(
                json!({"specversion": "1.0", "id": "1", "type": "quest.started",
                "source": 7, "data": {"questId": "q", "userId": "u"}})
            ),
            Err(vec!["/source".to_owned()])
        );
        assert_eq!(
            structured(
                json!({"specversion": "0.3", "id": "1", "type": "quest.started",
                "source": "/s", "time": "yesterday", "data": {"questId": ""}})
            ),
            Err(vec![
                "/specversion".to_owned(),
                "/time".into(),
                "/data/questId".into(),
                "/data/userId".into(),
            ])
        );
        assert_eq!(
            structured(json!({"specversion": "1.0", "id": "1", "source": "/s",
                "type": "quest.exploded", "data": {}})),
            Err(vec!["/type".to_owned()])
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
        let missing = parse_binary(
            headers(&[("specversion", "1.0"), ("id", "1"), ("source", "/s")]),
            json!({"questId": "q"}),
        );
        assert_eq!(
            missing,
            Err(CloudEventError::Missing(vec![FieldError::new(
                "/headers/ce-type",
                "is required"
            )]))
        );
        let errors = into_errors(
            parse_binary(
                headers(&[
                    ("specversion", "1.0"),
                    ("id", "1"),
                    ("source", "/s"),
                    ("type", "quest.started"),
                ]),
                json!({"questId": "q", "userId": "u", "points": -1}),
            )
            .unwrap_err(),
        );
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
