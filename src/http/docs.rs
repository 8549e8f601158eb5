//! The OpenAPI document. Event schemas are generated from the same field table that
//! validates requests, so documentation and validation cannot disagree.

use std::borrow::Cow;

use utoipa::openapi::schema::{
    AdditionalProperties, ArrayBuilder, KnownFormat, ObjectBuilder, OneOfBuilder, Schema,
    SchemaFormat, SchemaType, Type,
};
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::openapi::{OpenApi, Ref, RefOr};
use utoipa::{Modify, PartialSchema, ToSchema};

use super::batch::MAX_BATCH_EVENTS;
use crate::domain::cloudevent;
use crate::domain::data::{
    FieldKind, FieldSpec, MAX_ID_CHARS, MAX_TEXT_CHARS, METADATA_MAX_BYTES, METADATA_MAX_DEPTH,
    METADATA_MAX_KEYS,
};
use crate::domain::envelope::ENVELOPE_VERSION;
use crate::domain::{EventType, Family};

type Schemas = Vec<(String, RefOr<Schema>)>;

#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "event-gateway",
        description = "Publishes authenticated, validated gamification events to RabbitMQ with broker confirms. \
            Mint a development token with `event-gateway token --sub me --scope \"events:publish\"` and use **Authorize**.",
    ),
    paths(super::reads::get_event),
    modifiers(&BearerAuth),
    tags(
        (name = "events", description = "Publishing events"),
        (name = "webhooks", description = "Signed webhooks from third parties"),

        (name = "dead letters", description = "Events the consumers gave up on (admin scope)"),
        (name = "operations", description = "Health and metrics"),
    )
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        let mut scheme = Http::new(HttpAuthScheme::Bearer);
        scheme.bearer_format = Some("JWT".into());
        scheme.description = Some(
            "A JWT with `sub`, `exp` and a space-separated `scope`: `events:publish`, \
             `events:publish:<family>`, `events:publish:self` (player tokens), `events:read`, `admin`."
                .into(),
        );
        components.add_security_scheme("bearer", SecurityScheme::Http(scheme));
    }
}

fn reference(name: &str) -> RefOr<Schema> {
    RefOr::Ref(Ref::from_schema_name(name))
}

fn data_name(family: Family) -> String {
    format!("{}Data", capitalized(family))
}

fn event_name(family: Family) -> String {
    format!("{}Event", capitalized(family))
}

fn capitalized(family: Family) -> String {
    let name = family.as_str();
    name[..1].to_uppercase() + &name[1..]
}

fn id_schema() -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .min_length(Some(1))
        .max_length(Some(MAX_ID_CHARS as usize))
        .pattern(Some("^[A-Za-z0-9._:-]+$"))
}

/// The JSON type of a kind of field (`Any` has none).
fn kind_type(kind: FieldKind) -> Type {
    match kind {
        FieldKind::Id | FieldKind::Text | FieldKind::Timestamp => Type::String,
        FieldKind::Points => Type::Integer,
        FieldKind::Progress | FieldKind::Number => Type::Number,
        FieldKind::Metadata => Type::Object,
        FieldKind::Any => Type::Null,
    }
}

