//! The domain: event types, their schemas, the envelope, and who may publish what.
//! Nothing here knows about HTTP or the broker.

pub mod cloudevent;
pub mod data;
pub mod envelope;
pub mod event_id;
pub mod event_type;
pub mod json_schema;
pub mod problem;
pub mod schedule;
pub mod scope;
pub mod sealing;
pub mod trace;
pub mod webhook;

pub use data::EventData;
pub use envelope::{Envelope, ValidEvent};
pub use event_type::{EventType, Family};
pub use problem::FieldError;
pub use scope::{Forbidden, Principal, Scopes, WEBHOOK_SUBJECT_PREFIX};

/// 1 to 64 characters of `[A-Za-z0-9._-]`: webhook sources, key ids.
pub fn is_plain_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}
