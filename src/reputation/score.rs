//! Evidence → score, the mappings of docs/providers.md, every one configurable in
//! `[scores]`. Sources score with the defaults as they answer; when the
//! operator changed a mapping, the pipeline re-scores each piece of evidence
//! from its raw fields (so answers cached before a reload follow the new
//! mapping too). With the defaults this costs nothing.

use serde::{Deserialize, Serialize};

use super::providers::clamp_score;
use super::{Evidence, Source};

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ScoresConfig {
    /// Hiya cache levels.
    pub hiya_fraud: u8,
    pub hiya_spam: u8,
    pub hiya_neutral: u8,
    /// DIDChecks: `data.huhu.spamScore` × this.
    pub didchecks_scale: f64,
    /// Gilraen: score = (5 − index) × this.
    pub gilraen_per_point: f64,
    /// Gilraen: `is_unwanted` raises the score to at least this.
    pub gilraen_unwanted_floor: u8,
    /// Hiya reputation status.
    pub status_flagged: u8,
    pub status_mixed_high: u8,
    pub status_mixed_low: u8,
    pub status_unflagged: u8,
    /// An operator's spam report (the `operator` source).
    pub operator_spam: u8,
    /// STIR: the Identity header failed verification.
    pub stir_failed: u8,
    /// STIR: no Identity header (or nothing verifiable).
    pub stir_absent: u8,
    /// STIR: verified, with attestation B (partial).
    pub stir_attest_b: u8,
    /// STIR: verified, with attestation C (gateway).
    pub stir_attest_c: u8,
}

impl Default for ScoresConfig {
    fn default() -> Self {
        ScoresConfig {
            hiya_fraud: 95,
            hiya_spam: 75,
            hiya_neutral: 0,
            didchecks_scale: 1.0,
            gilraen_per_point: 20.0,
            gilraen_unwanted_floor: 80,
            status_flagged: 90,
            status_mixed_high: 70,
            status_mixed_low: 30,
            status_unflagged: 0,
            operator_spam: 90,
            stir_failed: 80,
            stir_absent: 0,
            stir_attest_b: 0,
            stir_attest_c: 20,
        }
    }
}

impl ScoresConfig {
    /// Whether these are the mappings sources already apply.
    pub fn is_default(&self) -> bool {
        *self == ScoresConfig::default()
    }

    /// Recomputes `ev.score` from its raw fields; evidence without the
    /// fields a mapping needs keeps its score.
    pub fn rescore(&self, ev: &mut Evidence) {
        let raw = &ev.raw;
        let score = match ev.source {
            Source::HiyaCache => match raw.str_field("level") {
                Some("FRAUD") => Some(self.hiya_fraud),
                Some("SPAM") => Some(self.hiya_spam),
                Some("NEUTRAL") => Some(self.hiya_neutral),
                _ => None,
            },
            Source::DidChecks => raw["data"]["huhu"]["spamScore"]
                .as_f64()
                .or_else(|| raw["data"]["currentStatus"]["spamScore"].as_f64())
                .map(|s| clamp_score(s * self.didchecks_scale)),
            Source::Gilraen => {
                let index = raw["index"]
                    .as_f64()
                    .unwrap_or(super::providers::gilraen::INDEX_NO_DATA);
                let mut s = clamp_score(
                    (super::providers::gilraen::INDEX_NO_DATA - index) * self.gilraen_per_point,
                );
                if raw["is_unwanted"].as_bool() == Some(true) {
                    s = s.max(self.gilraen_unwanted_floor);
                }
                Some(s)
            }
            Source::HiyaStatus => match raw.str_field("status") {
                Some("flagged") => Some(self.status_flagged),
                Some("mixed_high") => Some(self.status_mixed_high),
                Some("mixed_low") => Some(self.status_mixed_low),
                Some("unflagged") => Some(self.status_unflagged),
                _ => None,
            },
            _ => None,
        };
        if let Some(s) = score {
            ev.score = s.min(100);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(source: Source, score: u8, raw: serde_json::Value) -> Evidence {
        Evidence {
            source,
            score,
            category: None,
            cached: false,
            latency_us: 0,
            raw: raw.into(),
        }
    }

    #[test]
    fn the_defaults_reproduce_what_the_sources_scored() {
        let d = ScoresConfig::default();
        for (source, score, raw) in [
            (Source::HiyaCache, 75, serde_json::json!({"level": "SPAM"})),
            (
                Source::DidChecks,
                85,
                serde_json::json!({"data": {"huhu": {"spamScore": 85}}}),
            ),
            (
                Source::Gilraen,
                80,
                serde_json::json!({"index": 4.5, "is_unwanted": true}),
            ),
            (
                Source::HiyaStatus,
                70,
                serde_json::json!({"status": "mixed_high"}),
            ),
        ] {
            let mut e = ev(source, 0, raw);
            d.rescore(&mut e);
            assert_eq!(e.score, score, "{source:?}");
        }
    }

    #[test]
    fn changed_mappings_apply_to_each_source() {
        let s = ScoresConfig {
            hiya_spam: 60,
            didchecks_scale: 0.5,
            gilraen_per_point: 10.0,
            status_flagged: 100,
            ..Default::default()
        };
        let mut h = ev(Source::HiyaCache, 75, serde_json::json!({"level": "SPAM"}));
        s.rescore(&mut h);
        let mut dc = ev(
            Source::DidChecks,
            90,
            serde_json::json!({"data": {"huhu": {"spamScore": 90}}}),
        );
        s.rescore(&mut dc);
        let mut g = ev(Source::Gilraen, 60, serde_json::json!({"index": 2.0}));
        s.rescore(&mut g);
        let mut st = ev(
            Source::HiyaStatus,
            90,
            serde_json::json!({"status": "flagged"}),
        );
        s.rescore(&mut st);
        assert_eq!((h.score, dc.score, g.score, st.score), (60, 45, 30, 100));
        let mut custom = ev(Source::Custom, 33, serde_json::json!({}));
        s.rescore(&mut custom);
        assert_eq!(custom.score, 33);
    }
}
