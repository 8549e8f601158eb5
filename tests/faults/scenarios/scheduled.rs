//! Scheduled events under faults: the gateway that holds them SIGKILLed before they are
//! due and kept down past their time; two gateways releasing one schedule of 2,000 events
//! due within the same second. Players of their own schedule them while the steady load
//! runs, and a live reader ([`Arrivals`]) notes when each arrives.

use std::time::Duration;

use anyhow::ensure;

use super::Run;
use crate::arrivals::Arrivals;
use crate::load::{DueRequest, Load, Shape};
use crate::process::now_ms;

/// How long the scheduled events may take to arrive once a gateway can release them.
const ARRIVAL_LIMIT: Duration = Duration::from_secs(30);
/// Players scheduling before the SIGKILL, each 7 events: 4 due in 3 s, 3 due in 4 s.
const KILL_PLAYERS: usize = 48;
/// How long the killed gateway stays down after the last event fell due.
const DOWN_PAST_DUE: Duration = Duration::from_secs(1);
/// Players scheduling on two gateways, each 8 events due together: 2,000 in all.
const TWO_GATEWAY_PLAYERS: usize = 250;
/// How far ahead those are due: time to schedule all of them first.
const TWO_GATEWAY_LEAD: Duration = Duration::from_secs(8);

/// Schedules, then SIGKILLs the gateway before the first is due; a new gateway on the same
/// database starts once the last is a second overdue.
pub async fn gateway_kill(run: &mut Run<'_>, load: &Load) -> anyhow::Result<()> {
    let arrivals = Arrivals::start(&run.services.rabbit.amqp_url(), &run.namespace).await?;
    let start = now_ms();
    let (first_due, last_due) = (start + 3000, start + 4000);
    let sent = load
        .schedule(KILL_PLAYERS, |_| {
            vec![
                DueRequest::new(Shape::Batch, 3, first_due),
                DueRequest::new(Shape::Single, 1, first_due),
                DueRequest::new(Shape::Batch, 2, last_due),
                DueRequest::new(Shape::Single, 1, last_due),
            ]
        })
        .await;
    let killed = now_ms();
    ensure!(
        sent.safe == sent.events && killed < first_due,
        "{} of {} scheduled events taken in {} ms; the first is due {} ms after the start",
        sent.safe,
        sent.events,
        killed - start,
        first_due - start
    );
    run.gateways[0].sigkill().await;
    run.notes.push(format!(
        "{} events scheduled in {} ms; the gateway SIGKILLed {} ms before the first was due",
        sent.events,
        killed - start,
        first_due - killed
    ));
    sleep_until(last_due + DOWN_PAST_DUE.as_millis() as u64).await;
    run.restored_ms = now_ms();
    run.restart_gateway(0).await?;
    collect(run, arrivals, sent.safe, last_due).await
}

/// 2,000 events (8 per player, a player's due together, the players' spread over one
/// second) scheduled through two gateways on one database, released by whichever holds
/// the release lock.
pub async fn two_gateways(run: &mut Run<'_>, load: &Load) -> anyhow::Result<()> {
    let arrivals = Arrivals::start(&run.services.rabbit.amqp_url(), &run.namespace).await?;
    let start = now_ms();
    let first_due = start + TWO_GATEWAY_LEAD.as_millis() as u64;
    let due = |player: usize| first_due + (player as u64 * 4) % 1000;
    let sent = load
        .schedule(TWO_GATEWAY_PLAYERS, |player| {
            vec![
                DueRequest::new(Shape::Batch, 4, due(player)),
                DueRequest::new(Shape::Single, 1, due(player)),
                DueRequest::new(Shape::Batch, 3, due(player)),
            ]
        })
        .await;
    let scheduled = now_ms();
    ensure!(
        sent.safe == sent.events && scheduled < first_due,
        "{} of {} scheduled events taken in {} ms; the first is due {} ms after the start",
        sent.safe,
        sent.events,
        scheduled - start,
        first_due - start
    );
    run.notes.push(format!(
        "{} events scheduled in {} ms, due from {} ms later for a second",
        sent.events,
        scheduled - start,
        first_due - scheduled
    ));
    sleep_until(first_due).await;
    run.restored_ms = now_ms();
    let last_due = (0..TWO_GATEWAY_PLAYERS).map(due).max().unwrap_or(first_due);
    collect(run, arrivals, sent.safe, last_due).await
}

/// Waits for the scheduled events to arrive, notes when the last did, and keeps what the
/// reader took for the checks.
async fn collect(
    run: &mut Run<'_>,
    arrivals: Arrivals,
    expected: usize,
    last_due: u64,
) -> anyhow::Result<()> {
    let arrived = arrivals.wait_scheduled(expected, ARRIVAL_LIMIT).await;
    let messages = arrivals.stop().await?;
    let last = messages
        .iter()
        .filter(|message| message.scheduled_for_ms.is_some())
        .map(|message| message.received_ms)
        .max()
        .unwrap_or_default();
    run.notes.push(format!(
        "{arrived} of {expected} scheduled events arrived; the last {} ms after the last due time",
        last as i64 - last_due as i64
    ));
    run.taken = messages;
    Ok(())
}

async fn sleep_until(ms: u64) {
    tokio::time::sleep(Duration::from_millis(ms.saturating_sub(now_ms()))).await;
}
