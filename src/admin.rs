//! The admin HTTP server on `admin.listen` (DESIGN.md §7).
//!
//! Health probes and the DIDChecks webhook live here. The webhook is open (the
//! provider cannot send our bearer token) but every request must carry
//! `X-HUHU-Signature: sha256=<hex HMAC-SHA256 of the raw body>`, checked in
//! constant time before the body is even parsed; a bad or missing signature
//! gets 401 and changes nothing.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use hmac::{Hmac, KeyInit, Mac};
use serde::Deserialize;
use sha2::Sha256;

use crate::config::Config;
use crate::pipeline::Pipeline;
use crate::reputation::{Evidence, Source};

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

/// Webhook counters, by what happened.
#[derive(Debug, Default)]
pub struct WebhookStats {
    pub status_changes: AtomicU64,
    pub other_events: AtomicU64,
    pub bad_signatures: AtomicU64,
    pub malformed: AtomicU64,
}

/// What the admin handlers share.
pub struct AdminState {
    pub pipeline: Arc<Pipeline>,
    /// HMAC key for the DIDChecks webhook; `None` refuses every delivery.
    pub webhook_secret: Option<Vec<u8>>,
    pub webhook_secret_env: String,
    pub webhook: WebhookStats,
}

impl AdminState {
    pub fn new(config: &Config, pipeline: Arc<Pipeline>) -> Self {
        let env = &config.providers.didchecks.webhook_secret_env;
        AdminState {
            pipeline,
            webhook_secret: std::env::var(env)
                .ok()
                .filter(|s| !s.is_empty())
                .map(String::into_bytes),
            webhook_secret_env: env.clone(),
            webhook: WebhookStats::default(),
        }
    }
}

/// Binds `admin.listen`, refusing a network-facing API without a token.
pub async fn bind(config: &Config) -> Result<tokio::net::TcpListener, AdminError> {
    let addr = config.admin.listen;
    let has_token = std::env::var(&config.admin.token_env).is_ok_and(|t| !t.is_empty());
    if !addr.ip().is_loopback() && !has_token {
        return Err(AdminError::NoToken {
            addr,
            env: config.admin.token_env.clone(),
        });
    }
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| AdminError::Bind { addr, source })
}

pub fn router(state: Arc<AdminState>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(|| async { "ready\n" }))
        .route("/api/v1/webhooks/didchecks", post(didchecks_webhook))
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

/// Verifies `sha256=<hex>` over `body`, in constant time.
pub fn verify_signature(secret: &[u8], header: Option<&str>, body: &[u8]) -> bool {
    let Some(hex_sig) = header.and_then(|h| h.trim().strip_prefix("sha256=")) else {
        return false;
    };
    let Ok(sig) = hex::decode(hex_sig.trim()) else {
        return false;
    };
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret) else {
        return false;
    };
    mac.update(body);
    mac.verify_slice(&sig).is_ok()
}

#[derive(Debug, Deserialize)]
struct WebhookEvent {
    event: String,
    #[serde(default)]
    data: serde_json::Value,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct StatusChanged {
    phone_number: String,
    current_status: CurrentStatus,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct CurrentStatus {
    #[serde(default)]
    is_spam: Option<bool>,
    spam_score: f64,
    #[serde(default)]
    spam_type: Option<String>,
}

fn json_error(status: StatusCode, message: &str) -> Response {
    (status, axum::Json(serde_json::json!({ "error": message }))).into_response()
}

async fn didchecks_webhook(
    State(state): State<Arc<AdminState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(secret) = &state.webhook_secret else {
        return json_error(
            StatusCode::SERVICE_UNAVAILABLE,
            &format!(
                "webhook secret not configured: set ${} to the DIDChecks webhook secret",
                state.webhook_secret_env
            ),
        );
    };
    if body.len() > MAX_WEBHOOK_BODY {
        return json_error(StatusCode::PAYLOAD_TOO_LARGE, "webhook body too large");
    }
    let header = headers.get(SIGNATURE_HEADER).and_then(|v| v.to_str().ok());
    if !verify_signature(secret, header, &body) {
        state.webhook.bad_signatures.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(
            present = header.is_some(),
            "DIDChecks webhook refused: bad or missing X-HUHU-Signature"
        );
        return json_error(
            StatusCode::UNAUTHORIZED,
            "X-HUHU-Signature missing or not the HMAC-SHA256 of this body",
        );
    }
    let event: WebhookEvent = match serde_json::from_slice(&body) {
        Ok(e) => e,
        Err(e) => {
            state.webhook.malformed.fetch_add(1, Ordering::Relaxed);
            return json_error(
                StatusCode::BAD_REQUEST,
                &format!("not a webhook event: {e}"),
            );
        }
    };
    if event.event != "spam_status_changed" {
        state.webhook.other_events.fetch_add(1, Ordering::Relaxed);
        tracing::info!(event = %event.event, "DIDChecks webhook event");
        return (StatusCode::OK, "ok\n").into_response();
    }
    let changed: StatusChanged = match serde_json::from_value(event.data.clone()) {
        Ok(c) => c,
        Err(e) => {
            state.webhook.malformed.fetch_add(1, Ordering::Relaxed);
            return json_error(
                StatusCode::BAD_REQUEST,
                &format!("spam_status_changed without phoneNumber/currentStatus.spamScore: {e}"),
            );
        }
    };
    let cache = state.pipeline.live().cache();
    let Some(index) = cache.source_index("didchecks") else {
        state.webhook.other_events.fetch_add(1, Ordering::Relaxed);
        tracing::info!("DIDChecks webhook received but the provider is not enabled; ignored");
        return (StatusCode::OK, "ok (didchecks not enabled)\n").into_response();
    };
    let status = &changed.current_status;
    let evidence = Evidence {
        source: Source::DidChecks,
        score: crate::reputation::providers::clamp_score(status.spam_score),
        category: status.spam_type.clone(),
        cached: false,
        latency_us: 0,
        raw: serde_json::json!({ "webhook": "spam_status_changed", "data": event.data }).into(),
    };
    cache.put(index, &changed.phone_number, Some(evidence));
    state.webhook.status_changes.fetch_add(1, Ordering::Relaxed);
    tracing::info!(
        number = %changed.phone_number,
        is_spam = ?status.is_spam,
        score = status.spam_score,
        "DIDChecks status change applied to the live cache"
    );
    (StatusCode::OK, "ok\n").into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_verifies_only_the_exact_body_and_key() {
        // Computed outside this code:
        //   printf '{"a":1}' | openssl dgst -sha256 -hmac s3cret
        let good = "sha256=5910e62016ef5034272c926c27071992a465c2335cecf41851bda071577f4f6d";
        let truncated = &good[..good.len() - 2];
        assert!(verify_signature(b"s3cret", Some(good), br#"{"a":1}"#));
        assert!(!verify_signature(b"s3cret", Some(good), br#"{"a":2}"#));
        assert!(!verify_signature(b"other", Some(good), br#"{"a":1}"#));
        assert!(!verify_signature(b"s3cret", Some(truncated), br#"{"a":1}"#));
        assert!(!verify_signature(b"s3cret", None, br#"{"a":1}"#));
        assert!(!verify_signature(
            b"s3cret",
            Some("sha256=zz"),
            br#"{"a":1}"#
        ));
    }
}