fn field_schema(spec: &FieldSpec) -> RefOr<Schema> {
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

fn data_schema(family: Family) -> Schema {
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

fn client_metadata_schema() -> Schema {
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
fn replaced() -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(SchemaType::AnyValue)
        .description(Some("Any value; replaced by the gateway"))
}

fn event_schema(family: Family) -> Schema {
    let types: Vec<&str> = family.event_types().map(EventType::as_str).collect();
    ObjectBuilder::new()
        .schema_type(Type::Object)
        .additional_properties(Some(AdditionalProperties::FreeForm(false)))
        .property(
            "id",
            ObjectBuilder::new()
                .schema_type(Type::String)
                .format(Some(SchemaFormat::KnownFormat(KnownFormat::Uuid)))
                .description(Some("Optional event id; generated when absent")),
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
        // `null` reads as no metadata.
        .property(
            "metadata",
            OneOfBuilder::new()
                .item(reference("ClientMetadata"))
                .item(ObjectBuilder::new().schema_type(Type::Null)),
        )
        .into()
}

fn one_of_families(name: fn(Family) -> String) -> Schema {
    let mut one_of = OneOfBuilder::new();
    for family in Family::ALL {
        one_of = one_of.item(reference(&name(family)));
    }
    one_of.into()
}

fn add_data_schemas(schemas: &mut Schemas) {
    for family in Family::ALL {
        schemas.push((data_name(family), data_schema(family).into()));
    }
}

/// The body of `POST /v1/events`: one event of any family.
pub struct EventRequest;

impl PartialSchema for EventRequest {
    fn schema() -> RefOr<Schema> {
        one_of_families(event_name).into()
    }
}

impl ToSchema for EventRequest {
    fn schemas(schemas: &mut Schemas) {
        add_data_schemas(schemas);
        schemas.push(("ClientMetadata".into(), client_metadata_schema().into()));
        for family in Family::ALL {
            schemas.push((event_name(family), event_schema(family).into()));
        }
    }
}

/// The body of `POST /v1/events/{type}`: the `data` of that type.
pub struct EventData;

impl PartialSchema for EventData {
    fn schema() -> RefOr<Schema> {
        one_of_families(data_name).into()
    }
}

impl ToSchema for EventData {
    fn schemas(schemas: &mut Schemas) {
        add_data_schemas(schemas);
    }
}

/// The body of `POST /v1/events/batch`.
pub struct BatchRequest;

impl PartialSchema for BatchRequest {
    fn schema() -> RefOr<Schema> {
        let events = ArrayBuilder::new()
            .items(reference("EventRequest"))
            .min_items(Some(1))
            .max_items(Some(MAX_BATCH_EVENTS));
        ObjectBuilder::new()
            .schema_type(Type::Object)
            .additional_properties(Some(AdditionalProperties::FreeForm(false)))
            .property("events", events)
            .required("events")
            .into()
    }
}

impl ToSchema for BatchRequest {
    fn schemas(schemas: &mut Schemas) {
        schemas.push((EventRequest::name().into_owned(), EventRequest::schema()));
        EventRequest::schemas(schemas);
    }
}

/// The body of `POST /v1/webhooks/{source}`: one event, or a batch.
pub struct WebhookRequest;

impl PartialSchema for WebhookRequest {
    fn schema() -> RefOr<Schema> {
        OneOfBuilder::new()
            .item(reference("EventRequest"))
            .item(reference("BatchRequest"))
            .into()
    }
}

impl ToSchema for WebhookRequest {
    fn schemas(schemas: &mut Schemas) {
        schemas.push((BatchRequest::name().into_owned(), BatchRequest::schema()));
        BatchRequest::schemas(schemas);
    }
}

/// A structured-mode CloudEvent whose `type` is one of ours.
pub struct CloudEventRequest;

impl PartialSchema for CloudEventRequest {
    fn schema() -> RefOr<Schema> {
        let text = |description: &str| {
            ObjectBuilder::new()
                .schema_type(Type::String)
                .description(Some(description))
        };
        ObjectBuilder::new()
            .schema_type(Type::Object)
            .description(Some(
                "CloudEvents 1.0. `id` is the event id: a UUID as it is, any other id a UUID \
                 derived from `source` and `id`. `source`, `id`, `time` and `subject` are kept \
                 in `metadata.cloudEvent`.",
            ))
            .property(
                "specversion",
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .enum_values(Some([cloudevent::SPEC_VERSION])),
            )
            .property("id", text("Unique with `source`"))
            .property("source", text("A URI-reference naming the producer"))
            .property("type", reference("EventType"))
            .property(
                "time",
                text("RFC 3339").format(Some(SchemaFormat::KnownFormat(KnownFormat::DateTime))),
            )
            .property("subject", text("What the event is about"))
            .property("datacontenttype", text("application/json if given"))
            .property("data", reference("EventData"))
            .required("specversion")
            .required("id")
            .required("source")
            .required("type")
            .required("data")
            .into()
    }
}

impl ToSchema for CloudEventRequest {
    fn schemas(schemas: &mut Schemas) {
        schemas.push((EventData::name().into_owned(), EventData::schema()));
        schemas.push((EventTypeName::name().into_owned(), EventTypeName::schema()));
        EventData::schemas(schemas);
    }
}

/// A CloudEvents batch: `application/cloudevents-batch+json`.
pub struct CloudEventBatch;

impl PartialSchema for CloudEventBatch {
    fn schema() -> RefOr<Schema> {
        ArrayBuilder::new()
            .items(reference("CloudEventRequest"))
            .min_items(Some(1))
            .max_items(Some(MAX_BATCH_EVENTS))
            .into()
    }
}

impl ToSchema for CloudEventBatch {
    fn schemas(schemas: &mut Schemas) {
        schemas.push((
            CloudEventRequest::name().into_owned(),
            CloudEventRequest::schema(),
        ));
        CloudEventRequest::schemas(schemas);
    }
}

/// One of the spec's 18 event types.
pub struct EventTypeName;

impl PartialSchema for EventTypeName {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .enum_values(Some(EventType::ALL.map(EventType::as_str)))
            .into()
    }
}

impl ToSchema for EventTypeName {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("EventType")
    }
}
