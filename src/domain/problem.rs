//! Field-level validation errors, addressed by RFC 6901 JSON pointers into the request body.

use serde::Serialize;
use utoipa::ToSchema;

/// One bad field: where it is and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct FieldError {
    /// JSON pointer (RFC 6901) to the bad field in the request body, e.g. `/data/points`.
    #[schema(example = "/data/points")]
    pub pointer: String,
    #[schema(example = "must be a non-negative integer")]
    pub message: String,
}

impl FieldError {
    pub fn new(pointer: impl Into<String>, message: impl Into<String>) -> Self {
        FieldError {
            pointer: pointer.into(),
            message: message.into(),
        }
    }
}

/// The pointer to member `name` of the value at `parent`, with `~` and `/` escaped.
pub fn pointer_child(parent: &str, name: &str) -> String {
    if name.contains(['~', '/']) {
        format!("{parent}/{}", name.replace('~', "~0").replace('/', "~1"))
    } else {
        format!("{parent}/{name}")
    }
}
