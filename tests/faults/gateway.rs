//! The gateway as a child process (the built binary), so a scenario can SIGKILL or SIGTERM
//! it. Its log goes to a file the report names when a scenario fails.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::process::{Child, Command};

use crate::process::signal;

pub const JWT_SECRET: &str = "fault-catalogue-secret";

/// Where one gateway connects: the scenario's names on the private services.
#[derive(Clone)]
pub struct GatewayConfig {
    pub port: u16,
    pub amqp_url: String,
    pub database_url: String,
    pub redis_port: u16,
    /// Exchange, queue prefix and Redis key prefix of this scenario.
    pub namespace: String,
}

pub struct Gateway {
    pub base: String,
    pub log: PathBuf,
    child: Child,
}

impl Gateway {
    /// Starts a gateway and waits until `probe` (`/health/ready`, `/health/live`) is 200.
    pub async fn start(config: &GatewayConfig, log: &Path, probe: &str) -> anyhow::Result<Gateway> {
        let gateway = Gateway::spawn(config, log)?;
        gateway.wait_for(probe, Duration::from_secs(30)).await?;
        Ok(gateway)
    }

    fn spawn(config: &GatewayConfig, log: &Path) -> anyhow::Result<Gateway> {
        let file = std::fs::File::create(log).with_context(|| format!("{}", log.display()))?;
        let child = Command::new(env!("CARGO_BIN_EXE_event-gateway"))
            .arg("serve")
            .envs(environment(config))
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file)
            .kill_on_drop(true)
            .spawn()
            .context("spawning the gateway")?;
        Ok(Gateway {
            base: format!("http://127.0.0.1:{}", config.port),
            log: log.to_owned(),
            child,
        })
    }

    async fn wait_for(&self, probe: &str, limit: Duration) -> anyhow::Result<()> {
        let http = reqwest::Client::new();
        let deadline = tokio::time::Instant::now() + limit;
        while tokio::time::Instant::now() < deadline {
            let ready = http
                .get(format!("{}{probe}", self.base))
                .timeout(Duration::from_secs(2))
                .send()
                .await;
            if ready.is_ok_and(|answer| answer.status() == 200) {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        bail!(
            "the gateway was not ready within {limit:?}; log: {}",
            self.log.display()
        )
    }

    pub async fn sigkill(&mut self) {
        let _ = self.child.kill().await;
    }

    /// SIGTERM, then waits for the exit; SIGKILL after `limit`. Returns how long the
    /// graceful exit took, or `None` when it had to be killed.
    pub async fn sigterm(&mut self, limit: Duration) -> Option<Duration> {
        let started = tokio::time::Instant::now();
        if let Some(pid) = self.child.id() {
            signal(pid, "TERM");
        }
        match tokio::time::timeout(limit, self.child.wait()).await {
            Ok(_) => Some(started.elapsed()),
            Err(_) => {
                self.sigkill().await;
                None
            }
        }
    }
}

fn environment(config: &GatewayConfig) -> Vec<(&'static str, String)> {
    let namespace = &config.namespace;
    vec![
        ("HTTP_ADDR", format!("127.0.0.1:{}", config.port)),
        ("AMQP_URL", config.amqp_url.clone()),
        ("AMQP_EXCHANGE", namespace.clone()),
        ("AMQP_QUEUE_PREFIX", format!("{namespace}.")),
        ("DATABASE_URL", config.database_url.clone()),
        ("REDIS_HOST", "127.0.0.1".into()),
        ("REDIS_PORT", config.redis_port.to_string()),
        ("REDIS_DB", "0".into()),
        ("REDIS_KEY_PREFIX", format!("{namespace}:")),
        ("JWT_SECRET", JWT_SECRET.into()),
        // The catalogue reads every message off the queues itself.
        ("CONSUMERS_ENABLED", "false".into()),
        ("DB_POOL_SIZE", "8".into()),
        ("LOG_FORMAT", "json".into()),
        ("RUST_LOG", "info".into()),
    ]
}

/// A token for a game backend (`events:publish`), minted by the binary's `token` command.
pub async fn mint_token() -> anyhow::Result<String> {
    let token = crate::process::run(
        Command::new(env!("CARGO_BIN_EXE_event-gateway"))
            .args([
                "token",
                "--sub",
                "fault-client",
                "--scope",
                "events:publish",
                "--ttl",
                "2h",
            ])
            .env("JWT_SECRET", JWT_SECRET),
    )
    .await?;
    Ok(token.trim().to_owned())
}
