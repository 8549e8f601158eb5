//! The private RabbitMQ, PostgreSQL and Redis every scenario runs against: never the
//! machine's shared ones on 5672, 5432 and 6379, which the other tests use meanwhile.
//! Each is stopped, and the folder holding them removed, when `Services` is dropped,
//! also when a scenario panics.

mod postgres;
mod rabbit;
mod redis;

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use anyhow::Context;

pub use postgres::Postgres;
pub use rabbit::Rabbit;
pub use redis::Redis;
// With TLS, for tests/tls (which includes this module).
#[allow(unused_imports)]
pub use {postgres::PostgresTls, rabbit::RabbitTls, redis::RedisTls};

/// Fields drop in order: the servers are killed before their folder goes.
pub struct Services {
    pub rabbit: Rabbit,
    pub postgres: Postgres,
    pub redis: Redis,
    _root: RemoveOnDrop,
}

impl Services {
    pub async fn start() -> anyhow::Result<Services> {
        let root =
            std::env::temp_dir().join(format!("event-gateway-faults-{}", std::process::id()));
        std::fs::create_dir_all(&root)?;
        // The postgres user must reach its own folder inside.
        std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o755))?;
        let root = RemoveOnDrop(root);
        let (rabbit, postgres, redis) = tokio::join!(
            Rabbit::start(&root.0),
            Postgres::start(&root.0),
            Redis::start(&root.0)
        );
        Ok(Services {
            rabbit: rabbit.context("private RabbitMQ")?,
            postgres: postgres.context("private PostgreSQL")?,
            redis: redis.context("private Redis")?,
            _root: root,
        })
    }
}

/// Removes a folder when dropped.
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
