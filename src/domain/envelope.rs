//! A publish request parsed into a valid event, and the envelope that goes on the bus.

use serde::Serialize;
use serde_json::{Map, Value};
use time::OffsetDateTime;
use time::macros::format_description;
use uuid::Uuid;

use super::cloudevent::CloudEventOrigin;
use super::data::{EventData, check_id};
use super::event_type::EventType;
use super::problem::{FieldError, pointer_child};
use super::schedule::DeliverAt;

/// The only envelope version this gateway writes.
pub const ENVELOPE_VERSION: &str = "1.0";

/// Metadata the gateway fills itself; a client may send them but they are replaced.
const GATEWAY_METADATA: [&str; 4] = ["timestamp", "source", "userId", "scheduledFor"];

/// A request's event after parsing: known type, valid data, and its id: a new
/// time-ordered one, until [`event_id::scope_ids`](super::event_id::scope_ids) derives it
/// from the principal and the client's own id (or the request's key).
#[derive(Debug, Clone, PartialEq)]
pub struct ValidEvent {
    pub id: Uuid,
    /// The `id` the client sent with a native event; never the event id itself.
    pub client_id: Option<Uuid>,
    pub event_type: EventType,
    pub data: EventData,
    pub correlation_id: Option<String>,
    /// The CloudEvent it arrived as, if it did.
    pub origin: Option<CloudEventOrigin>,
    /// When to publish it, if it is scheduled (`deliverAt`).
    pub deliver_at: Option<DeliverAt>,
}

impl ValidEvent {
    /// Parses `{type, data, metadata?, id?, deliverAt?}`, naming every bad field below `at`.
    #[tracing::instrument(name = "validate", skip_all)]
    pub fn parse(value: Value, at: &str) -> Result<Self, Vec<FieldError>> {
        let Value::Object(mut object) = value else {
            return Err(vec![FieldError::new(at, "must be a JSON object")]);
        };
        let mut errors = Vec::new();
        for name in object.keys() {
            if !matches!(
                name.as_str(),
                "id" | "type" | "data" | "metadata" | "deliverAt"
            ) {
                errors.push(FieldError::new(pointer_child(at, name), "unknown field"));
            }
        }
        let id = parse_id(object.get("id"), at, &mut errors);
        let deliver_at = object.get("deliverAt").and_then(|value| {
            DeliverAt::parse(value, pointer_child(at, "deliverAt"))
                .map_err(|error| errors.push(error))
                .ok()
        });
        let correlation_id = parse_client_metadata(object.get("metadata"), at, &mut errors);
        let event_type = parse_type(object.get("type"), at, &mut errors);
        let data = object.remove("data");
        let data_at = pointer_child(at, "data");
        let data = match (event_type, data) {
            (Some(_), None) => {
                errors.push(FieldError::new(data_at, "is required"));
                None
            }
            (Some(event_type), Some(data)) => match EventData::parse(event_type, data, &data_at) {
                Ok(data) => Some(data),
                Err(found) => {
                    errors.extend(found);
                    None
                }
            },
            (None, _) => None,
        };
        match (event_type, data) {
            (Some(event_type), Some(data)) if errors.is_empty() => Ok(ValidEvent {
                id: Uuid::now_v7(),
                client_id: id,
                event_type,
                data,
                correlation_id,
                origin: None,
                deliver_at,
            }),
            _ => Err(errors),
        }
    }
}

/// The spec's event names, for error messages.
pub fn type_list() -> String {
    EventType::ALL.map(EventType::as_str).join(", ")
}

fn parse_type(value: Option<&Value>, at: &str, errors: &mut Vec<FieldError>) -> Option<EventType> {
    let problem = match value {
        Some(Value::String(name)) => match name.parse::<EventType>() {
            Ok(event_type) => return Some(event_type),
            Err(unknown) => format!("{unknown}; expected one of {}", type_list()),
        },
        Some(_) => "must be a string".to_owned(),
        None => "is required".to_owned(),
    };
    errors.push(FieldError::new(pointer_child(at, "type"), problem));
    None
}

fn parse_id(value: Option<&Value>, at: &str, errors: &mut Vec<FieldError>) -> Option<Uuid> {
    let value = value?;
    match value.as_str().map(Uuid::parse_str) {
        Some(Ok(id)) => Some(id),
        _ => {
            errors.push(FieldError::new(pointer_child(at, "id"), "must be a UUID"));
            None
        }
    }
}

/// Reads what a client may say in `metadata`: a correlation id and the envelope version.
fn parse_client_metadata(
    value: Option<&Value>,
    at: &str,
    errors: &mut Vec<FieldError>,
) -> Option<String> {
    let at = pointer_child(at, "metadata");
    let metadata = match value {
        None | Some(Value::Null) => return None,
        Some(Value::Object(metadata)) => metadata,
        Some(_) => {
            errors.push(FieldError::new(at, "must be a JSON object"));
            return None;
        }
    };
    for name in metadata.keys() {
        let known = matches!(name.as_str(), "correlationId" | "version")
            || GATEWAY_METADATA.contains(&name.as_str());
        if !known {
            errors.push(FieldError::new(
                pointer_child(&at, name),
                "unknown metadata field",
            ));
        }
    }
    if let Some(version) = metadata.get("version")
        && version.as_str() != Some(ENVELOPE_VERSION)
    {
        errors.push(FieldError::new(
            pointer_child(&at, "version"),
            format!("unsupported envelope version; this gateway speaks \"{ENVELOPE_VERSION}\""),
        ));
    }
    let correlation_id = metadata.get("correlationId")?;
    match check_id(correlation_id) {
        Ok(()) => correlation_id.as_str().map(str::to_owned),
        Err(message) => {
            errors.push(FieldError::new(
                pointer_child(&at, "correlationId"),
                message,
            ));
            None
        }
    }
}

