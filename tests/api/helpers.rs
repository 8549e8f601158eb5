//! `spawn_app()` and friends: a whole gateway on port 0 against the real RabbitMQ and
//! Redis, with its own exchange and queue names so tests run in parallel and clean up.

use std::net::SocketAddr;
use std::time::Duration;

use event_gateway::auth::TokenSigner;
use event_gateway::bus::Topology;
use event_gateway::config::Settings;
use lapin::options::{BasicGetOptions, ExchangeDeleteOptions, QueueDeleteOptions};
use lapin::{Channel, Connection, ConnectionProperties};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::proxy::Proxy;

pub const AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
pub const TEST_SECRET: &str = "integration-test-secret";
pub const POSTGRES: &str = "postgres://postgres@127.0.0.1:5432";
pub const REDIS: &str = "redis://127.0.0.1:6379/0";

pub struct TestApp {
    pub base: String,
    pub http: reqwest::Client,
    pub settings: Settings,
    pub topology: Topology,
    pub broker: Channel,
    pub shutdown: CancellationToken,
    pub server: Option<JoinHandle<anyhow::Result<()>>>,
    pub broker_connection: Connection,
}

/// Settings for a test gateway: its own exchange and queue prefix, a known secret.
pub fn test_settings() -> Settings {
    let mut settings = Settings::from_env().expect("settings from the environment");
    let name = format!("egtest-{}", Uuid::new_v4().simple());
    settings.amqp_exchange = name.clone();
    settings.amqp_queue_prefix = format!("{name}.");
    settings.amqp_url = AMQP_URL.parse().expect("url");
    settings.jwt_secret = Some(TEST_SECRET.parse().expect("secret"));
    settings.amqp_confirm_timeout = Duration::from_secs(3);
    settings.database_url = format!("{POSTGRES}/{}", name.replace('-', "_"))
        .parse()
        .expect("url");
    settings.redis_key_prefix = format!("{name}:");
    // Many gateways share one PostgreSQL (100 connections) while the suite runs.
    settings.db_pool_size = 4;
    // Tests read the family queues themselves; the consumer tests turn consumers on.
    settings.consumers_enabled = false;

    settings
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(test_settings()).await
}

/// Logs at `warn` go to the failing test's output.
fn init_logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter("warn")
        .with_test_writer()
        .try_init();
}

pub async fn spawn_app_with(settings: Settings) -> TestApp {
    init_logs();
    let app = start(settings).await;
    app.wait_until_ready().await;
    app
}

/// Starts a gateway without waiting for its broker connection.
pub async fn start(settings: Settings) -> TestApp {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr: SocketAddr = listener.local_addr().expect("addr");
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(event_gateway::run(
        listener,
        settings.clone(),
        shutdown.clone(),
    ));
    let connection = Connection::connect(AMQP_URL, ConnectionProperties::default())
        .await
        .expect("test connection to RabbitMQ");
    let broker = connection.create_channel().await.expect("channel");
    TestApp {
        base: format!("http://{addr}"),
        http: reqwest::Client::new(),
        topology: event_gateway::topology(&settings),
        settings,
        broker,
        shutdown,
        server: Some(server),
        broker_connection: connection,
    }
}

/// Routes the gateway's database connections through `proxy`.
pub fn through_db_proxy(mut settings: Settings, proxy: &Proxy) -> Settings {
    let url = settings.database_url.expose().to_owned();
    let database = url.rsplit('/').next().unwrap_or_default();
    settings.database_url = format!("postgres://postgres@{}/{database}", proxy.addr)
        .parse()
        .expect("url");
    settings
}

/// Routes the gateway's broker connection through `proxy`.
pub fn through_broker_proxy(mut settings: Settings, proxy: &Proxy) -> Settings {
    settings.amqp_url = format!("amqp://guest:guest@{}/%2f", proxy.addr)
        .parse()
        .expect("url");
    settings
}

