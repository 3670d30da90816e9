//! What each DIDChecks webhook event does, once its signature has been
//! checked:
//!
//! - `spam_status_changed`: the new score goes into the live cache (every
//!   node's, in a cluster), and is kept as a result when the number is one
//!   of our own;
//! - `routine_check_completed`: a routine's result, kept as an own-number
//!   result;
//! - `routine_check_failed`: counted, and logged with its reason;
//! - `credits_low` / `credits_depleted`: the balance gauge set, a warning
//!   logged once (not per retry) until the balance is seen healthy again.
//!
//! The payload of each is read leniently: the documented
//! `data.currentStatus` of a status change, or the same fields directly in
//! `data`, or under `status` / `result`.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use serde::Deserialize;

use super::WebhookEvent;
use crate::admin::AdminState;
use crate::own::{Origin, OwnResult, Provider};
use crate::reputation::providers::clamp_score;
use crate::reputation::{Evidence, Source};

/// DIDChecks sends `credits_low` below this many checks (documented: 5).
pub const LOW_CREDITS: i64 = 5;

/// What a handler answers: the text of the 200, or why the body is refused.
pub(super) type Handled = Result<&'static str, String>;

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct Status {
    is_spam: Option<bool>,
    spam_score: Option<f64>,
    spam_type: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct Payload {
    phone_number: Option<String>,
    routine_id: Option<String>,
    #[serde(alias = "status", alias = "result")]
    current_status: Option<Status>,
    #[serde(flatten)]
    flat: Status,
    balance: Option<i64>,
}

impl Payload {
    fn read(event: &WebhookEvent) -> Result<Payload, String> {
        serde_json::from_value(event.data.clone()).map_err(|e| {
            format!(
                "{} with a data object that cannot be read: {e}",
                event.event
            )
        })
    }

    /// The number and its status, or why the event lacks them.
    fn status(&self, event: &str) -> Result<(&str, &Status, f64), String> {
        let number = self
            .phone_number
            .as_deref()
            .ok_or_else(|| format!("{event} without data.phoneNumber"))?;
        let status = self.current_status.as_ref().unwrap_or(&self.flat);
        let score = status
            .spam_score
            .filter(|s| s.is_finite())
            .ok_or_else(|| format!("{event} without data.currentStatus.spamScore"))?;
        Ok((number, status, score))
    }
}

/// The event's time (its `timestamp`), or now.
fn time_ms(event: &WebhookEvent) -> i64 {
    event
        .timestamp
        .as_deref()
        .and_then(|t| t.parse::<jiff::Timestamp>().ok())
        .unwrap_or_else(jiff::Timestamp::now)
        .as_millisecond()
}

/// Keeps a DIDChecks result for an own number; false when no own numbers
/// are configured.
async fn keep(state: &AdminState, event: &WebhookEvent, p: &Payload) -> Result<bool, String> {
    let Some(monitor) = state.own.clone() else {
        return Ok(false);
    };
    let (number, status, score) = p.status(&event.event)?;
    let score = f64::from(clamp_score(score));
    let spam = status.is_spam.unwrap_or(score >= 50.0);
    let result = OwnResult {
        number: number.to_string(),
        provider: Provider::DidChecks,
        time_ms: time_ms(event),
        status: if spam { "spam" } else { "clean" }.to_string(),
        value: Some(score),
        report_card: None,
        detail: status.spam_type.clone().or_else(|| p.routine_id.clone()),
        origin: Origin::Webhook,
    };
    let own = monitor.is_own(number);
    let m = Arc::clone(&monitor);
    tokio::task::spawn_blocking(move || m.record(result))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| {
            tracing::error!(error = %e, "DIDChecks result not stored");
            e.to_string()
        })?;
    if own {
        monitor.count(Provider::DidChecks, "ok");
    }
    Ok(own)
}

