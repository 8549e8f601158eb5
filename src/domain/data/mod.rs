//! An event's `data`, parsed against its family's field table (`fields`), the same table
//! the OpenAPI document reads, so the two cannot drift apart.

use serde_json::{Map, Value};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use validator::{ValidateLength, ValidateRange};

use super::event_type::EventType;
use super::problem::{FieldError, pointer_child};

mod fields;

use FieldKind::*;
pub use fields::{
    FieldKind, FieldSpec, MAX_ID_CHARS, MAX_TEXT_CHARS, METADATA_MAX_BYTES, METADATA_MAX_DEPTH,
    METADATA_MAX_KEYS, is_required,
};

/// An event's `data` that passed its type's schema. Only [`EventData::parse`] makes one.
#[derive(Debug, Clone, PartialEq)]
pub struct EventData {
    fields: Map<String, Value>,
}

impl EventData {
    /// Checks `value` against the schema of `event_type`, reporting every bad field with a
    /// JSON pointer below `at`.
    pub fn parse(event_type: EventType, value: Value, at: &str) -> Result<Self, Vec<FieldError>> {
        let Value::Object(fields) = value else {
            return Err(vec![FieldError::new(at, "must be a JSON object")]);
        };
        let specs = event_type.family().fields();
        let mut errors = Vec::new();
        for name in fields.keys() {
            if !specs.iter().any(|s| s.name == name) {
                errors.push(FieldError::new(
                    pointer_child(at, name),
                    format!("unknown field for {event_type}"),
                ));
            }
        }
        for spec in specs {
            // Built only for an error: a valid event allocates no pointers.
            let pointer = || pointer_child(at, spec.name);
            match fields.get(spec.name) {
                None | Some(Value::Null) if is_required(event_type, spec) => {
                    errors.push(FieldError::new(
                        pointer(),
                        format!("is required for {event_type}"),
                    ));
                }
                None | Some(Value::Null) => {}
                Some(value) => {
                    if let Some(path) = nul_path(value) {
                        errors.push(FieldError::new(
                            path.iter()
                                .rev()
                                .fold(pointer(), |at, n| pointer_child(&at, n)),
                            "must not contain the NUL character (U+0000)",
                        ));
                    } else if let Err(message) = check_kind(spec.kind, value) {
                        errors.push(FieldError::new(pointer(), message));
                    }
                }
            }
        }
        if errors.is_empty() {
            Ok(EventData { fields })
        } else {
            Err(errors)
        }
    }

    /// `data.userId`, which every player-bound event carries.
    pub fn user_id(&self) -> Option<&str> {
        self.fields.get("userId").and_then(Value::as_str)
    }

    pub fn as_map(&self) -> &Map<String, Value> {
        &self.fields
    }

    /// The value at a JSON pointer below `data` (`/metadata/email`), for sealing it.
    pub fn value_mut(&mut self, pointer: &str) -> Option<&mut Value> {
        let inside = pointer.strip_prefix('/')?;
        let (name, rest) = inside.split_once('/').unwrap_or((inside, ""));
        let field = self
            .fields
            .get_mut(&name.replace("~1", "/").replace("~0", "~"))?;

        if rest.is_empty() {
            Some(field)
        } else {
            field.pointer_mut(&format!("/{rest}"))
        }
    }
}

fn check_kind(kind: FieldKind, value: &Value) -> Result<(), String> {
    match kind {
        Id => check_id(value),
        Text => match value.as_str() {
            Some(text) if text.validate_length(None, Some(MAX_TEXT_CHARS), None) => Ok(()),
            Some(_) => Err(format!("must be at most {MAX_TEXT_CHARS} characters")),
            None => Err("must be a string".into()),
        },
        Points => match value.as_u64() {
            Some(_) => Ok(()),
            None => Err("must be a non-negative integer".into()),
        },
        Progress => match value.as_f64() {
            Some(p) if p.validate_range(Some(0.0), Some(100.0), None, None) => Ok(()),
            Some(_) => Err("must be a number from 0 to 100".into()),
            None => Err("must be a number from 0 to 100".into()),
        },
        Number => match value.as_f64() {
            Some(n) if n.is_finite() => Ok(()),
            _ => Err("must be a finite number".into()),
        },
        Any => Ok(()),
        Timestamp => match value.as_str() {
            Some(text) if OffsetDateTime::parse(text, &Rfc3339).is_ok() => Ok(()),
            _ => Err("must be an RFC 3339 date-time, e.g. 2026-01-31T12:00:00Z".into()),
        },
        Metadata => check_metadata(value),
    }
}

