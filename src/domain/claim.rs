//! An idempotency claim: the first request with a key runs, its answer is kept, and every
//! repeat gets that answer. PostgreSQL keeps the claims of publish requests, Redis those
//! of webhook deliveries; both speak these types.

use serde_json::Value;

/// The first answer, as the client got it.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredAnswer {
    pub status: u16,
    pub body: Value,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Claim {
    /// This request is the first: it runs, then records its answer.
    Owned,
    /// An earlier request answered this.
    Answered(StoredAnswer),
    /// An earlier request with this key is still running.
    InProgress,
    /// The key was used with another request body.
    Mismatch,
}
