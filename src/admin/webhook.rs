//! `POST /api/v1/webhooks/didchecks`: open (DIDChecks cannot send our bearer
//! token), but every delivery must carry `X-HUHU-Signature: sha256=<hex
//! HMAC-SHA256 of the raw body>`, checked in constant time before the body is
//! parsed. A bad or missing signature gets 401 and changes nothing.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use hmac::{Hmac, KeyInit, Mac};
use serde::Deserialize;
use sha2::Sha256;

use super::{AdminState, MAX_WEBHOOK_BODY, SIGNATURE_HEADER, json_error};
use crate::reputation::{Evidence, Source};

/// Webhook counters, by what happened.
#[derive(Debug, Default)]
pub struct WebhookStats {
    pub status_changes: AtomicU64,
    pub other_events: AtomicU64,
    pub bad_signatures: AtomicU64,
    pub malformed: AtomicU64,
}

impl crate::metrics::Collect for WebhookStats {
    fn collect(&self, out: &mut crate::metrics::Scrape) {
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let f = out.counter(
            "sipsentry_webhook_events",
            "DIDChecks webhook deliveries by result",
        );
        for (result, n) in [
            ("status_change", &self.status_changes),
            ("other_event", &self.other_events),
            ("bad_signature", &self.bad_signatures),
            ("malformed", &self.malformed),
        ] {
            f.count(vec![("result", result.to_string())], load(n));
        }
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

pub(super) async fn didchecks_webhook(
    State(state): State<Arc<AdminState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(secret) = &state.webhook_secret else {
        return json_error(
            StatusCode::SERVICE_UNAVAILABLE,
            &format!(
                "webhook secret not configured: set ${} to the DIDChecks webhook secret",
                state.config.providers.didchecks.webhook_secret_env
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
    let live = state.pipeline.live();
    let Some(index) = live.cache().source_index("didchecks") else {
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
    // In a cluster the update reaches every node's live cache.
    live.update(index, &changed.phone_number, evidence).await;
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
