//! A private RabbitMQ 3.10 node: its own Erlang cookie, node name, ports, mnesia and logs,
//! started from `/usr/lib/rabbitmq/bin` (the `/usr/sbin` wrappers switch user). With
//! [`RabbitTls`] (tests/tls) it also has a TLS listener.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::Context;
use tokio::process::{Child, Command};

use crate::process::{free_port, run, signal, signal_group, wait_gone};

const SERVER: &str = "/usr/lib/rabbitmq/bin/rabbitmq-server";
const CTL: &str = "/usr/lib/rabbitmq/bin/rabbitmqctl";

pub struct Rabbit {
    dir: PathBuf,
    pub node: String,
    pub port: u16,
    /// The TLS listener's port (on 127.0.0.1 and 127.0.0.2), with [`RabbitTls`].
    #[allow(dead_code, reason = "read by tests/tls, not by the fault catalogue")]
    pub tls_port: Option<u16>,
    dist_port: u16,
    server: Option<Child>,
}

/// A TLS listener next to the plain one: its certificate, key and the CA it checks clients
/// against (PEM files).
pub struct RabbitTls {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Refuse clients without a certificate signed by `ca` (mutual TLS).
    pub require_client_certificate: bool,
}

impl Rabbit {
    /// Starts a node in `dir` on free ports, trying new ports when one was taken meanwhile.
    pub async fn start(dir: &Path) -> anyhow::Result<Rabbit> {
        Rabbit::start_with(dir, None).await
    }

    /// [`Rabbit::start`], with a TLS listener when `tls` is given.
    pub async fn start_with(dir: &Path, tls: Option<&RabbitTls>) -> anyhow::Result<Rabbit> {
        let mut last_error = None;
        for attempt in 0..3 {
            let mut rabbit = Rabbit::configure(dir, attempt, tls)?;
            match rabbit.boot().await {
                Ok(()) => return Ok(rabbit),
                Err(error) => {
                    rabbit.kill();
                    last_error = Some(error);
                }
            }
        }
        Err(last_error.unwrap_or_else(|| anyhow::anyhow!("RabbitMQ did not start")))
    }

    fn configure(dir: &Path, attempt: u32, tls: Option<&RabbitTls>) -> anyhow::Result<Rabbit> {
        let dir = dir.join(format!("rabbitmq-{attempt}"));
        std::fs::create_dir_all(dir.join("home"))?;
        let cookie = dir.join("home/.erlang.cookie");
        std::fs::write(&cookie, format!("faults{}", uuid::Uuid::new_v4().simple()))?;
        std::fs::set_permissions(&cookie, std::fs::Permissions::from_mode(0o400))?;
        let port = free_port();
        std::fs::write(dir.join("empty.conf"), "")?;
        std::fs::write(dir.join("enabled_plugins"), "")?;
        let tls_port = tls.map(|_| free_port());
        let mut config = format!("listeners.tcp.1 = 127.0.0.1:{port}\nloopback_users = none\n");
        if let (Some(tls), Some(tls_port)) = (tls, tls_port) {
            config.push_str(&format!(
                "listeners.ssl.1 = 127.0.0.1:{tls_port}\nlisteners.ssl.2 = 127.0.0.2:{tls_port}\n\
                 ssl_options.cacertfile = {}\nssl_options.certfile = {}\nssl_options.keyfile = {}\n\
                 ssl_options.verify = verify_peer\nssl_options.fail_if_no_peer_cert = {}\n",
                tls.ca.display(),
                tls.cert.display(),
                tls.key.display(),
                tls.require_client_certificate
            ));
        }
        std::fs::write(dir.join("rabbitmq.conf"), config)?;
        Ok(Rabbit {
            node: format!("egfaults{}-{attempt}@localhost", std::process::id()),
            port,
            tls_port,
            dist_port: free_port(),
            dir,
            server: None,
        })
    }

    /// Starts the server on this node's directory (again, after a crash) and waits for it.
    pub async fn boot(&mut self) -> anyhow::Result<()> {
        let _ = std::fs::remove_file(self.dir.join("pid"));
        let log = std::fs::File::create(self.dir.join("server.log"))?;
        let mut command = Command::new(SERVER);
        command
            .env("HOME", self.dir.join("home"))
            .env("RABBITMQ_CONF_ENV_FILE", self.dir.join("empty.conf"))
            .env("RABBITMQ_CONFIG_FILE", self.dir.join("rabbitmq.conf"))
            .env("RABBITMQ_NODENAME", &self.node)
            .env("RABBITMQ_NODE_PORT", self.port.to_string())
            .env("RABBITMQ_DIST_PORT", self.dist_port.to_string())
            .env("RABBITMQ_MNESIA_BASE", self.dir.join("mnesia"))
            .env("RABBITMQ_LOG_BASE", self.dir.join("log"))
            .env("RABBITMQ_PID_FILE", self.dir.join("pid"))
            .env(
                "RABBITMQ_ENABLED_PLUGINS_FILE",
                self.dir.join("enabled_plugins"),
            )
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .process_group(0);
        self.server = Some(command.spawn().context("spawning rabbitmq-server")?);
        let pid_file = self.dir.join("pid");
        self.ctl(&["wait", "--timeout", "60", &pid_file.to_string_lossy()])
            .await
            .with_context(|| format!("RabbitMQ node {} did not come up", self.node))?;
        Ok(())
    }

    /// `rabbitmqctl` against this node, with its cookie.
    pub async fn ctl(&self, args: &[&str]) -> anyhow::Result<String> {
        run(Command::new(CTL)
            .env("HOME", self.dir.join("home"))
            .arg("-n")
            .arg(&self.node)
            .args(args))
        .await
    }

    /// kill -9 of the whole node (the start script and `beam.smp`): a crash. Returns once
    /// `beam.smp` is gone, so the node can start again on the same directory.
    pub async fn crash(&mut self) {
        let beam = std::fs::read_to_string(self.dir.join("pid"))
            .ok()
            .and_then(|pid| pid.trim().parse::<u32>().ok());
        self.kill();
        if let Some(mut server) = self.server.take() {
            let _ = server.wait().await;
        }
        if let Some(beam) = beam {
            signal(beam, "KILL");
            wait_gone(beam, Duration::from_secs(10)).await;
        }
    }

    fn kill(&mut self) {
        if let Some(pid) = self.server.as_ref().and_then(Child::id) {
            signal_group(pid, "KILL");
        }
    }

    pub fn amqp_url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.port)
    }
}

impl Drop for Rabbit {
    fn drop(&mut self) {
        self.kill();
    }
}
