//! The spec's 18 event types and the five families they belong to.

use std::fmt;
use std::str::FromStr;

/// A family of event types: one queue, one binding key, one data schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    Achievement,
    Quest,
    Reward,
    Notification,
    Analytics,
}

impl Family {
    pub const ALL: [Family; 5] = [
        Family::Achievement,
        Family::Quest,
        Family::Reward,
        Family::Notification,
        Family::Analytics,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Family::Achievement => "achievement",
            Family::Quest => "quest",
            Family::Reward => "reward",
            Family::Notification => "notification",
            Family::Analytics => "analytics",
        }
    }

    /// The spec's queue name for this family, without any deployment prefix.
    pub fn queue_name(self) -> String {
        format!("{}_events", self.as_str())
    }

    /// The topic binding that routes this family's events to its queue.
    pub fn binding_key(self) -> String {
        format!("{}.*", self.as_str())
    }

    pub fn parse(name: &str) -> Option<Family> {
        Family::ALL.into_iter().find(|f| f.as_str() == name)
    }

    pub fn event_types(self) -> impl Iterator<Item = EventType> {
        EventType::ALL
            .into_iter()
            .filter(move |t| t.family() == self)
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

macro_rules! event_types {
    ($($variant:ident => $name:literal, $family:ident;)*) => {
        /// One of the spec's event types; its string form is the routing key.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum EventType {
            $($variant,)*
        }

        impl EventType {
            pub const ALL: [EventType; 18] = [$(EventType::$variant,)*];

            pub fn as_str(self) -> &'static str {
                match self {
                    $(EventType::$variant => $name,)*
                }
            }

            pub fn family(self) -> Family {
                match self {
                    $(EventType::$variant => Family::$family,)*
                }
            }
        }
    };
}

event_types! {
    AchievementCreated => "achievement.created", Achievement;
    AchievementUpdated => "achievement.updated", Achievement;
    AchievementDeleted => "achievement.deleted", Achievement;
    AchievementCompleted => "achievement.completed", Achievement;
    AchievementProgressUpdated => "achievement.progress_updated", Achievement;
    QuestCreated => "quest.created", Quest;
    QuestUpdated => "quest.updated", Quest;
    QuestDeleted => "quest.deleted", Quest;
    QuestStarted => "quest.started", Quest;
    QuestCompleted => "quest.completed", Quest;
    QuestProgressUpdated => "quest.progress_updated", Quest;
    RewardCreated => "reward.created", Reward;
    RewardClaimed => "reward.claimed", Reward;
    RewardExpired => "reward.expired", Reward;
    NotificationCreated => "notification.created", Notification;
    NotificationRead => "notification.read", Notification;
    NotificationArchived => "notification.archived", Notification;
    AnalyticsEventTracked => "analytics.event_tracked", Analytics;
}

impl EventType {
    /// Completion and progress are about a player, so they must name one.
    pub fn requires_user_id(self) -> bool {
        matches!(
            self,
            EventType::AchievementCompleted
                | EventType::AchievementProgressUpdated
                | EventType::QuestStarted
                | EventType::QuestCompleted
                | EventType::QuestProgressUpdated
        )
    }

    pub fn requires_progress(self) -> bool {
        matches!(
            self,
            EventType::AchievementProgressUpdated | EventType::QuestProgressUpdated
        )
    }
}

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The name given is not one of the spec's event types.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown event type '{0}'")]
pub struct UnknownEventType(pub String);

impl FromStr for EventType {
    type Err = UnknownEventType;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        EventType::ALL
            .into_iter()
            .find(|t| t.as_str() == name)
            .ok_or_else(|| UnknownEventType(name.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_type_round_trips_and_routes_to_its_family_binding() {
        for event_type in EventType::ALL {
            assert_eq!(event_type.as_str().parse::<EventType>(), Ok(event_type));
            let family = event_type.family();
            assert!(event_type.as_str().starts_with(&format!("{family}.")));
        }
        let per_family: Vec<usize> = Family::ALL
            .iter()
            .map(|f| f.event_types().count())
            .collect();
        assert_eq!(per_family, vec![5, 6, 3, 3, 1]);
    }

    #[test]
    fn unknown_names_are_refused() {
        assert!("achievement.exploded".parse::<EventType>().is_err());
        assert!("ACHIEVEMENT.created".parse::<EventType>().is_err());
    }
}
