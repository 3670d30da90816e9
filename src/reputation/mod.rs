//! Reputation evidence and the sources that produce it.
//!
//! A source answers "what do you know about this E.164 number?" with
//! [`Evidence`]. Local sources (the Hiya cache) answer synchronously from
//! memory and run on the packet path; live sources (provider APIs) are async
//! and run under the call's lookup budget. The screening pipeline calls
//! them in that order, cheapest first.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};

use serde::{Deserialize, Serialize};

/// Where a piece of evidence came from (the `source` of `check --json`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Source {
    #[serde(rename = "hiya-cache")]
    HiyaCache,
    #[serde(rename = "didchecks")]
    DidChecks,
    #[serde(rename = "gilraen")]
    Gilraen,
    #[serde(rename = "hiya-status")]
    HiyaStatus,
    #[serde(rename = "allowlist")]
    Allowlist,
    #[serde(rename = "denylist")]
    Denylist,
    /// An operator's spam report (console, API, `sipsentry report`).
    #[serde(rename = "operator")]
    Operator,
    /// STIR/SHAKEN verification of the Identity header.
    #[serde(rename = "stir")]
    Stir,
    /// A source supplied by an embedding program or a test.
    #[serde(rename = "custom")]
    Custom,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::HiyaCache => "hiya-cache",
            Source::DidChecks => "didchecks",
            Source::Gilraen => "gilraen",
            Source::HiyaStatus => "hiya-status",
            Source::Allowlist => "allowlist",
            Source::Denylist => "denylist",
            Source::Operator => "operator",
            Source::Stir => "stir",
            Source::Custom => "custom",
        }
    }
}

/// What one source said about one number (docs/providers.md).
/// Deserialized from the cluster's shared tier; `cached` and `latency_us`
/// describe one call and are reset by whoever reads it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Evidence {
    pub source: Source,
    /// 0 (harmless) to 100 (certainly unwanted).
    pub score: u8,
    pub category: Option<String>,
    pub cached: bool,
    pub latency_us: u64,
    /// The source's own fields, for the explanation.
    pub raw: Raw,
}

/// A source's raw answer, shared: evidence served from the live cache to
/// many calls points at one copy instead of cloning the provider's JSON.
/// The local Hiya cache's answer keeps its fields typed
/// ([`hiya_cache::HiyaRaw`]) and becomes a JSON value only when something
/// reads it as one; it serializes to the same JSON either way.
#[derive(Debug, Clone, Default)]
pub struct Raw(Arc<RawKind>);

#[derive(Debug)]
enum RawKind {
    Json(serde_json::Value),
    Hiya {
        fields: hiya_cache::HiyaRaw,
        /// Built on the first [`std::ops::Deref`], if any.
        json: OnceLock<serde_json::Value>,
    },
}

impl Default for RawKind {
    fn default() -> Self {
        RawKind::Json(serde_json::Value::Null)
    }
}

impl Raw {
    /// The Hiya cache's answer, typed.
    pub fn hiya(fields: hiya_cache::HiyaRaw) -> Self {
        Raw(Arc::new(RawKind::Hiya {
            fields,
            json: OnceLock::new(),
        }))
    }

    /// A top-level string field (`None` when absent or not a string),
    /// read without building the JSON value of a typed answer: what
    /// scoring on the packet path uses.
    pub fn str_field(&self, key: &str) -> Option<&str> {
        match &*self.0 {
            RawKind::Json(v) => v.get(key)?.as_str(),
            RawKind::Hiya { fields, .. } => fields.str_field(key),
        }
    }
}

impl From<serde_json::Value> for Raw {
    fn from(v: serde_json::Value) -> Self {
        Raw(Arc::new(RawKind::Json(v)))
    }
}

impl std::ops::Deref for Raw {
    type Target = serde_json::Value;
    fn deref(&self) -> &serde_json::Value {
        match &*self.0 {
            RawKind::Json(v) => v,
            RawKind::Hiya { fields, json } => {
                json.get_or_init(|| serde_json::to_value(fields).unwrap_or_default())
            }
        }
    }
}

/// Equal when their JSON is: a typed answer equals the JSON value it was
/// read back as (from the history or the cluster's shared tier).
impl PartialEq for Raw {
    fn eq(&self, other: &Self) -> bool {
        **self == **other
    }
}

impl Serialize for Raw {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match &*self.0 {
            RawKind::Json(v) => v.serialize(s),
            RawKind::Hiya { fields, .. } => fields.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for Raw {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        serde_json::Value::deserialize(d).map(Raw::from)
    }
}

/// A source answered from memory, without waiting: safe on the packet path.
pub trait LocalSource: Send + Sync {
    fn lookup(&self, e164: &str) -> Option<Evidence>;
}

pub type LookupFuture<'a> =
    Pin<Box<dyn Future<Output = Result<Option<Evidence>, SourceError>> + Send + 'a>>;

/// A source that has to ask somebody (an HTTP API). Runs under the lookup budget.
pub trait LiveSource: Send + Sync {
    fn name(&self) -> &'static str;
    fn lookup<'a>(&'a self, e164: &'a str) -> LookupFuture<'a>;
    /// The requests per second the provider allows, when it sets a limit:
    /// in a cluster the lookup engine spaces requests to it across all nodes.
    fn rate_limit(&self) -> Option<u32> {
        None
    }
}

pub mod breaker;
mod error;
pub mod hiya_cache;
pub mod live;
pub mod live_cache;
mod live_metrics;
pub mod providers;
pub mod score;
pub mod shared;

pub use error::SourceError;

#[cfg(test)]
mod tests {
    use super::*;

    fn typed() -> Raw {
        Raw::hiya(hiya_cache::HiyaRaw {
            category: None,
            category_id: None,
            description: "Reported by \"many\"".into(),
            detail: String::new(),
            display_name: "Spam Likely".into(),
            generation: "g1".into(),
            image: String::new(),
            level: "SPAM",
        })
    }

    #[test]
    fn a_typed_answer_reads_and_round_trips_as_the_json_it_writes() {
        let raw = typed();
        let text = serde_json::to_string(&raw).unwrap();
        let back: Raw = serde_json::from_str(&text).unwrap();
        assert_eq!(back, raw, "equal to its read-back");
        assert_eq!(raw["level"], "SPAM", "indexing builds the JSON value");
        assert_eq!(raw["category_id"], serde_json::Value::Null);
        assert_eq!(serde_json::to_string(&*raw).unwrap(), text);
        assert_ne!(back, Raw::from(serde_json::json!({"level": "FRAUD"})));
    }

    #[test]
    fn str_field_reads_both_kinds_alike() {
        let json = Raw::from(serde_json::json!({"level": "SPAM", "n": 3}));
        for raw in [typed(), json] {
            assert_eq!(raw.str_field("level"), Some("SPAM"));
            assert_eq!(raw.str_field("absent"), None);
        }
        assert_eq!(
            Raw::from(serde_json::json!({"n": 3})).str_field("n"),
            None,
            "not a string"
        );
        assert_eq!(Raw::default().str_field("level"), None);
    }
}
