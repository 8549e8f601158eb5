//! The spec's retry strategy: a few attempts, exponential backoff, capped.

use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    pub max_attempts: u32,
    pub initial_delay: Duration,
    pub max_delay: Duration,
}

impl RetryPolicy {
    /// How long to wait after failed attempt `attempt` (1-based), or `None` when it was
    /// the last one.
    pub fn delay_after(&self, attempt: u32) -> Option<Duration> {
        if attempt >= self.max_attempts {
            return None;
        }
        let factor = 2u32.saturating_pow(attempt.saturating_sub(1));
        Some(
            self.initial_delay
                .saturating_mul(factor)
                .min(self.max_delay),
        )
    }

    /// Every distinct delay the policy can ask for, shortest first.
    pub fn delays(&self) -> Vec<Duration> {
        let mut delays: Vec<Duration> = (1..self.max_attempts)
            .filter_map(|a| self.delay_after(a))
            .collect();
        delays.dedup();
        delays
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_spec_schedule_doubles_from_one_second_up_to_a_minute() {
        let spec = RetryPolicy {
            max_attempts: 3,
            initial_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(60),
        };
        assert_eq!(spec.delay_after(1), Some(Duration::from_secs(1)));
        assert_eq!(spec.delay_after(2), Some(Duration::from_secs(2)));
        assert_eq!(spec.delay_after(3), None);
        let long = RetryPolicy {
            max_attempts: 10,
            ..spec
        };
        assert_eq!(long.delay_after(7), Some(Duration::from_secs(60)));
        assert_eq!(long.delays().last(), Some(&Duration::from_secs(60)));
        assert_eq!(long.delays().len(), 7, "1, 2, 4, 8, 16, 32, 60");
    }
}
