//! The PostgreSQL adapter: critical events, the outbox and idempotency keys.
//!
//! Writes go through one writer task that folds concurrent requests into one transaction
//! (group commit), so a request never owns a connection across an await it could be
//! cancelled in.

mod dead_letters;
mod idempotency;
mod outbox;
mod reads;
mod rows;
mod schedule;
mod writer;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;
use async_trait::async_trait;
use sqlx::migrate::MigrateDatabase;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgPool, Postgres};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{info, instrument};
use uuid::Uuid;

pub use outbox::{ClaimedBatch, OutboxRow, Retry};
use writer::WriteJob;

pub use crate::app::ports::StoreError;
use crate::app::ports::{Outbox, StoreProbe};
use crate::app::records::{Held, Owner, PendingEvent};
use crate::runtime::backoff::{Backoff, Reconnect};
use crate::runtime::breaker::{CircuitBreaker, CircuitState, Fault};
use crate::runtime::detached::finish_detached;
use crate::runtime::reason::{LastError, Peer};
use crate::runtime::worker::Workers;

#[derive(Debug, Clone)]
pub struct StoreSettings {
    /// DATABASE_URL with its `sslmode` settled (`Settings::database_endpoint`).
    pub url: String,
    pub pool_size: u32,
    pub acquire_timeout: Duration,
    pub statement_timeout: Duration,
    /// Most events per transaction; 1 turns group commit off.
    pub write_batch: usize,
    /// How long a request may take to publish its own row before the relay may.
    pub request_lease: Duration,
}

/// SQLSTATE classes of errors a statement gets for the values it carries: data exceptions
/// (`22`: a NUL byte in text, `\u0000` in jsonb, a value out of range), integrity
/// constraint violations (`23`) and program limits (`54`: a value too large to index).
/// Any other error (connection, shutdown, timeout, resources, serialization) is the
/// database's.
const CONTENT_CLASSES: [&str; 3] = ["22", "23", "54"];

impl From<sqlx::Error> for StoreError {
    fn from(error: sqlx::Error) -> Self {
        if refused_for_content(&error) {
            StoreError::Refused(Arc::new(error))
        } else {
            StoreError::Unavailable(Arc::new(error))
        }
    }
}

/// The database answered and refused this statement for what it carried, or sqlx could
/// not encode a value: the same statement fails the same way however often it is sent.
fn refused_for_content(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Database(database) => database
            .code()
            .is_some_and(|code| CONTENT_CLASSES.iter().any(|class| code.starts_with(class))),
        sqlx::Error::Encode(_) => true,
        _ => false,
    }
}

impl Fault for StoreError {
    /// A refusal is the database answering: it is up.
    fn is_dependency_failure(&self) -> bool {
        !matches!(self, StoreError::Refused(_))
    }

    /// An open circuit or a schema not ready yet is no news about the database.
    fn reached_dependency(&self) -> bool {
        !matches!(self, StoreError::CircuitOpen | StoreError::NotReady)
    }
}

/// Runs database work in a task of its own: sqlx is not cancel-safe, and a request that
/// is dropped (client gone, timeout) must not leave a connection mid-transaction.
async fn detached<T: Send + 'static>(
    work: impl Future<Output = Result<T, StoreError>> + Send + 'static,
) -> Result<T, StoreError> {
    finish_detached(work)
        .await
        .map_err(|_| StoreError::TaskFailed)?
}

#[derive(Clone)]
pub struct Store {
    pool: PgPool,
    /// Where holds are written when group commit is off.
    target: writer::Target,
    writer: Option<mpsc::Sender<WriteJob>>,
    ready: Arc<AtomicBool>,
    breaker: Arc<CircuitBreaker>,
    /// Why preparing the database last failed, until it is ready.
    last_error: LastError,
}

impl Store {
    /// Opens a lazy pool and prepares the database (create, migrate) in the background,
    /// retrying until it is reachable, so the gateway starts while PostgreSQL is down.
    pub fn start(
        settings: &StoreSettings,
        breaker: CircuitBreaker,
        workers: &Workers,
    ) -> anyhow::Result<Self> {
        let options = connect_options(settings)?;
        let pool = PgPoolOptions::new()
            .max_connections(settings.pool_size)
            .acquire_timeout(settings.acquire_timeout)
            .connect_lazy_with(options);
        let target = writer::Target {
            pool: pool.clone(),
            max_rows: settings.write_batch,
            lease: settings.request_lease,
        };
        let writer = (settings.write_batch > 1).then(|| writer::spawn(target.clone(), workers));
        let store = Store {
            pool,
            target,
            writer,
            ready: Arc::new(AtomicBool::new(false)),
            breaker: Arc::new(breaker),
            last_error: LastError::default(),
        };
        let stop = workers.token();
        workers.spawn(
            "database preparation",
            prepare_until_ready(store.clone(), settings.url.clone(), stop),
        );
        Ok(store)
    }

