//! Who is calling and what they may do: the contract's scopes, decided in one place.

use std::collections::HashSet;

use super::event_type::{EventType, Family};

/// The types a player token may publish about itself.
pub const PLAYER_EVENT_TYPES: [EventType; 3] = [
    EventType::AnalyticsEventTracked,
    EventType::NotificationRead,
    EventType::NotificationArchived,
];

/// The rights granted by a token's space-separated `scope` claim.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scopes {
    publish_any: bool,
    publish_families: HashSet<Family>,
    publish_self: bool,
    read: bool,
    admin: bool,
}

impl Scopes {
    /// Unknown scopes are ignored, so tokens minted for other services still work here.
    pub fn parse(claim: &str) -> Self {
        let mut scopes = Scopes::default();
        for scope in claim.split_ascii_whitespace() {
            match scope {
                "events:publish" => scopes.publish_any = true,
                "events:publish:self" => scopes.publish_self = true,
                "events:read" => scopes.read = true,
                "admin" => scopes.admin = true,
                other => {
                    if let Some(family) = other
                        .strip_prefix("events:publish:")
                        .and_then(Family::parse)
                    {
                        scopes.publish_families.insert(family);
                    }
                }
            }
        }
        scopes
    }
}

/// An authenticated caller: a token's `sub` and its scopes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub subject: String,
    pub scopes: Scopes,
}

/// How a webhook sender is named (`webhook:<source>`): no token's `sub` may start so, or
/// it would speak (and make event ids) as that sender.
pub const WEBHOOK_SUBJECT_PREFIX: &str = "webhook:";

impl Principal {
    /// The principal a verified webhook delivery from `source` publishes as.
    pub fn webhook(source: &str) -> Self {
        Principal {
            subject: format!("{WEBHOOK_SUBJECT_PREFIX}{source}"),
            scopes: Scopes::parse("events:publish"),
        }
    }
}

/// Why a principal may not do something; the message is safe to show the caller.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Forbidden(pub String);

impl Principal {
    /// A player token acts only for its own `sub`, whatever else it carries.
    pub fn is_player(&self) -> bool {
        self.scopes.publish_self
    }

    /// Whether this principal may publish an event of `event_type` about `user_id`.
    pub fn authorize_publish(
        &self,
        event_type: EventType,
        user_id: Option<&str>,
    ) -> Result<(), Forbidden> {
        let scopes = &self.scopes;
        let by_scope = scopes.publish_any
            || scopes.publish_families.contains(&event_type.family())
            || (scopes.publish_self && PLAYER_EVENT_TYPES.contains(&event_type));
        if !by_scope {
            return Err(Forbidden(format!(
                "the token's scopes do not allow publishing {event_type}"
            )));
        }
        if self.is_player() && user_id != Some(self.subject.as_str()) {
            return Err(Forbidden(
                "a player token publishes only events whose data.userId is its own sub".into(),
            ));
        }
        Ok(())
    }
}

impl Principal {
    /// Operators' rights: dead letters. A player token never has them.
    pub fn authorize_admin(&self) -> Result<(), Forbidden> {
        if self.scopes.admin && !self.is_player() {
            Ok(())
        } else {
            Err(Forbidden(
                "this needs the admin scope (and not a player token)".into(),
            ))
        }
    }

    /// Whether this principal may publish anything at all, judged before the body is read
    /// so a token without any publish scope gets 403, not a validation error.
    pub fn authorize_any_publish(&self) -> Result<(), Forbidden> {
        let scopes = &self.scopes;
        if scopes.publish_any || scopes.publish_self || !scopes.publish_families.is_empty() {
            Ok(())
        } else {
            Err(Forbidden("the token has no events:publish scope".into()))
        }
    }

    /// The read scope, checked before anything is looked up.
    pub fn authorize_read_scope(&self) -> Result<(), Forbidden> {
        if self.scopes.read {
            Ok(())
        } else {
            Err(Forbidden(
                "reading events needs the events:read scope".into(),
            ))
        }
    }

    /// Whether this principal may cancel an `event_type` event that `source` scheduled
    /// about `user_id`: an admin, or the one that scheduled it while it may still publish
    /// it (so a player token only its own).
    pub fn authorize_cancel(
        &self,
        event_type: EventType,
        source: &str,
        user_id: Option<&str>,
    ) -> Result<(), Forbidden> {
        if self.authorize_admin().is_ok() {
            return Ok(());
        }
        if self.subject != source {
            return Err(Forbidden(
                "only the principal that scheduled an event, or an admin, may cancel it".into(),
            ));
        }
        self.authorize_publish(event_type, user_id)
    }

