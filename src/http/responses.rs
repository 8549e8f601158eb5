//! Problem responses for the OpenAPI document, declared once per status and meaning and
//! named in each operation's `responses(...)`. Answers that say something particular to
//! one operation stay written out there.

use std::collections::BTreeMap;

use utoipa::IntoResponses;
use utoipa::openapi::{ContentBuilder, Ref, RefOr, Response, ResponseBuilder};

use super::error::PROBLEM_JSON;

/// One problem+json response with this description.
fn problem(status: u16, description: &str) -> BTreeMap<String, RefOr<Response>> {
    let content = ContentBuilder::new()
        .schema(Some(Ref::from_schema_name("Problem")))
        .build();
    let response = ResponseBuilder::new()
        .description(description)
        .content(PROBLEM_JSON, content)
        .build();
    BTreeMap::from([(status.to_string(), RefOr::T(response))])
}

macro_rules! problem_responses {
    ($($(#[doc = $doc:literal])+ $name:ident = $status:literal, $description:literal;)+) => {
        $(
            $(#[doc = $doc])+
            pub struct $name;

            impl IntoResponses for $name {
                fn responses() -> BTreeMap<String, RefOr<Response>> {
                    problem($status, $description)
                }
            }
        )+
    };
}

problem_responses! {
    /// Every route behind a bearer token.
    Unauthorized = 401, "Missing or invalid token";
    /// Every route charged to a rate-limit budget.
    RateLimited = 429, "The caller's rate limit is spent; retry after Retry-After";
    /// Every route that reads a body.
    SlowBody = 408, "The body arrived too slowly";
    /// Routes that take one event.
    BodyTooLarge = 413, "Body over 256 KiB";
    /// Routes that take JSON and CloudEvents.
    Malformed = 400, "Malformed JSON or header, or missing CloudEvents attributes";
    /// Routes that take only JSON.
    NotJson = 415, "Not JSON";
    /// Routes that read PostgreSQL.
    DatabaseDown = 503, "The database is unavailable, or (`keys-unavailable`) the identity provider's keys could not be fetched yet; retry after Retry-After";
    /// Listing routes.
    UnreadableQuery = 400, "Unreadable query, or more than one Authorization header";
    /// Routes that publish once per key.
    KeyInProgress = 409, "The first request with this key (or event id) has not finished yet; retry shortly";
}
