//! Faults of the gateway process itself: SIGKILL with a full outbox, SIGTERM under load
//! and while the broker stalls, and one of two gateways sharing the outbox killed while
//! both drain it.

use std::time::Duration;

use super::Run;
use crate::observe::outbox_owed;
use crate::process::now_ms;

/// How long a SIGTERMed gateway may take to finish what it has in hand.
const EXIT_LIMIT: Duration = Duration::from_secs(20);

/// The broker cut for 4 s, so every accepted event is queued in the outbox; the gateway
/// SIGKILLed; the broker back, and a new gateway on the same database.
pub async fn kill_with_outbox(run: &mut Run<'_>) -> anyhow::Result<()> {
    run.broker.cut().await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    let owed = outbox_owed(&run.database_url()).await?;
    run.notes
        .push(format!("the outbox held {owed} rows at the SIGKILL"));
    run.gateways[0].sigkill().await;
    run.broker.restore();
    run.restored_ms = now_ms();
    run.restart_gateway(0).await
}

/// SIGTERM under load; a new gateway once it exited.
pub async fn sigterm_mid_load(run: &mut Run<'_>) -> anyhow::Result<()> {
    let exit = run.gateways[0].sigterm(EXIT_LIMIT).await;
    note_exit(run, exit);
    run.restored_ms = now_ms();
    run.restart_gateway(0).await
}

/// The broker stalls (confirms never come), SIGTERM 1 s later; the broker back once the
/// gateway exited, then a new gateway.
pub async fn sigterm_broker_stalled(run: &mut Run<'_>) -> anyhow::Result<()> {
    run.broker.stall();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let exit = run.gateways[0].sigterm(EXIT_LIMIT).await;
    note_exit(run, exit);
    run.broker.restore();
    run.restored_ms = now_ms();
    run.restart_gateway(0).await
}

fn note_exit(run: &mut Run<'_>, exit: Option<Duration>) {
    run.notes.push(match exit {
        Some(took) => format!(
            "the gateway exited {:.1} s after SIGTERM",
            took.as_secs_f64()
        ),
        None => format!("the gateway did not exit within {EXIT_LIMIT:?} of SIGTERM: SIGKILLed"),
    });
}

/// Two gateways on one database: the broker cut for 5 s fills the outbox through both;
/// once the broker is back and the outbox starts shrinking, gateway 0 is SIGKILLed.
pub async fn two_gateways_one_killed(run: &mut Run<'_>) -> anyhow::Result<()> {
    run.broker.cut().await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let database = run.database_url();
    let full = outbox_owed(&database).await?;
    run.broker.restore();
    run.restored_ms = now_ms();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(40);
    while outbox_owed(&database).await? >= full && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let left = outbox_owed(&database).await?;
    run.notes.push(format!(
        "the outbox held {full} rows; gateway 0 SIGKILLed with {left} left"
    ));
    run.gateways[0].sigkill().await;
    Ok(())
}
