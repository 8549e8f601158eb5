//! What a request has handed to publishing, so that its timeout answers the truth. Once
//! any event may go out, the timeout says `outcome-unknown` with those events' ids; before
//! that it is a plain refusal, and from then on nothing of the request is published.
//!
//! The request's [`Handover`] lives in a task-local that detached work carries along
//! ([`in_current_request`]), so a claim settled or a row committed after the answer still
//! asks it first.

use std::sync::{Arc, Mutex, MutexGuard};

use uuid::Uuid;

tokio::task_local! {
    static HANDOVER: Arc<Handover>;
}

/// One request's events handed to publishing, or the mark that it was answered already.
#[derive(Debug, Default)]
pub struct Handover {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
enum State {
    #[default]
    Open,
    Taken(Vec<Uuid>),
    /// The request was answered without waiting for its events: take no more.
    Answered,
}

impl Handover {
    /// Records `ids` as handed to publishing; `false` once the request was answered, when
    /// they must not be published at all.
    pub fn take(&self, ids: impl IntoIterator<Item = Uuid>) -> bool {
        let mut state = self.lock();
        match &mut *state {
            State::Answered => false,
            State::Taken(taken) => {
                taken.extend(ids);
                true
            }
            State::Open => {
                *state = State::Taken(ids.into_iter().collect());
                true
            }
        }
    }

    /// The request is answered now: the ids that may still be published (empty when none
    /// was handed over, and then none will be).
    pub fn answer_now(&self) -> Vec<Uuid> {
        match std::mem::replace(&mut *self.lock(), State::Answered) {
            State::Taken(ids) => ids,
            State::Open | State::Answered => Vec::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Runs `work` as a request with this handover.
pub async fn in_request<F: Future>(handover: Arc<Handover>, work: F) -> F::Output {
    HANDOVER.scope(handover, work).await
}

/// `work`, with the handover of the request running now (if any), for a task of its own.
pub fn in_current_request<F: Future>(work: F) -> impl Future<Output = F::Output> {
    let handover = HANDOVER.try_with(Clone::clone).ok();
    async move {
        match handover {
            Some(handover) => HANDOVER.scope(handover, work).await,
            None => work.await,
        }
    }
}

/// Hands `ids` over for the request running now; `false` when that request was already
/// answered. Work outside a request (the relay, a consumer) always may.
pub fn take(ids: impl IntoIterator<Item = Uuid>) -> bool {
    HANDOVER
        .try_with(|handover| handover.take(ids))
        .unwrap_or(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_handed_over_means_nothing_will_be() {
        let handover = Handover::default();
        assert!(handover.answer_now().is_empty());
        assert!(!handover.take([Uuid::now_v7()]));
    }

    #[test]
    fn what_was_handed_over_is_named_when_answered_early() {
        let handover = Handover::default();
        let (first, second) = (Uuid::now_v7(), Uuid::now_v7());
        assert!(handover.take([first]));
        assert!(handover.take([second]));
        assert_eq!(handover.answer_now(), vec![first, second]);
        assert!(!handover.take([Uuid::now_v7()]));
    }

    #[tokio::test]
    async fn detached_work_asks_the_request_it_came_from() {
        let handover = Arc::new(Handover::default());
        let id = Uuid::now_v7();
        let taken = in_request(handover.clone(), async {
            tokio::spawn(in_current_request(async move { take([id]) })).await
        })
        .await;
        assert!(taken.expect("task"));
        assert_eq!(handover.answer_now(), vec![id]);
        assert!(take([id]), "outside a request every event may be taken");
    }
}
