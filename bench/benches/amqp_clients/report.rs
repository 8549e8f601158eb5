//! What the runs counted and how it is shown: one line per run, then the medians of each
//! client's runs and the ratios amqprs / lapin.

use std::time::Duration;

use crate::client::Client;

/// What the tasks of one run counted.
#[derive(Default)]
pub struct Tally {
    pub confirmed: u64,
    errors: u64,
    first_error: Option<String>,
}

impl Tally {
    pub fn fail(&mut self, error: anyhow::Error) {
        self.errors += 1;
        self.first_error.get_or_insert_with(|| format!("{error:#}"));
    }

    pub fn add(&mut self, other: Tally) {
        self.confirmed += other.confirmed;
        self.errors += other.errors;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
    }
}

/// One run of one client.
pub struct Sample {
    pub client: Client,
    pub tally: Tally,
    pub elapsed: Duration,
    pub client_cpu: Duration,
    pub broker_cpu: Option<Duration>,
    pub delivered: u32,
}

impl Sample {
    fn rate(&self) -> f64 {
        self.tally.confirmed as f64 / self.elapsed.as_secs_f64()
    }

    fn client_cpu_per_10k(&self) -> Option<f64> {
        per_10k(self.client_cpu, self.tally.confirmed)
    }

    fn broker_cpu_per_10k(&self) -> Option<f64> {
        per_10k(self.broker_cpu?, self.tally.confirmed)
    }

    pub fn describe(&self) -> String {
        let mut line = format!(
            "{:<6} {:>7} confirmed in {:.2} s = {:>7.0} msg/s, client CPU {} s/10k, \
             broker CPU {} s/10k, {} errors, {} delivered",
            self.client.name(),
            self.tally.confirmed,
            self.elapsed.as_secs_f64(),
            self.rate(),
            show(self.client_cpu_per_10k()),
            show(self.broker_cpu_per_10k()),
            self.tally.errors,
            self.delivered,
        );
        if u64::from(self.delivered) != self.tally.confirmed {
            line.push_str(" (MISMATCH)");
        }
        if let Some(error) = &self.tally.first_error {
            line.push_str(&format!("; first error: {error}"));
        }
        line
    }
}

fn per_10k(cpu: Duration, messages: u64) -> Option<f64> {
    (messages > 0).then(|| cpu.as_secs_f64() / messages as f64 * 10_000.0)
}

fn show(value: Option<f64>) -> String {
    value.map_or("n/a".to_owned(), |value| format!("{value:.3}"))
}

fn median(values: impl Iterator<Item = Option<f64>>) -> Option<f64> {
    let mut values: Vec<f64> = values.flatten().collect();
    values.sort_by(f64::total_cmp);
    let middle = values.len() / 2;
    match values.len() {
        0 => None,
        n if n % 2 == 1 => Some(values[middle]),
        _ => Some((values[middle - 1] + values[middle]) / 2.0),
    }
}

/// The medians of each client's runs, and the ratios amqprs / lapin.
pub fn print_summary(samples: &[Sample]) {
    println!();
    println!(
        "{:<7} {:>10} {:>18} {:>18} {:>7} {:>20}",
        "client", "msgs/s", "client CPU s/10k", "broker CPU s/10k", "errors", "delivered/confirmed"
    );
    let medians = [Client::Lapin, Client::Amqprs].map(|client| {
        let runs = || samples.iter().filter(move |sample| sample.client == client);
        let rate = median(runs().map(|sample| Some(sample.rate())));
        let client_cpu = median(runs().map(Sample::client_cpu_per_10k));
        let broker_cpu = median(runs().map(Sample::broker_cpu_per_10k));
        let errors: u64 = runs().map(|sample| sample.tally.errors).sum();
        let delivered: u64 = runs().map(|sample| u64::from(sample.delivered)).sum();
        let confirmed: u64 = runs().map(|sample| sample.tally.confirmed).sum();
        println!(
            "{:<7} {:>10} {:>18} {:>18} {:>7} {:>20}",
            client.name(),
            rate.map_or("n/a".to_owned(), |rate| format!("{rate:.0}")),
            show(client_cpu),
            show(broker_cpu),
            errors,
            format!("{delivered}/{confirmed}"),
        );
        (rate, client_cpu)
    });
    let [(lapin_rate, lapin_cpu), (amqprs_rate, amqprs_cpu)] = medians;
    println!(
        "amqprs/lapin: msgs/s {}, client CPU per 10k {}",
        show(ratio(amqprs_rate, lapin_rate)),
        show(ratio(amqprs_cpu, lapin_cpu)),
    );
}

fn ratio(numerator: Option<f64>, denominator: Option<f64>) -> Option<f64> {
    Some(numerator? / denominator.filter(|value| *value > 0.0)?)
}
