//! A private Redis: a child process on a free port that keeps nothing on disk. With
//! [`RedisTls`] (tests/tls) it also has a TLS port, on 127.0.0.1 and 127.0.0.2.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::Context;
use tokio::process::{Child, Command};

use crate::process::{free_port, signal_group};

pub struct Redis {
    dir: PathBuf,
    pub port: u16,
    /// The TLS port, with [`RedisTls`].
    pub tls_port: Option<u16>,
    tls: Option<RedisTls>,
    server: Option<Child>,
}

/// A TLS port next to the plain one: its certificate, key and the CA it checks client
/// certificates against (PEM files); clients need not present one.
#[derive(Clone)]
pub struct RedisTls {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Redis {
    pub async fn start(dir: &Path) -> anyhow::Result<Redis> {
        Redis::start_with(dir, None).await
    }

    /// [`Redis::start`], with a TLS port when `tls` is given.
    pub async fn start_with(dir: &Path, tls: Option<&RedisTls>) -> anyhow::Result<Redis> {
        let dir = dir.join("redis");
        std::fs::create_dir_all(&dir)?;
        let mut redis = Redis {
            dir,
            port: free_port(),
            tls_port: tls.map(|_| free_port()),
            tls: tls.cloned(),
            server: None,
        };
        redis.boot().await?;
        Ok(redis)
    }

    /// Starts the server (empty: it saves nothing) and waits until it takes connections.
    pub async fn boot(&mut self) -> anyhow::Result<()> {
        let log = std::fs::File::create(self.dir.join("server.log"))?;
        let mut command = Command::new("redis-server");
        command.args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"]);
        if let (Some(tls), Some(tls_port)) = (&self.tls, self.tls_port) {
            command
                .args(["127.0.0.2", "--tls-port", &tls_port.to_string()])
                .arg("--tls-ca-cert-file")
                .arg(&tls.ca)
                .arg("--tls-cert-file")
                .arg(&tls.cert)
                .arg("--tls-key-file")
                .arg(&tls.key)
                .args(["--tls-auth-clients", "optional"]);
        }
        let server = command
            .args(["--save", "", "--appendonly", "no", "--dir"])
            .arg(&self.dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .process_group(0)
            .spawn()
            .context("spawning redis-server")?;
        self.server = Some(server);
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(("127.0.0.1", self.port))
                .await
                .is_ok()
            {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        anyhow::bail!("redis-server did not listen on {}", self.port)
    }

    /// kill -9: a crash; returns once the process is reaped.
    pub async fn crash(&mut self) {
        self.kill();
        if let Some(mut server) = self.server.take() {
            let _ = server.wait().await;
        }
    }

    fn kill(&mut self) {
        if let Some(pid) = self.server.as_ref().and_then(Child::id) {
            signal_group(pid, "KILL");
        }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}
