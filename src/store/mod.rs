//! The PostgreSQL adapter: critical events, the outbox and idempotency keys.
//!
//! Writes go through one writer task that folds concurrent requests into one transaction
//! (group commit), so a request never owns a connection across an await it could be
//! cancelled in.

mod dead_letters;
mod idempotency;
mod outbox;
mod reads;
mod writer;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;
use sqlx::migrate::MigrateDatabase;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgPool, Postgres};
use time::OffsetDateTime;
use tokio::sync::mpsc;
use tracing::{info, instrument, warn};
use uuid::Uuid;

pub use dead_letters::{DeadLetter, DeadLetterFilter};

pub use outbox::{ClaimedBatch, OutboxRow};
pub use reads::{EventPage, PageCursor, StoredEvent};
use writer::WriteJob;

use crate::breaker::{CircuitBreaker, CircuitState};

const PREPARE_BACKOFF_MAX: Duration = Duration::from_secs(10);

#[derive(Debug, Clone)]
pub struct StoreSettings {
    pub url: String,
    pub pool_size: u32,
    pub acquire_timeout: Duration,
    pub statement_timeout: Duration,
    /// Most events per transaction; 1 turns group commit off.
    pub write_batch: usize,
}

/// The database could not take or give what was asked.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("the database is unavailable: {0}")]
    Unavailable(Arc<sqlx::Error>),
    #[error("the database schema is not ready yet")]
    NotReady,
    #[error("a database task failed")]
    TaskFailed,
    #[error("circuit open: PostgreSQL failed repeatedly; not calling it for a few seconds")]
    CircuitOpen,
}

impl From<sqlx::Error> for StoreError {
    fn from(error: sqlx::Error) -> Self {
        StoreError::Unavailable(Arc::new(error))
    }
}

/// Runs database work in a task of its own: sqlx is not cancel-safe, and a request that
/// is dropped (client gone, timeout) must not leave a connection mid-transaction.
async fn detached<T: Send + 'static>(
    work: impl Future<Output = Result<T, StoreError>> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::spawn(work)
        .await
        .map_err(|_| StoreError::TaskFailed)?
}

/// A critical event's row: what the receipt endpoints read back.
#[derive(Debug, Clone)]
pub struct EventRecord {
    pub event_type: &'static str,
    pub user_id: Option<String>,
    pub source: String,
    pub accepted_at: OffsetDateTime,
}

/// One event to hold: its broker message and, for critical events, its record.
#[derive(Debug, Clone)]
pub struct PendingEvent {
    pub id: Uuid,
    pub routing_key: &'static str,
    pub ordering_key: String,
    pub correlation_id: String,
    pub timestamp_secs: i64,
    pub body: Vec<u8>,
    pub record: Option<EventRecord>,
}

/// Who publishes a newly written outbox row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner {
    /// The request publishes it now; the relay takes over only if the lease runs out.
    Request,
    /// The relay publishes it.
    Relay,
}

/// How long a request may take to publish its own row before the relay may.
pub const REQUEST_LEASE: Duration = Duration::from_secs(30);

#[derive(Clone)]
pub struct Store {
    pool: PgPool,
    writer: Option<mpsc::Sender<WriteJob>>,
    ready: Arc<AtomicBool>,
    breaker: Arc<CircuitBreaker>,
}

impl Store {
    /// Opens a lazy pool and prepares the database (create, migrate) in the background,
    /// retrying until it is reachable, so the gateway starts while PostgreSQL is down.
    pub fn start(settings: &StoreSettings, breaker: CircuitBreaker) -> anyhow::Result<Self> {
        let options = connect_options(settings)?;
        let pool = PgPoolOptions::new()
            .max_connections(settings.pool_size)
            .acquire_timeout(settings.acquire_timeout)
            .connect_lazy_with(options);
        let writer =
            (settings.write_batch > 1).then(|| writer::spawn(pool.clone(), settings.write_batch));
        let store = Store {
            pool,
            writer,
            ready: Arc::new(AtomicBool::new(false)),
            breaker: Arc::new(breaker),
        };
        tokio::spawn(prepare_until_ready(store.clone(), settings.url.clone()));
        Ok(store)
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    pub fn circuit(&self) -> CircuitState {
        self.breaker.state()
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

    /// A health probe: it goes through even while the circuit is open.
    #[instrument(skip_all)]
    pub async fn ping(&self) -> Result<(), StoreError> {
        if !self.is_ready() {
            return Err(StoreError::NotReady);
        }
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    /// Writes events (critical ones with their record) and their outbox rows in one
    /// transaction. Returns, per event, whether it was new (false: the id existed).
    pub async fn hold(
        &self,
        events: Vec<PendingEvent>,
        owner: Owner,
    ) -> Result<Vec<bool>, StoreError> {
        let pool = self.pool()?.clone();
        match &self.writer {
            Some(writer) => {
                let outcome = writer::submit(writer, events, owner).await;
                self.breaker.record(&outcome);
                outcome
            }
            None => {
                self.guarded(async move { writer::insert(&pool, &events, owner).await })
                    .await
            }
        }
    }

    /// The broker confirmed these events: mark critical ones published and drop their
    /// rows, in the next group commit.
    pub async fn confirmed(&self, ids: Vec<Uuid>) -> Result<(), StoreError> {
        let pool = self.pool()?.clone();
        match &self.writer {
            Some(writer) => writer::confirm(writer, ids).await,
            None => {
                self.guarded(async move { writer::mark_confirmed(&pool, &ids).await })
                    .await
            }
        }
    }

    /// The request could not publish its own row: hand it to the relay now.
    pub async fn release(&self, id: Uuid) -> Result<(), StoreError> {
        let pool = self.pool()?.clone();
        self.guarded(async move { outbox::release(&pool, id).await })
            .await
    }

    /// The event can never be published (unroutable): it was not accepted, so forget it.
    pub async fn forget(&self, id: Uuid) -> Result<(), StoreError> {
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

async fn prepare_until_ready(store: Store, url: String) {
    let mut backoff = Duration::from_millis(200);
    loop {
        match migrate(&url).await {
            Ok(()) => {
                store.ready.store(true, Ordering::Release);
                info!("database ready");
                return;
            }
            Err(error) => {
                warn!(
                    error = format!("{error:#}"),
                    retry_in_ms = backoff.as_millis() as u64,
                    "database not ready"
                );
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(PREPARE_BACKOFF_MAX);
            }
        }
    }
}
