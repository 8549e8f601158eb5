//! `deliverAt`: when a scheduled event is to be published. Parsing reads the time (RFC 3339);
//! whether it lies in the window the gateway takes (at least a second ahead, at most
//! `SCHEDULE_MAX_AHEAD`) depends on the clock, and is checked by [`ScheduleWindow`].

use std::time::Duration;

use serde_json::Value;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::envelope::{ValidEvent, rfc3339_millis};
use super::problem::FieldError;

/// The earliest a scheduled event may be due: anything sooner is an ordinary publish.
pub const MIN_AHEAD: Duration = Duration::from_secs(1);

/// When a scheduled event is due, and where the client said so (for its errors).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliverAt {
    pub at: OffsetDateTime,
    /// The JSON pointer (or `/headers/ce-deliverat`) of the time in the request.
    pub pointer: String,
}

impl DeliverAt {
    /// Reads an RFC 3339 time, naming `pointer` when it is not one.
    pub fn parse(value: &Value, pointer: String) -> Result<Self, FieldError> {
        let Some(text) = value.as_str() else {
            return Err(FieldError::new(
                pointer,
                "must be an RFC 3339 date-time string",
            ));
        };
        match OffsetDateTime::parse(text, &Rfc3339) {
            Ok(at) => Ok(DeliverAt { at, pointer }),
            Err(_) => Err(FieldError::new(
                pointer,
                "must be an RFC 3339 date-time, e.g. 2026-12-24T09:00:00Z",
            )),
        }
    }

    /// The time as the envelope's `metadata.scheduledFor` and the receipt's `deliverAt`.
    pub fn text(&self) -> String {
        rfc3339_millis(self.at)
    }
}

/// How far ahead events may be scheduled.
#[derive(Debug, Clone, Copy)]
pub struct ScheduleWindow {
    pub max_ahead: Duration,
}

impl ScheduleWindow {
    /// Every event whose `deliverAt` is less than [`MIN_AHEAD`] from `now`, or more than
    /// `max_ahead`: its index, and the error naming it.
    pub fn check(&self, events: &[ValidEvent], now: OffsetDateTime) -> Vec<(usize, FieldError)> {
        events
            .iter()
            .enumerate()
            .filter_map(|(index, event)| Some((index, event.deliver_at.as_ref()?)))
            .filter_map(|(index, deliver_at)| {
                let ahead = deliver_at.at - now;
                let error = if ahead < MIN_AHEAD {
                    FieldError::new(
                        &deliver_at.pointer,
                        format!(
                            "must be at least {} s in the future (it is {})",
                            MIN_AHEAD.as_secs(),
                            deliver_at.text()
                        ),
                    )
                } else if ahead > self.max_ahead {
                    FieldError::new(
                        &deliver_at.pointer,
                        format!(
                            "must be at most {} s ahead (SCHEDULE_MAX_AHEAD)",
                            self.max_ahead.as_secs()
                        ),
                    )
                } else {
                    return None;
                };
                Some((index, error))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::domain::cloudevent::{CloudEventError, parse_binary, parse_structured};

    fn event_due(text: &str) -> ValidEvent {
        ValidEvent::parse(
            json!({"type": "reward.expired", "deliverAt": text,
                "data": {"rewardId": "r1", "userId": "u1", "name": "Gold", "type": "coins", "value": 5}}),
            "/events/3",
        )
        .unwrap()
    }

    #[test]
    fn the_window_is_a_second_to_max_ahead() {
        let now = OffsetDateTime::parse("2026-12-06T12:00:00Z", &Rfc3339).unwrap();
        let window = ScheduleWindow {
            max_ahead: Duration::from_secs(3600),
        };
        let ok = [
            event_due("2026-12-06T12:00:01Z"),
            event_due("2026-12-06T13:00:00Z"),
        ];
        assert!(window.check(&ok, now).is_empty());
        for late_or_early in ["2026-12-06T12:00:00.999Z", "2026-12-06T13:00:00.001Z"] {
            let found = window.check(&[event_due(late_or_early)], now);
            assert_eq!(found.len(), 1, "{late_or_early}");
            assert_eq!(found[0].0, 0);
            assert_eq!(found[0].1.pointer, "/events/3/deliverAt");
        }
    }

    #[test]
    fn a_time_that_is_not_rfc_3339_is_named() {
        for bad in [
            json!("tomorrow at 9"),
            json!(1765022400),
            json!("2026-12-06 12:00"),
        ] {
            let error = DeliverAt::parse(&bad, "/deliverAt".into()).unwrap_err();
            assert_eq!(error.pointer, "/deliverAt");
        }
        let offset = DeliverAt::parse(&json!("2026-12-06T13:00:00+01:00"), String::new()).unwrap();
        assert_eq!(offset.text(), "2026-12-06T12:00:00.000Z");
    }

    #[test]
    fn deliverat_schedules_in_both_modes_and_is_named_when_bad() {
        let event = parse_structured(
            json!({"specversion": "1.0", "id": "e1", "source": "/s",
            "type": "quest.started", "deliverat": "2026-12-24T09:00:00Z",
            "data": {"questId": "q", "userId": "u"}}),
            "",
        );
        assert_eq!(event.unwrap().deliver_at.unwrap().pointer, "/deliverat");
        let headers = json!({"specversion": "1.0", "id": "e2", "source": "/s",
            "type": "quest.started", "deliverat": "next tuesday"});
        let data = json!({"questId": "q", "userId": "u"});
        let bad = parse_binary(headers.as_object().unwrap().clone(), data);
        assert!(
            matches!(&bad, Err(CloudEventError::Invalid(e)) if e[0].pointer == "/headers/ce-deliverat"),
            "{bad:?}"
        );
    }
}
