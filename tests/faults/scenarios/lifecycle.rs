//! One scenario from start to table row.

use std::time::Duration;

use anyhow::Context;

use super::{AFTERWARDS, DRAIN_LIMIT, Fault, GRACE, RECOVERY_LIMIT, Run, WARMUP};
use crate::checks::{Observed, Row, check};
use crate::gateway::GatewayConfig;
use crate::load::{EventLog, Load, Outcome};
use crate::observe::{drain_queues, persisted_ids, wait_outbox_empty};
use crate::process::{free_port, now_ms};
use crate::proxy::Proxy;
use crate::services::Services;

/// Runs `fault` under load and checks what came of it. The gateways' logs stay (named in
/// the notes) until the next run of the scenario.
pub async fn run_scenario(fault: Fault, services: &mut Services, token: &str) -> Row {
    let logs_dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("faults")
        .join(fault.name());
    let _ = std::fs::remove_dir_all(&logs_dir);
    let mut row = match scenario(fault, services, token, &logs_dir).await {
        Ok(row) => row,
        Err(error) => Row {
            scenario: fault.name(),
            failures: vec![format!("harness: {error:#}")],
            ..Row::default()
        },
    };
    row.notes
        .push(format!("gateway logs: {}", logs_dir.display()));
    row
}

async fn scenario(
    fault: Fault,
    services: &mut Services,
    token: &str,
    logs_dir: &std::path::Path,
) -> anyhow::Result<Row> {
    std::fs::create_dir_all(logs_dir)?;
    let mut run = prepare(fault, services, logs_dir.to_owned()).await?;
    for index in 0..run.configs.len() {
        run.start_gateway(index).await?;
    }
    let targets = run
        .gateways
        .iter()
        .map(|gateway| gateway.base.clone())
        .collect();
    let load = Load::start(targets, token.to_owned(), &run.namespace);
    tokio::time::sleep(WARMUP).await;
    fault
        .inject(&mut run, &load)
        .await
        .context("injecting the fault")?;
    wait_for_recovery(&load, run.restored_ms).await;
    tokio::time::sleep(AFTERWARDS).await;
    let logs = load.finish(GRACE).await;
    finish(fault, run, &logs).await
}

async fn prepare<'a>(
    fault: Fault,
    services: &'a mut Services,
    logs_dir: std::path::PathBuf,
) -> anyhow::Result<Run<'a>> {
    let namespace = format!("faults-{}", fault.name());
    let broker = Proxy::start(([127, 0, 0, 1], services.rabbit.port).into()).await;
    let database = Proxy::start(([127, 0, 0, 1], services.postgres.port).into()).await;
    let configs = (0..fault.gateways())
        .map(|_| GatewayConfig {
            port: free_port(),
            amqp_url: format!("amqp://guest:guest@{}/%2f", broker.addr),
            database_url: format!(
                "postgres://postgres@{}/{}",
                database.addr,
                namespace.replace('-', "_")
            ),
            redis_port: services.redis.port,
            namespace: namespace.clone(),
        })
        .collect();
    Ok(Run {
        services,
        namespace,
        broker,
        database,
        gateways: Vec::new(),
        configs,
        logs_dir,
        started: 0,
        restored_ms: now_ms(),
        taken: Vec::new(),
        notes: Vec::new(),
    })
}

async fn wait_for_recovery(load: &Load, restored_ms: u64) {
    let deadline = tokio::time::Instant::now() + RECOVERY_LIMIT;
    while load.last_published_ms() < restored_ms && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Lets the outbox drain, stops the gateways, reads the queues and the database, checks.
async fn finish(fault: Fault, mut run: Run<'_>, logs: &[EventLog]) -> anyhow::Result<Row> {
    let database_url = run.database_url();
    let owed = wait_outbox_empty(&database_url, DRAIN_LIMIT).await;
    if owed != 0 {
        run.notes.push(format!(
            "the outbox still owed {owed} rows {} s after the load ended",
            DRAIN_LIMIT.as_secs()
        ));
    }
    for gateway in &mut run.gateways {
        if gateway.sigterm(Duration::from_secs(15)).await.is_none() {
            run.notes
                .push("a gateway did not exit within 15 s of SIGTERM".into());
        }
    }
    let mut messages = std::mem::take(&mut run.taken);
    messages.extend(drain_queues(&run.services.rabbit.amqp_url(), &run.namespace).await?);
    let persisted = persisted_ids(&database_url).await?;
    let mut row = check(
        fault.name(),
        &Observed {
            logs,
            messages: &messages,
            persisted: &persisted,
            restored_ms: run.restored_ms,
        },
    );
    row.notes.append(&mut run.notes);
    row.notes.extend(unanswered(logs));
    Ok(row)
}

/// Events never acknowledged, by their last answer, and how often the transport failed.
fn unanswered(logs: &[EventLog]) -> Vec<String> {
    let mut notes = Vec::new();
    let never: Vec<String> = logs
        .iter()
        .filter(|log| log.acked().is_none())
        .map(|log| {
            let last = log.attempts.last().map(|attempt| &attempt.outcome);
            format!("{} seq {}: {last:?}", log.planned.user, log.planned.seq)
        })
        .collect();
    if !never.is_empty() {
        let shown = never.len().min(6);
        notes.push(format!(
            "{} events never acknowledged (the user's sequence stopped there), e.g. {}",
            never.len(),
            never[..shown].join("; ")
        ));
    }
    let transport = logs
        .iter()
        .flat_map(|log| &log.attempts)
        .filter(|attempt| {
            matches!(attempt.outcome, Outcome::Unknown(_))
                && !attempt.outcome.is_outcome_unknown_problem()
        })
        .count();
    let refused = logs
        .iter()
        .flat_map(|log| &log.attempts)
        .filter(|attempt| matches!(attempt.outcome, Outcome::Refused { .. }))
        .count();
    notes.push(format!(
        "{} events sent; answers: {refused} definite refusals, {transport} timeouts or broken connections",
        logs.len()
    ));
    notes
}
