//! The command line: parse it, load settings, call the library.

use std::process::ExitCode;
use std::time::Duration;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use event_gateway::auth::TokenSigner;
use event_gateway::config::{LogFormat, Settings};
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

/// Publishes authenticated, validated gamification events to RabbitMQ.
///
/// Every setting is an environment variable (or the matching flag); the list below shows
/// each with its default.
#[derive(Debug, Parser)]
#[command(name = "event-gateway", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    settings: Settings,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the gateway (the default).
    Serve,
    /// Print a JWT signed with the configured key.
    Token {
        /// The token's subject: a service name, or the player id for player tokens.
        #[arg(long)]
        sub: String,
        /// Space-separated scopes, e.g. "events:publish" or "events:publish:self".
        #[arg(long)]
        scope: String,
        /// How long the token is valid, e.g. 15m, 1h, 7d.
        #[arg(long, default_value = "1h", value_parser = event_gateway::auth::parse_ttl, allow_hyphen_values = true)]
        ttl: Duration,
    },
    /// Print the OpenAPI document.
    Openapi,
    /// Print the AsyncAPI document of the bus (for the configured exchange and queues).
    Asyncapi,
    /// Create the database if missing and apply the migrations, then exit.
    Migrate,
    /// Decrypt the sealed fields of events: one JSON event (as it is on the bus or in the
    /// database) per line on stdin, each printed opened, with SENSITIVE_FIELDS and
    /// ENCRYPTION_KEYS.
    Decrypt,
}

/// glibc's allocator was ~12 % of the gateway's CPU under load (BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::from_arg_matches(&command().get_matches()).unwrap_or_else(|error| error.exit());
    let outcome = match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => serve(cli.settings),
        Command::Token { sub, scope, ttl } => TokenSigner::from_settings(&cli.settings)
            .and_then(|signer| signer.mint(&sub, &scope, ttl))
            .map(|token| println!("{token}")),
        Command::Migrate => cli.settings.database_endpoint().and_then(|database| {
            tokio::runtime::Runtime::new()
                .map_err(anyhow::Error::from)
                .and_then(|runtime| {
                    runtime.block_on(event_gateway::store::migrate(database.url.expose()))
                })
        }),
        Command::Decrypt => decrypt(&cli.settings),
        Command::Openapi => event_gateway::http::openapi_json()
            .map(|json| println!("{json}"))
            .map_err(anyhow::Error::from),
        Command::Asyncapi => event_gateway::asyncapi_json(&cli.settings)
            .map(|json| println!("{json}"))
            .map_err(anyhow::Error::from),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("event-gateway: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// The command line. Every setting is global, so `event-gateway serve --http-addr …` works,
/// and clap would list all of them under every command: `token --help` shows only its own
/// options and the settings minting reads (the `jwt_*` ones).
fn command() -> clap::Command {
    let command = Cli::command();
    // Building copies each global argument into every subcommand that has none of its name,
    // so `token` gets hidden copies of the others first (parsed and propagated as before).
    let unused: Vec<clap::Arg> = command
        .get_arguments()
        .filter(|arg| arg.is_global_set() && !arg.get_id().as_str().starts_with("jwt_"))
        .map(|arg| arg.clone().hide(true))
        .collect();
    command.mut_subcommand("token", |token| token.args(unused))
}

fn serve(settings: Settings) -> anyhow::Result<()> {
    init_logging(&settings)?;
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(settings.http_addr)
            .await
            .map_err(|e| anyhow::anyhow!("HTTP_ADDR {}: {e}", settings.http_addr))?;
        let shutdown = CancellationToken::new();
        tokio::spawn(stop_on_signal(shutdown.clone()));
        event_gateway::run(listener, settings, shutdown).await
    })
}

fn decrypt(settings: &Settings) -> anyhow::Result<()> {
    let sealer = settings
        .sealer()
        .ok_or_else(|| anyhow::anyhow!("set SENSITIVE_FIELDS and ENCRYPTION_KEYS"))?;
    for line in std::io::stdin().lines() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let mut event: serde_json::Value = serde_json::from_str(&line)?;
        sealer.open_event(&mut event)?;
        println!("{event}");
    }
    Ok(())
}

/// Log lines to stdout (each with the `trace_id` of its request or message), and spans to
/// OTLP when OTEL_EXPORTER_OTLP_ENDPOINT is set.
fn init_logging(settings: &Settings) -> anyhow::Result<()> {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::{Layer, fmt};

    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let logs = match settings.log_format {
        LogFormat::Json => fmt::layer().json().with_current_span(true).boxed(),
        LogFormat::Text => fmt::layer().boxed(),
    };
    let export = settings
        .otel_exporter_otlp_endpoint
        .as_deref()
        .map(event_gateway::runtime::telemetry::otlp_layer)
        .transpose()?;
    tracing_subscriber::registry()
        .with(filter)
        .with(logs)
        .with(export)
        .try_init()?;
    Ok(())
}

/// Cancels `shutdown` on Ctrl+C or SIGTERM.
async fn stop_on_signal(shutdown: CancellationToken) {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        () = terminate => {}
    }
    tracing::info!("shutting down: finishing requests in flight");
    shutdown.cancel();
}
