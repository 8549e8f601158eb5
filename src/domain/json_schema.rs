//! JSON Schema 2020-12 of each event type, from the same field table that validates
//! requests: what a producer sends (for `GET /v1/schemas/{type}`), and the envelope that
//! goes on the bus (for the AsyncAPI document). Where a rule cannot be said in JSON Schema
//! (metadata's total size, a NUL inside a free-form value) the schema is the looser one:
//! it never refuses what the gateway takes.

use serde_json::{Map, Value, json};

use super::data::{
    FieldKind, FieldSpec, MAX_ID_CHARS, MAX_TEXT_CHARS, METADATA_MAX_BYTES, METADATA_MAX_DEPTH,
    METADATA_MAX_KEYS, is_required,
};
use super::envelope::ENVELOPE_VERSION;
use super::event_type::EventType;

pub const DIALECT: &str = "https://json-schema.org/draft/2020-12/schema";

/// The safe alphabet of ids (`check_id`).
const ID_PATTERN: &str = "^[A-Za-z0-9._:-]+$";
/// No U+0000: PostgreSQL cannot hold it.
const NO_NUL: &str = "^[^\\u0000]*$";
/// A UUID in each form the gateway's parser takes (simple, hyphenated, braced, URN).
const UUID: &str = "^([0-9a-fA-F]{32}|\\{?[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\\}?|urn:uuid:[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12})$";
/// RFC 3339, as the gateway's parser reads it.
const RFC3339: &str = "^[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(\\.[0-9]+)?([Zz]|[+-][0-9]{2}:[0-9]{2})$";

/// Where the nesting definitions of metadata live: a schema's own `$defs`, or a
/// document's shared schemas (AsyncAPI's `components/schemas`).
pub const OWN_DEFS: &str = "#/$defs/";

/// What a producer sends for `event_type`: `POST /v1/events` takes exactly this.
pub fn producer_schema(event_type: EventType) -> Value {
    json!({
        "$schema": DIALECT,
        "$id": format!("urn:event-gateway:schema:{event_type}"),
        "title": event_type.as_str(),
        "description": format!("A {event_type} event as a producer sends it; the gateway adds the rest of the metadata."),
        "type": "object",
        "properties": {
            "id": {"type": "string", "format": "uuid", "pattern": UUID, "description": "Optional; generated when absent"},
            "type": {"const": event_type.as_str()},
            "data": data_schema(event_type, OWN_DEFS),
            "metadata": {"anyOf": [client_metadata(), {"type": "null"}]},
            "deliverAt": {"type": "string", "format": "date-time", "description": "Optional; publish at this time (RFC 3339), from 1 s ahead up to SCHEDULE_MAX_AHEAD"},
        },
        "required": ["type", "data"],
        "additionalProperties": false,
        "$defs": depth_defs(OWN_DEFS),
    })
}

/// The envelope on the bus: the event with the metadata the gateway filled in; the
/// nesting definitions are found under `defs` ([`depth_defs`]).
pub fn envelope_schema(event_type: EventType, defs: &str) -> Value {
    json!({
        "type": "object",
        "properties": {
            "id": {"type": "string", "format": "uuid", "description": "The event id, also the AMQP message_id: consumers drop redeliveries by it"},
            "type": {"const": event_type.as_str()},
            "data": data_schema(event_type, defs),
            "metadata": {
                "type": "object",
                "properties": {
                    "timestamp": {"type": "string", "format": "date-time", "description": "When the gateway accepted it (UTC, milliseconds)"},
                    "correlationId": id(),
                    "userId": id(),
                    "source": {"type": "string", "description": "The token's sub, or webhook:<source>"},
                    "version": {"const": ENVELOPE_VERSION},
                    "clientId": {"type": "string", "format": "uuid", "description": "The id the sender chose, when it did; the event id is derived from it and metadata.source"},
                    "cloudEvent": {"type": "object", "description": "The CloudEvent it arrived as: source, id, time, subject"},
                    "scheduledFor": {"type": "string", "format": "date-time", "description": "The deliverAt it was scheduled for (UTC, milliseconds)"},
                },
                "required": ["timestamp", "correlationId", "source", "version"],
            },
        },
        "required": ["id", "type", "data", "metadata"],
    })
}

