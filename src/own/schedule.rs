//! Scheduled Hiya status checks of the own numbers.
//!
//! `serve` checks every number once per `check_every_hours`: a number is due
//! when its last answer is that old (or it has none), so a restart does not
//! check everything again. Requests are spaced at `requests_per_second` with
//! ±50 % jitter, and each number's next check is pushed back by up to 5 % of
//! the period, so a large block does not stay bunched up. Failures are
//! handled as the live providers handle them: 429 waits for `Retry-After`
//! (or a doubling backoff) and retries the number; failures that mean the
//! provider is unwell (401, 5xx, timeouts…) count against a circuit breaker
//! that pauses the checks for [`OPEN_FOR`]; a failure about one number
//! (400, a malformed answer) is logged and the round goes on.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use crate::reputation::SourceError;
use crate::reputation::breaker::{Breaker, OPEN_FOR};
use crate::reputation::providers::hiya_status::HiyaStatus;

use super::{Monitor, NOT_REGISTERED, Origin, OwnResult, Provider, hiya_level};

/// A number whose check failed is tried again after this long (or the
/// period, if shorter).
pub const RETRY_FAILED: Duration = Duration::from_secs(10 * 60);

/// 429 without `Retry-After`: the first wait, doubled up to [`MAX_BACKOFF`].
pub const FIRST_BACKOFF: Duration = Duration::from_secs(1);
pub const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// How many 429s in a row one number may get before the round moves on.
pub const MAX_RATE_LIMITED: u32 = 5;

/// How a round waits when the breaker is open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WhenOpen {
    /// Wait for the probe (`serve`).
    Wait,
    /// Stop the round (`own status --refresh`: a person is waiting).
    Stop,
}

/// What one round did.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Round {
    /// Numbers answered (a status or "not registered").
    pub checked: Vec<String>,
    /// Numbers that were not, with the last error.
    pub failed: Vec<(String, SourceError)>,
}

/// A random fraction in [0, 1).
fn unit() -> f64 {
    (getrandom::u64().unwrap_or(0) >> 11) as f64 / (1u64 << 53) as f64
}

/// The result of one Hiya answer.
fn result_of(
    number: &str,
    answer: Option<crate::reputation::providers::hiya_status::Reputation>,
    origin: Origin,
) -> OwnResult {
    let time_ms = jiff::Timestamp::now().as_millisecond();
    match answer {
        Some(rep) => OwnResult {
            number: number.to_string(),
            provider: Provider::HiyaStatus,
            time_ms,
            status: rep.status.as_str().to_string(),
            value: Some(hiya_level(rep.status)),
            report_card: serde_json::to_value(&rep.report_card).ok(),
            detail: None,
            origin,
        },
        None => OwnResult {
            number: number.to_string(),
            provider: Provider::HiyaStatus,
            time_ms,
            status: NOT_REGISTERED.to_string(),
            value: None,
            report_card: None,
            detail: None,
            origin,
        },
    }
}

async fn keep(monitor: &Arc<Monitor>, result: OwnResult) {
    let m = Arc::clone(monitor);
    let number = result.number.clone();
    match tokio::task::spawn_blocking(move || m.record(result)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::error!(%number, error = %e, "own-number result not stored"),
        Err(e) => tracing::error!(%number, error = %e, "own-number result not stored"),
    }
}

/// Checks `numbers` once with Hiya, in order, at most `rate` per second.
pub async fn round(
    monitor: &Arc<Monitor>,
    client: &HiyaStatus,
    breaker: &Breaker,
    numbers: &[String],
    rate: f64,
    origin: Origin,
    when_open: WhenOpen,
) -> Round {
    let spacing = Duration::from_secs_f64(1.0 / rate.max(0.001));
    let mut out = Round::default();
    let mut backoff = FIRST_BACKOFF;
    for (i, number) in numbers.iter().enumerate() {
        let mut limited = 0;
        loop {
            while !breaker.allow() {
                if when_open == WhenOpen::Stop {
                    let e = SourceError::CircuitOpen {
                        provider: "hiya-status",
                    };
                    out.failed
                        .extend(numbers[i..].iter().map(|n| (n.clone(), e.clone())));
                    return out;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            let answer = client.reputation(number).await;
            match answer {
                Ok(rep) => {
                    breaker.success();
                    backoff = FIRST_BACKOFF;
                    let r = result_of(number, rep, origin);
                    let outcome = if r.status == NOT_REGISTERED {
                        NOT_REGISTERED
                    } else {
                        "ok"
                    };
                    monitor.count(Provider::HiyaStatus, outcome);
                    keep(monitor, r).await;
                    out.checked.push(number.clone());
                }
                Err(SourceError::RateLimited { retry_after, .. }) if limited < MAX_RATE_LIMITED => {
                    limited += 1;
                    monitor.count(Provider::HiyaStatus, "rate_limited");
                    let wait = retry_after.unwrap_or(backoff);
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    tracing::info!(%number, wait_s = wait.as_secs_f64(), "Hiya status rate-limited own-number checks (429); waiting");
                    tokio::time::sleep(wait).await;
                    continue;
                }
                Err(e) => {
                    monitor.count(Provider::HiyaStatus, e.kind());
                    if e.trips_breaker() && breaker.failure() {
                        tracing::warn!(error = %e, pause_s = OPEN_FOR.as_secs(), "own-number checks paused: the Hiya status provider keeps failing");
                    } else {
                        tracing::warn!(%number, error = %e, "own-number check failed; the others go on");
                    }
                    out.failed.push((number.clone(), e));
                }
            }
            break;
        }
        if i + 1 < numbers.len() {
            tokio::time::sleep(spacing.mul_f64(0.5 + unit())).await;
        }
    }
    out
}

/// `serve`'s loop: each number checked once per `every`, for ever.
pub async fn run(monitor: Arc<Monitor>, client: Arc<HiyaStatus>, every: Duration, rate: f64) {
    let breaker = Breaker::default();
    let every_ms = every.as_millis() as i64;
    let jitter = |base: i64| base + (every_ms as f64 * 0.05 * unit()) as i64;
    let last = {
        let m = Arc::clone(&monitor);
        tokio::task::spawn_blocking(move || m.last_checked(Provider::HiyaStatus))
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or_default()
    };
    let mut next: HashMap<String, i64> = monitor
        .numbers()
        .iter()
        .map(|n| (n.clone(), last.get(n).map_or(0, |t| t + every_ms)))
        .collect();
    tracing::info!(
        numbers = next.len(),
        every_h = every.as_secs_f64() / 3600.0,
        "own numbers watched with Hiya status"
    );
    loop {
        let now = jiff::Timestamp::now().as_millisecond();
        let due: Vec<String> = monitor
            .numbers()
            .iter()
            .filter(|n| next.get(*n).is_some_and(|t| *t <= now))
            .cloned()
            .collect();
        if !due.is_empty() {
            let r = round(
                &monitor,
                &client,
                &breaker,
                &due,
                rate,
                Origin::Schedule,
                WhenOpen::Wait,
            )
            .await;
            let now = jiff::Timestamp::now().as_millisecond();
            for n in r.checked {
                next.insert(n, jitter(now + every_ms));
            }
            let retry = every.min(RETRY_FAILED).as_millis() as i64;
            for (n, _) in r.failed {
                next.insert(n, now + retry);
            }
        }
        let now = jiff::Timestamp::now().as_millisecond();
        let soonest = next.values().copied().min().unwrap_or(now + every_ms);
        let wait = (soonest - now).clamp(1_000, every_ms.max(1_000));
        tokio::time::sleep(Duration::from_millis(wait as u64)).await;
    }
}
