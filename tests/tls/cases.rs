//! The cases, each a gateway (or a refused start) against the world's servers.

use std::time::Duration;

use anyhow::{Context, bail, ensure};
use lapin::options::{BasicGetOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use serde_json::{Value, json};

use crate::certs::CLIENT_NAME;
use crate::gateway::Gateway;
use crate::world::{SHARED_POSTGRES, World};

const UNKNOWN_ISSUER: &str = "TLS: the server's certificate is not signed by a trusted CA";

/// TLS to all three, verified with the run's CA, with the client certificate for RabbitMQ.
fn all_tls(world: &World, database: &str) -> Vec<(&'static str, String)> {
    let certs = &world.certs;
    vec![
        (
            "AMQP_URL",
            format!(
                "amqps://guest:guest@127.0.0.1:{}/%2f",
                world.rabbit_tls_port()
            ),
        ),
        ("AMQP_TLS_CA_FILE", world.path(&certs.ca)),
        ("AMQP_TLS_CERT_FILE", world.path(&certs.client_cert)),
        ("AMQP_TLS_KEY_FILE", world.path(&certs.client_key)),
        ("REDIS_TLS", "true".into()),
        ("REDIS_HOST", "127.0.0.1".into()),
        ("REDIS_PORT", world.redis_tls_port().to_string()),
        ("REDIS_TLS_CA_FILE", world.path(&certs.ca)),
        // No sslmode: a CA file means verify-full.
        (
            "DATABASE_URL",
            format!(
                "postgres://postgres@127.0.0.1:{}/{database}",
                world.postgres.port
            ),
        ),
        ("DATABASE_TLS_CA_FILE", world.path(&certs.ca)),
    ]
}

/// `settings` with some replaced (or added).
fn with(
    mut settings: Vec<(&'static str, String)>,
    changes: &[(&'static str, String)],
) -> Vec<(&'static str, String)> {
    for (key, value) in changes {
        settings.retain(|(existing, _)| existing != key);
        settings.push((key, value.clone()));
    }
    settings
}

fn without(
    mut settings: Vec<(&'static str, String)>,
    keys: &[&str],
) -> Vec<(&'static str, String)> {
    settings.retain(|(key, _)| !keys.contains(key));
    settings
}

fn quest_progress(user: &str) -> Value {
    json!({"type": "quest.progress_updated", "data": {"questId": "quest-1", "userId": user,
        "progress": 50, "metadata": {"case": "tls"}}})
}

fn achievement(user: &str) -> Value {
    json!({"type": "achievement.completed", "data": {"achievementId": "ach-1", "userId": user,
        "name": "Locked", "points": 10, "completedAt": "2026-12-01T00:00:00Z"}})
}

/// Polls `check` every 100 ms until it is true; an error after `limit`.
async fn eventually<F, Fut>(limit: Duration, what: &str, mut check: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<bool>>,
{
    let deadline = tokio::time::Instant::now() + limit;
    while tokio::time::Instant::now() < deadline {
        if check().await? {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("{what}: not within {limit:?}")
}

fn dependency<'a>(report: &'a Value, name: &str) -> &'a Value {
    &report[name]
}

const DEPENDENCIES: [&str; 3] = ["rabbitMQ", "redis", "postgres"];

/// A reason from a failed attempt (not the one shown while the first is under way).
fn has_reason(report: &Value, name: &str) -> bool {
    report[name]["lastError"]
        .as_str()
        .is_some_and(|reason| reason != event_gateway::app::health::NOT_YET)
}

/// Publish (single and critical) over TLS, read back from the broker over TLS, a consumer
/// consuming over TLS (it deletes a Redis key over TLS), a cached read over Redis TLS, and
/// every connection of the gateway really TLS.
pub async fn everything_over_tls(world: &World, token: &str) -> anyhow::Result<()> {
    let name = "egtls-all";
    let settings = with(
        all_tls(world, "egtls_all"),
        &[("CONSUMERS_ENABLED", "true".into())],
    );
    let mut gateway = Gateway::start(world.dir(), name, &settings).await?;
    gateway
        .wait_for("/health/ready", Duration::from_secs(30))
        .await?;
    let (status, report) = gateway
        .health_when(Duration::from_secs(10), |r| r["status"] == "ok")
        .await?;
    ensure!(status == 200, "/health {status}: {report}");
    for name in DEPENDENCIES {
        let health = dependency(&report, name);
        ensure!(
            health["connected"] == true && health["lastError"].is_null(),
            "{name}: {report}"
        );
    }

    // A queue of the test's own, bound to everything, so the consumers can have theirs.
    let broker = world
        .broker()
        .await
        .context("the test's TLS connection to RabbitMQ")?;
    let channel = broker.create_channel().await?;
    let tap = format!("{name}.tap");
    let options = QueueDeclareOptions {
        exclusive: true,
        ..Default::default()
    };
    channel
        .queue_declare(tap.as_str().into(), options, FieldTable::default())
        .await?;
    channel
        .queue_bind(
            tap.as_str().into(),
            name.into(),
            "#".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;

    let mut redis = world
        .redis()
        .await
        .context("the test's TLS connection to Redis")?;
    let stale = format!("{name}:user_data:player-1");
    redis::cmd("SET")
        .arg(&stale)
        .arg("stale")
        .query_async::<()>(&mut redis)
        .await?;

    let (status, single) = gateway.publish(token, &quest_progress("player-1")).await?;
    ensure!(
        status == 202 && single["persisted"] == false,
        "single publish {status}: {single}"
    );
    let (status, critical) = gateway.publish(token, &achievement("player-1")).await?;
    ensure!(
        status == 202 && critical["persisted"] == true,
        "critical publish {status}: {critical}"
    );

    let mut read_back = Vec::new();
    for _ in 0..100 {
        let got = channel
            .basic_get(tap.as_str().into(), BasicGetOptions { no_ack: true })
            .await?;
        if let Some(message) = got {
            let body: Value = serde_json::from_slice(&message.delivery.data)?;
            read_back.push(body["id"].clone());
            if read_back.len() == 2 {
                break;
            }
        } else {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    ensure!(
        read_back == [single["id"].clone(), critical["id"].clone()],
        "read back from the broker: {read_back:?}"
    );

    // The achievement's consumer (over TLS) deletes the user's keys in Redis (over TLS).
    eventually(
        Duration::from_secs(15),
        "the consumer deleting the stale key",
        || {
            let (mut redis, stale) = (redis.clone(), stale.clone());
            async move {
                Ok(redis::cmd("EXISTS")
                    .arg(&stale)
                    .query_async::<i64>(&mut redis)
                    .await?
                    == 0)
            }
        },
    )
    .await?;

    // The critical event, read from PostgreSQL and then kept in Redis.
    let id = critical["id"].as_str().context("an id")?.to_owned();
    let cached = format!("{name}:event:{id}");
    eventually(Duration::from_secs(10), "the event cached in Redis", || {
        let (gateway, mut redis, cached, id) =
            (&gateway, redis.clone(), cached.clone(), id.clone());
        async move {
            let (status, _) = gateway
                .get(&format!("/v1/events/{id}"), Some(token))
                .await?;
            Ok(status == 200
                && redis::cmd("EXISTS")
                    .arg(&cached)
                    .query_async::<i64>(&mut redis)
                    .await?
                    == 1)
        }
    })
    .await?;
    let (status, event) = gateway
        .get(&format!("/v1/events/{id}"), Some(token))
        .await?;
    ensure!(
        status == 200 && event["id"] == id.as_str(),
        "cached read {status}: {event}"
    );
    let (_, report) = gateway.get("/health", None).await?;
    ensure!(
        report["redis"]["hitRate"].as_f64() > Some(0.0),
        "no cache hit: {report}"
    );

    let database = world.private_database("egtls_all").await?;
    let stored: (String,) = sqlx::query_as("SELECT type FROM events WHERE id = $1::uuid")
        .bind(&id)
        .fetch_one(&database)
        .await?;
    ensure!(stored.0 == "achievement.completed", "stored {stored:?}");
    gateway_sessions_are_tls(&database, "egtls_all").await?;
    broker_connections_are_tls(world).await?;
    drop(broker);
    Ok(())
}

/// Every session the gateway holds on `database` is TLS (and it holds some).
async fn gateway_sessions_are_tls(pool: &sqlx::PgPool, database: &str) -> anyhow::Result<()> {
    let (sessions, tls): (i64, i64) = sqlx::query_as(
        "SELECT count(*), count(*) FILTER (WHERE s.ssl) FROM pg_stat_activity a
         JOIN pg_stat_ssl s USING (pid) WHERE a.datname = $1 AND a.application_name = 'event-gateway'",
    )
    .bind(database)
    .fetch_one(pool)
    .await?;
    ensure!(
        sessions > 0 && sessions == tls,
        "{database}: {tls} of {sessions} sessions are TLS"
    );
    Ok(())
}

/// The broker's own list: the gateway's connections (publisher and consumers) are TLS,
/// with the run's client certificate.
async fn broker_connections_are_tls(world: &World) -> anyhow::Result<()> {
    let listed = world
        .rabbit
        .ctl(&[
            "list_connections",
            "-q",
            "--no-table-headers",
            "ssl",
            "peer_cert_subject",
            "client_properties",
        ])
        .await?;
    let ours: Vec<&str> = listed
        .lines()
        .filter(|line| line.contains("event-gateway"))
        .collect();
    ensure!(
        ours.len() >= 2,
        "the publisher's and the consumers' connections: {listed}"
    );
    for line in ours {
        ensure!(
            line.starts_with("true") && line.contains(CLIENT_NAME),
            "not TLS with the client certificate: {line}"
        );
    }
    Ok(())
}

/// `sslmode=require` against the machine's PostgreSQL (self-signed): connected, TLS.
pub async fn require_on_the_shared_postgres(world: &World, token: &str) -> anyhow::Result<()> {
    let database = world.shared_database("require");
    let settings = without(all_tls(world, "unused"), &["DATABASE_TLS_CA_FILE"]);
    let settings = with(
        settings,
        &[(
            "DATABASE_URL",
            format!("{SHARED_POSTGRES}/{database}?sslmode=require"),
        )],
    );
    let mut gateway = Gateway::start(world.dir(), "egtls-require", &settings).await?;
    gateway
        .wait_for("/health/ready", Duration::from_secs(30))
        .await?;
    let (status, critical) = gateway.publish(token, &achievement("player-2")).await?;
    ensure!(
        status == 202 && critical["persisted"] == true,
        "critical publish {status}: {critical}"
    );
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(&format!("{SHARED_POSTGRES}/{database}?sslmode=require"))
        .await?;
    gateway_sessions_are_tls(&pool, &database).await?;
    ensure!(
        gateway
            .logged("WARN")
            .iter()
            .any(|line| line.starts_with("PostgreSQL: TLS without checking")),
        "no warning that require does not check the certificate"
    );
    pool.close().await;
    Ok(())
}

/// Waits until every dependency reports a reason, then checks them and the status.
async fn reasons(gateway: &Gateway) -> anyhow::Result<Value> {
    let (status, report) = gateway
        .health_when(Duration::from_secs(15), |report| {
            DEPENDENCIES.iter().all(|name| has_reason(report, name))
        })
        .await?;
    ensure!(
        status == 503 && report["status"] == "degraded",
        "/health {status}: {report}"
    );
    let file = gateway
        .log
        .file_name()
        .unwrap_or_default()
        .to_string_lossy();
    let mut said = format!("{file}: /health says");
    for name in DEPENDENCIES {
        said.push_str(&format!("\n  {name}: {}", report[name]["lastError"]));
    }
    println!("{said}");
    Ok(report)
}

fn reason<'a>(report: &'a Value, name: &str) -> anyhow::Result<&'a str> {
    let health = &report[name];
    ensure!(health["connected"] == false, "{name} connected: {report}");
    health["lastError"]
        .as_str()
        .with_context(|| format!("{name} has no lastError: {report}"))
}

/// A CA that did not sign the servers' certificate: not connected, and `/health` and the
/// log (at error level) say so, naming the dependency and the setting.
pub async fn wrong_ca(world: &World) -> anyhow::Result<()> {
    let other = world.path(&world.certs.other_ca);
    let settings = with(
        all_tls(world, "egtls_wrong_ca"),
        &[
            ("AMQP_TLS_CA_FILE", other.clone()),
            ("REDIS_TLS_CA_FILE", other.clone()),
            ("DATABASE_TLS_CA_FILE", other),
        ],
    );
    let gateway = Gateway::start(world.dir(), "egtls-wrong-ca", &settings).await?;
    let report = reasons(&gateway).await?;
    for (name, setting, peer) in [
        ("rabbitMQ", "AMQP_TLS_CA_FILE", "RabbitMQ"),
        ("redis", "REDIS_TLS_CA_FILE", "Redis"),
        (
            "postgres",
            "DATABASE_TLS_CA_FILE or sslrootcert",
            "PostgreSQL",
        ),
    ] {
        let expected = format!("{UNKNOWN_ISSUER} ({setting})");
        ensure!(reason(&report, name)? == expected, "{name}: {report}");
        let line = format!("{peer}: {expected}");
        ensure!(
            gateway.logged("ERROR").contains(&line),
            "no error line {line:?}"
        );
    }
    let (status, ready) = gateway.get("/health/ready", None).await?;
    ensure!(
        status == 503 && ready["status"] == "broker_unreachable",
        "ready {status}: {ready}"
    );
    Ok(())
}

/// 127.0.0.2 reaches the same servers, but their certificate names localhost and
/// 127.0.0.1 only: the wrong host name.
pub async fn wrong_host(world: &World) -> anyhow::Result<()> {
    let settings = with(
        all_tls(world, "unused"),
        &[
            (
                "AMQP_URL",
                format!(
                    "amqps://guest:guest@127.0.0.2:{}/%2f",
                    world.rabbit_tls_port()
                ),
            ),
            ("REDIS_HOST", "127.0.0.2".into()),
            (
                "DATABASE_URL",
                format!(
                    "postgres://postgres@127.0.0.2:{}/egtls_wrong_host",
                    world.postgres.port
                ),
            ),
        ],
    );
    let gateway = Gateway::start(world.dir(), "egtls-wrong-host", &settings).await?;
    let report = reasons(&gateway).await?;
    let mismatch =
        "TLS: the server's certificate is not valid for 127.0.0.2 (it names localhost, 127.0.0.1;";
    for (name, setting) in [
        ("rabbitMQ", "the host in AMQP_URL)"),
        ("redis", "REDIS_HOST)"),
        ("postgres", "the host in DATABASE_URL)"),
    ] {
        ensure!(
            reason(&report, name)? == format!("{mismatch} {setting}"),
            "{name}: {report}"
        );
    }
    Ok(())
}

/// RabbitMQ wants a client certificate; without one the handshake is refused.
pub async fn no_client_certificate(world: &World) -> anyhow::Result<()> {
    let settings = without(
        all_tls(world, "egtls_all"),
        &["AMQP_TLS_CERT_FILE", "AMQP_TLS_KEY_FILE"],
    );
    let gateway = Gateway::start(world.dir(), "egtls-no-client-cert", &settings).await?;
    let (_, report) = gateway
        .health_when(Duration::from_secs(15), |r| has_reason(r, "rabbitMQ"))
        .await?;
    let words = reason(&report, "rabbitMQ")?;
    ensure!(
        words.starts_with("TLS: the server")
            && words.contains("client certificate")
            && words.contains("AMQP_TLS_CERT_FILE"),
        "{report}"
    );
    Ok(())
}

/// TLS asked for, plain-text ports given: no connection, never a plain-text one.
pub async fn tls_to_plain_text_ports(world: &World) -> anyhow::Result<()> {
    let settings = with(
        all_tls(world, "unused"),
        &[
            (
                "AMQP_URL",
                format!("amqps://guest:guest@127.0.0.1:{}/%2f", world.rabbit.port),
            ),
            ("REDIS_PORT", world.redis.port.to_string()),
            // And the other way round: plain text to a server that takes TLS only.
            (
                "DATABASE_URL",
                format!(
                    "postgres://postgres@127.0.0.1:{}/egtls_plain?sslmode=disable",
                    world.postgres.port
                ),
            ),
        ],
    );
    let settings = without(settings, &["DATABASE_TLS_CA_FILE"]);
    let gateway = Gateway::start(world.dir(), "egtls-plain-ports", &settings).await?;
    let report = reasons(&gateway).await?;
    let rabbit = reason(&report, "rabbitMQ")?;
    ensure!(
        rabbit.starts_with("TLS: the server did not answer in TLS"),
        "{report}"
    );
    reason(&report, "redis")?;
    let postgres = reason(&report, "postgres")?;
    ensure!(
        postgres.starts_with("the server accepts only TLS connections"),
        "{report}"
    );
    Ok(())
}

/// Plain text to the TLS ports: no connection either.
pub async fn plain_text_to_tls_ports(world: &World) -> anyhow::Result<()> {
    let settings = vec![
        (
            "AMQP_URL",
            format!(
                "amqp://guest:guest@127.0.0.1:{}/%2f",
                world.rabbit_tls_port()
            ),
        ),
        ("REDIS_HOST", "127.0.0.1".into()),
        ("REDIS_PORT", world.redis_tls_port().to_string()),
        (
            "DATABASE_URL",
            format!(
                "postgres://postgres@127.0.0.1:{}/egtls_plain",
                world.postgres.port
            ),
        ),
    ];
    let gateway = Gateway::start(world.dir(), "egtls-plain-to-tls", &settings).await?;
    let report = reasons(&gateway).await?;
    for name in DEPENDENCIES {
        reason(&report, name)?;
    }
    Ok(())
}

/// TLS settings next to a plain-text address, or a file that does not parse: the gateway
/// does not start, and says why without the URL's password.
pub async fn contradictions_refuse_to_start(world: &World) -> anyhow::Result<()> {
    let ca = world.path(&world.certs.ca);
    let plain = format!("amqp://guest:s3cret@127.0.0.1:{}/%2f", world.rabbit.port);
    let printed =
        crate::gateway::refused_start(&[("AMQP_URL", plain), ("AMQP_TLS_CA_FILE", ca.clone())])
            .await?;
    ensure!(
        printed.contains("AMQP_TLS_CA_FILE is set but AMQP_URL is amqp:// (plain text)")
            && !printed.contains("s3cret"),
        "{printed}"
    );
    let printed = crate::gateway::refused_start(&[("REDIS_TLS_CA_FILE", ca)]).await?;
    ensure!(
        printed.contains("REDIS_TLS_CA_FILE is set but REDIS_TLS is false"),
        "{printed}"
    );
    let key = world.path(&world.certs.client_key);
    let printed = crate::gateway::refused_start(&[
        (
            "AMQP_URL",
            format!(
                "amqps://guest:s3cret@127.0.0.1:{}/%2f",
                world.rabbit_tls_port()
            ),
        ),
        ("AMQP_TLS_CA_FILE", key.clone()),
    ])
    .await?;
    ensure!(
        printed.contains(&format!("AMQP_TLS_CA_FILE ({key}): no certificate in it"))
            && !printed.contains("PRIVATE KEY"),
        "{printed}"
    );
    Ok(())
}

/// The private PostgreSQL without TLS (and taking plain text): `sslmode=require` does not
/// connect, where `disable` does: no fallback.
pub async fn require_against_a_server_without_tls(world: &World) -> anyhow::Result<()> {
    let database = world.private_database("postgres").await?;
    sqlx::query("ALTER SYSTEM SET ssl = off")
        .execute(&database)
        .await?;
    let data = world.postgres.data_dir();
    std::fs::write(
        data.join("pg_hba.conf"),
        "local all all trust\nhost all all 127.0.0.1/32 trust\n",
    )?;
    sqlx::query("SELECT pg_reload_conf()")
        .execute(&database)
        .await?;
    database.close().await;
    let url = format!(
        "postgres://postgres@127.0.0.1:{}/egtls_no_tls",
        world.postgres.port
    );
    let settings = with(
        without(all_tls(world, "unused"), &["DATABASE_TLS_CA_FILE"]),
        &[("DATABASE_URL", format!("{url}?sslmode=require"))],
    );
    let gateway = Gateway::start(world.dir(), "egtls-no-fallback", &settings).await?;
    let (_, report) = gateway
        .health_when(Duration::from_secs(15), |r| has_reason(r, "postgres"))
        .await?;
    ensure!(
        reason(&report, "postgres")?
            == "TLS: the server does not offer TLS (sslmode in DATABASE_URL); not connecting in plain text",
        "{report}"
    );
    let plain = with(
        settings,
        &[("DATABASE_URL", format!("{url}?sslmode=disable"))],
    );
    let mut gateway = Gateway::start(world.dir(), "egtls-plain-works", &plain).await?;
    gateway
        .wait_for("/health/ready", Duration::from_secs(30))
        .await?;
    Ok(())
}
