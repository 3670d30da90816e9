//! The admin HTTP server on `admin.listen` (docs/http-api.md).
//!
//! `/healthz`, `/readyz` and `/metrics` are open. Everything under `/api/`
//! needs `Authorization: Bearer <token>` with the token from
//! `admin.token_env` (compared in constant time) or a console session,
//! except the DIDChecks webhook, which proves itself with its HMAC
//! signature instead ([`auth`]). Without a token configured the API is
//! open, which `serve` allows only on a loopback address. Errors are JSON
//! `{"error": "..."}` saying what to do. The operator console is served at
//! `/` ([`console`]).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};

use crate::config::Config;
use crate::lists::Lists;
use crate::metrics::Registry;
use crate::pipeline::Pipeline;
use crate::reload::Reloader;
use crate::reputation::hiya_cache::store::HiyaCache;
use crate::reputation::providers::didchecks::DidChecks;

mod api;
mod auth;
mod console;
mod events;
mod lists;
mod own;
pub mod session;
mod webhook;

pub use webhook::{WebhookStats, verify_signature};

/// The signature header DIDChecks sends.
pub const SIGNATURE_HEADER: &str = "x-huhu-signature";

/// Webhook bodies larger than this are refused before verification.
pub const MAX_WEBHOOK_BODY: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AdminError {
    #[error(
        "cannot listen on admin.listen {addr} (is another service there? change admin.listen): {source}"
    )]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(
        "admin.listen {addr} is not a loopback address and ${env} is not set: the admin API would be open to the network; set the token or listen on 127.0.0.1"
    )]
    NoToken { addr: SocketAddr, env: String },
}

/// What the admin handlers share. Only `pipeline` and `config` are needed;
/// the rest is filled in by the composition root (tests leave out what
/// they do not use).
pub struct AdminState {
    pub pipeline: Arc<Pipeline>,
    pub config: Arc<Config>,
    /// The bearer token for `/api/*`; `None` leaves the API open.
    pub token: Option<String>,
    /// HMAC key for the DIDChecks webhook; `None` refuses every delivery.
    pub webhook_secret: Option<Vec<u8>>,
    pub webhook: Arc<WebhookStats>,
    pub hiya: Option<Arc<HiyaCache>>,
    /// For the credit balance in `GET /api/v1/cache`.
    pub didchecks: Option<Arc<DidChecks>>,
    /// What `/metrics` reports: the pipeline and the webhook from
    /// [`AdminState::new`], the rest added by whoever runs the proxy.
    pub metrics: Registry,
    pub reloader: Option<Reloader>,
    /// The runtime lists and reports; `None` answers their routes 503.
    pub lists: Option<Arc<Lists>>,
    /// Console logins.
    pub sessions: session::Sessions,
    /// Clients of `GET /api/v1/events` now (at most `admin.event_clients`).
    pub event_clients: std::sync::atomic::AtomicUsize,
    /// Where the history is read from (`history.backend`).
    pub history: crate::history::HistoryStore,
    /// The next hops and their health; `None` answers their route 503.
    pub next_hops: Option<Arc<crate::sip::next_hop::NextHops>>,
    /// The own numbers and their results; `None` when `[own_numbers]`
    /// names none.
    pub own: Option<Arc<crate::own::Monitor>>,
}

impl std::fmt::Debug for AdminState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the token or the webhook secret.
        f.debug_struct("AdminState").finish_non_exhaustive()
    }
}

impl AdminState {
    /// State with the secrets read from the environment variables the
    /// config names.
    pub fn new(config: Arc<Config>, pipeline: Arc<Pipeline>) -> Self {
        let history = crate::history::HistoryStore::Sqlite(config.history.path.clone());
        let env = |name: &str| std::env::var(name).ok().filter(|s| !s.is_empty());
        let webhook = Arc::new(WebhookStats::default());
        let mut metrics = Registry::default();
        metrics.register(Arc::clone(&pipeline) as _);
        metrics.register(Arc::clone(&webhook) as _);
        AdminState {
            token: env(&config.admin.token_env),
            webhook_secret: env(&config.providers.didchecks.webhook_secret_env)
                .map(String::into_bytes),
            pipeline,
            config,
            webhook,
            hiya: None,
            didchecks: None,
            metrics,
            reloader: None,
            lists: None,
            sessions: session::Sessions::default(),
            event_clients: Default::default(),
            history,
            next_hops: None,
            own: None,
        }
    }
}

/// Refuses a network-facing API without a token (checked by `config check`
/// too).
pub fn check_exposure(config: &Config) -> Result<(), AdminError> {
    let addr = config.admin.listen;
    let has_token = std::env::var(&config.admin.token_env).is_ok_and(|t| !t.is_empty());
    if !addr.ip().is_loopback() && !has_token {
        return Err(AdminError::NoToken {
            addr,
            env: config.admin.token_env.clone(),
        });
    }
    Ok(())
}

/// Binds `admin.listen`, refusing a network-facing API without a token.
pub async fn bind(config: &Config) -> Result<tokio::net::TcpListener, AdminError> {
    check_exposure(config)?;
    let addr = config.admin.listen;
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| AdminError::Bind { addr, source })
}

/// A JSON error body: `{"error": message}`.
pub(crate) fn json_error(status: StatusCode, message: &str) -> Response {
    (status, axum::Json(serde_json::json!({ "error": message }))).into_response()
}

/// `GET /readyz`: 503 while a country of the Hiya cache has no intact
/// generation (calls are screened without it), else 200.
async fn readyz(State(state): State<Arc<AdminState>>) -> Response {
    let missing = state
        .hiya
        .as_ref()
        .map(|h| h.unavailable())
        .unwrap_or_default();
    if missing.is_empty() {
        return "ready\n".into_response();
    }
    json_error(
        StatusCode::SERVICE_UNAVAILABLE,
        &format!(
            "no intact Hiya cache generation for {}: calls are screened without it; run `sipsentry cache import` or `cache sync`",
            missing.join(", ")
        ),
    )
}

pub fn router(state: Arc<AdminState>) -> Router {
    let api = Router::new()
        .route("/api/v1/check/{number}", get(api::check))
        .route("/api/v1/history", get(api::history))
        .route("/api/v1/history/export", get(api::export))
        .route("/api/v1/cache", get(api::cache))
        .route("/api/v1/cache/sync", post(api::cache_sync))
        .route("/api/v1/reload", post(api::reload))
        .route("/api/v1/next-hops", get(api::next_hops))
        .route("/api/v1/lists/{list}", get(lists::show).post(lists::add))
        .route("/api/v1/lists/{list}/{pattern}", delete(lists::remove))
        .route("/api/v1/feedback", get(lists::reports).post(lists::report))
        .route("/api/v1/events", get(events::stream))
        .route("/api/v1/own", get(own::view))
        .route("/api/v1/own/{number}", get(own::results))
        .route_layer(middleware::from_fn_with_state(
            Arc::clone(&state),
            auth::require_token,
        ));
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(api::metrics))
        .route(
            "/api/v1/webhooks/didchecks",
            post(webhook::didchecks_webhook),
        )
        .merge(api)
        .merge(console::router(Arc::clone(&state)))
        .fallback(|| async {
            json_error(
                StatusCode::NOT_FOUND,
                "no such route; the admin API is described in docs/http-api.md",
            )
        })
        .with_state(state)
}

/// Serves until `shutdown` completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: Arc<AdminState>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    if let Err(e) = axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await
    {
        tracing::error!(error = %e, "admin server stopped");
    }
}
