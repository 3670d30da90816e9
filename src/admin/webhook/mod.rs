//! `POST /api/v1/webhooks/didchecks`: open (DIDChecks cannot send our bearer
//! token), but every delivery must carry `X-HUHU-Signature: sha256=<hex
//! HMAC-SHA256 of the raw body>`, checked in constant time before the body is
//! parsed. A bad or missing signature gets 401 and changes nothing. What
//! each event type does is in [`events`].

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use hmac::{Hmac, KeyInit, Mac};
use serde::Deserialize;
use sha2::Sha256;

use super::{AdminState, MAX_WEBHOOK_BODY, SIGNATURE_HEADER, json_error};

mod events;

/// Webhook counters, by what happened.
#[derive(Debug, Default)]
pub struct WebhookStats {
    pub status_changes: AtomicU64,
    /// `routine_check_completed` deliveries.
    pub routine_results: AtomicU64,
    /// `routine_check_failed` deliveries.
    pub routine_failures: AtomicU64,
    /// `credits_low` and `credits_depleted` deliveries.
    pub credits_events: AtomicU64,
    pub other_events: AtomicU64,
    pub bad_signatures: AtomicU64,
    pub malformed: AtomicU64,
    /// Whether the low / depleted credit warning was logged since the
    /// balance was last seen healthy (it is logged once, not per retry).
    warned_low: AtomicBool,
    warned_depleted: AtomicBool,
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
            ("routine_result", &self.routine_results),
            ("routine_failed", &self.routine_failures),
            ("credits", &self.credits_events),
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
    /// RFC 3339; the time of a routine's result when given.
    #[serde(default)]
    timestamp: Option<String>,
    #[serde(default)]
    data: serde_json::Value,
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
    let handled = match event.event.as_str() {
        "spam_status_changed" => events::status_changed(&state, &event).await,
        "routine_check_completed" => events::routine_completed(&state, &event).await,
        "routine_check_failed" => events::routine_failed(&state, &event),
        "credits_low" => events::credits(&state, &event, false),
        "credits_depleted" => events::credits(&state, &event, true),
        other => {
            state.webhook.other_events.fetch_add(1, Ordering::Relaxed);
            tracing::info!(event = %other, "DIDChecks webhook event of a type not handled; ignored");
            Ok("ok (event type not handled)")
        }
    };
    match handled {
        Ok(text) => (StatusCode::OK, format!("{text}\n")).into_response(),
        Err(message) => {
            state.webhook.malformed.fetch_add(1, Ordering::Relaxed);
            json_error(StatusCode::BAD_REQUEST, &message)
        }
    }
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
