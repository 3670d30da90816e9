//! The operator's own numbers (docs/own-numbers.md): how providers label
//! the calls we place, watched over time.
//!
//! Inbound screening asks "is this caller spam?"; this module asks the same
//! of the numbers our operator calls *from*, because a number labelled spam
//! is a number customers stop answering. Two providers watch them:
//!
//! - Hiya reputation status, asked by `serve` on a schedule ([`schedule`]);
//! - DIDChecks, whose own routines check the numbers and report by webhook
//!   ([`routines`] keeps the routines in line with the configuration).
//!
//! Every result is kept with its time ([`store`]), so a change is history,
//! not just a current value; [`Monitor`] holds the latest per number and
//! provider for the metrics, the API and the console.

use serde::{Deserialize, Serialize};

mod config;
mod monitor;
pub mod routines;
pub mod schedule;
pub mod store;

pub use config::{MAX_OWN_NUMBERS, NumberEntry, OwnConfigError, OwnNumbersConfig, RoutineSchedule};
pub use monitor::{Monitor, NumberView, OwnView, ProviderView};
pub use store::{OwnStore, StoreError};

/// A provider that watches own numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Provider {
    HiyaStatus,
    #[serde(rename = "didchecks")]
    DidChecks,
}

impl Provider {
    pub fn as_str(self) -> &'static str {
        match self {
            Provider::HiyaStatus => "hiya_status",
            Provider::DidChecks => "didchecks",
        }
    }

    pub fn parse(s: &str) -> Option<Provider> {
        match s {
            "hiya_status" => Some(Provider::HiyaStatus),
            "didchecks" => Some(Provider::DidChecks),
            _ => None,
        }
    }
}

/// Where a result came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Origin {
    /// `serve`'s scheduled check.
    Schedule,
    /// `own status --refresh`.
    Refresh,
    /// A DIDChecks webhook delivery.
    Webhook,
}

impl Origin {
    pub fn as_str(self) -> &'static str {
        match self {
            Origin::Schedule => "schedule",
            Origin::Refresh => "refresh",
            Origin::Webhook => "webhook",
        }
    }

    fn parse(s: &str) -> Origin {
        match s {
            "refresh" => Origin::Refresh,
            "webhook" => Origin::Webhook,
            _ => Origin::Schedule,
        }
    }
}

/// The grades of Hiya's report card, in the order it documents them.
pub const REPORT_CARD: [&str; 4] = ["maturity", "desirability", "engagement", "reaction"];

/// Hiya's "not registered" (404), kept as a status of its own: the number
/// has no reputation data, which is not an error.
pub const NOT_REGISTERED: &str = "not_registered";

/// One provider's answer about one own number at one time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OwnResult {
    /// E.164.
    pub number: String,
    pub provider: Provider,
    pub time_ms: i64,
    /// Hiya: `flagged`, `mixed_high`, `mixed_low`, `unflagged` or
    /// `not_registered`. DIDChecks: `spam` or `clean`.
    pub status: String,
    /// Hiya: 3 flagged … 0 unflagged. DIDChecks: its spam score, 0–100.
    /// `None` for a number Hiya does not know.
    pub value: Option<f64>,
    /// Hiya's report card (maturity, desirability, engagement, reaction).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub report_card: Option<serde_json::Value>,
    /// DIDChecks' spam type or routine id, when given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    pub origin: Origin,
}

impl OwnResult {
    /// Whether the provider says calls from the number are labelled spam:
    /// Hiya `flagged`, DIDChecks `spam`.
    pub fn flagged(&self) -> bool {
        matches!(self.status.as_str(), "flagged" | "spam")
    }
}

/// Hiya's status as a level for the gauge: 0 unflagged … 3 flagged.
pub fn hiya_level(status: crate::reputation::providers::hiya_status::Status) -> f64 {
    use crate::reputation::providers::hiya_status::Status;
    match status {
        Status::Unflagged => 0.0,
        Status::MixedLow => 1.0,
        Status::MixedHigh => 2.0,
        Status::Flagged => 3.0,
    }
}
