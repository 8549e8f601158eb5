//! The HTTP edge, transport only: routes, extractors, errors and middleware. A handler
//! parses, authorises, calls one function of the application ([`crate::app::App`]) and
//! maps its result to an answer; it never reaches an adapter.

pub mod admission;
pub mod batch;
pub mod dead_letters;
pub mod doc_schemas;
pub mod docs;
pub mod document;
pub mod error;
pub mod events;
pub mod examples;
pub mod extract;
pub mod health;
pub mod idempotency;
pub mod middleware;
pub mod paging;
pub mod reads;
pub mod responses;
pub mod schemas;
pub mod server;
pub mod webhooks;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::http::header;
use axum::middleware::from_fn_with_state;
use axum::response::IntoResponse;
use axum::routing::get;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_swagger_ui::{Config, SwaggerUi};

use self::error::ApiError;
use crate::app::App;
use crate::auth::TokenVerifier;
use crate::config::Settings;
use crate::domain::webhook::WebhookSecrets;
use crate::runtime::metrics::Metrics;

/// Largest request body; larger ones are answered 413.
pub const MAX_BODY_BYTES: usize = 256 * 1024;

/// What every handler can reach.
pub struct Dependencies {
    pub app: App,
    pub verifier: Arc<TokenVerifier>,
    pub metrics: Arc<Metrics>,
    pub webhooks: WebhookSecrets,
    pub body_read_timeout: Duration,
    /// The AsyncAPI document of the bus, served at `/asyncapi.json`.
    pub asyncapi: String,
}

/// The handlers' state: one pointer, so the clone every request makes is one increment.
#[derive(Clone)]
pub struct AppState(Arc<Dependencies>);

impl AppState {
    pub fn new(dependencies: Dependencies) -> Self {
        AppState(Arc::new(dependencies))
    }
}

impl std::ops::Deref for AppState {
    type Target = Dependencies;

    fn deref(&self) -> &Dependencies {
        &self.0
    }
}

/// Every documented route, before state is attached.
fn api() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(docs::ApiDoc::openapi())
        .merge(events::router())
        .merge(webhooks::router())
        .merge(reads::router())
        .merge(dead_letters::router())
        .merge(schemas::router())
        .merge(health::router())
}

/// The OpenAPI document, with its examples.
pub fn openapi() -> utoipa::openapi::OpenApi {
    let mut document = api().into_openapi();
    examples::add_examples(&mut document);
    document
}

/// The document as served at `/openapi.json` and committed as `openapi/openapi.json`.
pub fn openapi_json() -> serde_json::Result<String> {
    document::render(&openapi())
}

/// The whole application: API, Swagger UI at `/docs`, the documents at `/openapi.json`
/// and `/asyncapi.json`.
pub fn router(state: AppState, settings: &Settings) -> serde_json::Result<Router> {
    let document = openapi_json()?;
    let (api, _) = api().split_for_parts();
    let asyncapi = state.asyncapi.clone();
    let metrics = state.metrics.clone();
    let swagger = SwaggerUi::new("/docs").config(
        Config::from("/openapi.json")
            .try_it_out_enabled(true)
            .persist_authorization(true),
    );
    let app = api
        .with_state(state.clone())
        .route(
            "/openapi.json",
            get(move || serve_document(document.clone())),
        )
        .route(
            "/asyncapi.json",
            get(move || serve_document(asyncapi.clone())),
        )
        .merge(swagger)
        .fallback(|| async { ApiError::NotFound })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(from_fn_with_state(state, admission::admit));
    Ok(middleware::apply(
        app,
        metrics,
        settings.request_timeout,
        MAX_BODY_BYTES,
        &settings.cors_origins,
        settings.max_header_bytes as usize,
    ))
}

async fn serve_document(document: String) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], document)
}