    /// The pool, unless the schema is not ready or the circuit is open (fail fast).
    fn pool(&self) -> Result<&PgPool, StoreError> {
        if !self.is_ready() {
            Err(StoreError::NotReady)
        } else if !self.breaker.allow() {
            Err(StoreError::CircuitOpen)
        } else {
            Ok(&self.pool)
        }
    }

    /// Runs database work in a task of its own (see [`detached`]) and tells the circuit
    /// breaker how it went.
    async fn guarded<T: Send + 'static>(
        &self,
        work: impl Future<Output = Result<T, StoreError>> + Send + 'static,
    ) -> Result<T, StoreError> {
        let outcome = detached(work).await;
        self.breaker.record(&outcome);
        outcome
    }
}

#[async_trait]
impl StoreProbe for Store {
    fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    fn circuit(&self) -> CircuitState {
        self.breaker.state()
    }

    fn last_error(&self) -> Option<String> {
        self.last_error.get()
    }

    #[instrument(skip_all)]
    async fn ping(&self) -> Result<(), StoreError> {
        if !self.is_ready() {
            return Err(StoreError::NotReady);
        }
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }
}

#[async_trait]
impl Outbox for Store {
    /// The commit: the request's wait for its group commit round.
    #[instrument(name = "commit", skip_all, fields(events = events.len()))]
    async fn hold(&self, events: Vec<PendingEvent>, owner: Owner) -> Result<Vec<Held>, StoreError> {
        self.pool()?;
        let target = self.target.clone();
        match &self.writer {
            Some(writer) => {
                let outcome = writer::submit(writer, events, owner).await;
                self.breaker.record(&outcome);
                outcome
            }
            None => {
                self.guarded(async move { writer::write(&target, &events, owner).await })
                    .await
            }
        }
    }

    async fn confirmed(&self, ids: Vec<Uuid>) -> Result<(), StoreError> {
        self.pool()?;
        let target = self.target.clone();
        match &self.writer {
            Some(writer) => writer::confirm(writer, ids).await,
            None => {
                self.guarded(async move { writer::mark_confirmed(&target, &ids).await })
                    .await
            }
        }
    }

    async fn release(&self, id: Uuid) -> Result<(), StoreError> {
        let pool = self.pool()?.clone();
        self.guarded(async move { outbox::release(&pool, id).await })
            .await
    }

    async fn forget(&self, id: Uuid) -> Result<bool, StoreError> {
        let pool = self.pool()?.clone();
        self.guarded(async move { outbox::forget(&pool, id).await })
            .await
    }
}

fn connect_options(settings: &StoreSettings) -> anyhow::Result<PgConnectOptions> {
    let options: PgConnectOptions = settings
        .url
        .parse()
        .context("DATABASE_URL is not a valid PostgreSQL URL")?;
    let timeout_ms = settings.statement_timeout.as_millis().to_string();
    Ok(options
        .application_name("event-gateway")
        .options([("statement_timeout", timeout_ms.as_str())]))
}

/// Creates the database if missing and applies `migrations/`.
#[instrument(skip_all)]
pub async fn migrate(url: &str) -> anyhow::Result<()> {
    if !Postgres::database_exists(url)
        .await
        .context("checking the database")?
    {
        Postgres::create_database(url)
            .await
            .context("creating the database")?;
        info!("created the database");
    }
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .connect(url)
        .await
        .context("connecting to the database")?;
    sqlx::migrate!("./migrations")
        .run(&pool)
        .await
        .context("applying migrations")?;
    pool.close().await;
    Ok(())
}

async fn prepare_until_ready(store: Store, url: String, stop: CancellationToken) {
    let mut reconnect = Reconnect::new("database not ready", Backoff::RECONNECT)
        .to(Peer::Postgres)
        .recording(store.last_error.clone());
    loop {
        let migrated = tokio::select! {
            migrated = migrate(&url) => migrated,
            // A migration cut short is rolled back with its connection.
            () = stop.cancelled() => return,
        };
        match migrated {
            Ok(()) => {
                reconnect.succeeded();
                store.ready.store(true, Ordering::Release);
                info!("database ready");
                return;
            }
            Err(error) => {
                if !reconnect.wait_after(&error, &stop).await {
                    return;
                }
            }
        }
    }
}