/// `data` of `event_type`: its family's fields, the type's own required ones.
pub fn data_schema(event_type: EventType, defs: &str) -> Value {
    let specs = event_type.family().fields();
    let properties: Map<String, Value> = specs
        .iter()
        .map(|spec| {
            let schema = field(spec, is_required(event_type, spec), defs);
            (spec.name.to_owned(), schema)
        })
        .collect();
    let required: Vec<&str> = specs
        .iter()
        .filter(|spec| is_required(event_type, spec))
        .map(|spec| spec.name)
        .collect();
    json!({
        "type": "object",
        "properties": properties,
        "required": required,
        "additionalProperties": false,
    })
}

fn id() -> Value {
    json!({"type": "string", "minLength": 1, "maxLength": MAX_ID_CHARS, "pattern": ID_PATTERN})
}

fn field(spec: &FieldSpec, required: bool, defs: &str) -> Value {
    let schema = match spec.kind {
        FieldKind::Id => id(),
        FieldKind::Text => {
            json!({"type": "string", "maxLength": MAX_TEXT_CHARS, "pattern": NO_NUL})
        }
        FieldKind::Points => json!({"type": "integer", "minimum": 0}),
        FieldKind::Progress => json!({"type": "number", "minimum": 0, "maximum": 100}),
        FieldKind::Number => json!({"type": "number"}),
        FieldKind::Any => return json!({}),
        FieldKind::Timestamp => {
            json!({"type": "string", "format": "date-time", "pattern": RFC3339})
        }
        FieldKind::Metadata => metadata(defs),
    };
    if required {
        schema
    } else {
        // The validator takes `null` for a field that may be left out, as if it were.
        json!({"anyOf": [schema, {"type": "null"}]})
    }
}

/// Free-form metadata: at most so many keys, nested so deep; no string in it can be
/// longer than the whole of it may be.
fn metadata(defs: &str) -> Value {
    json!({
        "type": "object",
        "maxProperties": METADATA_MAX_KEYS,
        "additionalProperties": {"$ref": format!("{defs}{}", nested(METADATA_MAX_DEPTH - 1))},
        "description": format!("Free-form: at most {METADATA_MAX_KEYS} keys, nested {METADATA_MAX_DEPTH} levels, {METADATA_MAX_BYTES} bytes as JSON"),
    })
}

fn nested(levels: usize) -> String {
    format!("MetadataValue{levels}")
}

/// `MetadataValueN`: a metadata value with at most N levels of objects and arrays, each
/// definition referring to the next under `defs`.
pub fn depth_defs(defs: &str) -> Value {
    let mut found = Map::new();
    found.insert(
        nested(0),
        json!({"not": {"type": ["object", "array"]}, "maxLength": METADATA_MAX_BYTES, "pattern": NO_NUL}),
    );
    for level in 1..METADATA_MAX_DEPTH {
        let inner = format!("{defs}{}", nested(level - 1));
        found.insert(
            nested(level),
            json!({"anyOf": [
                {"$ref": inner},
                {"type": "object", "additionalProperties": {"$ref": inner}},
                {"type": "array", "items": {"$ref": inner}},
            ]}),
        );
    }
    Value::Object(found)
}

/// What a client may state in `metadata`; the gateway fills the rest itself.
fn client_metadata() -> Value {
    let replaced = json!({"description": "Any value; replaced by the gateway"});
    json!({
        "type": "object",
        "properties": {
            "correlationId": id(),
            "version": {"const": ENVELOPE_VERSION},
            "timestamp": replaced,
            "source": replaced,
            "userId": replaced,
        },
        "additionalProperties": false,
    })
}
