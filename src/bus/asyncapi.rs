//! The bus described: an AsyncAPI 3.0 document of what the gateway puts on RabbitMQ and
//! what its consumers take off it, from the same field table as validation and OpenAPI
//! and from the topology the gateway declares. Served at `/asyncapi.json`, printed by
//! `event-gateway asyncapi`, committed as `openapi/asyncapi.json` (for the default names).

use serde_json::{Map, Value, json};

use super::topology::Topology;
use crate::domain::json_schema::{depth_defs, envelope_schema};
use crate::domain::{EventType, Family};

const SCHEMAS: &str = "#/components/schemas/";
const BINDING_VERSION: &str = "0.3.0";

/// The document for the exchanges and queues of `topology`.
pub fn document(topology: &Topology) -> Value {
    let mut channels = Map::new();
    let mut operations = Map::new();
    for event_type in EventType::ALL {
        let name = message_name(event_type);
        channels.insert(name.clone(), routing_key_channel(topology, event_type));
        operations.insert(
            format!("publish{name}"),
            json!({
                "action": "send",
                "title": format!("The gateway publishes {event_type}"),
                "channel": {"$ref": format!("#/channels/{name}")},
                "messages": [{"$ref": format!("#/channels/{name}/messages/{name}")}],
                "bindings": {"amqp": {"deliveryMode": 2, "mandatory": true, "timestamp": true, "bindingVersion": BINDING_VERSION}},
            }),
        );
    }
    for (family, binding) in Family::ALL.into_iter().zip(topology.family_queues()) {
        let name = format!("{}Queue", capitalized(family.as_str()));
        channels.insert(name.clone(), queue_channel(&binding.queue, family));
        operations.insert(
            format!("consume{name}"),
            json!({
                "action": "receive",
                "title": format!("Consumers read {}", binding.queue),
                "description": "Acknowledged once handled, or once its retry or dead letter is confirmed; redeliveries carry the same message_id.",
                "channel": {"$ref": format!("#/channels/{name}")},
                "bindings": {"amqp": {"ack": true, "bindingVersion": BINDING_VERSION}},
            }),
        );
    }
    channels.insert("FailedEvents".into(), failed_channel(topology));
    json!({
        "asyncapi": "3.0.0",
        "info": {
            "title": "event-gateway events",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Gamification events the gateway publishes to RabbitMQ (persistent, mandatory, broker-confirmed), one message per event type, and the queues its consumers read. Each message's AMQP message_id is the event id: consumers drop redeliveries by it.",
        },
        "defaultContentType": "application/json",
        "channels": channels,
        "operations": operations,
        "components": components(),
    })
}

/// `achievement.completed` → `AchievementCompleted`.
fn message_name(event_type: EventType) -> String {
    event_type
        .as_str()
        .split(['.', '_'])
        .map(capitalized)
        .collect()
}

fn capitalized(word: &str) -> String {
    let mut chars = word.chars();
    chars
        .next()
        .map(|first| first.to_uppercase().chain(chars).collect())
        .unwrap_or_default()
}

fn routing_key_channel(topology: &Topology, event_type: EventType) -> Value {
    let name = message_name(event_type);
    json!({
        "address": event_type.as_str(),
        "title": format!("{event_type} on {}", topology.exchange),
        "description": format!("Routing key {event_type} on the topic exchange {}; bound to {}.", topology.exchange, event_type.family().binding_key()),
        "messages": {name.clone(): {"$ref": format!("#/components/messages/{name}")}},
        "bindings": {"amqp": {
            "is": "routingKey",
            "exchange": {"name": topology.exchange, "type": "topic", "durable": true, "autoDelete": false, "vhost": "/"},
            "bindingVersion": BINDING_VERSION,
        }},
    })
}

