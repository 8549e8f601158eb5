//! Event ids belong to their caller. Consumers drop redeliveries by `message_id` (the event
//! id), so no caller may produce an id another caller's event has or will have, and a
//! retry must carry the ids of the first try.
//!
//! The rule, in one place: an event whose id the client chose (a native `id`, a
//! CloudEvent's `source` and `id`), or which belongs to a keyed request (an
//! `Idempotency-Key`, a `webhook-id`), gets an id derived from the principal that sent it
//! and from that choice. The same principal sending the same id gets the same event id;
//! no other principal can. Every other event keeps the UUIDv7 the gateway made for it;
//! derived ids are UUIDv8, so the two never meet.

use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::envelope::ValidEvent;

/// The id a client chose for its event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChosenId<'a> {
    /// A native event's `id`.
    Uuid(Uuid),
    /// A CloudEvent's `source` and `id`, which CloudEvents defines as unique together.
    CloudEvent { source: &'a str, id: &'a str },
}

impl ChosenId<'_> {
    /// The id as the client knows it (a CloudEvent's without its `source`).
    pub fn as_sent(&self) -> String {
        match self {
            ChosenId::Uuid(id) => id.to_string(),
            ChosenId::CloudEvent { id, .. } => (*id).to_owned(),
        }
    }
}

/// The key a request was sent with; it names the request's events that have no id of
/// their own, by their index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestKey<'a> {
    /// An `Idempotency-Key` header.
    Idempotency(&'a str),
    /// A webhook delivery's `webhook-id`.
    Webhook(&'a str),
}

impl ValidEvent {
    /// The id the client chose for this event, if it did.
    pub fn chosen_id(&self) -> Option<ChosenId<'_>> {
        match (&self.client_id, &self.origin) {
            (Some(id), _) => Some(ChosenId::Uuid(*id)),
            (None, Some(origin)) => Some(ChosenId::CloudEvent {
                source: &origin.source,
                id: &origin.id,
            }),
            (None, None) => None,
        }
    }
}

/// The id of the `index`th event of a request from `principal`: derived from the client's
/// own id when it chose one, else from the request's key; `None` when neither exists (the
/// gateway's own id stands).
pub fn scoped_id(
    principal: &str,
    chosen: Option<ChosenId<'_>>,
    key: Option<RequestKey<'_>>,
    index: usize,
) -> Option<Uuid> {
    let index = index.to_string();
    let id = match (chosen, key) {
        (Some(ChosenId::Uuid(id)), _) => derived_id("client-id", &[principal, &id.to_string()]),
        (Some(ChosenId::CloudEvent { source, id }), _) => {
            derived_id("cloudevent", &[principal, source, id])
        }
        (None, Some(RequestKey::Idempotency(key))) => {
            derived_id("idempotency-key", &[principal, key, &index])
        }
        (None, Some(RequestKey::Webhook(id))) => derived_id("webhook-id", &[principal, id, &index]),
        (None, None) => return None,
    };
    Some(id)
}

/// Gives every event of one request from `principal` its id by [`scoped_id`].
pub fn scope_ids(principal: &str, key: Option<RequestKey<'_>>, events: &mut [ValidEvent]) {
    for (index, event) in events.iter_mut().enumerate() {
        if let Some(id) = scoped_id(principal, event.chosen_id(), key, index) {
            event.id = id;
        }
    }
}

