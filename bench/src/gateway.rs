//! The gateway under test: started by the bench (so its pid is known), on a free local
//! port, on the bench's own exchange and queues, with a secret only this run knows.

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use event_gateway::bus::Topology;
use hyper::StatusCode;
use hyper::header::HeaderValue;
use sqlx::migrate::MigrateDatabase;
use tokio::process::{Child, Command};
use uuid::Uuid;

use crate::broker::amqp_url;
use crate::http::get_status;
use crate::scenarios::SOURCE;

/// The waits of the retry schedule the bench gives the gateway (3 retries after the first
/// try, from 1 s): the gateway declares a retry queue for each, which the bench removes.
const RETRY_DELAYS: [Duration; 3] = [
    Duration::from_secs(1),
    Duration::from_secs(2),
    Duration::from_secs(4),
];

const READY_TIMEOUT: Duration = Duration::from_secs(30);
const READY_POLL: Duration = Duration::from_millis(100);

/// Names that keep this run apart from the gateway's own and from other runs.
pub struct Naming {
    pub exchange: String,
    pub queue_prefix: String,
    /// Which gateway of this run: names its log file and its database.
    pub label: String,
    /// The gateway's own PostgreSQL database, dropped at the end.
    pub database_url: String,
}

impl Naming {
    pub fn fresh() -> Self {
        let exchange = format!("bench-{}", Uuid::new_v4().simple());
        Naming::labelled(exchange.clone(), exchange)
    }

    /// The traced gateway's: the same exchange and queues (so the same drain counts its
    /// events), but a database of its own, dropped when it stops.
    pub fn traced(&self) -> Self {
        Naming::labelled(self.exchange.clone(), format!("{}-traced", self.exchange))
    }

    fn labelled(exchange: String, label: String) -> Self {
        Naming {
            queue_prefix: format!("{exchange}."),
            database_url: format!(
                "postgres://postgres@127.0.0.1:5432/{}",
                label.replace('-', "_")
            ),
            label,
            exchange,
        }
    }

    /// The gateway's topology; the retry schedule is the one passed in `Gateway::start`.
    pub fn topology(&self) -> Topology {
        Topology::new(&self.exchange, &self.queue_prefix, &RETRY_DELAYS)
    }
}

pub struct Gateway {
    child: Child,
    pub pid: u32,
    pub addr: SocketAddr,
    /// `Bearer <token>` with `events:publish`.
    pub bearer: HeaderValue,
    pub log: PathBuf,
}

impl Gateway {
    /// Starts `bin` and returns once `/health/ready` answers 200 (broker connected and
    /// topology declared). With `otlp`, it exports its spans there.
    pub async fn start(
        bin: &Path,
        amqp_port: u16,
        naming: &Naming,
        otlp: Option<SocketAddr>,
    ) -> anyhow::Result<Self> {
        let secret = format!("bench-{}", Uuid::new_v4().simple());
        let bearer = mint_bearer(bin, &secret).await?;
        let addr = free_local_port()?;
        let log = std::env::temp_dir().join(format!("{}-gateway.log", naming.label));
        let output =
            std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let child = serve_command(bin, amqp_port, naming, otlp)
            .env("HTTP_ADDR", addr.to_string())
            .env("JWT_SECRET", &secret)
            .stdin(Stdio::null())
            .stdout(output.try_clone().context("sharing the log file")?)
            .stderr(output)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let pid = child.id().context("the gateway exited at once")?;
        let mut gateway = Gateway {
            child,
            pid,
            addr,
            bearer,
            log,
        };
        gateway.wait_ready().await?;
        Ok(gateway)
    }

    async fn wait_ready(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + READY_TIMEOUT;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().context("checking the gateway")? {
                bail!("the gateway exited ({status}); see {}", self.log.display());
            }
            if let Ok(StatusCode::OK) = get_status(self.addr, "/health/ready").await {
                return Ok(());
            }
            tokio::time::sleep(READY_POLL).await;
        }
        bail!(
            "the gateway was not ready within {READY_TIMEOUT:?}; see {}",
            self.log.display()
        )
    }

    /// Kills the gateway (its work is measured; nothing of it needs to survive).
    pub async fn stop(mut self, naming: &Naming) -> anyhow::Result<()> {
        self.child.start_kill().context("killing the gateway")?;
        self.child.wait().await.context("waiting for the gateway")?;
        sqlx::Postgres::force_drop_database(&naming.database_url)
            .await
            .context("dropping the bench's database")
    }
}

/// `bin serve` with the settings of a bench gateway, but for its port and its secret.
fn serve_command(bin: &Path, amqp_port: u16, naming: &Naming, otlp: Option<SocketAddr>) -> Command {
    let mut command = Command::new(bin);
    command
        .arg("serve")
        // Only the settings chosen here: a JWT_PUBLIC_KEY_FILE in the caller's
        // environment would otherwise turn the secret down.
        .env_clear()
        .env("AMQP_URL", amqp_url(amqp_port))
        .env("AMQP_EXCHANGE", &naming.exchange)
        .env("AMQP_QUEUE_PREFIX", &naming.queue_prefix)
        .env("DATABASE_URL", &naming.database_url)
        .env("REDIS_KEY_PREFIX", format!("{}:", naming.exchange))
        // The publish path alone: consumers would eat the messages the bench counts.
        .env("CONSUMERS_ENABLED", "false")
        // The limiter runs on every request, as deployed, but never refuses: one
        // bench token sends far more than a default budget.
        .env("RATE_LIMIT_RPS", "1000000")
        .env("RATE_LIMIT_BURST", "1000000")
        .env("RETRY_MAX_ATTEMPTS", "3")
        .env("RETRY_INITIAL_DELAY", "1s")
        .env("RUST_LOG", "warn");
    if let Some(otlp) = otlp {
        // The filter is global: spans below it are never made, so none would go out.
        // The gateway's own spans are info; its info log lines are only at start.
        command
            .env("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://{otlp}"))
            .env("RUST_LOG", "warn,event_gateway=info");
    }
    command
}

/// A token from the gateway's own `token` command, signed with `secret`.
async fn mint_bearer(bin: &Path, secret: &str) -> anyhow::Result<HeaderValue> {
    let output = Command::new(bin)
        .args(["token", "--sub", SOURCE, "--scope", "events:publish"])
        .env_clear()
        .env("JWT_SECRET", secret)
        .output()
        .await
        .with_context(|| format!("running {} token", bin.display()))?;
    if !output.status.success() {
        bail!(
            "{} token failed: {}",
            bin.display(),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    let token = String::from_utf8(output.stdout).context("the token is not UTF-8")?;
    HeaderValue::from_str(&format!("Bearer {}", token.trim())).context("the token is no header")
}

/// A port nothing listens on right now. Another process could take it before the gateway
/// binds it; then the gateway exits and the bench says so.
fn free_local_port() -> anyhow::Result<SocketAddr> {
    let listener =
        TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("finding a free local port")?;
    listener.local_addr().context("reading the free port")
}