/// Ids end up in routing, cache keys and URLs, so they are kept to a safe alphabet.
pub fn check_id(value: &Value) -> Result<(), String> {
    let Some(id) = value.as_str() else {
        return Err("must be a string".into());
    };
    let safe = id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'));
    if id.validate_length(Some(1), Some(MAX_ID_CHARS), None) && safe {
        Ok(())
    } else {
        Err(format!(
            "must be 1 to {MAX_ID_CHARS} characters of A-Z, a-z, 0-9, '.', '_', ':' or '-'"
        ))
    }
}

fn check_metadata(value: &Value) -> Result<(), String> {
    let Value::Object(map) = value else {
        return Err("must be a JSON object".into());
    };
    if map.len() > METADATA_MAX_KEYS {
        return Err(format!("must have at most {METADATA_MAX_KEYS} keys"));
    }
    if depth(value) > METADATA_MAX_DEPTH {
        return Err(format!(
            "must be nested at most {METADATA_MAX_DEPTH} levels deep"
        ));
    }
    if value.to_string().len() > METADATA_MAX_BYTES {
        return Err(format!(
            "must be at most {METADATA_MAX_BYTES} bytes as JSON"
        ));
    }
    Ok(())
}

/// Where in `value` the first string or object key holding U+0000 is, as the names and
/// indexes leading to it, innermost first; `Some(vec![])` is `value` itself. PostgreSQL's
/// text and jsonb cannot hold U+0000 (the event would be refused by the outbox or the
/// events table), and no event needs it.
fn nul_path(value: &Value) -> Option<Vec<String>> {
    match value {
        Value::String(text) => text.contains('\0').then(Vec::new),
        Value::Array(items) => items.iter().enumerate().find_map(|(index, item)| {
            let mut path = nul_path(item)?;
            path.push(index.to_string());
            Some(path)
        }),
        Value::Object(map) => map.iter().find_map(|(key, item)| {
            let mut path = if key.contains('\0') {
                Vec::new()
            } else {
                nul_path(item)?
            };
            path.push(key.clone());
            Some(path)
        }),
        _ => None,
    }
}

