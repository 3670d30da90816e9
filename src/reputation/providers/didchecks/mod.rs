//! DIDChecks (HUHU) REST API client (docs/providers.md).
//!
//! `GET /check/{phone}` on the call path, `POST /check/bulk` for audits and
//! `GET /credits/balance` for the operator. Every request carries
//! `Authorization: Bearer <token>`; the documented limit of 10 requests/s is
//! kept on our side so the provider never has to answer 429.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::{Duration, Instant};

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use serde::{Deserialize, Serialize};

use super::{clamp_score, http_client, secret_from_env, send_full, snippet};

mod routines;

pub use routines::{Routine, RoutineSettings, Schedule};

use crate::reputation::{Evidence, LiveSource, LookupFuture, Source, SourceError};

const PROVIDER: &str = "didchecks";

/// At most this many numbers per `POST /check/bulk` (documented maximum).
pub const BULK_MAX: usize = 100;

/// Balance not yet known (no answer carried one).
const BALANCE_UNKNOWN: i64 = i64::MIN;

/// `data.huhu`: the combined score computed by HUHU (Hiya + Truecaller).
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Huhu {
    pub is_spam: Option<bool>,
    /// 0–100, 100 = certainly spam.
    pub spam_score: Option<f64>,
    pub spam_type: Option<String>,
    pub number_type: Option<String>,
    pub country_code: Option<String>,
    pub carrier: Option<String>,
    pub line_type: Option<String>,
}

/// `data.hiya`: Hiya's raw answer.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct HiyaBlock {
    /// positive, neutral or negative.
    pub reputation_level: Option<String>,
}

/// `data.truecaller`: Truecaller's raw answer.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Truecaller {
    /// 1–10.
    pub spam_score: Option<f64>,
    pub spam_type: Option<String>,
    pub num_reports: Option<u64>,
    #[serde(rename = "numReports60days")]
    pub num_reports_60days: Option<u64>,
}

/// One entry of `data.orange.spamTypesRepartition`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(default)]
pub struct SpamTypeShare {
    pub category: String,
    pub ratio: f64,
}

/// `data.orange`: Orange Telephone's raw answer.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Orange {
    pub is_spam: Option<bool>,
    pub negative_reviews: Option<u64>,
    pub positive_reviews: Option<u64>,
    pub main_spam_type: Option<String>,
    pub spam_types_repartition: Vec<SpamTypeShare>,
}

/// The `data` of `GET /check/{phone}`, and one result of a bulk check. Every
/// block may be missing; unknown fields are ignored.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct CheckData {
    pub phone_number: Option<String>,
    pub huhu: Option<Huhu>,
    pub hiya: Option<HiyaBlock>,
    pub truecaller: Option<Truecaller>,
    pub orange: Option<Orange>,
}

/// A whole `GET /check/{phone}` answer.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Check {
    pub data: CheckData,
    pub cost: Option<i64>,
    pub balance: Option<i64>,
}

/// `data.summary` of a bulk check (summed over the chunks).
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct BulkSummary {
    pub total_checked: u64,
    pub spam_count: u64,
    pub clean_count: u64,
    pub error_count: u64,
}

/// A bulk check over any number of numbers.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Bulk {
    pub results: Vec<CheckData>,
    pub summary: BulkSummary,
    pub cost: i64,
    pub balance: Option<i64>,
    /// HTTP requests made (one per chunk of at most [`BULK_MAX`]).
    pub requests: usize,
}

/// `GET /credits/balance`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Balance {
    pub balance: i64,
    pub check_price: Option<f64>,
}

/// The envelope of every answer, success or error.
#[derive(Debug, Deserialize)]
#[serde(default)]
struct Envelope<T> {
    success: Option<bool>,
    data: Option<T>,
    cost: Option<i64>,
    balance: Option<i64>,
    error: Option<String>,
    code: Option<String>,
    details: Option<serde_json::Value>,
}

impl<T> Default for Envelope<T> {
    fn default() -> Self {
        Envelope {
            success: None,
            data: None,
            cost: None,
            balance: None,
            error: None,
            code: None,
            details: None,
        }
    }
}

