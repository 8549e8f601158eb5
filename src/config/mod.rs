//! Settings, read once from the environment (or the matching flags) at start.
//! Defaults live here and only here; `--help` prints each variable with its default.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser};

use crate::domain::EventType;
use crate::domain::sealing::{Sealer, SealingKeys, SensitiveField};
use crate::domain::webhook::WebhookSecrets;
use crate::runtime::backoff::{Backoff, RetryPolicy};

mod identity;
mod tls;
mod values;

pub use identity::Identity;
pub use tls::{
    BrokerEndpoint, ClientIdentity, ClientTls, DatabaseEndpoint, Endpoints, RedisEndpoint, SslMode,
    TlsSettings,
};
use values::{Concealed, percent_encode};
pub use values::{CorsOrigin, GatewayEnv, LogFormat, Secret};

/// Every setting of the gateway. Each is an environment variable (and a flag).
#[derive(Debug, Clone, Args)]
pub struct Settings {
    /// Address the HTTP server listens on.
    #[arg(long, env = "HTTP_ADDR", default_value = "0.0.0.0:8080", global = true)]
    pub http_addr: SocketAddr,

    /// RabbitMQ connection URL.
    #[arg(
        long,
        env = "AMQP_URL",
        default_value = "amqp://guest:guest@127.0.0.1:5672/%2f",
        value_parser = Concealed::<Secret>::new(),
        hide_env_values = true,
        global = true
    )]
    pub amqp_url: Secret,

    /// Topic exchange events are published to; its dead-letter exchange is `<name>.dlx`.
    #[arg(
        long,
        env = "AMQP_EXCHANGE",
        default_value = "gamification",
        global = true
    )]
    pub amqp_exchange: String,

    /// Prefix for every queue name (e.g. `staging.` gives `staging.achievement_events`).
    #[arg(long, env = "AMQP_QUEUE_PREFIX", default_value = "", global = true)]
    pub amqp_queue_prefix: String,

    /// Channels (in confirm mode) the publisher spreads messages over. On RabbitMQ 3.10
    /// one costs the broker the least CPU per event (BENCHMARKS.md).
    #[arg(long, env = "AMQP_PUBLISH_CHANNELS", default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=256), global = true)]
    pub amqp_publish_channels: u16,

    /// Most messages awaiting a broker confirm at once; further publishes wait for a slot.
    #[arg(long, env = "AMQP_MAX_IN_FLIGHT", default_value_t = 4096, value_parser = clap::value_parser!(u32).range(1..), global = true)]
    pub amqp_max_in_flight: u32,

    /// How long a publish waits for the broker's confirm before answering 503.
    #[arg(long, env = "AMQP_CONFIRM_TIMEOUT", default_value = "5s", value_parser = humantime::parse_duration, global = true)]
    pub amqp_confirm_timeout: Duration,

    /// Redis host.
    #[arg(long, env = "REDIS_HOST", default_value = "127.0.0.1", global = true)]
    pub redis_host: String,

    /// Redis port.
    #[arg(long, env = "REDIS_PORT", default_value_t = 6379, global = true)]
    pub redis_port: u16,

    /// Redis password (none by default).
    #[arg(long, env = "REDIS_PASSWORD", value_parser = Concealed::<Secret>::new(), hide_env_values = true, global = true)]
    pub redis_password: Option<Secret>,

    /// Redis database number.
    #[arg(long, env = "REDIS_DB", default_value_t = 0, global = true)]
    pub redis_db: i64,

    /// Prefix of every Redis key the gateway reads or deletes.
    #[arg(
        long,
        env = "REDIS_KEY_PREFIX",
        default_value = "gamification:",
        global = true
    )]
    pub redis_key_prefix: String,

    /// PostgreSQL URL; the database is created if missing and migrated at start.
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/gamification",
        value_parser = Concealed::<Secret>::new(),
        hide_env_values = true,
        global = true
    )]
    pub database_url: Secret,

    /// Most PostgreSQL connections the gateway holds.
    #[arg(long, env = "DB_POOL_SIZE", default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..), global = true)]
    pub db_pool_size: u32,

    /// How long a request waits for a database connection before answering 503.
    #[arg(long, env = "DB_ACQUIRE_TIMEOUT", default_value = "2s", value_parser = humantime::parse_duration, global = true)]
    pub db_acquire_timeout: Duration,

    /// Longest a single SQL statement may run.
    #[arg(long, env = "DB_STATEMENT_TIMEOUT", default_value = "5s", value_parser = humantime::parse_duration, global = true)]
    pub db_statement_timeout: Duration,

    /// Most events written in one transaction (group commit); 1 gives every request its own.
    #[arg(long, env = "DB_WRITE_BATCH", default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..=10_000), global = true)]
    pub db_write_batch: u32,

    /// Event types written to PostgreSQL before the answer (comma-separated).
    #[arg(
        long,
        env = "CRITICAL_EVENTS",
        default_value = "achievement.completed,quest.completed,reward.created,reward.claimed,reward.expired",
        value_delimiter = ',',
        global = true
    )]
    pub critical_events: Vec<EventType>,

    /// How long the first answer to an Idempotency-Key is kept and replayed (and how long
    /// published or cancelled scheduled events stay readable).
    #[arg(long, env = "IDEMPOTENCY_TTL", default_value = "24h", value_parser = humantime::parse_duration, global = true)]
    pub idempotency_ttl: Duration,

    /// How far ahead `deliverAt` may schedule an event.
    #[arg(long, env = "SCHEDULE_MAX_AHEAD", default_value = "30d", value_parser = humantime::parse_duration, global = true)]
    pub schedule_max_ahead: Duration,

    /// HS256 secret for bearer tokens. Without it (and without JWT_PUBLIC_KEY_FILE) a
    /// development secret is used, which production refuses.
    #[arg(
        long,
        env = "JWT_SECRET",
        value_parser = Concealed::<Secret>::new(),
        hide_env_values = true,
        global = true,
        conflicts_with = "jwt_public_key_file"
    )]
    pub jwt_secret: Option<Secret>,

    /// PEM public key (RSA: RS256, EC P-256: ES256, Ed25519: EdDSA) that verifies tokens.
    #[arg(long, env = "JWT_PUBLIC_KEY_FILE", global = true)]
    pub jwt_public_key_file: Option<PathBuf>,

    /// PEM private key matching JWT_PUBLIC_KEY_FILE; only the `token` command uses it.
    #[arg(long, env = "JWT_PRIVATE_KEY_FILE", global = true)]
    pub jwt_private_key_file: Option<PathBuf>,

    /// Required `iss` claim, when set.
    #[arg(long, env = "JWT_ISSUER", global = true)]
    pub jwt_issuer: Option<String>,

    /// Required `aud` claim, when set.
    #[arg(long, env = "JWT_AUDIENCE", global = true)]
    pub jwt_audience: Option<String>,

    #[command(flatten)]
    pub identity: Identity,

    /// `production` refuses to start with the development secret.
    #[arg(
        long,
        env = "GATEWAY_ENV",
        value_enum,
        default_value = "development",
        global = true
    )]
    pub gateway_env: GatewayEnv,

    /// Run the cache-invalidating consumers (off for a publish-only deployment).
    #[arg(long, env = "CONSUMERS_ENABLED", default_value_t = true, action = clap::ArgAction::Set, global = true)]
    pub consumers_enabled: bool,

    /// Unacknowledged messages each consumer may hold (RabbitMQ prefetch).
    #[arg(long, env = "CONSUMER_PREFETCH", default_value_t = 32, value_parser = clap::value_parser!(u16).range(1..), global = true)]
    pub consumer_prefetch: u16,

    /// Retries after a consumer's first try fails, as the spec's `retry(..., {retries:
    /// MAX_RETRIES})` reads `max_attempts`: 3 means tries at 0 s, 1 s, 3 s and 7 s (with the
    /// default delays), then the dead letter.
    #[arg(long, env = "RETRY_MAX_ATTEMPTS", default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=20), global = true)]
    pub retry_max_attempts: u32,

    /// Wait before the first retry; each next one waits twice as long. Above zero: a
    /// retry without a wait would spin on a dependency that is down.
    #[arg(long, env = "RETRY_INITIAL_DELAY", default_value = "1s", value_parser = values::positive_duration, global = true)]
    pub retry_initial_delay: Duration,

    /// Longest wait between retries.
    #[arg(long, env = "RETRY_MAX_DELAY", default_value = "60s", value_parser = humantime::parse_duration, global = true)]
    pub retry_max_delay: Duration,

    /// Longest time a request may take before it is answered 503.
    #[arg(long, env = "REQUEST_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration, global = true)]
    pub request_timeout: Duration,

    /// Longest time a client may take to send a request body (408 after it).
    #[arg(long, env = "BODY_READ_TIMEOUT", default_value = "5s", value_parser = humantime::parse_duration, global = true)]
    pub body_read_timeout: Duration,

    /// Longest time a client may take to send request headers, and the longest an idle
    /// keep-alive connection is held open.
    #[arg(long, env = "HEADER_READ_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration, global = true)]
    pub header_read_timeout: Duration,

    /// Largest request head (request line and headers); larger ones get 431.
    #[arg(long, env = "MAX_HEADER_BYTES", default_value_t = 16 * 1024, value_parser = clap::value_parser!(u32).range(1024..=1024 * 1024), global = true)]
    pub max_header_bytes: u32,

    /// Webhook senders and their secrets: `source=secret,…`; a `whsec_` secret is base64;
    /// naming a source twice accepts either key (rotation). Unset: webhooks are refused.
    #[arg(
        long,
        env = "WEBHOOK_SECRETS",
        default_value = "",
        hide_default_value = true,
        value_parser = Concealed::<WebhookSecrets>::new(),
        hide_env_values = true,
        global = true
    )]
    pub webhook_secrets: WebhookSecrets,

    /// Origins browsers may call from (comma-separated, e.g. `https://game.example`; `*`
    /// for any). Unset: no CORS headers at all.
    #[arg(long, env = "CORS_ORIGINS", value_delimiter = ',', global = true)]
    pub cors_origins: Vec<CorsOrigin>,

    /// Events (or requests) per second each caller may send on average; 0 turns rate
    /// limiting off.
    #[arg(long, env = "RATE_LIMIT_RPS", default_value_t = 1000, global = true)]
    pub rate_limit_rps: u32,

    /// How many events a caller may send at once above the average rate.
    #[arg(long, env = "RATE_LIMIT_BURST", default_value_t = 2000, value_parser = clap::value_parser!(u32).range(1..), global = true)]
    pub rate_limit_burst: u32,

    /// JSON pointers into an event's data to encrypt before it leaves the gateway
    /// (comma-separated, e.g. `/data/metadata/email`). Needs ENCRYPTION_KEYS.
    #[arg(
        long,
        env = "SENSITIVE_FIELDS",
        value_delimiter = ',',
        requires = "encryption_keys",
        global = true
    )]
    pub sensitive_fields: Vec<SensitiveField>,

    /// AES-256 keys for SENSITIVE_FIELDS: `kid=<base64 of 32 bytes>,…`; the first encrypts,
    /// the others are for consumers still reading older events.
    #[arg(long, env = "ENCRYPTION_KEYS", value_parser = Concealed::<SealingKeys>::new(), hide_env_values = true, global = true)]
    pub encryption_keys: Option<SealingKeys>,

    /// Log line format; the level filter is RUST_LOG (default `info`).
    #[arg(
        long,
        env = "LOG_FORMAT",
        value_enum,
        default_value = "json",
        global = true
    )]
    pub log_format: LogFormat,

    /// Where to export spans as OTLP/HTTP (JSON), e.g. `http://localhost:4318`; the gateway
    /// posts to `<endpoint>/v1/traces`. Unset: no export (trace context still flows).
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT", global = true)]
    pub otel_exporter_otlp_endpoint: Option<String>,

    /// TLS to RabbitMQ, Redis and PostgreSQL (`tls.rs`).
    #[command(flatten)]
    pub tls: TlsSettings,
}

