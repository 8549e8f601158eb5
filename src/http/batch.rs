//! Batch bodies: `{"events": [...]}` and CloudEvents batches, every event validated and
//! named by its index, and no id twice.

use serde_json::Value;

use super::error::ApiError;
use crate::domain::cloudevent::{self, CloudEventError};
use crate::domain::{FieldError, ValidEvent};

/// Most events in one batch.
pub const MAX_BATCH_EVENTS: usize = 500;

/// A `{"events": [...]}` body, every event validated and named by index.
pub fn parse_batch(body: Value) -> Result<Vec<ValidEvent>, ApiError> {
    let items = batch_items(body)?;
    let mut events = Vec::with_capacity(items.len());
    let mut errors = Vec::new();
    for (index, item) in items.into_iter().enumerate() {
        match ValidEvent::parse(item, &format!("/events/{index}")) {
            Ok(event) => events.push(event),
            Err(found) => errors.extend(found),
        }
    }
    errors.extend(repeated_ids(&events, "/events"));
    if !errors.is_empty() {
        return Err(ApiError::invalid(errors));
    }
    Ok(events)
}

/// A CloudEvents batch: a JSON array of structured CloudEvents, named by index.
pub fn parse_cloud_event_batch(body: Value) -> Result<Vec<ValidEvent>, ApiError> {
    let items = match body {
        Value::Array(items) if (1..=MAX_BATCH_EVENTS).contains(&items.len()) => items,
        _ => {
            return Err(ApiError::invalid(vec![FieldError::new(
                "",
                format!("must be an array of 1 to {MAX_BATCH_EVENTS} CloudEvents"),
            )]));
        }
    };
    let mut events = Vec::with_capacity(items.len());
    let (mut missing, mut invalid) = (Vec::new(), Vec::new());
    for (index, item) in items.into_iter().enumerate() {
        match cloudevent::parse_structured(item, &format!("/{index}")) {
            Ok(event) => events.push(event),
            Err(CloudEventError::Missing(found)) => missing.extend(found),
            Err(CloudEventError::Invalid(found)) => invalid.extend(found),
        }
    }
    invalid.extend(repeated_ids(&events, ""));
    if !missing.is_empty() {
        // Malformed items make the batch a 400; the invalid ones are named too.
        missing.extend(invalid);
        return Err(ApiError::MissingAttributes(missing));
    }
    if !invalid.is_empty() {
        return Err(ApiError::invalid(invalid));
    }
    Ok(events)
}

/// The same chosen id twice in one batch would be one event published twice.
fn repeated_ids(events: &[ValidEvent], at: &str) -> Vec<FieldError> {
    events
        .iter()
        .enumerate()
        .filter(|(index, event)| {
            let chosen = event.chosen_id();
            chosen.is_some() && events[..*index].iter().any(|e| e.chosen_id() == chosen)
        })
        .map(|(index, _)| {
            FieldError::new(format!("{at}/{index}/id"), "repeats an earlier event's id")
        })
        .collect()
}

/// The `events` array of a batch body, with its size checked.
fn batch_items(body: Value) -> Result<Vec<Value>, ApiError> {
    let Value::Object(mut object) = body else {
        return Err(ApiError::invalid(vec![FieldError::new(
            "",
            "must be an object with an `events` array",
        )]));
    };
    let unknown: Vec<FieldError> = object
        .keys()
        .filter(|name| name.as_str() != "events")
        .map(|name| {
            FieldError::new(
                crate::domain::problem::pointer_child("", name),
                "unknown field",
            )
        })
        .collect();
    if !unknown.is_empty() {
        return Err(ApiError::invalid(unknown));
    }
    match object.remove("events") {
        Some(Value::Array(items)) if (1..=MAX_BATCH_EVENTS).contains(&items.len()) => Ok(items),
        Some(Value::Array(_)) => Err(ApiError::invalid(vec![FieldError::new(
            "/events",
            format!("must hold 1 to {MAX_BATCH_EVENTS} events"),
        )])),
        _ => Err(ApiError::invalid(vec![FieldError::new(
            "/events",
            "must be an array of events",
        )])),
    }
}