#[derive(Debug, Deserialize)]
struct BulkData {
    #[serde(default)]
    results: Vec<CheckData>,
    #[serde(default)]
    summary: BulkSummary,
}

/// The DIDChecks client.
pub struct DidChecks {
    http: reqwest::Client,
    base: String,
    token: String,
    timeout: Duration,
    limiter: DefaultDirectRateLimiter,
    per_second: u32,
    balance: AtomicI64,
    balance_floor: i64,
    warned_low: AtomicBool,
}

impl std::fmt::Debug for DidChecks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the token.
        f.debug_struct("DidChecks")
            .field("base", &self.base)
            .finish()
    }
}

impl DidChecks {
    /// A client from `[providers.didchecks]`, with the token read from its
    /// environment variable.
    pub fn from_config(c: &DidChecksConfig) -> Result<Arc<Self>, SourceError> {
        let token = secret_from_env(PROVIDER, &c.token_env)?;
        Ok(Arc::new(Self::new(
            &c.base_url,
            token,
            Duration::from_millis(c.timeout_ms),
            c.max_requests_per_second,
            c.balance_floor,
        )))
    }

    pub fn new(
        base_url: &str,
        token: String,
        timeout: Duration,
        per_second: u32,
        balance_floor: i64,
    ) -> Self {
        let per_second = per_second.max(1);
        // No burst: requests are spaced evenly, so no one-second window ever
        // holds more than `per_second` of them, however the provider counts.
        let quota = Quota::per_second(NonZeroU32::new(per_second).unwrap_or(NonZeroU32::MIN))
            .allow_burst(NonZeroU32::MIN);
        DidChecks {
            http: http_client(timeout),
            base: base_url.trim_end_matches('/').to_string(),
            token,
            timeout,
            limiter: RateLimiter::direct(quota),
            per_second,
            balance: AtomicI64::new(BALANCE_UNKNOWN),
            balance_floor,
            warned_low: AtomicBool::new(false),
        }
    }

    /// A balance learnt elsewhere (a `credits_low` or `credits_depleted`
    /// webhook), for the gauge.
    pub fn record_balance(&self, balance: i64) {
        self.balance.store(balance, Ordering::Relaxed);
    }

    /// The last balance any answer carried.
    pub fn last_balance(&self) -> Option<i64> {
        match self.balance.load(Ordering::Relaxed) {
            BALANCE_UNKNOWN => None,
            b => Some(b),
        }
    }