    /// Whether this principal may read events about `user_id`.
    pub fn authorize_read(&self, user_id: Option<&str>) -> Result<(), Forbidden> {
        self.authorize_read_scope()?;
        if self.is_player() && user_id != Some(self.subject.as_str()) {
            return Err(Forbidden("a player token reads only its own events".into()));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn principal(scope: &str) -> Principal {
        Principal {
            subject: "player-1".into(),
            scopes: Scopes::parse(scope),
        }
    }

    #[test]
    fn the_scheduler_or_an_admin_cancels_and_a_player_only_its_own() {
        let backend = Principal {
            subject: "svc".into(),
            scopes: Scopes::parse("events:publish"),
        };
        let expired = EventType::RewardExpired;
        assert!(backend.authorize_cancel(expired, "svc", Some("u1")).is_ok());
        assert!(
            backend
                .authorize_cancel(expired, "other-svc", Some("u1"))
                .is_err()
        );
        let reader = Principal {
            subject: "svc".into(),
            scopes: Scopes::parse("events:read events:publish:analytics"),
        };
        assert!(
            reader.authorize_cancel(expired, "svc", Some("u1")).is_err(),
            "the same sub, but no right to publish it"
        );
        let admin = Principal {
            subject: "ops".into(),
            scopes: Scopes::parse("admin"),
        };
        assert!(admin.authorize_cancel(expired, "svc", Some("u1")).is_ok());
        let player = principal("events:publish:self admin");
        let tracked = EventType::AnalyticsEventTracked;
        assert!(
            player
                .authorize_cancel(tracked, "player-1", Some("player-1"))
                .is_ok()
        );
        assert!(
            player
                .authorize_cancel(tracked, "svc", Some("player-1"))
                .is_err()
        );
        assert!(
            player
                .authorize_cancel(tracked, "player-1", Some("player-2"))
                .is_err()
        );
    }

    #[test]
    fn backend_scope_publishes_anything_for_anyone() {
        let backend = principal("events:publish");
        for event_type in EventType::ALL {
            assert!(
                backend
                    .authorize_publish(event_type, Some("someone"))
                    .is_ok()
            );
        }
    }

    #[test]
    fn family_scope_is_limited_to_its_family() {
        let analytics = principal("events:publish:analytics events:read");
        assert!(
            analytics
                .authorize_publish(EventType::AnalyticsEventTracked, Some("x"))
                .is_ok()
        );
        assert!(
            analytics
                .authorize_publish(EventType::RewardClaimed, Some("x"))
                .is_err()
        );
    }

    #[test]
    fn player_token_publishes_its_few_types_for_itself_only() {
        let player = principal("events:publish:self");
        assert!(
            player
                .authorize_publish(EventType::NotificationRead, Some("player-1"))
                .is_ok()
        );
        assert!(
            player
                .authorize_publish(EventType::NotificationRead, Some("player-2"))
                .is_err()
        );
        assert!(
            player
                .authorize_publish(EventType::NotificationRead, None)
                .is_err()
        );
        assert!(
            player
                .authorize_publish(EventType::RewardClaimed, Some("player-1"))
                .is_err()
        );
    }

    #[test]
    fn player_token_with_wider_scopes_still_acts_only_for_itself() {
        let player = principal("events:publish events:publish:self");
        assert!(
            player
                .authorize_publish(EventType::RewardClaimed, Some("player-1"))
                .is_ok()
        );
        assert!(
            player
                .authorize_publish(EventType::RewardClaimed, Some("player-2"))
                .is_err()
        );
    }

    #[test]
    fn reading_needs_the_read_scope_and_players_read_only_themselves() {
        assert!(
            principal("events:read")
                .authorize_read(Some("anyone"))
                .is_ok()
        );
        assert!(
            principal("events:publish")
                .authorize_read(Some("anyone"))
                .is_err()
        );
        let player = principal("events:read events:publish:self");
        assert!(player.authorize_read(Some("player-1")).is_ok());
        assert!(player.authorize_read(Some("player-2")).is_err());
        assert!(player.authorize_read(None).is_err());
    }

    #[test]
    fn no_scope_no_publish() {
        let reader = principal("events:read events:publish:unknownfamily");
        assert!(
            reader
                .authorize_publish(EventType::QuestCreated, None)
                .is_err()
        );
    }
}