/// Nesting depth of objects and arrays; a scalar has depth 0.
fn depth(value: &Value) -> usize {
    match value {
        Value::Object(map) => 1 + map.values().map(depth).max().unwrap_or(0),
        Value::Array(items) => 1 + items.iter().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn errors(event_type: EventType, data: Value) -> Vec<(String, String)> {
        match EventData::parse(event_type, data, "/data") {
            Ok(_) => Vec::new(),
            Err(errors) => errors.into_iter().map(|e| (e.pointer, e.message)).collect(),
        }
    }

    fn pointers(event_type: EventType, data: Value) -> Vec<String> {
        errors(event_type, data)
            .into_iter()
            .map(|(p, _)| p)
            .collect()
    }

    #[test]
    fn a_valid_completion_passes_and_exposes_its_user() {
        let data = json!({"achievementId": "a-1", "userId": "u:1", "points": 100,
            "progress": 100, "completedAt": "2026-01-31T12:00:00.123Z", "metadata": {"k": [1]}});
        let parsed = EventData::parse(EventType::AchievementCompleted, data, "/data").unwrap();
        assert_eq!(parsed.user_id(), Some("u:1"));
    }

    #[test]
    fn every_bad_field_is_named_at_once() {
        let data = json!({"achievementId": "", "points": -1, "progress": 101,
            "completedAt": "yesterday", "bogus": true});
        assert_eq!(
            pointers(EventType::AchievementCompleted, data),
            vec![
                "/data/bogus",
                "/data/achievementId",
                "/data/userId",
                "/data/points",
                "/data/progress",
                "/data/completedAt"
            ]
        );
    }

    #[test]
    fn ids_are_bounded_to_a_safe_alphabet() {
        let long = "x".repeat(129);
        for bad in [json!(""), json!("a b"), json!("é"), json!(long), json!(7)] {
            let data = json!({"questId": bad, "userId": "u1"});
            assert_eq!(
                pointers(EventType::QuestStarted, data),
                vec!["/data/questId"]
            );
        }
        let exact = "x".repeat(128);
        assert!(
            pointers(
                EventType::QuestStarted,
                json!({"questId": exact, "userId": "u"})
            )
            .is_empty()
        );
    }

    #[test]
    fn points_must_be_whole_and_non_negative() {
        for bad in [json!(1.5), json!(-3), json!("10")] {
            let data = json!({"achievementId": "a", "points": bad});
            assert_eq!(
                pointers(EventType::AchievementCreated, data),
                vec!["/data/points"]
            );
        }
    }

    #[test]
    fn progress_types_need_user_and_progress() {
        let found = pointers(EventType::QuestProgressUpdated, json!({"questId": "q"}));
        assert_eq!(found, vec!["/data/userId", "/data/progress"]);
        let null_user = json!({"questId": "q", "userId": null, "progress": 5});
        assert_eq!(
            pointers(EventType::QuestProgressUpdated, null_user),
            vec!["/data/userId"]
        );
    }

    #[test]
    fn metadata_is_bounded_in_keys_depth_and_size() {
        let many: Map<String, Value> = (0..33).map(|i| (format!("k{i}"), json!(i))).collect();
        let deep = json!({"a": {"b": {"c": {"d": {"e": 1}}}}});
        let big = json!({"blob": "x".repeat(8 * 1024)});
        for metadata in [Value::Object(many), deep, big, json!([1])] {
            let data = json!({"achievementId": "a", "metadata": metadata});
            assert_eq!(
                pointers(EventType::AchievementCreated, data),
                vec!["/data/metadata"]
            );
        }
        let ok = json!({"achievementId": "a", "metadata": {"a": {"b": {"c": 1}}}});
        assert!(pointers(EventType::AchievementCreated, ok).is_empty());
    }

    #[test]
    fn unknown_field_names_are_escaped_in_pointers() {
        let data = json!({"achievementId": "a", "a/b~c": 1});
        assert_eq!(
            pointers(EventType::AchievementCreated, data),
            vec!["/data/a~1b~0c"]
        );
    }

    #[test]
    fn analytics_value_must_be_a_number_but_reward_value_may_be_anything() {
        let analytics = json!({"analyticsId": "x", "userId": "u", "type": "t",
            "category": "c", "event": "e", "value": "high"});
        assert_eq!(
            pointers(EventType::AnalyticsEventTracked, analytics),
            vec!["/data/value"]
        );
        let reward = json!({"rewardId": "r", "userId": "u", "name": "n", "type": "coins",
            "value": {"coins": 5}});
        assert!(pointers(EventType::RewardClaimed, reward).is_empty());
    }

    #[test]
    fn nul_characters_are_refused_anywhere_and_named_where_they_are() {
        let data = json!({"rewardId": "r", "userId": "u", "name": "a\u{0}b", "type": "t",
            "value": {"deep": ["x", "x\u{0}"]}, "metadata": {"a/b": {"k\u{0}": 1}}});
        assert_eq!(
            pointers(EventType::RewardClaimed, data),
            vec![
                "/data/name",
                "/data/value/deep/1",
                "/data/metadata/a~1b/k\u{0}"
            ]
        );
    }

    #[test]
    fn data_must_be_an_object() {
        assert_eq!(
            pointers(EventType::RewardClaimed, json!([1])),
            vec!["/data"]
        );
    }
}
