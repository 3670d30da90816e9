//! The Hiya Protect local cache (docs/providers.md, "Hiya Protect cache"): per-country
//! files of phone reputations, turned into memory-mapped indexes and consulted
//! on the packet path.
//!
//! - [`build`]: validate the gzip TSV as a stream, sort within a memory budget
//!   (spilling sorted runs to disk), write a generation (`keys.fst`,
//!   `records.bin`, `manifest.json`) and switch `current` by atomic rename.
//! - [`store`]: open generations with mmap, verify checksums, serve all
//!   countries behind one atomic pointer so a refresh swaps in one step.
//! - [`sync`]: download a country's file from the API when it changed.
//! - [`refresh`]: keep the serving generations current; `cache status`.
//! - [`sample`]: synthetic caches of any size, and the bundled demo cache.

pub mod build;
mod evidence;
mod metrics;
pub mod refresh;
pub mod sample;
pub mod store;
pub mod sync;

pub use evidence::HiyaRaw;

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct HiyaCacheConfig {
    pub enabled: bool,
    pub base_url: String,
    pub countries: Vec<String>,
    pub credential_id_env: String,
    pub credential_secret_env: String,
    pub refresh_minutes: u64,
    pub dir: PathBuf,
    /// A downloaded file with more bad rows than this (percent) is refused.
    pub max_bad_percent: f64,
}

impl Default for HiyaCacheConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            base_url: "https://api.hiyaapi.com".into(),
            countries: vec![],
            credential_id_env: "HIYA_CREDENTIAL_ID".into(),
            credential_secret_env: "HIYA_CREDENTIAL_SECRET".into(),
            refresh_minutes: 360,
            dir: "sipsentry-data/hiya".into(),
            max_bad_percent: 5.0,
        }
    }
}

/// Reputation levels of the cache (column 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Level {
    Neutral = 0,
    Spam = 1,
    Fraud = 2,
}

impl Level {
    pub fn parse(s: &[u8]) -> Option<Level> {
        match s {
            b"FRAUD" => Some(Level::Fraud),
            b"SPAM" => Some(Level::Spam),
            b"NEUTRAL" => Some(Level::Neutral),
            _ => None,
        }
    }

    pub fn from_bits(b: u64) -> Level {
        match b & 3 {
            2 => Level::Fraud,
            1 => Level::Spam,
            _ => Level::Neutral,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Level::Fraud => "FRAUD",
            Level::Spam => "SPAM",
            Level::Neutral => "NEUTRAL",
        }
    }

    /// The default mapping: FRAUD 95 · SPAM 75 · NEUTRAL 0 (still "known").
    pub fn score(self) -> u8 {
        match self {
            Level::Fraud => 95,
            Level::Spam => 75,
            Level::Neutral => 0,
        }
    }
}

/// The category table of the spec. Unknown integers are kept as `category-<n>`.
pub fn category_name(id: u32) -> String {
    let known = match id {
        3 => "Debt Collector",
        4 => "Political Call",
        5 => "Nonprofit Call",
        6 => "Telemarketer",
        7 => "Survey Call",
        8 => "Scam",
        9 => "Extortion Scam",
        10 => "Robocaller",
        1000 => "Phishing",
        1001 => "Toll Free",
        1002 => "Stolen Identity",
        1003 => "IRS Scam",
        1004 => "Tax Scam",
        1005 => "Tech Support Scam",
        1006 => "Vacation Scam",
        1007 => "Lucky Winner Scam",
        n => return format!("category-{n}"),
    };
    known.to_string()
}

/// Countries the cache API serves (uppercase ISO 3166-1 alpha-2), from the spec.
pub const SUPPORTED_COUNTRIES: [&str; 39] = [
    "AF", "BD", "BR", "BT", "DZ", "EG", "GH", "HK", "ID", "IL", "IN", "IQ", "JO", "JP", "KE", "KG",
    "KH", "KZ", "LA", "LB", "LK", "MA", "MM", "MY", "NG", "NP", "PG", "PH", "PK", "PS", "SA", "SG",
    "TH", "TN", "TR", "TW", "VN", "YE", "ZA",
];

/// Checks a country code before any request or build: `^[A-Z]{2}$` and supported.
pub fn check_country(cc: &str) -> Result<(), String> {
    if cc.len() != 2 || !cc.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(format!(
            "{cc:?} is not an uppercase two-letter ISO country code (e.g. \"IN\")"
        ));
    }
    if !SUPPORTED_COUNTRIES.contains(&cc) {
        return Err(format!(
            "{cc} is not served by the Hiya cache API; supported: {}",
            SUPPORTED_COUNTRIES.join(", ")
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn categories_and_levels_map_as_documented() {
        assert_eq!(category_name(6), "Telemarketer");
        assert_eq!(category_name(1007), "Lucky Winner Scam");
        assert_eq!(category_name(4242), "category-4242");
        assert_eq!(Level::parse(b"FRAUD").map(Level::score), Some(95));
        assert_eq!(Level::parse(b"SPAM").map(Level::score), Some(75));
        assert_eq!(Level::parse(b"NEUTRAL").map(Level::score), Some(0));
        assert_eq!(Level::parse(b"spam"), None);
    }

    #[test]
    fn countries_are_checked_before_use() {
        assert!(check_country("IN").is_ok());
        assert!(check_country("in").unwrap_err().contains("uppercase"));
        assert!(check_country("US").unwrap_err().contains("not served"));
    }
}
