//! The targets, checked against one bench's numbers. Informational: a bench is not
//! a test, so a miss is printed, never turned into a failing exit code.

use serde::Serialize;

use crate::report::Summary;
use crate::scenarios::Scenario;
use crate::scheduled::ScheduledStudy;

/// One target and how this run did against it.
#[derive(Debug, Clone, Serialize)]
pub struct TargetCheck {
    pub target: &'static str,
    pub measured: Option<f64>,
    /// `None` when it could not be measured (e.g. no peer).
    pub passed: Option<bool>,
    pub detail: String,
}

/// Which side of the bound passes.
#[derive(Clone, Copy)]
enum Bound {
    AtLeast(f64),
    AtMost(f64),
}

impl TargetCheck {
    fn new(
        target: &'static str,
        measured: Option<f64>,
        bound: Bound,
        show: fn(f64) -> String,
    ) -> Self {
        let passed = measured.map(|m| match bound {
            Bound::AtLeast(wanted) => m >= wanted,
            Bound::AtMost(wanted) => m <= wanted,
        });
        let detail = measured.map_or_else(|| "not measured".to_owned(), show);
        TargetCheck {
            target,
            measured,
            passed,
            detail,
        }
    }

    pub fn verdict(&self) -> &'static str {
        match self.passed {
            Some(true) => "PASS",
            Some(false) => "FAIL",
            None => "SKIP",
        }
    }
}

/// Three decimals, so that a 0.797 is not shown as a failing 0.80.
fn times(ratio: f64) -> String {
    format!("{ratio:.3}x")
}

fn mib(size: f64) -> String {
    format!("{size:.1} MiB")
}

fn ms(time: f64) -> String {
    format!("{time:.1} ms")
}

fn count(events: f64) -> String {
    format!("{events:.0}")
}

/// The targets of issue 6, from the summaries of this run, and issue 16's when `scheduled`
/// ran.
pub fn check(
    rows: &[Summary],
    peak_rss_mib: f64,
    scheduled: Option<&ScheduledStudy>,
) -> Vec<TargetCheck> {
    let mut checks = publish_checks(rows, peak_rss_mib);
    if let Some(study) = scheduled {
        checks.extend(scheduled_checks(study));
    }
    checks
}

/// The worst p99 lateness over the pending levels, and every early, lost, duplicated or
/// unexpected arrival.
fn scheduled_checks(study: &ScheduledStudy) -> [TargetCheck; 2] {
    let lateness = study.levels.iter().map(|level| &level.lateness);
    let worst_p99 = lateness.clone().map(|l| l.p99_ms).fold(0.0, f64::max);
    let wrong: u64 = lateness
        .map(|l| l.early + l.lost + l.duplicates + l.strangers)
        .sum();
    [
        TargetCheck::new(
            "scheduled: p99 lateness <= 1 s (worst pending level)",
            Some(worst_p99),
            Bound::AtMost(1000.0),
            ms,
        ),
        TargetCheck::new(
            "scheduled: none early, lost, duplicated or unexpected",
            Some(wrong as f64),
            Bound::AtMost(0.0),
            count,
        ),
    ]
}

fn publish_checks(rows: &[Summary], peak_rss_mib: f64) -> Vec<TargetCheck> {
    let full_speed = |s: Scenario| {
        rows.iter()
            .find(|r| r.scenario == s && r.paced_rate.is_none())
    };
    let to_raw = |s: Scenario| full_speed(s).and_then(|r| r.ratio_to_raw);
    let to_peer = |s: Scenario| {
        let peer = full_speed(Scenario::Peer)?.events_per_sec;
        Some(full_speed(s)?.events_per_sec / peer.max(f64::MIN_POSITIVE))
    };
    let paced_p99 = rows
        .iter()
        .find(|r| r.scenario == Scenario::Single && r.paced_rate.is_some())
        .and_then(|r| r.p99_ratio_to_raw);
    use Bound::{AtLeast, AtMost};
    vec![
        TargetCheck::new(
            "single >= 0.8x raw",
            to_raw(Scenario::Single),
            AtLeast(0.8),
            times,
        ),
        TargetCheck::new(
            "batch >= 1.5x raw",
            to_raw(Scenario::Batch),
            AtLeast(1.5),
            times,
        ),
        TargetCheck::new(
            "critical >= 0.5x raw",
            to_raw(Scenario::Critical),
            AtLeast(0.5),
            times,
        ),
        TargetCheck::new(
            "p99 of single at half its max rate <= 3x p99 of raw at that rate",
            paced_p99,
            AtMost(3.0),
            times,
        ),
        TargetCheck::new(
            "single >= 5x peer",
            to_peer(Scenario::Single),
            AtLeast(5.0),
            times,
        ),
        TargetCheck::new(
            "batch >= 10x peer",
            to_peer(Scenario::Batch),
            AtLeast(10.0),
            times,
        ),
        TargetCheck::new(
            "gateway peak RSS < 64 MiB",
            Some(peak_rss_mib),
            AtMost(64.0),
            mib,
        ),
    ]
}
