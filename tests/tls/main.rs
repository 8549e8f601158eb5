//! TLS to RabbitMQ, PostgreSQL and Redis with real servers and real TLS: a private RabbitMQ
//! node with a TLS listener that wants a client certificate, a private PostgreSQL with
//! `ssl = on` (TLS connections only) and a private Redis with `--tls-port`, certificates
//! made by the test; and the machine's own PostgreSQL (`ssl = on`, self-signed) for
//! `sslmode=require`. Each case runs the gateway as a child process configured by its
//! environment, as an operator would.
//!
//! `cargo test --test tls -- --nocapture` runs it alone (about half a minute).

mod cases;
mod certs;
mod gateway;
#[path = "../faults/process.rs"]
#[allow(
    dead_code,
    reason = "shared with the fault catalogue, which uses all of it"
)]
mod process;
#[path = "../faults/services/mod.rs"]
#[allow(
    dead_code,
    reason = "shared with the fault catalogue, which uses all of it"
)]
mod services;
mod world;

use std::time::Instant;

use world::World;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_to_every_dependency() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let started = Instant::now();
    let world = World::start().await.expect("private TLS services");
    let token = gateway::mint_token().await.expect("a token");
    println!("services up in {:.1} s", started.elapsed().as_secs_f64());
    let (all, require, wrong_ca, wrong_host, no_client, plain_ports, plain_to_tls, refused) = tokio::join!(
        cases::everything_over_tls(&world, &token),
        cases::require_on_the_shared_postgres(&world, &token),
        cases::wrong_ca(&world),
        cases::wrong_host(&world),
        cases::no_client_certificate(&world),
        cases::tls_to_plain_text_ports(&world),
        cases::plain_text_to_tls_ports(&world),
        cases::contradictions_refuse_to_start(&world),
    );
    let mut outcomes = vec![
        ("everything over TLS", all),
        ("sslmode=require on the shared PostgreSQL", require),
        ("wrong CA", wrong_ca),
        ("wrong host name", wrong_host),
        ("no client certificate", no_client),
        ("TLS to plain-text ports", plain_ports),
        ("plain text to TLS ports", plain_to_tls),
        ("contradicting settings refuse to start", refused),
    ];
    // Last: it turns TLS off on the private PostgreSQL.
    outcomes.push((
        "sslmode=require against a server without TLS",
        cases::require_against_a_server_without_tls(&world).await,
    ));
    let mut failed = Vec::new();
    for (case, outcome) in &outcomes {
        match outcome {
            Ok(()) => println!("{case}: ok"),
            Err(error) => {
                println!("{case}: FAILED: {error:#}");
                failed.push(*case);
            }
        }
    }
    println!("all cases in {:.1} s", started.elapsed().as_secs_f64());
    if !failed.is_empty() {
        for log in std::fs::read_dir(world.dir())
            .into_iter()
            .flatten()
            .flatten()
        {
            let path = log.path();
            if path.extension().is_some_and(|ext| ext == "log") {
                let text = std::fs::read_to_string(&path).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(15).collect();
                println!("--- {} (last lines)", path.display());
                for line in tail.into_iter().rev() {
                    println!("{line}");
                }
            }
        }
    }
    drop(world);
    assert!(
        failed.is_empty(),
        "cases failed: {failed:?} (details above)"
    );
}
