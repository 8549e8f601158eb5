//! The application's errors as answers.

use super::ApiError;
use crate::app::idempotency::OnceError;
use crate::app::ports::LedgerError;
use crate::app::publish::{BatchNotTaken, NotTaken};
use crate::app::rate_limit::ChargeRefused;
use crate::app::reads::ReadError;
use crate::app::replay::ReplayError;
use crate::app::webhooks::WebhookRefused;
use crate::domain::FieldError;
use crate::runtime::detached::Panicked;

impl From<NotTaken> for ApiError {
    fn from(source: NotTaken) -> Self {
        ApiError::NotTaken {
            source,
            results: None,
        }
    }
}

impl From<BatchNotTaken> for ApiError {
    fn from(batch: BatchNotTaken) -> Self {
        ApiError::NotTaken {
            source: batch.first,
            results: Some(batch.results),
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
            LedgerError::Store(error) => ApiError::StoreUnavailable(error),
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
            ReplayError::Store(error) => ApiError::StoreUnavailable(error),
            ReplayError::NotTaken(source) => source.into(),
            ReplayError::Panicked(panicked) => panicked.into(),
        }
    }
}

impl From<ReadError> for ApiError {
    fn from(error: ReadError) -> Self {
        match error {
            ReadError::Store(error) => ApiError::StoreUnavailable(error),
            ReadError::Encode(error) => ApiError::Internal(error.into()),
        }
    }
}
