//! The event schemas of the OpenAPI document, built from the same field table that
//! validates requests, so documentation and validation cannot disagree.

use utoipa::openapi::schema::{
    AdditionalProperties, KnownFormat, ObjectBuilder, OneOfBuilder, Schema, SchemaFormat,
    SchemaType, Type,
};
use utoipa::openapi::{Ref, RefOr};

use crate::domain::data::{
    FieldKind, FieldSpec, MAX_ID_CHARS, MAX_TEXT_CHARS, METADATA_MAX_BYTES, METADATA_MAX_DEPTH,
    METADATA_MAX_KEYS,
};
use crate::domain::envelope::ENVELOPE_VERSION;
use crate::domain::{EventType, Family};

pub(super) type Schemas = Vec<(String, RefOr<Schema>)>;

pub(super) fn reference(name: &str) -> RefOr<Schema> {
    RefOr::Ref(Ref::from_schema_name(name))
}

pub(super) fn data_name(family: Family) -> String {
    format!("{}Data", capitalized(family))
}

pub(super) fn event_name(family: Family) -> String {
    format!("{}Event", capitalized(family))
}

pub(super) fn capitalized(family: Family) -> String {
    let name = family.as_str();
    name[..1].to_uppercase() + &name[1..]
}

pub(super) fn id_schema() -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .min_length(Some(1))
        .max_length(Some(MAX_ID_CHARS as usize))
        .pattern(Some("^[A-Za-z0-9._:-]+$"))
}

/// The JSON type of a kind of field (`Any` has none).
pub(super) fn kind_type(kind: FieldKind) -> Type {
    match kind {
        FieldKind::Id | FieldKind::Text | FieldKind::Timestamp => Type::String,
        FieldKind::Points => Type::Integer,
        FieldKind::Progress | FieldKind::Number => Type::Number,
        FieldKind::Metadata => Type::Object,
        FieldKind::Any => Type::Null,
    }
}

pub(super) fn field_schema(spec: &FieldSpec) -> RefOr<Schema> {
    let schema = match spec.kind {
        FieldKind::Id => id_schema(),
        FieldKind::Text => ObjectBuilder::new()
            .schema_type(Type::String)
            .max_length(Some(MAX_TEXT_CHARS as usize)),
        FieldKind::Points => ObjectBuilder::new()
            .schema_type(Type::Integer)
            .minimum(Some(0)),
        FieldKind::Progress => ObjectBuilder::new()
            .schema_type(Type::Number)
            .minimum(Some(0))
            .maximum(Some(100)),
        FieldKind::Number => ObjectBuilder::new().schema_type(Type::Number),
        FieldKind::Any => return utoipa::openapi::schema::empty().into(),
        FieldKind::Timestamp => ObjectBuilder::new()
            .schema_type(Type::String)
            .format(Some(SchemaFormat::KnownFormat(KnownFormat::DateTime))),
        FieldKind::Metadata => ObjectBuilder::new()
            .schema_type(Type::Object)
            .max_properties(Some(METADATA_MAX_KEYS))
            .additional_properties(Some(AdditionalProperties::FreeForm(true)))
            .description(Some(format!(
                "Free-form: at most {METADATA_MAX_KEYS} keys, nested {METADATA_MAX_DEPTH} levels, {METADATA_MAX_BYTES} bytes"
            ))),
    };
    // The validator takes `null` for a field that may be left out, as if it were.
    let schema = if spec.required {
        schema
    } else {
        schema.schema_type(SchemaType::from_iter([kind_type(spec.kind), Type::Null]))
    };
    schema.into()
}

pub(super) fn data_schema(family: Family) -> Schema {
    let mut object = ObjectBuilder::new()
        .schema_type(Type::Object)
        .additional_properties(Some(AdditionalProperties::FreeForm(false)));
    for spec in family.fields() {
        object = object.property(spec.name, field_schema(spec));
        if spec.required {
            object = object.required(spec.name);
        }
    }
    let stricter: Vec<String> = family
        .event_types()
        .filter(|t| t.requires_user_id())
        .map(|t| {
            let progress = if t.requires_progress() {
                " and `progress`"
            } else {
                ""
            };
            format!("`{t}` also requires `userId`{progress}")
        })
        .collect();
    let types: Vec<String> = family.event_types().map(|t| format!("`{t}`")).collect();
    let mut description = format!("The `data` of {}.", types.join(", "));
    if !stricter.is_empty() {
        description = format!("{description} {}.", stricter.join("; "));
    }
    object.description(Some(description)).into()
}

pub(super) fn client_metadata_schema() -> Schema {
    ObjectBuilder::new()
        .schema_type(Type::Object)
        .additional_properties(Some(AdditionalProperties::FreeForm(false)))
        .description(Some(
            "What a client may state; `timestamp`, `source` and `userId` are accepted but \
             replaced by the gateway.",
        ))
        .property(
            "correlationId",
            id_schema().description(Some("Used when no X-Correlation-Id header is sent")),
        )
        .property(
            "version",
            ObjectBuilder::new()
                .schema_type(Type::String)
                .enum_values(Some([ENVELOPE_VERSION])),
        )
        .property("timestamp", replaced())
        .property("source", replaced())
        .property("userId", replaced())
        .into()
}

/// Metadata the gateway fills itself: whatever a client sends there is replaced.
pub(super) fn replaced() -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(SchemaType::AnyValue)
        .description(Some("Any value; replaced by the gateway"))
}

pub(super) fn event_schema(family: Family) -> Schema {
    let types: Vec<&str> = family.event_types().map(EventType::as_str).collect();
    ObjectBuilder::new()
        .schema_type(Type::Object)
        .additional_properties(Some(AdditionalProperties::FreeForm(false)))
        .property(
            "id",
            ObjectBuilder::new()
                .schema_type(Type::String)
                .format(Some(SchemaFormat::KnownFormat(KnownFormat::Uuid)))
                .description(Some(
                    "Optional, your own id for this event: the event id is derived from it and \
                     the caller (the same every time you send it), and it comes back as \
                     `clientId`",
                )),
        )
        .property(
            "type",
            ObjectBuilder::new()
                .schema_type(Type::String)
                .enum_values(Some(types)),
        )
        .required("type")
        .property("data", reference(&data_name(family)))
        .required("data")
        .property(
            "deliverAt",
            ObjectBuilder::new()
                .schema_type(Type::String)
                .format(Some(SchemaFormat::KnownFormat(KnownFormat::DateTime)))
                .description(Some(
                    "Optional: publish the event at this time (RFC 3339), from 1 s ahead up to \
                     SCHEDULE_MAX_AHEAD (30 days). It is committed to PostgreSQL before the \
                     answer (`202`, `\"status\": \"scheduled\"`), goes out with \
                     `metadata.scheduledFor`, and can be cancelled with `DELETE \
                     /v1/events/{id}` until then",
                ))
                .examples([serde_json::json!("2026-12-24T09:00:00Z")]),
        )
        // `null` reads as no metadata.
        .property(
            "metadata",
            OneOfBuilder::new()
                .item(reference("ClientMetadata"))
                .item(ObjectBuilder::new().schema_type(Type::Null)),
        )
        .into()
}

pub(super) fn one_of_families(name: fn(Family) -> String) -> Schema {
    let mut one_of = OneOfBuilder::new();
    for family in Family::ALL {
        one_of = one_of.item(reference(&name(family)));
    }
    one_of.into()
}

pub(super) fn add_data_schemas(schemas: &mut Schemas) {
    for family in Family::ALL {
        schemas.push((data_name(family), data_schema(family).into()));
    }
}