    /// Waits for a slot under the client-side rate limit, but no longer than
    /// `max_wait`: a lookup that would wait past its deadline fails at once.
    async fn throttle(&self, max_wait: Duration) -> Result<(), SourceError> {
        loop {
            match self.limiter.check() {
                Ok(()) => return Ok(()),
                Err(not_until) => {
                    let wait = not_until.wait_time_from(DefaultClock::default().now());
                    if wait > max_wait {
                        return Err(SourceError::Throttled {
                            provider: PROVIDER,
                            per_second: self.per_second,
                        });
                    }
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }

    fn note_balance(&self, balance: Option<i64>) {
        let Some(b) = balance else { return };
        self.balance.store(b, Ordering::Relaxed);
        if b < self.balance_floor {
            // Once per crossing, not once per call.
            if !self.warned_low.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    balance = b,
                    floor = self.balance_floor,
                    "DIDChecks balance below providers.didchecks.balance_floor; top up the account"
                );
            }
        } else {
            self.warned_low.store(false, Ordering::Relaxed);
        }
    }

    async fn call<T: serde::de::DeserializeOwned>(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<Envelope<T>, SourceError> {
        let request = request.bearer_auth(&self.token);
        let (status, retry_after, body) = send_full(PROVIDER, self.timeout, request).await?;
        let parsed: Result<Envelope<T>, _> = serde_json::from_slice(&body);
        if (200..300).contains(&status) {
            let env = parsed.map_err(|e| SourceError::Malformed {
                provider: PROVIDER,
                message: format!("{e}; body starts {}", snippet(&body)),
            })?;
            if env.success == Some(false) {
                return Err(error_for(400, None, &env, &body));
            }
            self.note_balance(env.balance);
            return Ok(env);
        }
        let env = parsed.unwrap_or_default();
        Err(error_for(status, retry_after, &env, &body))
    }

    /// `GET /check/{phone}` for one E.164 number.
    pub async fn check(&self, e164: &str) -> Result<Check, SourceError> {
        self.throttle(self.timeout).await?;
        let url = format!("{}/check/{}", self.base, e164);
        let env: Envelope<CheckData> = self.call(self.http.get(url)).await?;
        let data = env.data.ok_or_else(|| SourceError::Malformed {
            provider: PROVIDER,
            message: "success without data".into(),
        })?;
        Ok(Check {
            data,
            cost: env.cost,
            balance: env.balance,
        })
    }

    /// `POST /check/bulk`, in chunks of [`BULK_MAX`]. Waits for rate-limit
    /// slots as long as needed (an audit is not on the call path).
    pub async fn check_bulk(&self, numbers: &[String]) -> Result<Bulk, SourceError> {
        let mut out = Bulk::default();
        for chunk in numbers.chunks(BULK_MAX) {
            self.limiter.until_ready().await;
            let url = format!("{}/check/bulk", self.base);
            let body = serde_json::json!({ "phoneNumbers": chunk, "stopOnError": false });
            let env: Envelope<BulkData> = self.call(self.http.post(url).json(&body)).await?;
            out.requests += 1;
            let data = env.data.ok_or_else(|| SourceError::Malformed {
                provider: PROVIDER,
                message: "bulk success without data".into(),
            })?;
            out.results.extend(data.results);
            let s = data.summary;
            out.summary.total_checked += s.total_checked;
            out.summary.spam_count += s.spam_count;
            out.summary.clean_count += s.clean_count;
            out.summary.error_count += s.error_count;
            out.cost += env.cost.unwrap_or(0);
            out.balance = env.balance.or(out.balance);
        }
        Ok(out)
    }

    /// `GET /credits/balance`.
    pub async fn balance(&self) -> Result<Balance, SourceError> {
        self.throttle(self.timeout).await?;
        let url = format!("{}/credits/balance", self.base);
        let env: Envelope<Balance> = self.call(self.http.get(url)).await?;
        let b = env.data.ok_or_else(|| SourceError::Malformed {
            provider: PROVIDER,
            message: "balance success without data".into(),
        })?;
        self.note_balance(Some(b.balance));
        Ok(b)
    }
}

/// Maps an error answer (documented: 400/401/402/404/429/500) to a typed error
/// carrying the provider's own message and code.
fn error_for<T>(
    status: u16,
    retry_after: Option<Duration>,
    env: &Envelope<T>,
    body: &[u8],
) -> SourceError {
    let message = match (&env.error, &env.details) {
        (Some(e), Some(d)) => format!("{e} {d}"),
        (Some(e), None) => e.clone(),
        _ => snippet(body),
    };
    let provider = PROVIDER;
    match status {
        400 => SourceError::BadRequest {
            provider,
            code: env.code.clone().unwrap_or_else(|| "BAD_REQUEST".into()),
            message,
        },
        401 => SourceError::Unauthorized { provider, message },
        402 => SourceError::PaymentRequired { provider, message },
        404 => SourceError::NotFound { provider, message },
        429 => SourceError::RateLimited {
            provider,
            message,
            retry_after,
        },
        500..=599 => SourceError::Server {
            provider,
            status,
            message,
        },
        _ => SourceError::Status {
            provider,
            status,
            message,
        },
    }
}

/// The score is `data.huhu.spamScore`, the category
/// `data.huhu.spamType`. Without a HUHU score the provider has no opinion.
pub fn evidence(check: &Check, latency_us: u64) -> Option<Evidence> {
    let huhu = check.data.huhu.as_ref()?;
    let score = clamp_score(huhu.spam_score?);
    Some(Evidence {
        source: Source::DidChecks,
        score,
        category: huhu.spam_type.clone(),
        cached: false,
        latency_us,
        raw: serde_json::to_value(check).unwrap_or_default().into(),
    })
}

impl LiveSource for DidChecks {
    fn name(&self) -> &'static str {
        PROVIDER
    }

    fn rate_limit(&self) -> Option<u32> {
        Some(self.per_second)
    }

    fn lookup<'a>(&'a self, e164: &'a str) -> LookupFuture<'a> {
        Box::pin(async move {
            let started = Instant::now();
            match self.check(e164).await {
                Ok(check) => Ok(evidence(&check, started.elapsed().as_micros() as u64)),
                // The provider does not know the number: no data, not a failure.
                Err(SourceError::NotFound { .. }) => Ok(None),
                Err(e) => Err(e),
            }
        })
    }
}

impl crate::metrics::Collect for DidChecks {
    fn collect(&self, out: &mut crate::metrics::Scrape) {
        if let Some(b) = self.last_balance() {
            out.gauge(
                "sipsentry_didchecks_balance",
                "DIDChecks credit balance last reported",
            )
            .set(vec![], b as f64);
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct DidChecksConfig {
    pub enabled: bool,
    pub base_url: String,
    pub token_env: String,
    pub webhook_secret_env: String,
    pub timeout_ms: u64,
    /// Client-side request rate limit (the API documents 10/s).
    pub max_requests_per_second: u32,
    /// A warning is logged when the credit balance falls below this.
    pub balance_floor: i64,
}

impl Default for DidChecksConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            base_url: "https://num.huhu.fr/api".into(),
            token_env: "DIDCHECKS_TOKEN".into(),
            webhook_secret_env: "DIDCHECKS_WEBHOOK_SECRET".into(),
            timeout_ms: 250,
            max_requests_per_second: 10,
            balance_floor: 100,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_answer_parses_into_every_field() {
        let body = r#"{"success":true,"data":{"phoneNumber":"+33612345678",
          "huhu":{"isSpam":true,"spamScore":85,"spamType":"Telemarketing","numberType":"MOBILE",
                  "countryCode":"FR","carrier":"Orange","lineType":"MOBILE_mobile"},
          "hiya":{"reputationLevel":"negative"},
          "truecaller":{"spamScore":7,"spamType":"sales","numReports":150,"numReports60days":45},
          "orange":{"isSpam":true,"negativeReviews":64,"positiveReviews":0,"mainSpamType":"SCAM",
                    "spamTypesRepartition":[{"category":"SCAM","ratio":0.89},{"category":"TELEMARKETING","ratio":0.11}]}},
          "cost":1,"balance":14,"somethingNew":{"x":1}}"#;
        let env: Envelope<CheckData> = serde_json::from_str(body).unwrap();
        let d = env.data.unwrap();
        let h = d.huhu.as_ref().unwrap();
        assert_eq!(h.spam_score, Some(85.0));
        assert_eq!(h.line_type.as_deref(), Some("MOBILE_mobile"));
        assert_eq!(d.truecaller.as_ref().unwrap().num_reports_60days, Some(45));
        let o = d.orange.as_ref().unwrap();
        assert_eq!(o.spam_types_repartition[1].category, "TELEMARKETING");
        assert_eq!(o.negative_reviews, Some(64));
        let check = Check {
            data: d,
            cost: env.cost,
            balance: env.balance,
        };
        let ev = evidence(&check, 5).unwrap();
        assert_eq!(
            (ev.score, ev.category.as_deref()),
            (85, Some("Telemarketing"))
        );
        assert_eq!(ev.raw["data"]["truecaller"]["numReports60days"], 45);
        assert_eq!(ev.raw["balance"], 14);
    }

    #[test]
    fn missing_blocks_are_tolerated_and_without_huhu_there_is_no_opinion() {
        let env: Envelope<CheckData> =
            serde_json::from_str(r#"{"success":true,"data":{"hiya":{}}}"#).unwrap();
        let check = Check {
            data: env.data.unwrap(),
            cost: None,
            balance: None,
        };
        assert_eq!(evidence(&check, 0), None);
    }
}
