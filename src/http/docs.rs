//! The OpenAPI document: its header, security scheme and the request bodies. The event
//! schemas come from the field table (`schemas.rs`), the examples from `examples.rs`.

use std::borrow::Cow;

use utoipa::openapi::schema::{
    AdditionalProperties, ArrayBuilder, KnownFormat, ObjectBuilder, OneOfBuilder, Schema,
    SchemaFormat, Type,
};
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::openapi::{OpenApi, RefOr};
use utoipa::{Modify, PartialSchema, ToSchema};

use super::batch::MAX_BATCH_EVENTS;
use super::doc_schemas::{
    Schemas, add_data_schemas, client_metadata_schema, data_name, event_name, event_schema,
    one_of_families, reference,
};
use crate::domain::cloudevent;
use crate::domain::{EventType, Family};

#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "event-gateway",
        description = "Publishes authenticated, validated gamification events to RabbitMQ with broker confirms. \
            Mint a development token with `event-gateway token --sub me --scope \"events:publish\"` and use **Authorize**.",
    ),
    paths(super::reads::get_event, super::reads::cancel_event),
    modifiers(&BearerAuth),
    tags(
        (name = "events", description = "Publishing events"),
        (name = "webhooks", description = "Signed webhooks from third parties"),

        (name = "dead letters", description = "Events the consumers gave up on (admin scope)"),
        (name = "schemas", description = "JSON Schemas of the events, for producers to validate before sending"),
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
                "CloudEvents 1.0. The event id is derived from the caller, `source` and `id`: \
                 the same every time the same caller sends them, never another caller's. \
                 `source`, `id`, `time` and `subject` are kept in `metadata.cloudEvent`.",
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
            .property(
                cloudevent::DELIVER_AT,
                text(
                    "Extension attribute: publish the event at this time (RFC 3339), as \
                     `deliverAt` does; in binary mode the `ce-deliverat` header",
                )
                .format(Some(SchemaFormat::KnownFormat(KnownFormat::DateTime))),
            )
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