/// A gateway whose broker connection runs through a proxy the test can cut.
pub async fn spawn_app_behind_proxy() -> (TestApp, Proxy) {
    let proxy = Proxy::start("127.0.0.1:5672").await;
    let settings = through_broker_proxy(test_settings(), &proxy);
    (spawn_app_with(settings).await, proxy)
}

impl TestApp {
    pub async fn wait_until_ready(&self) {
        eventually(Duration::from_secs(15), || async {
            self.get("/health/ready").await.status() == 200
        })
        .await;
    }

    /// A connection pool to this gateway's own database.
    pub async fn db(&self) -> sqlx::PgPool {
        sqlx::postgres::PgPoolOptions::new()
            .max_connections(2)
            .connect(self.settings.database_url.expose())
            .await
            .expect("test connection to PostgreSQL")
    }

    pub fn token(&self, subject: &str, scope: &str) -> String {
        TokenSigner::from_settings(&self.settings)
            .and_then(|signer| signer.mint(subject, scope, Duration::from_secs(600)))
            .expect("mint")
    }

    pub fn backend_token(&self) -> String {
        self.token("game-backend", "events:publish")
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .expect("GET")
    }

    pub async fn post_json(&self, path: &str, token: &str, body: &Value) -> reqwest::Response {
        self.post_as(path, "application/json", token, &[], body)
            .await
    }

    /// POSTs `body` as `content_type` with `token` and extra `headers`.
    pub async fn post_as(
        &self,
        path: &str,
        content_type: &str,
        token: &str,
        headers: &[(&str, &str)],
        body: &Value,
    ) -> reqwest::Response {
        let mut request = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(token)
            .header("content-type", content_type)
            .body(body.to_string());
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request.send().await.expect("POST")
    }

    pub async fn publish(&self, body: &Value) -> reqwest::Response {
        self.post_json("/v1/events", &self.backend_token(), body)
            .await
    }

    pub fn queue(&self, family: &str) -> String {
        format!("{}{family}_events", self.settings.amqp_queue_prefix)
    }

    /// The next message on `queue`, waiting up to a few seconds for it.
    pub async fn next_message(&self, queue: &str) -> lapin::message::Delivery {
        for _ in 0..100 {
            let got = self
                .broker
                .basic_get(queue.into(), BasicGetOptions { no_ack: true })
                .await
                .expect("basic.get");
            if let Some(message) = got {
                return message.delivery;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("no message arrived on {queue}");
    }

    /// How many messages sit on `queue` right now.
    pub async fn depth(&self, queue: &str) -> u32 {
        let declared = self
            .broker
            .queue_declare(
                queue.into(),
                lapin::options::QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                lapin::types::FieldTable::default(),
            )
            .await
            .expect("passive declare");
        declared.message_count()
    }

    /// Messages on every family queue together.
    pub async fn total_depth(&self) -> u32 {
        let mut total = 0;
        for binding in &self.topology.queues {
            total += self.depth(&binding.queue).await;
        }
        total
    }

    pub async fn stop(&mut self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        match self.server.take() {
            Some(server) => server.await.expect("server task"),
            None => Ok(()),
        }
    }
}

impl Drop for TestApp {
    /// Deletes this test's exchanges and queues, from a thread of its own since `Drop`
    /// cannot await.
    fn drop(&mut self) {
        self.shutdown.cancel();
        let topology = self.topology.clone();
        // Straight to PostgreSQL: a test's proxy runs on the runtime this drop blocks.
        let database = format!("{POSTGRES}/{}", self.topology.exchange.replace('-', "_"));

        let key_prefix = self.settings.redis_key_prefix.clone();
        let cleanup = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async move {
                let Ok(connection) =
                    Connection::connect(AMQP_URL, ConnectionProperties::default()).await
                else {
                    return;
                };
                let Ok(channel) = connection.create_channel().await else {
                    return;
                };
                let queues = topology.queues.iter().map(|b| &b.queue);
                for queue in queues.chain(topology.retry_queues.iter().map(|r| &r.queue)) {
                    let _ = channel
                        .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
                        .await;
                }

                for exchange in [&topology.exchange, &topology.dead_letter_exchange] {
                    let _ = channel
                        .exchange_delete(exchange.as_str().into(), ExchangeDeleteOptions::default())
                        .await;
                }
                let _ = connection.close(200, "test done".into()).await;
                drop_database(&database).await;
                delete_keys(&key_prefix).await;
            });
        });
        let _ = cleanup.join();
    }
}

