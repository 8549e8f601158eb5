//! The fault catalogue (RELIABILITY.md): private RabbitMQ, PostgreSQL and Redis, the
//! gateway as a child process under a steady mixed load, sixteen faults injected one
//! after another, and every answer held against what reached the bus and the database.
//!
//! `cargo test --test faults -- --nocapture` runs it alone; `FAULTS=broker-kill,queue-full`
//! runs only the named scenarios.

mod arrivals;
mod checks;
mod checks_tests;
mod gateway;
mod load;
mod observe;
mod process;
mod proxy;
mod report;
mod scenarios;
mod services;

use scenarios::{Fault, run_scenario};
use services::Services;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_answer_holds_under_faults() {
    let chosen = chosen_faults();
    let mut services = Services::start().await.expect("private services");
    let token = gateway::mint_token().await.expect("a publish token");
    let mut rows = Vec::new();
    for fault in chosen {
        let started = std::time::Instant::now();
        let row = run_scenario(fault, &mut services, &token).await;
        println!(
            "{}: {} in {:.0} s",
            fault.name(),
            if row.failures.is_empty() {
                "ok"
            } else {
                "FAILED"
            },
            started.elapsed().as_secs_f64()
        );
        rows.push(row);
    }
    drop(services);
    println!("\n{}\n{}", report::table(&rows), report::details(&rows));
    let failed: Vec<&str> = rows
        .iter()
        .filter(|row| !row.failures.is_empty())
        .map(|row| row.scenario)
        .collect();
    assert!(
        failed.is_empty(),
        "scenarios failed: {failed:?} (details above)"
    );
}

/// The scenarios `FAULTS` names (comma-separated), or all sixteen.
fn chosen_faults() -> Vec<Fault> {
    let Ok(names) = std::env::var("FAULTS") else {
        return Fault::ALL.to_vec();
    };
    let chosen: Vec<Fault> = Fault::ALL
        .into_iter()
        .filter(|fault| names.split(',').any(|name| name.trim() == fault.name()))
        .collect();
    assert!(
        !chosen.is_empty(),
        "FAULTS={names} names none of {:?}",
        Fault::ALL.map(Fault::name)
    );
    chosen
}