/// A UUID (version 8) hashed from a namespace and `parts`: the same inputs always give the
/// same id. Every part is length-prefixed and the namespace is versioned, so no two
/// different inputs (nor two kinds of derivation) share an id.
fn derived_id(namespace: &str, parts: &[&str]) -> Uuid {
    let namespace = format!("event-gateway/event-id/v1/{namespace}");
    let mut hash = Sha256::new();
    for part in std::iter::once(namespace.as_str()).chain(parts.iter().copied()) {
        hash.update((part.len() as u64).to_be_bytes());
        hash.update(part.as_bytes());
    }
    let digest = hash.finalize();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    Uuid::new_v8(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const PLAYER: &str = "player-1";
    const BACKEND: &str = "game-backend";

    fn cloud_event<'a>(source: &'a str, id: &'a str) -> Option<ChosenId<'a>> {
        Some(ChosenId::CloudEvent { source, id })
    }

    #[test]
    fn a_chosen_id_is_the_same_for_its_principal_and_no_one_elses() {
        let client = Uuid::new_v4();
        let chosen = Some(ChosenId::Uuid(client));
        let mine = scoped_id(PLAYER, chosen, None, 0);
        assert_eq!(mine, scoped_id(PLAYER, chosen, None, 0), "a retry keeps it");
        assert_ne!(mine, scoped_id(BACKEND, chosen, None, 0));
        assert_ne!(
            mine,
            Some(client),
            "the client's own UUID is never the event id"
        );
        let order = cloud_event("/game/server-7", "order-42");
        assert_eq!(
            scoped_id(PLAYER, order, None, 0),
            scoped_id(PLAYER, order, None, 5)
        );
        assert_ne!(
            scoped_id(PLAYER, order, None, 0),
            scoped_id(BACKEND, order, None, 0)
        );
        assert_ne!(
            scoped_id(PLAYER, order, None, 0),
            scoped_id(PLAYER, cloud_event("/game/server-8", "order-42"), None, 0)
        );
    }

    #[test]
    fn a_keyed_request_names_its_events_by_principal_key_and_index() {
        let key = Some(RequestKey::Idempotency("click-1"));
        let first = scoped_id(BACKEND, None, key, 0);
        assert_eq!(first, scoped_id(BACKEND, None, key, 0), "a retry keeps it");
        assert_ne!(first, scoped_id(BACKEND, None, key, 1));
        assert_ne!(first, scoped_id(PLAYER, None, key, 0));
        assert_ne!(
            first,
            scoped_id(BACKEND, None, Some(RequestKey::Webhook("click-1")), 0)
        );
        let chosen = Some(ChosenId::Uuid(Uuid::new_v4()));
        assert_eq!(
            scoped_id(BACKEND, chosen, key, 3),
            scoped_id(BACKEND, chosen, None, 0),
            "the client's own id wins over the key"
        );
        assert_eq!(scoped_id(BACKEND, None, None, 0), None);
    }

    #[test]
    fn derivations_never_meet() {
        let id = Uuid::new_v4();
        let text = id.to_string();
        let ids = [
            scoped_id(PLAYER, Some(ChosenId::Uuid(id)), None, 0),
            scoped_id(PLAYER, cloud_event("", &text), None, 0),
            scoped_id(PLAYER, None, Some(RequestKey::Idempotency(&text)), 0),
            scoped_id(PLAYER, None, Some(RequestKey::Webhook(&text)), 0),
            // Joined with a separator these would read alike.
            scoped_id("p", cloud_event("s\nx", "y"), None, 0),
            scoped_id("p", cloud_event("s", "x\ny"), None, 0),
            scoped_id("p\ns", cloud_event("x", "y"), None, 0),
        ];
        for (index, id) in ids.iter().enumerate() {
            let id = id.expect("derived");
            assert_eq!(id.get_version_num(), 8);
            assert!(!ids[..index].contains(&Some(id)), "{index} repeats");
        }
    }

    #[test]
    fn a_request_s_events_get_their_ids_and_generated_ones_stay() {
        let client = Uuid::new_v4();
        let parse = |id: Option<Uuid>| {
            let mut body = json!({"type": "quest.started",
                "data": {"questId": "q", "userId": "u"}});
            if let Some(id) = id {
                body["id"] = json!(id);
            }
            ValidEvent::parse(body, "").unwrap()
        };
        let mut events = [parse(Some(client)), parse(None)];
        let generated = events[1].id;
        scope_ids(BACKEND, None, &mut events);
        assert_eq!(events[0].chosen_id(), Some(ChosenId::Uuid(client)));
        assert_eq!(
            Some(events[0].id),
            scoped_id(BACKEND, events[0].chosen_id(), None, 0)
        );
        assert_eq!(events[1].id, generated);
        let key = Some(RequestKey::Idempotency("k"));
        scope_ids(BACKEND, key, &mut events);
        assert_eq!(Some(events[1].id), scoped_id(BACKEND, None, key, 1));
    }
}
