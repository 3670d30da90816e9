//! A decision and the rule that produced it.

use serde::Serialize;

use super::Action;
use crate::reputation::Evidence;

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
    /// The Identity header failed verification and
    /// `policy.on_stir_failure = "reject"`.
    StirFailure,
}

impl Rule {
    /// Every rule, in declaration order (metrics index by `rule as usize`).
    pub const ALL: [Rule; 9] = [
        Rule::NotScreened,
        Rule::Allowlist,
        Rule::Denylist,
        Rule::Anonymous,
        Rule::Threshold,
        Rule::Category,
        Rule::FailurePolicy,
        Rule::Overload,
        Rule::StirFailure,
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
            Rule::StirFailure => "stir_failure",
        }
    }
}

// `ALL` is kept by hand beside the enum; this fails to compile if a variant
// is added without it.
const _: () = assert!(Rule::ALL.len() == Rule::StirFailure as usize + 1);

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
    /// The final response of a rejection when the rule has its own (a
    /// failed Identity: 436, 437 or 438); `None`: `policy.reject_code`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response_code: Option<u16>,
    /// The `verstat` to put on the relayed identity (STIR verification on).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verstat: Option<&'static str>,
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
