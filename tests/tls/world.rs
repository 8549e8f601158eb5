//! What every case runs against: the run's certificates, and a private RabbitMQ (a TLS
//! listener that wants a client certificate, next to its plain one), PostgreSQL (`ssl = on`,
//! TLS connections only) and Redis (a TLS port next to its plain one), all started
//! together; plus the test's own TLS clients for each. Dropping it kills the servers,
//! drops the databases made on the machine's shared PostgreSQL, and removes the folder,
//! also when a case panics.

use std::path::PathBuf;
use std::sync::Mutex;

use anyhow::Context;
use lapin::tcp::{OwnedIdentity, OwnedTLSConfig};
use lapin::{Connection, ConnectionProperties};
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;

use crate::certs::Certs;
use crate::services::{Postgres, PostgresTls, Rabbit, RabbitTls, Redis, RedisTls};

/// The machine's own PostgreSQL: `ssl = on` with a self-signed certificate.
pub const SHARED_POSTGRES: &str = "postgres://postgres@127.0.0.1:5432";

/// Fields drop in order: the servers are killed before their folder goes.
pub struct World {
    pub rabbit: Rabbit,
    pub postgres: Postgres,
    pub redis: Redis,
    pub certs: Certs,
    shared_databases: SharedDatabases,
    root: RemoveOnDrop,
}

impl World {
    pub async fn start() -> anyhow::Result<World> {
        let root = std::env::temp_dir().join(format!("event-gateway-tls-{}", std::process::id()));
        std::fs::create_dir_all(&root)?;
        // The postgres user must reach its own folder inside.
        std::fs::set_permissions(&root, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
        let root = RemoveOnDrop(root);
        let certs = Certs::make(&root.0.join("certs")).context("making the certificates")?;
        let rabbit_tls = RabbitTls {
            ca: certs.ca.clone(),
            cert: certs.server_cert.clone(),
            key: certs.server_key.clone(),
            require_client_certificate: true,
        };
        let postgres_tls = PostgresTls {
            cert: certs.server_cert.clone(),
            key: certs.server_key.clone(),
            tls_only: true,
        };
        let redis_tls = RedisTls {
            ca: certs.ca.clone(),
            cert: certs.server_cert.clone(),
            key: certs.server_key.clone(),
        };
        let (rabbit, postgres, redis) = tokio::join!(
            Rabbit::start_with(&root.0, Some(&rabbit_tls)),
            Postgres::start_with(&root.0, Some(&postgres_tls)),
            Redis::start_with(&root.0, Some(&redis_tls)),
        );
        Ok(World {
            rabbit: rabbit.context("private RabbitMQ with TLS")?,
            postgres: postgres.context("private PostgreSQL with TLS")?,
            redis: redis.context("private Redis with TLS")?,
            certs,
            shared_databases: SharedDatabases::default(),
            root,
        })
    }

    pub fn dir(&self) -> &std::path::Path {
        &self.root.0
    }

    pub fn path(&self, path: &std::path::Path) -> String {
        path.to_string_lossy().into_owned()
    }

    pub fn rabbit_tls_port(&self) -> u16 {
        self.rabbit.tls_port.expect("a TLS listener")
    }

    pub fn redis_tls_port(&self) -> u16 {
        self.redis.tls_port.expect("a TLS port")
    }

    /// The test's own connection to the broker: TLS, with the client certificate.
    pub async fn broker(&self) -> anyhow::Result<Connection> {
        let tls = OwnedTLSConfig {
            identity: Some(OwnedIdentity::PKCS8 {
                pem: self.certs.client_cert_pem.clone().into_bytes(),
                key: self.certs.client_key_pem.clone().into_bytes(),
            }),
            cert_chain: Some(self.certs.ca_pem.clone()),
        };
        let url = format!(
            "amqps://guest:guest@127.0.0.1:{}/%2f",
            self.rabbit_tls_port()
        );
        let runtime = lapin::runtime::default_runtime()?;
        Ok(
            Connection::connect_with_config(&url, ConnectionProperties::default(), tls, runtime)
                .await?,
        )
    }

    /// The test's own connection to Redis, over TLS.
    pub async fn redis(&self) -> anyhow::Result<redis::aio::MultiplexedConnection> {
        let url = format!("rediss://127.0.0.1:{}/0", self.redis_tls_port());
        let certificates = redis::TlsCertificates {
            client_tls: None,
            root_cert: Some(self.certs.ca_pem.clone().into_bytes()),
        };
        let client = redis::Client::build_with_tls(url, certificates)?;
        Ok(client.get_multiplexed_async_connection().await?)
    }

    /// A pool on database `name` of the private PostgreSQL, verifying it with the run's CA.
    pub async fn private_database(&self, name: &str) -> anyhow::Result<PgPool> {
        let url = format!(
            "postgres://postgres@127.0.0.1:{}/{name}?sslmode=verify-full&sslrootcert={}",
            self.postgres.port,
            self.certs.ca.display()
        );
        Ok(PgPoolOptions::new()
            .max_connections(2)
            .connect(&url)
            .await?)
    }

    /// A fresh database name on the machine's PostgreSQL, dropped with the world.
    pub fn shared_database(&self, name: &str) -> String {
        let name = format!("egtls_{name}_{}", std::process::id());
        self.shared_databases.0.lock().unwrap().push(name.clone());
        name
    }
}

/// The databases made on the machine's PostgreSQL, dropped with the world.
#[derive(Default)]
struct SharedDatabases(Mutex<Vec<String>>);

impl Drop for SharedDatabases {
    fn drop(&mut self) {
        for database in self.0.lock().unwrap().drain(..) {
            let _ = std::process::Command::new("psql")
                .args([
                    "-q",
                    "-h",
                    "127.0.0.1",
                    "-U",
                    "postgres",
                    "-d",
                    "postgres",
                    "-c",
                ])
                .arg(format!("DROP DATABASE IF EXISTS {database} WITH (FORCE)"))
                .output();
        }
    }
}

/// Removes a folder when dropped.
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
