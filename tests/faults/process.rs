//! Child processes: free ports, signals to a process or its group, tools run to completion;
//! and the wall clock they all share.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use time::format_description::well_known::Rfc3339;
use tokio::process::Command;

/// A port nothing listens on right now (the OS picks it; a small race is accepted).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("a free port on 127.0.0.1")
}

/// Milliseconds since the Unix epoch: the clock the gateway stamps `metadata.timestamp` with.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_millis() as u64)
        .unwrap_or_default()
}

/// An RFC 3339 time in ms since the epoch (`None`: not one).
pub fn parse_ms(text: &str) -> Option<u64> {
    let at = time::OffsetDateTime::parse(text, &Rfc3339).ok()?;
    u64::try_from(at.unix_timestamp_nanos() / 1_000_000).ok()
}

/// ms since the epoch as RFC 3339 (UTC), as a client writes `deliverAt`.
pub fn format_ms(ms: u64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|at| at.format(&Rfc3339).ok())
        .unwrap_or_default()
}

/// Sends `signal` (`KILL`, `TERM`) to one process.
pub fn signal(pid: u32, signal: &str) {
    let _ = std::process::Command::new("kill")
        .args([format!("-{signal}"), pid.to_string()])
        .status();
}

/// Sends `signal` to every process of the group `pgid` leads.
pub fn signal_group(pgid: u32, signal: &str) {
    let _ = std::process::Command::new("kill")
        .args([format!("-{signal}"), "--".into(), format!("-{pgid}")])
        .status();
}

/// Whether a process with this id still exists (a zombie counts: it still holds its pid).
pub fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// Waits until `pid` is gone; false when it outlived `limit`.
pub async fn wait_gone(pid: u32, limit: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    while alive(pid) {
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    true
}

/// Runs a command to its end and returns its stdout; an error carries everything it printed.
pub async fn run(command: &mut Command) -> anyhow::Result<String> {
    let output = command
        .output()
        .await
        .with_context(|| format!("running {command:?}"))?;
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    if !output.status.success() {
        bail!(
            "{command:?} failed ({}):\n{stdout}\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(stdout)
}
