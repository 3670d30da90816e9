//! From evidence to an action: the `[policy]` rules (docs/configuration.md).
//!
//! Rule order: called-number opt-in/opt-out (an unscreened DID passes with
//! no lookup) → allowlist (final, no lookups) → denylist (final) → anonymous
//! callers → reputation: a per-category override of the deciding evidence,
//! else the score against the thresholds (reject, then divert, then tag) →
//! when no source could answer, `on_lookup_failure`. `dry_run` keeps the
//! decision for the record but always passes the call.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::number::{Country, NumberSet};
use crate::reputation::score::ScoresConfig;
use crate::reputation::{Evidence, Source};
use crate::sip::uri::SipUri;

mod action;
mod decision;
mod options;

pub use action::{Action, DivertMode, LiveMode};
pub use decision::{Decision, Rule};
pub use options::{LabelsConfig, PolicyConfig, REJECT_CODES, StirFailure, THRESHOLD_NEVER};

/// The config sections a policy is compiled from.
#[derive(Debug, Clone, Copy)]
pub struct PolicyInput<'a> {
    pub policy: &'a PolicyConfig,
    pub labels: &'a LabelsConfig,
    pub scores: &'a ScoresConfig,
    /// `numbers.default_country`: how national numbers are read.
    pub default_country: &'a str,
}

/// A policy value the checks before it let through (a list entry, a
/// country, a URI), named by its config key.
#[derive(Debug, Clone, thiserror::Error)]
#[error("config key `{key}`: {message}")]
pub struct PolicyError {
    pub key: &'static str,
    pub message: String,
}

/// The policy compiled from config: sets built once, not per call.
#[derive(Debug)]
pub struct Policy {
    pub config: PolicyConfig,
    pub labels: LabelsConfig,
    /// `labels.display_prefix`, shared by every tagged call's verdict
    /// rather than copied into each.
    pub display_prefix: std::sync::Arc<str>,
    pub country: Country,
    pub divert_to: SipUri,
    pub scores: ScoresConfig,
    allow: NumberSet,
    deny: NumberSet,
    screen_called: NumberSet,
    skip_called: NumberSet,
}

static DECISION_SEQ: AtomicU64 = AtomicU64::new(0);

/// A decision id: milliseconds since the epoch and a sequence number, so ids
/// sort by time and never repeat within a process.
fn next_decision_id() -> String {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let seq = DECISION_SEQ.fetch_add(1, Ordering::Relaxed) & 0xffff;
    decision_id_text(ms, seq as u16)
}

/// `format!("{ms:x}{seq:04x}")`, written digit by digit: it is made for
/// every call, and the formatter costs ten times as much.
fn decision_id_text(ms: u64, seq: u16) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let digit = |n: u64| char::from(HEX[(n & 0xf) as usize]);
    let ms_digits = (64 - ms.leading_zeros()).div_ceil(4).max(1);
    let mut out = String::with_capacity(20);
    out.extend((0..ms_digits).rev().map(|i| digit(ms >> (4 * i))));
    out.extend((0..4).rev().map(|i| digit(u64::from(seq) >> (4 * i))));
    out
}

impl Policy {
    /// Compiles the policy from validated config sections
    /// ([`crate::config::Config::policy`] validates first).
    pub fn new(input: PolicyInput<'_>) -> Result<Self, PolicyError> {
        let invalid = |key, message: String| PolicyError { key, message };
        let p = input.policy;
        Ok(Policy {
            allow: NumberSet::new(&p.allow).map_err(|e| invalid("policy.allow", e.to_string()))?,
            deny: NumberSet::new(&p.deny).map_err(|e| invalid("policy.deny", e.to_string()))?,
            screen_called: NumberSet::new(&p.screen_called)
                .map_err(|e| invalid("policy.screen_called", e.to_string()))?,
            skip_called: NumberSet::new(&p.skip_called)
                .map_err(|e| invalid("policy.skip_called", e.to_string()))?,
            scores: input.scores.clone(),
            country: Country::from_iso(input.default_country)
                .ok_or_else(|| invalid("numbers.default_country", "unknown country".into()))?,
            divert_to: SipUri::parse_config(&p.divert_to)
                .map_err(|e| invalid("policy.divert_to", e))?,
            config: p.clone(),
            labels: input.labels.clone(),
            display_prefix: input.labels.display_prefix.as_str().into(),
        })
    }

    /// Allow/deny lists: a match is final.
    pub fn lists(&self, e164: &str) -> Option<(Rule, Evidence)> {
        let (rule, source, score, pattern) = if let Some(p) = self.allow.find(e164) {
            (Rule::Allowlist, Source::Allowlist, 0, p)
        } else if let Some(p) = self.deny.find(e164) {
            (Rule::Denylist, Source::Denylist, 100, p)
        } else {
            return None;
        };
        let evidence = Evidence {
            source,
            score,
            category: None,
            cached: false,
            latency_us: 0,
            raw: serde_json::json!({ "entry": pattern.to_string() }).into(),
        };
        Some((rule, evidence))
    }

