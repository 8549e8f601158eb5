//! A private PostgreSQL 15 cluster, run as the `postgres` user on a free port with its own
//! socket directory, in a folder that user owns.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use tokio::process::Command;

use crate::process::{free_port, run, signal_group, wait_gone};

const BIN: &str = "/usr/lib/postgresql/15/bin";

pub struct Postgres {
    dir: PathBuf,
    pub port: u16,
}

impl Postgres {
    pub async fn start(dir: &Path) -> anyhow::Result<Postgres> {
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
        let postgres = Postgres {
            dir,
            port: free_port(),
        };
        postgres.boot().await?;
        Ok(postgres)
    }

    /// Starts the server (again, after a crash: it recovers from its WAL) and waits for it.
    /// `fsync=off` is safe here: the faults kill processes, never the machine.
    pub async fn boot(&self) -> anyhow::Result<()> {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200",
            self.port,
            path(&self.dir.join("sock"))
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

    /// The URL of database `name` on this server.
    pub fn url(&self, name: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{name}", self.port)
    }
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