fn queue_channel(queue: &str, family: Family) -> Value {
    let messages: Map<String, Value> = family
        .event_types()
        .map(|event_type| {
            let name = message_name(event_type);
            (
                name.clone(),
                json!({"$ref": format!("#/components/messages/{name}")}),
            )
        })
        .collect();
    json!({
        "address": queue,
        "title": queue,
        "description": format!("Every {family}.* event (binding key {})", family.binding_key()),
        "messages": messages,
        "bindings": {"amqp": {
            "is": "queue",
            "queue": {"name": queue, "durable": true, "exclusive": false, "autoDelete": false, "vhost": "/"},
            "bindingVersion": BINDING_VERSION,
        }},
    })
}

fn failed_channel(topology: &Topology) -> Value {
    json!({
        "address": topology.failed_queue(),
        "title": topology.failed_queue(),
        "description": format!("Messages the consumers gave up on, dead-lettered to {} as error.<family>; recorded in PostgreSQL and listed at GET /v1/dead-letters.", topology.dead_letter_exchange),
        "messages": {"FailedEvent": {"$ref": "#/components/messages/FailedEvent"}},
        "bindings": {"amqp": {
            "is": "queue",
            "queue": {"name": topology.failed_queue(), "durable": true, "exclusive": false, "autoDelete": false, "vhost": "/"},
            "bindingVersion": BINDING_VERSION,
        }},
    })
}

fn components() -> Value {
    let mut messages = Map::new();
    let mut schemas = match depth_defs(SCHEMAS) {
        Value::Object(defs) => defs,
        _ => Map::new(),
    };
    for event_type in EventType::ALL {
        let name = message_name(event_type);
        schemas.insert(
            format!("{name}Envelope"),
            envelope_schema(event_type, SCHEMAS),
        );
        messages.insert(name.clone(), message(event_type, &name));
    }
    messages.insert("FailedEvent".into(), failed_message());
    schemas.insert("TraceHeaders".into(), trace_headers());
    json!({"messages": messages, "schemas": schemas})
}

fn message(event_type: EventType, name: &str) -> Value {
    json!({
        "name": name,
        "title": event_type.as_str(),
        "contentType": "application/json",
        "payload": {"$ref": format!("{SCHEMAS}{name}Envelope")},
        "headers": {"$ref": format!("{SCHEMAS}TraceHeaders")},
        "correlationId": {"location": "$message.payload#/metadata/correlationId"},
        "bindings": {"amqp": {"messageType": event_type.as_str(), "bindingVersion": BINDING_VERSION}},
    })
}

/// W3C trace context, when the request that made the event carried it.
fn trace_headers() -> Value {
    json!({
        "type": "object",
        "properties": {
            "traceparent": {"type": "string", "pattern": "^00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$", "description": "W3C trace context of the request that published the event"},
            "tracestate": {"type": "string"},
        },
    })
}

fn failed_message() -> Value {
    json!({
        "name": "FailedEvent",
        "title": "A dead letter",
        "contentType": "application/json",
        "payload": {"description": "The original message body, as it was published"},
        "headers": {
            "type": "object",
            "properties": {
                "x-original-routing-key": {"type": "string"},
                "x-original-queue": {"type": "string"},
                "x-attempt": {"type": "integer", "minimum": 1},
                "x-last-error": {"type": "string"},
                "x-dead-letter-id": {"type": "string", "format": "uuid"},
            },
            "required": ["x-original-routing-key", "x-original-queue", "x-attempt", "x-last-error"],
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_channel_and_message_per_type_and_per_queue() {
        let document = document(&Topology::new("gamification", "", &[]));
        let channels = document["channels"].as_object().unwrap();
        assert_eq!(channels.len(), EventType::ALL.len() + Family::ALL.len() + 1);
        assert_eq!(
            document["channels"]["AchievementCompleted"]["address"],
            "achievement.completed"
        );
        assert_eq!(
            document["channels"]["QuestQueue"]["address"],
            "quest_events"
        );
        assert_eq!(
            document["components"]["messages"]["RewardClaimed"]["payload"]["$ref"],
            "#/components/schemas/RewardClaimedEnvelope"
        );
    }
}
