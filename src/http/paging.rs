//! `limit` and `cursor` of the listing endpoints, checked the same way everywhere.

use validator::ValidateRange;

use crate::app::records::PageCursor;
use crate::domain::FieldError;

pub const DEFAULT_PAGE: u32 = 20;
pub const MAX_PAGE: u32 = 100;

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