/// The message body that lands on the bus: the spec's event plus its id.
#[derive(Debug, Clone, Serialize)]
pub struct Envelope<'a> {
    pub id: Uuid,
    #[serde(rename = "type")]
    pub event_type: &'static str,
    pub data: &'a Map<String, Value>,
    pub metadata: EnvelopeMetadata<'a>,
}

/// The spec's `EventMetadata`, filled by the gateway.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EnvelopeMetadata<'a> {
    pub timestamp: String,
    pub correlation_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_id: Option<&'a str>,
    pub source: &'a str,
    pub version: &'static str,
    /// The `id` the client sent, when it chose one (a CloudEvent's is in `cloud_event`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_id: Option<Uuid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cloud_event: Option<&'a CloudEventOrigin>,
    /// When a scheduled event was due (its `deliverAt`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scheduled_for: Option<String>,
}

impl<'a> Envelope<'a> {
    pub fn new(
        event: &'a ValidEvent,
        correlation_id: &'a str,
        source: &'a str,
        accepted_at: OffsetDateTime,
    ) -> Self {
        Envelope {
            id: event.id,
            event_type: event.event_type.as_str(),
            data: event.data.as_map(),
            metadata: EnvelopeMetadata {
                timestamp: rfc3339_millis(accepted_at),
                correlation_id,
                user_id: event.data.user_id(),
                source,
                version: ENVELOPE_VERSION,
                client_id: event.client_id,
                cloud_event: event.origin.as_ref(),
                scheduled_for: event.deliver_at.as_ref().map(DeliverAt::text),
            },
        }
    }
}

/// RFC 3339 in UTC with exactly three fractional digits, e.g. `2026-01-31T12:00:00.123Z`.
pub fn rfc3339_millis(at: OffsetDateTime) -> String {
    let format =
        format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z");
    at.to_offset(time::UtcOffset::UTC)
        .format(&format)
        .unwrap_or_else(|_| at.unix_timestamp().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pointers(value: Value) -> Vec<String> {
        ValidEvent::parse(value, "")
            .err()
            .unwrap_or_default()
            .into_iter()
            .map(|e| e.pointer)
            .collect()
    }

    #[test]
    fn a_full_request_parses() {
        let id = Uuid::now_v7();
        let event = ValidEvent::parse(
            json!({"id": id.to_string(), "type": "quest.started",
                "data": {"questId": "q1", "userId": "u1"},
                "metadata": {"correlationId": "c-1", "version": "1.0", "source": "ignored"}}),
            "",
        )
        .unwrap();
        assert_eq!(event.client_id, Some(id));
        assert_ne!(
            event.id, id,
            "the event id is the gateway's until it is scoped"
        );
        assert_eq!(event.event_type, EventType::QuestStarted);
        assert_eq!(event.correlation_id.as_deref(), Some("c-1"));
    }

    #[test]
    fn unknown_type_is_named_and_its_data_not_judged() {
        let found = ValidEvent::parse(json!({"type": "quest.exploded", "data": {}}), "/events/2")
            .unwrap_err();
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].pointer, "/events/2/type");
        assert!(found[0].message.contains("quest.exploded"));
    }

    #[test]
    fn envelope_problems_are_all_reported() {
        let found = pointers(json!({"id": "nope", "type": "quest.started", "extra": 1,
            "metadata": {"version": "2.0", "correlationId": "has space", "color": "red"}}));
        assert_eq!(
            found,
            vec![
                "/extra",
                "/id",
                "/metadata/color",
                "/metadata/version",
                "/metadata/correlationId",
                "/data"
            ]
        );
    }

    #[test]
    fn envelope_fills_metadata_from_the_gateway() {
        let event = ValidEvent::parse(
            json!({"type": "reward.claimed", "data": {"rewardId": "r", "userId": "u9",
                "name": "Gold", "type": "coins", "value": 5}}),
            "",
        )
        .unwrap();
        assert_eq!(event.id.get_version_num(), 7, "a new id is time-ordered");
        assert_eq!(event.client_id, None);
        let at = OffsetDateTime::from_unix_timestamp_nanos(1_769_860_800_123_456_789).unwrap();
        let id = event.id;
        let body = serde_json::to_value(Envelope::new(&event, "corr", "svc", at)).unwrap();
        assert_eq!(
            body,
            json!({"id": id, "type": "reward.claimed",
                "data": {"rewardId": "r", "userId": "u9", "name": "Gold", "type": "coins", "value": 5},
                "metadata": {"timestamp": "2026-01-31T12:00:00.123Z", "correlationId": "corr",
                    "userId": "u9", "source": "svc", "version": "1.0"}})
        );
    }

    #[test]
    fn an_envelope_names_the_id_the_client_chose() {
        let client = Uuid::new_v4();
        let event = ValidEvent::parse(
            json!({"id": client, "type": "quest.started", "data": {"questId": "q", "userId": "u"}}),
            "",
        )
        .unwrap();
        let at = OffsetDateTime::UNIX_EPOCH;
        let body = serde_json::to_value(Envelope::new(&event, "corr", "svc", at)).unwrap();
        assert_eq!(body["metadata"]["clientId"], json!(client));
        assert_eq!(body["id"], json!(event.id));
    }
}
