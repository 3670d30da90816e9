//! Hiya reputation status of registered numbers (docs/providers.md).
//!
//! The document gives the semantics (status flagged / mixed_high / mixed_low /
//! unflagged and a report card of four grades) but no endpoint, so base URL,
//! path and auth are configuration. The assumed exchange (also in docs/providers.md):
//!
//! ```text
//! GET {base_url}{path with {phone} = URL-encoded E.164}
//! {auth_header}: {auth_scheme} {key}          (default "Authorization: Bearer KEY")
//!
//! 200 {"phoneNumber": "+15551234567", "status": "mixed_high",
//!      "reportCard": {"maturity": "good", "desirability": null,
//!                     "engagement": "poor", "reaction": "normal"}}
//! 404  the number is not registered: no data
//! ```
//! `reputationStatus` and `report_card` are accepted as spellings too.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::{http_client, secret_from_env, send_full, snippet};

use crate::reputation::{Evidence, LiveSource, LookupFuture, Source, SourceError};

const PROVIDER: &str = "hiya-status";

/// Whether calls from the number are being labelled as spam.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Status {
    /// Likely labelled spam for most recipients.
    Flagged,
    /// Likely labelled for some recipients, or often labelled recently.
    MixedHigh,
    /// Not likely labelled now, but labelled in the past.
    MixedLow,
    Unflagged,
}

impl Status {
    /// The default mapping: flagged 90 · mixed_high 70 · mixed_low 30 · unflagged 0.
    pub fn score(self) -> u8 {
        match self {
            Status::Flagged => 90,
            Status::MixedHigh => 70,
            Status::MixedLow => 30,
            Status::Unflagged => 0,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Flagged => "flagged",
            Status::MixedHigh => "mixed_high",
            Status::MixedLow => "mixed_low",
            Status::Unflagged => "unflagged",
        }
    }
}

/// One report-card grade.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Grade {
    Good,
    Normal,
    Poor,
    VeryPoor,
}

/// The report card; all but maturity are null until the number has made
/// enough calls since registration.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(default)]
pub struct ReportCard {
    pub maturity: Option<Grade>,
    pub desirability: Option<Grade>,
    pub engagement: Option<Grade>,
    pub reaction: Option<Grade>,
}

/// The reputation of one registered number.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Reputation {
    #[serde(default)]
    pub phone_number: Option<String>,
    #[serde(alias = "reputationStatus", alias = "reputation_status")]
    pub status: Status,
    #[serde(default, alias = "report_card")]
    pub report_card: ReportCard,
}

/// The Hiya reputation-status client.
pub struct HiyaStatus {
    http: reqwest::Client,
    base: String,
    path: String,
    auth_header: String,
    auth_value: String,
    timeout: Duration,
}

impl std::fmt::Debug for HiyaStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HiyaStatus")
            .field("base", &self.base)
            .finish()
    }
}

impl HiyaStatus {
    pub fn from_config(c: &HiyaStatusConfig) -> Result<Arc<Self>, SourceError> {
        let key = secret_from_env(PROVIDER, &c.api_key_env)?;
        Ok(Self::with_key(c, key))
    }

    /// A client with the key given directly.
    pub fn with_key(c: &HiyaStatusConfig, key: String) -> Arc<Self> {
        let auth_value = if c.auth_scheme.is_empty() {
            key
        } else {
            format!("{} {key}", c.auth_scheme)
        };
        Arc::new(HiyaStatus {
            http: http_client(Duration::from_millis(c.timeout_ms)),
            base: c.base_url.trim_end_matches('/').to_string(),
            path: c.path.clone(),
            auth_header: c.auth_header.clone(),
            auth_value,
            timeout: Duration::from_millis(c.timeout_ms),
        })
    }

    /// The reputation of one E.164 number; `None` when it is not registered.
    pub async fn reputation(&self, e164: &str) -> Result<Option<Reputation>, SourceError> {
        let phone = super::encode(e164);
        let url = format!("{}{}", self.base, self.path.replace("{phone}", &phone));
        let request = self
            .http
            .get(url)
            .header(self.auth_header.as_str(), self.auth_value.as_str());
        let (status, retry_after, body) = send_full(PROVIDER, self.timeout, request).await?;
        let provider = PROVIDER;
        let message = snippet(&body);
        match status {
            200 => serde_json::from_slice(&body)
                .map(Some)
                .map_err(|e| SourceError::Malformed {
                    provider,
                    message: format!("{e}; body starts {message}"),
                }),
            404 => Ok(None),
            400 => Err(SourceError::BadRequest {
                provider,
                code: "400".into(),
                message,
            }),
            401 | 403 => Err(SourceError::Unauthorized { provider, message }),
            429 => Err(SourceError::RateLimited {
                provider,
                message,
                retry_after,
            }),
            500..=599 => Err(SourceError::Server {
                provider,
                status,
                message,
            }),
            status => Err(SourceError::Status {
                provider,
                status,
                message,
            }),
        }
    }
}

/// The default mapping; the category is the status itself.
pub fn evidence(rep: &Reputation, latency_us: u64) -> Evidence {
    Evidence {
        source: Source::HiyaStatus,
        score: rep.status.score(),
        category: Some(rep.status.as_str().to_string()),
        cached: false,
        latency_us,
        raw: serde_json::to_value(rep).unwrap_or_default().into(),
    }
}

impl LiveSource for HiyaStatus {
    fn name(&self) -> &'static str {
        PROVIDER
    }

    fn lookup<'a>(&'a self, e164: &'a str) -> LookupFuture<'a> {
        Box::pin(async move {
            let started = Instant::now();
            let rep = self.reputation(e164).await?;
            Ok(rep.map(|r| evidence(&r, started.elapsed().as_micros() as u64)))
        })
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct HiyaStatusConfig {
    pub enabled: bool,
    pub base_url: String,
    pub api_key_env: String,
    pub timeout_ms: u64,
    /// Request path under `base_url`; `{phone}` becomes the E.164 number.
    pub path: String,
    /// Header carrying the key, and the scheme before it ("" for the bare key).
    pub auth_header: String,
    pub auth_scheme: String,
}

impl Default for HiyaStatusConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            base_url: String::new(),
            api_key_env: "HIYA_STATUS_API_KEY".into(),
            timeout_ms: 250,
            path: "/v1/reputation/status/{phone}".into(),
            auth_header: "Authorization".into(),
            auth_scheme: "Bearer".into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_and_grades_parse_including_null_grades() {
        let r: Reputation = serde_json::from_str(
            r#"{"phoneNumber":"+15551234567","status":"mixed_high",
                "reportCard":{"maturity":"good","desirability":null,"engagement":"very_poor","reaction":"normal"}}"#,
        )
        .unwrap();
        assert_eq!(r.status, Status::MixedHigh);
        assert_eq!(r.report_card.desirability, None);
        assert_eq!(r.report_card.engagement, Some(Grade::VeryPoor));
        let e = evidence(&r, 1);
        assert_eq!((e.score, e.category.as_deref()), (70, Some("mixed_high")));
        let alt: Reputation =
            serde_json::from_str(r#"{"reputationStatus":"flagged","report_card":{}}"#).unwrap();
        assert_eq!(alt.status.score(), 90);
        for (s, n) in [("mixed_low", 30), ("unflagged", 0)] {
            let r: Reputation = serde_json::from_str(&format!(r#"{{"status":"{s}"}}"#)).unwrap();
            assert_eq!(r.status.score(), n);
        }
    }
}
