//! Running workers against a deadline and recording what they did.
//!
//! Every worker owns a [`Schedule`] that ends at the deadline, so every load loop stops by
//! itself, and a [`Recorder`]; the recorders are merged once all workers are done.

use std::future::Future;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow};
use hdrhistogram::Histogram;
use tokio::time::{Interval, MissedTickBehavior};

/// Latencies are recorded in microseconds, up to a minute, to 3 significant digits.
const LATENCY_MAX_MICROS: u64 = 60_000_000;

/// How hard to push: closed loop (next operation as soon as the last ended) or paced.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    pub concurrency: u32,
    pub duration: Duration,
    /// Events per second across all workers, when paced.
    pub rate: Option<f64>,
}

/// When each operation of one worker should start.
pub struct Schedule {
    deadline: Instant,
    pacing: Option<Interval>,
}

impl Schedule {
    fn new(plan: &Plan, worker: u32, started: Instant, events_per_op: u64) -> Self {
        let pacing = plan.rate.map(|rate| {
            // Each worker takes its share of the rate; staggered starts spread the ticks.
            let ops_per_sec = rate / events_per_op as f64 / f64::from(plan.concurrency);
            let period = Duration::from_secs_f64(1.0 / ops_per_sec.max(0.001));
            let offset = period.mul_f64(f64::from(worker) / f64::from(plan.concurrency));
            let mut interval = tokio::time::interval_at((started + offset).into(), period);
            // Burst keeps the intended start times, so a stall shows up as latency.
            interval.set_missed_tick_behavior(MissedTickBehavior::Burst);
            interval
        });
        Schedule {
            deadline: started + plan.duration,
            pacing,
        }
    }

    /// The intended start of the next operation, or `None` once the run is over. Paced
    /// latencies count from the intended start, not the actual one, so a slow server
    /// cannot hide its queueing by delaying the requests it did not serve yet.
    pub async fn next(&mut self) -> Option<Instant> {
        let start = match &mut self.pacing {
            Some(interval) => interval.tick().await.into_std(),
            None => Instant::now(),
        };
        (start < self.deadline).then_some(start)
    }
}

/// What one worker saw: events accepted and refused, and the latency of each operation.
pub struct Recorder {
    pub ok_events: u64,
    pub failed_events: u64,
    /// The first few distinct failure reasons, to tell the reader what went wrong.
    pub failures: Vec<String>,
    pub latency: Histogram<u64>,
}

impl Recorder {
    pub fn new() -> anyhow::Result<Self> {
        Ok(Recorder {
            ok_events: 0,
            failed_events: 0,
            failures: Vec::new(),
            latency: Histogram::new_with_bounds(1, LATENCY_MAX_MICROS, 3)
                .context("creating a latency histogram")?,
        })
    }

    /// One operation that started at `start` and carried `events`.
    pub fn record(&mut self, start: Instant, events: u64, outcome: anyhow::Result<()>) {
        let micros = u64::try_from(start.elapsed().as_micros()).unwrap_or(u64::MAX);
        self.latency.saturating_record(micros.max(1));
        match outcome {
            Ok(()) => self.ok_events += events,
            Err(error) => {
                self.failed_events += events;
                self.note_failure(format!("{error:#}"));
            }
        }
    }

    fn note_failure(&mut self, reason: String) {
        if self.failures.len() < 5 && !self.failures.contains(&reason) {
            self.failures.push(reason);
        }
    }

    fn merge(&mut self, other: Recorder) -> anyhow::Result<()> {
        self.ok_events += other.ok_events;
        self.failed_events += other.failed_events;
        for reason in other.failures {
            self.note_failure(reason);
        }
        self.latency
            .add(&other.latency)
            .map_err(|e| anyhow!("merging latency histograms: {e:?}"))
    }
}

/// What all workers of one run did, and how long they took to finish.
pub struct Totals {
    pub recorder: Recorder,
    pub elapsed: Duration,
}

/// Starts `plan.concurrency` workers made by `make_worker(index, schedule)` and waits for
/// all of them; the run lasts until the last one has finished its last operation. A worker
/// that cannot even start (no connection) fails the run.
pub async fn run_workers<F, Fut>(
    plan: &Plan,
    events_per_op: u64,
    make_worker: F,
) -> anyhow::Result<Totals>
where
    F: Fn(u32, Schedule) -> Fut,
    Fut: Future<Output = anyhow::Result<Recorder>> + Send + 'static,
{
    let started = Instant::now();
    let tasks: Vec<_> = (0..plan.concurrency)
        .map(|worker| {
            let schedule = Schedule::new(plan, worker, started, events_per_op);
            tokio::spawn(make_worker(worker, schedule))
        })
        .collect();
    let mut total = Recorder::new()?;
    for task in tasks {
        let recorder = task.await.context("a load worker panicked")??;
        total.merge(recorder)?;
    }
    Ok(Totals {
        recorder: total,
        elapsed: started.elapsed(),
    })
}