    /// Whether calls to this called number (E.164, or as received when it is
    /// not a number) are screened: opted in (or no opt-in list) and not
    /// opted out.
    pub fn screens_called(&self, called: &str) -> bool {
        let opted_in =
            self.config.screen_called.is_empty() || self.screen_called.find(called).is_some();
        opted_in && self.skip_called.find(called).is_none()
    }

    /// The configured action for a category, if any.
    pub fn category_action(&self, category: &str) -> Option<Action> {
        self.config.categories.get(category).copied()
    }

    /// The action for a score, by the thresholds: reject, then divert, then tag.
    pub fn action_for_score(&self, score: u8) -> Action {
        let p = &self.config;
        if score >= p.reject_at {
            Action::Reject
        } else if score >= p.divert_at {
            Action::Divert
        } else if score >= p.tag_at {
            Action::Tag
        } else {
            Action::Pass
        }
    }

    /// Builds the decision, applying `dry_run`.
    pub fn decide(
        &self,
        rule: Rule,
        decided: Action,
        evidence: Vec<Evidence>,
        decision_us: u64,
    ) -> Decision {
        let best = evidence.iter().max_by_key(|e| e.score);
        let score = best.map_or(0, |e| e.score);
        let category = best.and_then(|e| e.category.clone());
        let category = match rule {
            Rule::Anonymous => Some("Anonymous".to_string()),
            _ => category,
        };
        Decision {
            id: next_decision_id(),
            action: if self.config.dry_run {
                Action::Pass
            } else {
                decided
            },
            decided,
            rule,
            score,
            category,
            evidence,
            dry_run: self.config.dry_run,
            decision_us,
            response_code: None,
            verstat: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decision_ids_are_the_hex_of_time_and_sequence_as_format_writes_them() {
        for (ms, seq) in [
            (0u64, 0u16),
            (1, 1),
            (0xf, 0xffff),
            (0x10, 0x10),
            (1_764_842_400_123, 0x0a0b),
            (u64::MAX, 0x1234),
        ] {
            assert_eq!(decision_id_text(ms, seq), format!("{ms:x}{seq:04x}"));
        }
    }

    fn policy(toml: &str) -> Policy {
        crate::config::Config::from_toml(toml)
            .unwrap()
            .policy()
            .unwrap()
    }

    #[test]
    fn thresholds_apply_reject_then_divert_then_tag() {
        let p = policy("[policy]\ntag_at = 50\ndivert_at = 70\nreject_at = 90\n");
        assert_eq!(p.action_for_score(95), Action::Reject);
        assert_eq!(p.action_for_score(90), Action::Reject);
        assert_eq!(p.action_for_score(75), Action::Divert);
        assert_eq!(p.action_for_score(50), Action::Tag);
        assert_eq!(p.action_for_score(49), Action::Pass);
        let never = policy("[policy]\ntag_at = 101\ndivert_at = 101\nreject_at = 101\n");
        assert_eq!(never.action_for_score(100), Action::Pass);
    }

    #[test]
    fn allowlist_wins_over_denylist() {
        let p = policy("[policy]\nallow = [\"+1555*\"]\ndeny = [\"+15551234567\"]\n");
        assert_eq!(p.lists("+15551234567").unwrap().0, Rule::Allowlist);
        let p = policy("[policy]\nallow = []\ndeny = [\"+1666*\"]\n");
        let (rule, ev) = p.lists("+16660001111").unwrap();
        assert_eq!(
            (rule, ev.score, ev.source),
            (Rule::Denylist, 100, Source::Denylist)
        );
    }

    #[test]
    fn called_numbers_opt_in_and_out() {
        let all = policy("[policy]\n");
        assert!(all.screens_called("+15551234567"));
        let p =
            policy("[policy]\nscreen_called = [\"+1555*\"]\nskip_called = [\"+15550000000\"]\n");
        assert!(p.screens_called("+15551234567"));
        assert!(!p.screens_called("+16661234567"), "not opted in");
        assert!(!p.screens_called("+15550000000"), "opted out");
    }

    #[test]
    fn categories_map_to_actions_by_name() {
        let p = policy("[policy.categories]\n\"Nonprofit Call\" = \"tag\"\nScam = \"reject\"\n");
        assert_eq!(p.category_action("Scam"), Some(Action::Reject));
        assert_eq!(p.category_action("Nonprofit Call"), Some(Action::Tag));
        assert_eq!(p.category_action("Telemarketer"), None);
    }

    #[test]
    fn dry_run_records_the_decision_but_passes() {
        let p = policy("[policy]\ndry_run = true\n");
        let d = p.decide(Rule::Denylist, Action::Reject, vec![], 1);
        assert_eq!(
            (d.action, d.decided, d.dry_run),
            (Action::Pass, Action::Reject, true)
        );
        assert_ne!(d.id, p.decide(Rule::Denylist, Action::Reject, vec![], 1).id);
    }
}
