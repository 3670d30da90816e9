//! From evidence to an action: the `[policy]` rules of DESIGN.md §3–§5.
//!
//! Rule order: called-number opt-in/opt-out (an unscreened DID passes with
//! no lookup) → allowlist (final, no lookups) → denylist (final) → anonymous
//! callers → reputation: a per-category override of the deciding evidence,
//! else the score against the thresholds (reject, then divert, then tag) →
//! when no source could answer, `on_lookup_failure`. `dry_run` keeps the
//! decision for the record but always passes the call.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::config::{Action, Config, LabelsConfig, PolicyConfig};
use crate::number::{Country, NumberSet};
use crate::reputation::score::ScoresConfig;
use crate::reputation::{Evidence, Source};
use crate::sip::uri::SipUri;

/// Which rule produced a decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Rule {
    /// The called number is not opted in to screening (or opted out).
    NotScreened,
    Allowlist,
    Denylist,
    Anonymous,
    Threshold,
    /// `policy.categories` set the action for the deciding category.
    Category,
    /// No source could answer in time; `on_lookup_failure` applied.
    FailurePolicy,
    /// Too many calls under screening at once; `on_lookup_failure` applied.
    Overload,
}

impl Rule {
    /// Every rule, in declaration order (metrics index by `rule as usize`).
    pub const ALL: [Rule; 8] = [
        Rule::NotScreened,
        Rule::Allowlist,
        Rule::Denylist,
        Rule::Anonymous,
        Rule::Threshold,
        Rule::Category,
        Rule::FailurePolicy,
        Rule::Overload,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Rule::NotScreened => "not_screened",
            Rule::Allowlist => "allowlist",
            Rule::Denylist => "denylist",
            Rule::Anonymous => "anonymous",
            Rule::Threshold => "threshold",
            Rule::Category => "category",
            Rule::FailurePolicy => "failure_policy",
            Rule::Overload => "overload",
        }
    }
}

/// The outcome of screening one call, with everything needed to explain it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Decision {
    /// Unique per decision; quoted in the 603+ Reason and the history.
    pub id: String,
    /// What is done to the call.
    pub action: Action,
    /// What the policy chose; differs from `action` only under `dry_run`.
    pub decided: Action,
    pub rule: Rule,
    pub score: u8,
    pub category: Option<String>,
    pub evidence: Vec<Evidence>,
    pub dry_run: bool,
    /// Time spent deciding, in microseconds.
    pub decision_us: u64,
}

impl Decision {
    /// The source shown in labels: the evidence that set the score.
    pub fn origin(&self) -> &'static str {
        self.evidence
            .iter()
            .max_by_key(|e| e.score)
            .map(|e| e.source.as_str())
            .unwrap_or(self.rule.as_str())
    }

    pub fn sources(&self) -> String {
        let mut names: Vec<&str> = self.evidence.iter().map(|e| e.source.as_str()).collect();
        names.dedup();
        names.join(",")
    }
}

/// The policy compiled from config: sets built once, not per call.
#[derive(Debug)]
pub struct Policy {
    pub config: PolicyConfig,
    pub labels: LabelsConfig,
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
    format!("{ms:x}{seq:04x}")
}

impl Policy {
    /// Compiles the policy. The config was validated, so this only fails if it
    /// was built by hand with bad values.
    pub fn new(config: &Config) -> Result<Self, crate::config::ConfigError> {
        config.validate()?;
        let invalid = |key, message: String| crate::config::ConfigError::Invalid { key, message };
        Ok(Policy {
            allow: NumberSet::new(&config.policy.allow)
                .map_err(|e| invalid("policy.allow", e.to_string()))?,
            deny: NumberSet::new(&config.policy.deny)
                .map_err(|e| invalid("policy.deny", e.to_string()))?,
            screen_called: NumberSet::new(&config.policy.screen_called)
                .map_err(|e| invalid("policy.screen_called", e.to_string()))?,
            skip_called: NumberSet::new(&config.policy.skip_called)
                .map_err(|e| invalid("policy.skip_called", e.to_string()))?,
            scores: config.scores.clone(),
            country: Country::from_iso(&config.numbers.default_country)
                .ok_or_else(|| invalid("numbers.default_country", "unknown country".into()))?,
            divert_to: SipUri::parse_config(&config.policy.divert_to)
                .map_err(|e| invalid("policy.divert_to", e))?,
            config: config.policy.clone(),
            labels: config.labels.clone(),
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
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(toml: &str) -> Policy {
        Policy::new(&Config::from_toml(toml).unwrap()).unwrap()
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
