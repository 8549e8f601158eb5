//! Query strings of the listing endpoints: unreadable ones are a 400, and `limit` and
//! `cursor` are checked the same way everywhere.

use axum::extract::Query;
use axum::extract::rejection::QueryRejection;
use validator::ValidateRange;

use super::error::ApiError;
use crate::app::records::PageCursor;
use crate::domain::FieldError;

pub const DEFAULT_PAGE: u32 = 20;
pub const MAX_PAGE: u32 = 100;

/// The parsed query, or a 400 naming what could not be read.
pub fn readable<T>(query: Result<Query<T>, QueryRejection>) -> Result<T, ApiError> {
    query
        .map(|Query(query)| query)
        .map_err(|rejection| ApiError::BadRequest {
            title: "Unreadable query string",
            detail: rejection.body_text(),
        })
}

/// The page size and where the page starts; problems go to `errors`.
pub fn page(
    limit: Option<u32>,
    cursor: Option<&str>,
    errors: &mut Vec<FieldError>,
) -> (u32, Option<PageCursor>) {
    let limit = limit.unwrap_or(DEFAULT_PAGE);
    if !limit.validate_range(Some(1), Some(MAX_PAGE), None, None) {
        errors.push(FieldError::new(
            "/query/limit",
            format!("must be from 1 to {MAX_PAGE}"),
        ));
    }
    let cursor = match cursor.map(PageCursor::decode) {
        Some(None) => {
            errors.push(FieldError::new(
                "/query/cursor",
                "is not a cursor this gateway gave out",
            ));
            None
        }
        Some(cursor) => cursor,
        None => None,
    };
    (limit, cursor)
}