async fn drop_database(url: &str) {
    use sqlx::migrate::MigrateDatabase;
    let _ = sqlx::Postgres::force_drop_database(url).await;
}

async fn delete_keys(prefix: &str) {
    let Ok(client) = redis::Client::open(REDIS) else {
        return;
    };
    let Ok(mut connection) = client.get_multiplexed_async_connection().await else {
        return;
    };
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}*"))
        .query_async(&mut connection)
        .await
        .unwrap_or_default();
    if !keys.is_empty() {
        let _: redis::RedisResult<()> = redis::cmd("DEL")
            .arg(keys)
            .query_async(&mut connection)
            .await;
    }
}

/// Polls `check` until it holds, failing the test after `limit`.
pub async fn eventually<F, Fut>(limit: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    while tokio::time::Instant::now() < deadline {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("condition not met within {limit:?}");
}

/// A valid `data` for each of the 18 types.
pub fn valid_data(event_type: &str) -> Value {
    let family = event_type.split('.').next().unwrap_or_default();
    match family {
        "achievement" => {
            json!({"achievementId": "ach-1", "userId": "user-1", "name": "First blood",
            "points": 100, "progress": 42.5, "completedAt": "2026-01-31T12:00:00Z",
            "metadata": {"level": 3}})
        }
        "quest" => {
            json!({"questId": "quest-1", "userId": "user-1", "name": "Dragon", "progress": 10})
        }
        "reward" => {
            json!({"rewardId": "rew-1", "userId": "user-1", "name": "Gold", "type": "coins",
            "value": 250})
        }
        "notification" => json!({"notificationId": "n-1", "userId": "user-1", "title": "Hi",
            "message": "You won", "type": "info"}),
        _ => json!({"analyticsId": "an-1", "userId": "user-1", "type": "click", "category": "ui",
            "event": "button", "value": 1.5}),
    }
}

pub fn event(event_type: &str) -> Value {
    json!({"type": event_type, "data": valid_data(event_type)})
}

pub async fn problem(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert_eq!(content_type, "application/problem+json", "status {status}");
    let body: Value = response.json().await.expect("problem body");
    assert_eq!(body["status"], status, "problem status matches HTTP status");
    (status, body)
}

/// The pointers named in a problem's `errors`.
pub fn pointers(problem: &Value) -> Vec<String> {
    problem["errors"]
        .as_array()
        .map(|errors| {
            errors
                .iter()
                .filter_map(|e| e["pointer"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// A response header as text; empty when absent.
pub fn header(response: &reqwest::Response, name: &str) -> String {
    response
        .headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

/// The value of the first line of a Prometheus text page that starts with `line_start`
/// (a metric name with its labels); 0 when there is none.
pub fn metric(text: &str, line_start: &str) -> f64 {
    text.lines()
        .find(|line| line.starts_with(line_start))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|value| value.parse().ok())
        .unwrap_or(0.0)
}

/// Runs a tool `scripts/tools-up` installs (node, st) off the runtime's threads, fails the
/// test with everything it printed unless it succeeds, and returns its stdout.
pub async fn run_tool(program: &'static str, args: Vec<String>) -> String {
    let run = tokio::task::spawn_blocking(move || {
        std::process::Command::new(program).args(&args).output()
    })
    .await
    .expect("the tool's thread")
    .unwrap_or_else(|error| panic!("{program} runs (scripts/test installs it): {error}"));
    let printed = String::from_utf8_lossy(&run.stdout).into_owned();
    assert!(
        run.status.success(),
        "{program} failed:\n{printed}\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    printed
}
