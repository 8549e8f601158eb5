//! Faults of PostgreSQL and Redis: a crash of each, both the broker and the database cut,
//! and the database connection cut while a COMMIT is in flight.

use std::time::Duration;

use super::Run;
use crate::process::now_ms;

/// kill -9 of the postmaster and its backends, down 2 s, then crash recovery.
pub async fn postgres_kill(run: &mut Run<'_>) -> anyhow::Result<()> {
    run.services.postgres.crash().await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    run.services.postgres.boot().await?;
    run.restored_ms = now_ms();
    Ok(())
}

/// Broker and database unreachable together for 8 s: nothing can be made safe.
pub async fn broker_and_postgres_cut(run: &mut Run<'_>) -> anyhow::Result<()> {
    run.broker.cut().await;
    run.database.cut().await;
    tokio::time::sleep(Duration::from_secs(8)).await;
    run.broker.restore();
    run.database.restore();
    run.restored_ms = now_ms();
    Ok(())
}

/// kill -9 of Redis (rate limits are on, as by default) for 6 s, then an empty Redis.
pub async fn redis_kill(run: &mut Run<'_>) -> anyhow::Result<()> {
    run.services.redis.crash().await;
    tokio::time::sleep(Duration::from_secs(6)).await;
    run.services.redis.boot().await?;
    run.restored_ms = now_ms();
    Ok(())
}

/// Three times: the next COMMIT reaches PostgreSQL, its answer never comes back, and every
/// database connection is cut for 1.5 s.
pub async fn commit_cut(run: &mut Run<'_>) -> anyhow::Result<()> {
    for round in 1..=3 {
        let trapped =
            tokio::time::timeout(Duration::from_secs(10), run.database.trap_next_commit()).await;
        if trapped.is_err() {
            run.notes.push(format!(
                "round {round}: the gateway sent no COMMIT within 10 s; no more rounds"
            ));
            break;
        }
        run.database.cut().await;
        tokio::time::sleep(Duration::from_millis(1500)).await;
        run.database.restore();
        run.restored_ms = now_ms();
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    Ok(())
}
