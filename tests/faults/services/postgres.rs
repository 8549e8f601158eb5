//! A private PostgreSQL 15 cluster, run as the `postgres` user on a free port with its own
//! socket directory, in a folder that user owns. With [`PostgresTls`] (tests/tls) it has
//! `ssl = on` with the given certificate and also listens on 127.0.0.2.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use tokio::process::Command;

use crate::process::{free_port, run, signal_group, wait_gone};

const BIN: &str = "/usr/lib/postgresql/15/bin";

pub struct Postgres {
    dir: PathBuf,
    pub port: u16,
    listen: &'static str,
}

/// `ssl = on` with this certificate and key (PEM files, copied into the cluster).
pub struct PostgresTls {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Only TLS connections are accepted (`hostssl` lines alone in `pg_hba.conf`).
    pub tls_only: bool,
}

impl Postgres {
    pub async fn start(dir: &Path) -> anyhow::Result<Postgres> {
        Postgres::start_with(dir, None).await
    }

    /// [`Postgres::start`], with TLS when `tls` is given.
    pub async fn start_with(dir: &Path, tls: Option<&PostgresTls>) -> anyhow::Result<Postgres> {
        let dir = dir.join("postgres");
        std::fs::create_dir_all(dir.join("sock"))?;
        run(Command::new("chown").args(["-R", "postgres:"]).arg(&dir)).await?;
        run(
            as_postgres(&["initdb", "-D", &path(&dir.join("data")), "-U", "postgres"]).args([
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
            ]),
        )
        .await
        .context("initdb")?;
        if let Some(tls) = tls {
            configure_tls(&dir.join("data"), tls).await?;
        }
        let postgres = Postgres {
            dir,
            port: free_port(),
            listen: if tls.is_some() {
                "127.0.0.1,127.0.0.2"
            } else {
                "127.0.0.1"
            },
        };
        postgres.boot().await?;
        Ok(postgres)
    }

    /// Starts the server (again, after a crash: it recovers from its WAL) and waits for it.
    /// `fsync=off` is safe here: the faults kill processes, never the machine.
    pub async fn boot(&self) -> anyhow::Result<()> {
        let options = format!(
            "-p {} -k {} -c listen_addresses={} -c fsync=off -c max_connections=200",
            self.port,
            path(&self.dir.join("sock")),
            self.listen
        );
        let data = path(&self.dir.join("data"));
        let log = path(&self.dir.join("server.log"));
        run(
            as_postgres(&["pg_ctl", "-D", &data, "-l", &log, "-w", "-t", "60"])
                .args(["-o", &options, "start"]),
        )
        .await
        .context("pg_ctl start")?;
        Ok(())
    }

    /// kill -9 of the postmaster and its backends: a crash. Returns once they are gone.
    pub async fn crash(&self) {
        if let Some(pid) = self.postmaster() {
            signal_group(pid, "KILL");
            wait_gone(pid, Duration::from_secs(10)).await;
        }
    }

    fn postmaster(&self) -> Option<u32> {
        std::fs::read_to_string(self.dir.join("data/postmaster.pid"))
            .ok()?
            .lines()
            .next()?
            .trim()
            .parse()
            .ok()
    }

    /// The cluster's data folder (its `postgresql.conf` and `pg_hba.conf`).
    #[allow(dead_code, reason = "used by tests/tls, not by the fault catalogue")]
    pub fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// The URL of database `name` on this server.
    pub fn url(&self, name: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{name}", self.port)
    }
}

/// The certificate and key in the data folder (the server insists on owning its key), set
/// in `postgresql.conf` (so `ALTER SYSTEM` can turn TLS off again), and `pg_hba.conf`.
async fn configure_tls(data: &Path, tls: &PostgresTls) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::PermissionsExt;

    std::fs::copy(&tls.cert, data.join("server.crt"))?;
    std::fs::copy(&tls.key, data.join("server.key"))?;
    std::fs::set_permissions(
        data.join("server.key"),
        std::fs::Permissions::from_mode(0o600),
    )?;
    let mut config = std::fs::OpenOptions::new()
        .append(true)
        .open(data.join("postgresql.conf"))?;
    writeln!(
        config,
        "ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'"
    )?;
    if tls.tls_only {
        std::fs::write(
            data.join("pg_hba.conf"),
            "local all all trust\nhostssl all all 127.0.0.1/32 trust\nhostssl all all 127.0.0.2/32 trust\n",
        )?;
    }
    run(Command::new("chown").args(["-R", "postgres:"]).arg(data)).await?;
    Ok(())
}

fn as_postgres(tool: &[&str]) -> Command {
    let mut command = Command::new("runuser");
    command
        .args(["-u", "postgres", "--"])
        .arg(format!("{BIN}/{}", tool[0]))
        .args(&tool[1..]);
    command
}

fn path(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}

impl Drop for Postgres {
    fn drop(&mut self) {
        if let Some(pid) = self.postmaster() {
            signal_group(pid, "KILL");
        }
    }
}
