//! The `data` schema of each family, as one table that both validation and the OpenAPI
//! document read, so the two cannot drift apart.

use crate::domain::event_type::{EventType, Family};

/// Longest id the gateway accepts (`achievementId`, `userId`, ...).
pub const MAX_ID_CHARS: u64 = 128;
/// Longest free-text field (`name`, `title`, `message`, ...).
pub const MAX_TEXT_CHARS: u64 = 4096;
pub const METADATA_MAX_KEYS: usize = 32;
pub const METADATA_MAX_DEPTH: usize = 4;
pub const METADATA_MAX_BYTES: usize = 8 * 1024;

/// What a field may hold; each kind carries its JSON type and its rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldKind {
    /// 1 to 128 characters of `[A-Za-z0-9._:-]`.
    Id,
    Text,
    /// A non-negative integer.
    Points,
    /// A number from 0 to 100.
    Progress,
    /// Any finite number.
    Number,
    /// Any JSON value.
    Any,
    /// An RFC 3339 date-time.
    Timestamp,
    /// A free-form object, bounded in keys, depth and size.
    Metadata,
}

#[derive(Debug, Clone, Copy)]
pub struct FieldSpec {
    pub name: &'static str,
    pub kind: FieldKind,
    pub required: bool,
}

const fn field(name: &'static str, kind: FieldKind, required: bool) -> FieldSpec {
    FieldSpec {
        name,
        kind,
        required,
    }
}

use FieldKind::*;

const ACHIEVEMENT: &[FieldSpec] = &[
    field("achievementId", Id, true),
    field("userId", Id, false),
    field("name", Text, false),
    field("points", Points, false),
    field("progress", Progress, false),
    field("completedAt", Timestamp, false),
    field("metadata", Metadata, false),
];

const QUEST: &[FieldSpec] = &[
    field("questId", Id, true),
    field("userId", Id, false),
    field("name", Text, false),
    field("progress", Progress, false),
    field("completedAt", Timestamp, false),
    field("metadata", Metadata, false),
];

const REWARD: &[FieldSpec] = &[
    field("rewardId", Id, true),
    field("userId", Id, true),
    field("name", Text, true),
    field("type", Text, true),
    field("value", Any, true),
    field("metadata", Metadata, false),
];

const NOTIFICATION: &[FieldSpec] = &[
    field("notificationId", Id, true),
    field("userId", Id, true),
    field("title", Text, true),
    field("message", Text, true),
    field("type", Text, true),
    field("metadata", Metadata, false),
];

const ANALYTICS: &[FieldSpec] = &[
    field("analyticsId", Id, true),
    field("userId", Id, true),
    field("type", Text, true),
    field("category", Text, true),
    field("event", Text, true),
    field("value", Number, false),
    field("metadata", Metadata, false),
];

impl Family {
    /// The fields of this family's `data`, in the spec's order.
    pub fn fields(self) -> &'static [FieldSpec] {
        match self {
            Family::Achievement => ACHIEVEMENT,
            Family::Quest => QUEST,
            Family::Reward => REWARD,
            Family::Notification => NOTIFICATION,
            Family::Analytics => ANALYTICS,
        }
    }
}

/// A field is required for this type: by the family's schema, or because the type is about a
/// player's completion or progress.
pub fn is_required(event_type: EventType, spec: &FieldSpec) -> bool {
    spec.required
        || (spec.name == "userId" && event_type.requires_user_id())
        || (spec.name == "progress" && event_type.requires_progress())
}
