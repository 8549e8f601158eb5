//! The application's errors as answers.

use super::ApiError;
use crate::app::idempotency::OnceError;
use crate::app::ports::{LedgerError, StoreError};
use crate::app::publish::{BatchNotTaken, NotTaken};
use crate::app::rate_limit::ChargeRefused;
use crate::app::reads::ReadError;
use crate::app::replay::ReplayError;
use crate::app::webhooks::WebhookRefused;
use crate::domain::FieldError;
use crate::runtime::detached::Panicked;

impl From<NotTaken> for ApiError {
    fn from(source: NotTaken) -> Self {
        match source {
            NotTaken::Invalid(errors) => ApiError::invalid(errors),
            source => ApiError::NotTaken {
                source,
                results: None,
            },
        }
    }
}

impl From<BatchNotTaken> for ApiError {
    fn from(batch: BatchNotTaken) -> Self {
        match batch.first {
            NotTaken::Invalid(errors) => ApiError::invalid(errors),
            source => ApiError::NotTaken {
                source,
                // Refused before any event was taken: nothing to list.
                results: (!batch.results.is_empty()).then_some(batch.results),
            },
        }
    }
}

impl From<StoreError> for ApiError {
    /// A statement the database refused for the values it carried is the client's error
    /// (validation names the field before that can happen; this is the net below it).
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Refused(_) => ApiError::invalid(vec![FieldError::new(
                "",
                "holds a value the database cannot store or compare (such as a NUL character); \
                 nothing was changed",
            )]),
            error => ApiError::StoreUnavailable(error),
        }
    }
}

impl From<ChargeRefused> for ApiError {
    fn from(refused: ChargeRefused) -> Self {
        match refused {
            ChargeRefused::OverBurst { .. } => {
                ApiError::PayloadTooLarge(format!("{refused} (RATE_LIMIT_BURST); split the batch"))
            }
            ChargeRefused::Limited(decision) => ApiError::RateLimited(decision),
        }
    }
}

impl From<WebhookRefused> for ApiError {
    fn from(refused: WebhookRefused) -> Self {
        match refused {
            WebhookRefused::Charge(refused) => refused.into(),
            WebhookRefused::NotTaken(source) => source.into(),
            WebhookRefused::Batch(batch) => batch.into(),
        }
    }
}

impl From<LedgerError> for ApiError {
    fn from(error: LedgerError) -> Self {
        match error {
            LedgerError::Store(error) => error.into(),
            LedgerError::Cache(error) => ApiError::ReplayGuardUnavailable(error),
        }
    }
}

impl From<Panicked> for ApiError {
    fn from(panicked: Panicked) -> Self {
        ApiError::Internal(panicked.into())
    }
}

impl<E: Into<ApiError>> From<OnceError<E>> for ApiError {
    fn from(error: OnceError<E>) -> Self {
        match error {
            OnceError::Failed(error) => error.into(),
            OnceError::Mismatch { pointer } => ApiError::invalid(vec![FieldError::new(
                pointer,
                "was already used with a different request",
            )]),
            OnceError::InProgress => ApiError::Conflict(
                "the first request with this key has not finished yet; retry shortly".into(),
            ),
            OnceError::Ledger(error) => error.into(),
            OnceError::Panicked(panicked) => panicked.into(),
        }
    }
}

impl From<ReplayError> for ApiError {
    fn from(error: ReplayError) -> Self {
        match error {
            ReplayError::NotFound => ApiError::NotFound,
            ReplayError::NotAnEventType(reason) => ApiError::invalid(vec![FieldError::new(
                "/routingKey",
                format!("{reason}: cannot replay"),
            )]),
            ReplayError::AlreadyReplayed => {
                ApiError::Conflict("this dead letter was already replayed".into())
            }
            ReplayError::Store(error) => error.into(),
            ReplayError::NotTaken(source) => source.into(),
            ReplayError::Panicked(panicked) => panicked.into(),
        }
    }
}

impl From<ReadError> for ApiError {
    fn from(error: ReadError) -> Self {
        match error {
            ReadError::Store(error) => error.into(),
            ReadError::Encode(error) => ApiError::Internal(error.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[test]
    fn a_refused_statement_is_a_422_and_a_database_in_trouble_a_503() {
        let cause = Arc::new(std::io::Error::other("22021"));
        let refused = ApiError::from(StoreError::Refused(cause.clone()));
        assert_eq!(refused.parts().0.as_u16(), 422);
        let down = ApiError::from(StoreError::Unavailable(cause));
        assert_eq!(down.parts().0.as_u16(), 503);
    }
}