/// Parses settings from the environment alone, with no command line.
#[derive(Debug, Parser)]
struct EnvOnly {
    #[command(flatten)]
    settings: Settings,
}

impl Settings {
    /// Settings from the environment; the error names the bad variable.
    pub fn from_env() -> Result<Self, clap::Error> {
        EnvOnly::try_parse_from(["event-gateway"]).map(|parsed| parsed.settings)
    }

    /// The consumers' retries: `RETRY_MAX_ATTEMPTS` retries after the first try, with
    /// [`Self::retry_backoff`].
    pub fn retry_policy(&self) -> RetryPolicy {
        RetryPolicy {
            retries: self.retry_max_attempts,
            backoff: self.retry_backoff(),
        }
    }

    /// `RETRY_INITIAL_DELAY`, doubling up to `RETRY_MAX_DELAY`: between a consumer's
    /// attempts, and between the outbox relay's attempts at one row.
    pub fn retry_backoff(&self) -> Backoff {
        Backoff {
            initial: self.retry_initial_delay,
            max: self.retry_max_delay,
        }
    }

    /// What sealing the settings ask for, if any.
    pub fn sealer(&self) -> Option<Sealer> {
        let keys = self.encryption_keys.clone()?;
        (!self.sensitive_fields.is_empty()).then(|| Sealer {
            fields: self.sensitive_fields.clone(),
            keys,
        })
    }

    pub fn redis_url(&self) -> String {
        let auth = match &self.redis_password {
            Some(password) => format!(":{}@", percent_encode(password.expose())),
            None => String::new(),
        };
        let scheme = if self.tls.redis_tls {
            "rediss"
        } else {
            "redis"
        };
        format!(
            "{scheme}://{auth}{}:{}/{}",
            self.redis_host, self.redis_port, self.redis_db
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redis_url_carries_password_and_db() {
        let mut settings = EnvOnly::try_parse_from(["x", "--redis-db", "3"])
            .unwrap()
            .settings;
        settings.redis_password = Some("pw".parse().unwrap());
        assert_eq!(settings.redis_url(), "redis://:pw@127.0.0.1:6379/3");
        settings.redis_password = Some("p@ss/w:rd".parse().unwrap());
        assert_eq!(
            settings.redis_url(),
            "redis://:p%40ss%2Fw%3Ard@127.0.0.1:6379/3"
        );
    }
}
