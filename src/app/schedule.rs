//! Scheduled events (`deliverAt`): the window a time must lie in, cancelling one that has
//! not gone out, and what the schedule holds for `/health`. Scheduling itself is
//! publishing ([`super::publish`]) with a due time; the release worker moves due events to
//! the outbox.

use std::sync::{Arc, Mutex};

use time::OffsetDateTime;
use uuid::Uuid;

use super::ports::{ReadCache, ScheduleStore, StoreError};
use super::publish::NotTaken;
use super::records::{ScheduleState, ScheduleStats};
use crate::domain::schedule::ScheduleWindow;
use crate::domain::{FieldError, Forbidden, Principal, ValidEvent};

/// Why an event was not cancelled.
#[derive(Debug, thiserror::Error)]
pub enum CancelError {
    /// No scheduled event has this id (or, for a player, not one of its own).
    #[error("no scheduled event with this id")]
    NotFound,
    #[error(transparent)]
    Forbidden(Forbidden),
    /// It is no longer waiting: released to the outbox, or published.
    #[error("the event was already {0}; it can no longer be cancelled")]
    AlreadyOut(&'static str),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The schedule's facts as last counted (by the release worker), for `/health`.
#[derive(Clone, Default)]
pub struct ScheduleFacts(Arc<Mutex<Option<ScheduleStats>>>);

impl ScheduleFacts {
    pub fn set(&self, stats: ScheduleStats) {
        if let Ok(mut latest) = self.0.lock() {
            *latest = Some(stats);
        }
    }

    /// `None` until the schedule was counted once.
    pub fn get(&self) -> Option<ScheduleStats> {
        self.0.lock().ok().and_then(|latest| latest.clone())
    }
}

#[derive(Clone)]
pub struct Scheduling {
    pub window: ScheduleWindow,
    pub store: Arc<dyn ScheduleStore>,
    pub listings: Arc<dyn ReadCache>,
}

impl Scheduling {
    /// Every `deliverAt` outside the window, named (422: nothing is taken), except for an
    /// event whose id was taken before: a retry (after `outcome-unknown`, say) is answered
    /// with where that event stands, however late it comes.
    pub async fn check(&self, events: &[ValidEvent]) -> Result<(), NotTaken> {
        let outside = self.window.check(events, OffsetDateTime::now_utc());
        if outside.is_empty() {
            return Ok(());
        }
        let ids = outside.iter().map(|(i, _)| events[*i].id).collect();
        let known = self.store.known(ids).await.map_err(NotTaken::Unavailable)?;
        let errors: Vec<FieldError> = outside
            .into_iter()
            .filter(|(i, _)| !known.contains(&events[*i].id))
            .map(|(_, error)| error)
            .collect();
        if errors.is_empty() {
            Ok(())
        } else {
            Err(NotTaken::Invalid(errors))
        }
    }

    /// Cancels a scheduled event that is not yet released; cancelling one already
    /// cancelled is done already. A player token learns nothing of other users' events
    /// (as when it reads them).
    pub async fn cancel(&self, principal: &Principal, id: Uuid) -> Result<(), CancelError> {
        let event = self
            .store
            .scheduled_event(id)
            .await?
            .ok_or(CancelError::NotFound)?;
        let user = event.user_id.as_deref();
        if principal.is_player() && user != Some(principal.subject.as_str()) {
            return Err(CancelError::NotFound);
        }
        principal
            .authorize_cancel(event.event_type, &event.source, user)
            .map_err(CancelError::Forbidden)?;
        let state = match event.state {
            ScheduleState::Scheduled if self.store.cancel(id).await? => ScheduleState::Cancelled,
            // Released (or cancelled) meanwhile: where it stands now decides.
            ScheduleState::Scheduled => self
                .store
                .scheduled_event(id)
                .await?
                .map_or(ScheduleState::Published, |now| now.state),
            state => state,
        };
        match state {
            ScheduleState::Cancelled => {
                if let Some(user) = &event.user_id {
                    self.listings.forget_user_events(user).await;
                }
                Ok(())
            }
            ScheduleState::Scheduled | ScheduleState::Released => {
                Err(CancelError::AlreadyOut("due and handed to the outbox"))
            }
            ScheduleState::Published => Err(CancelError::AlreadyOut("published")),
        }
    }
}