pub(super) async fn status_changed(state: &AdminState, event: &WebhookEvent) -> Handled {
    let p = Payload::read(event)?;
    let (number, status, score) = p.status(&event.event)?;
    state.webhook.status_changes.fetch_add(1, Ordering::Relaxed);
    let own = keep(state, event, &p).await?;
    let live = state.pipeline.live();
    let Some(index) = live.cache().source_index("didchecks") else {
        tracing::info!(%number, own, "DIDChecks status change; the provider is not enabled for screening, so no live cache update");
        return Ok("ok (didchecks not enabled)");
    };
    let evidence = Evidence {
        source: Source::DidChecks,
        score: clamp_score(score),
        category: status.spam_type.clone(),
        cached: false,
        latency_us: 0,
        raw: serde_json::json!({ "webhook": "spam_status_changed", "data": event.data }).into(),
    };
    // In a cluster the update reaches every node's live cache.
    live.update(index, number, evidence).await;
    tracing::info!(
        %number,
        is_spam = ?status.is_spam,
        score,
        own,
        "DIDChecks status change applied to the live cache"
    );
    Ok("ok")
}

pub(super) async fn routine_completed(state: &AdminState, event: &WebhookEvent) -> Handled {
    let p = Payload::read(event)?;
    let (number, _, score) = p.status(&event.event)?;
    state
        .webhook
        .routine_results
        .fetch_add(1, Ordering::Relaxed);
    match keep(state, event, &p).await? {
        true => {
            tracing::info!(%number, score, "DIDChecks routine result kept");
            Ok("ok")
        }
        false if state.own.is_some() => {
            tracing::info!(%number, "DIDChecks routine result for a number not in own_numbers; kept, not shown");
            Ok("ok (not an own number)")
        }
        false => Ok("ok (no own_numbers configured)"),
    }
}

pub(super) fn routine_failed(state: &AdminState, event: &WebhookEvent) -> Handled {
    // Read field by field: a failure's payload is the least documented,
    // and it must be counted whatever shape it has.
    let text = |keys: &[&str]| {
        keys.iter()
            .find_map(|k| event.data.get(*k))
            .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_string))
    };
    state
        .webhook
        .routine_failures
        .fetch_add(1, Ordering::Relaxed);
    if let Some(m) = &state.own {
        m.count(Provider::DidChecks, "routine_failed");
    }
    let reason = text(&["reason", "error", "message"]).unwrap_or_else(|| "no reason given".into());
    tracing::warn!(
        number = text(&["phoneNumber"]).as_deref().unwrap_or("?"),
        routine = text(&["routineId"]).as_deref().unwrap_or("?"),
        %reason,
        "DIDChecks routine check failed"
    );
    Ok("ok")
}

pub(super) fn credits(state: &AdminState, event: &WebhookEvent, depleted: bool) -> Handled {
    let p = Payload::read(event)?;
    let hooks = &state.webhook;
    hooks.credits_events.fetch_add(1, Ordering::Relaxed);
    let balance = p.balance.or(depleted.then_some(0));
    if let Some(dc) = &state.didchecks {
        if dc.last_balance().is_some_and(|b| b >= LOW_CREDITS) {
            // Topped up since the last warning: warn again next time.
            hooks.warned_low.store(false, Ordering::Relaxed);
            hooks.warned_depleted.store(false, Ordering::Relaxed);
        }
        if let Some(b) = balance {
            dc.record_balance(b);
        }
    }
    let flag = if depleted {
        &hooks.warned_depleted
    } else {
        &hooks.warned_low
    };
    if !flag.swap(true, Ordering::Relaxed) {
        if depleted {
            tracing::warn!(
                balance = ?balance,
                "DIDChecks credits depleted: lookups and routine checks stop until the account is topped up"
            );
        } else {
            tracing::warn!(
                balance = ?balance,
                "DIDChecks credits low (under {LOW_CREDITS} checks); top up the account"
            );
        }
    }
    Ok("ok")
}
