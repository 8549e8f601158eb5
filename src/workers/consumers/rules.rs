//! Which cache keys an event makes stale. One table: add a row (or a key to a row) to
//! extend it; the consumer loop never changes.

use serde_json::Value;

use crate::domain::Family;
use crate::domain::data::check_id;

/// The keys (below the Redis prefix) one family's events invalidate; `{field}` is read
/// from the event's `data`. A key whose field is missing or unsafe is skipped.
pub struct InvalidationRule {
    pub family: Family,
    pub keys: &'static [&'static str],
}

pub const RULES: &[InvalidationRule] = &[
    InvalidationRule {
        family: Family::Achievement,
        keys: &[
            "achievements:{achievementId}",
            "achievements:user:{userId}",
            "user_data:{userId}",
        ],
    },
    InvalidationRule {
        family: Family::Quest,
        keys: &[
            "quests:{questId}",
            "quests:user:{userId}",
            "user_data:{userId}",
        ],
    },
    InvalidationRule {
        family: Family::Reward,
        keys: &["rewards:user:{userId}", "user_data:{userId}"],
    },
    InvalidationRule {
        family: Family::Notification,
        keys: &["notifications:user:{userId}"],
    },
    InvalidationRule {
        family: Family::Analytics,
        keys: &["analytics:user:{userId}"],
    },
];

/// Every family's events also stale the gateway's own cached listing of that user.
const GATEWAY_KEYS: &[&str] = &["user_events:{userId}"];

/// The stale keys, without the prefix, for an event of `family` with this `data`.
pub fn stale_keys(family: Family, data: &Value) -> Vec<String> {
    RULES
        .iter()
        .filter(|rule| rule.family == family)
        .flat_map(|rule| rule.keys.iter())
        .chain(GATEWAY_KEYS)
        .filter_map(|template| fill(template, data))
        .collect()
}

/// `achievements:{achievementId}` with `data.achievementId`, if present and a safe id.
fn fill(template: &str, data: &Value) -> Option<String> {
    let (head, rest) = template.split_once('{')?;
    let (field, tail) = rest.split_once('}')?;
    let value = data.get(field)?;
    check_id(value).ok()?;
    Some(format!("{head}{}{tail}", value.as_str()?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn achievement_events_stale_the_achievement_the_users_list_and_user_data() {
        let data = json!({"achievementId": "a-1", "userId": "u-1"});
        assert_eq!(
            stale_keys(Family::Achievement, &data),
            vec![
                "achievements:a-1",
                "achievements:user:u-1",
                "user_data:u-1",
                "user_events:u-1"
            ]
        );
    }

    #[test]
    fn keys_need_their_field_and_a_safe_value() {
        assert_eq!(
            stale_keys(Family::Quest, &json!({"questId": "q"})),
            vec!["quests:q"]
        );
        let unsafe_id = json!({"userId": "u 1*"});
        assert!(stale_keys(Family::Analytics, &unsafe_id).is_empty());
    }

    #[test]
    fn every_family_has_a_rule() {
        for family in Family::ALL {
            assert!(RULES.iter().any(|rule| rule.family == family), "{family}");
        }
    }
}
