//! The load generator of issue 6: the gateway side by side with the fastest direct way to
//! put the same events on the same broker, at the same concurrency.
//!
//! It starts its own gateway (so it knows the pid whose CPU and memory it reports) on its
//! own exchange and queues, alternates raw and gateway runs so drift on a shared machine
//! hits both, checks that every accepted event reached a queue, and deletes what it made.
//!
//! Layout: `load` runs workers against a deadline and records latencies; `http` and
//! `broker` are the two ways in; `scenarios` says what each scenario sends (`raw` and
//! `peer` have their own files); `gateway` and `procfs` own the gateway process and the
//! numbers read about it; `session` runs the plan and `meter` each scenario in it (with
//! the costs around it); `report` summarises the runs, `targets`
//! checks the targets and `table` prints them. `traced` and `otlp_sink` measure
//! what OTLP export costs: a second gateway exports its spans to a sink in the bench.
//! `scheduled` studies scheduled events: `due` their due-time accuracy, `schedule_table`
//! the gateway's schedule in PostgreSQL (a million rows pending, the release claim).

mod broker;
mod due;
mod gateway;
mod http;
mod load;
mod meter;
mod otlp_sink;
mod peer;
mod procfs;
mod raw;
mod report;
mod scenarios;
mod schedule_table;
mod scheduled;
mod session;
mod table;
mod targets;
mod traced;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;

use crate::scenarios::Scenario;

/// Measures the gateway against direct AMQP publishing and prints a table.
#[derive(Debug, Clone, Parser)]
#[command(name = "bench")]
pub struct Args {
    /// The gateway binary to start (a release build).
    #[arg(long, default_value = "target/release/event-gateway")]
    pub gateway_bin: PathBuf,

    /// Operations in flight at once, in every scenario (connections, or raw publishers).
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub concurrency: u32,

    /// Length of each measured run.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub duration: Duration,

    /// Runs per scenario; the table shows medians.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=50))]
    pub runs: u32,

    /// Events per `POST /v1/events/batch` request.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=500))]
    pub batch_size: u32,

    /// Outstanding confirms per raw publisher; 1 keeps raw at the same events in flight
    /// as `single`.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub raw_window: u32,

    /// Confirm-mode channels the raw publishers share (the gateway's default is 1).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub raw_channels: u16,

    /// RabbitMQ's AMQP port on 127.0.0.1 (user guest/guest).
    #[arg(long, default_value_t = 5672)]
    pub amqp_port: u16,

    /// RabbitMQ management port on 127.0.0.1; the `peer` scenario runs only if it answers.
    #[arg(long, default_value_t = 15672)]
    pub management_port: u16,

    /// The scenarios to compare with raw, comma-separated (e.g. `single` while profiling);
    /// `scheduled` (not in the default) is the study of scheduled events, about 4 min.
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = Scenario::COMPARED)]
    pub scenarios: Vec<Scenario>,

    /// Rows `scheduled` puts far in the future for its second round (its first has none).
    #[arg(long, default_value_t = 10_000)]
    pub scheduled_pending: u64,

    /// Scheduled events falling due per second in `scheduled`'s due-time accuracy run.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub due_rate: u32,

    /// How long they keep falling due.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub due_for: Duration,

    /// Also write the results as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,

    /// One short run of every scenario, no warm-up: checks the bench works (CI).
    #[arg(long)]
    pub smoke: bool,
}

impl Args {
    /// The plan after `--smoke` has had its say.
    fn effective(mut self) -> Self {
        if self.smoke {
            self.runs = 1;
            self.duration = Duration::from_secs(1);
            self.due_for = Duration::from_secs(1);
        }
        self
    }
}

fn main() -> ExitCode {
    let args = Args::parse().effective();
    let outcome = tokio::runtime::Runtime::new()
        .map_err(anyhow::Error::from)
        .and_then(|runtime| runtime.block_on(session::run(args)));
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("bench: {error:#}");
            ExitCode::FAILURE
        }
    }
}
