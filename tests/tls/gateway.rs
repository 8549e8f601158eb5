//! The gateway as a child process (the built binary), configured through its environment
//! only, as an operator would; its JSON log goes to a file a failing case prints.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::Value;
use tokio::process::{Child, Command};

use crate::process::free_port;

pub const JWT_SECRET: &str = "tls-test-secret";
const BINARY: &str = env!("CARGO_BIN_EXE_event-gateway");

pub struct Gateway {
    pub base: String,
    pub log: PathBuf,
    http: reqwest::Client,
    child: Child,
}

impl Gateway {
    /// Starts a gateway named `name` (its exchange, queue prefix and Redis key prefix) with
    /// `settings` on top of the test's own, and waits until it serves `/health/live`.
    pub async fn start(
        dir: &Path,
        name: &str,
        settings: &[(&str, String)],
    ) -> anyhow::Result<Gateway> {
        let port = free_port();
        let log = dir.join(format!("gateway-{name}.log"));
        let file = std::fs::File::create(&log)?;
        let mut command = Command::new(BINARY);
        command
            .arg("serve")
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(base_settings(name, port))
            .envs(settings.iter().map(|(key, value)| (*key, value.as_str())))
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file)
            .kill_on_drop(true);
        let child = command.spawn().context("spawning the gateway")?;
        let mut gateway = Gateway {
            base: format!("http://127.0.0.1:{port}"),
            log,
            http: reqwest::Client::new(),
            child,
        };
        gateway
            .wait_for("/health/live", Duration::from_secs(20))
            .await?;
        Ok(gateway)
    }

    /// Waits until `path` answers 200.
    pub async fn wait_for(&mut self, path: &str, limit: Duration) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + limit;
        while tokio::time::Instant::now() < deadline {
            if let Some(exit) = self.child.try_wait()? {
                bail!("the gateway exited ({exit}); log:\n{}", self.log_text());
            }
            let answer = self
                .http
                .get(format!("{}{path}", self.base))
                .timeout(Duration::from_secs(2))
                .send()
                .await;
            if answer.is_ok_and(|answer| answer.status() == 200) {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        bail!("{path} did not answer 200 within {limit:?}")
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> anyhow::Result<(u16, Value)> {
        let mut request = self.http.get(format!("{}{path}", self.base));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        answer(request.timeout(Duration::from_secs(10)).send().await?).await
    }

    pub async fn publish(&self, token: &str, event: &Value) -> anyhow::Result<(u16, Value)> {
        let request = self
            .http
            .post(format!("{}/v1/events", self.base))
            .bearer_auth(token)
            .json(event)
            .timeout(Duration::from_secs(10));
        answer(request.send().await?).await
    }

    /// `/health` once `done` holds for it, or the last one after `limit`.
    pub async fn health_when(
        &self,
        limit: Duration,
        done: impl Fn(&Value) -> bool,
    ) -> anyhow::Result<(u16, Value)> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let (status, report) = self.get("/health", None).await?;
            if done(&report) || tokio::time::Instant::now() >= deadline {
                return Ok((status, report));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The messages of the log's lines at `level` (`ERROR`, `WARN`, …).
    pub fn logged(&self, level: &str) -> Vec<String> {
        self.log_text()
            .lines()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .filter(|line| line["level"] == level)
            .filter_map(|line| line["fields"]["message"].as_str().map(str::to_owned))
            .collect()
    }
}

async fn answer(response: reqwest::Response) -> anyhow::Result<(u16, Value)> {
    let status = response.status().as_u16();
    let text = response.text().await?;
    Ok((
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    ))
}

fn base_settings(name: &str, port: u16) -> Vec<(&'static str, String)> {
    vec![
        ("HTTP_ADDR", format!("127.0.0.1:{port}")),
        ("AMQP_EXCHANGE", name.to_owned()),
        ("AMQP_QUEUE_PREFIX", format!("{name}.")),
        ("REDIS_KEY_PREFIX", format!("{name}:")),
        ("JWT_SECRET", JWT_SECRET.into()),
        ("CONSUMERS_ENABLED", "false".into()),
        ("DB_POOL_SIZE", "4".into()),
        ("LOG_FORMAT", "json".into()),
        ("RUST_LOG", "info".into()),
    ]
}

/// A token for publishing and reading, minted by the binary's `token` command.
pub async fn mint_token() -> anyhow::Result<String> {
    let token = crate::process::run(
        Command::new(BINARY)
            .args([
                "token",
                "--sub",
                "tls-test",
                "--scope",
                "events:publish events:read",
            ])
            .env("JWT_SECRET", JWT_SECRET),
    )
    .await?;
    Ok(token.trim().to_owned())
}

/// Runs `serve` with `settings` and expects it to refuse to start: its exit status is not
/// success and what it printed is returned.
pub async fn refused_start(settings: &[(&str, String)]) -> anyhow::Result<String> {
    let run = Command::new(BINARY)
        .arg("serve")
        .env_clear()
        .envs(base_settings("egtls-refused", free_port()))
        .envs(settings.iter().map(|(key, value)| (*key, value.as_str())))
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(20), run)
        .await
        .context("the gateway neither refused nor stopped")??;
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    if output.status.success() {
        bail!("the gateway started and exited cleanly: {printed}");
    }
    Ok(printed)
}
