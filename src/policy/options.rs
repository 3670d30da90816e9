//! The `[policy]` and `[labels]` sections: what the operator chooses.

use serde::{Deserialize, Serialize};

use super::{Action, DivertMode, LiveMode};

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct PolicyConfig {
    pub tag_at: u8,
    pub reject_at: u8,
    pub divert_at: u8,
    pub divert_to: String,
    pub divert_mode: DivertMode,
    pub reject_code: u16,
    pub redress_url: String,
    pub anonymous: Action,
    pub lookup_budget_ms: u64,
    pub on_lookup_failure: Action,
    pub live_mode: LiveMode,
    pub allow: Vec<String>,
    pub deny: Vec<String>,
    pub dry_run: bool,
    /// Opt-in: when not empty, only calls to these DIDs are screened (exact
    /// or prefix*); the others pass with no lookup.
    pub screen_called: Vec<String>,
    /// Opt-out: calls to these DIDs are never screened.
    pub skip_called: Vec<String>,
    /// Per-category action overrides by category name (e.g. the Hiya names
    /// "Nonprofit Call" = "tag", "Scam" = "reject"). They replace the
    /// threshold action when the deciding evidence has that category.
    pub categories: std::collections::BTreeMap<String, Action>,
    /// How long a `not_spam` report allowlists the number, in days.
    pub not_spam_days: u32,
    /// What a failed Identity verification does: `score` (the `stir`
    /// evidence scores `scores.stir_failed`) or `reject` (436/437/438).
    pub on_stir_failure: StirFailure,
}

/// `policy.on_stir_failure`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum StirFailure {
    Score,
    Reject,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        Self {
            tag_at: 50,
            reject_at: 90,
            divert_at: 101,
            divert_to: "sip:voicemail@127.0.0.1:5080".into(),
            divert_mode: DivertMode::Retarget,
            reject_code: 603,
            redress_url: String::new(),
            anonymous: Action::Tag,
            lookup_budget_ms: 300,
            on_lookup_failure: Action::Pass,
            live_mode: LiveMode::Inline,
            allow: vec!["+15551230000".into(), "+1800*".into()],
            deny: vec![],
            dry_run: false,
            screen_called: vec![],
            skip_called: vec![],
            categories: Default::default(),
            not_spam_days: 30,
            on_stir_failure: StirFailure::Score,
        }
    }
}

/// Reject codes an operator may choose (docs/sip.md, "Actions").
pub const REJECT_CODES: [u16; 5] = [603, 607, 608, 486, 480];

/// A score threshold above 100 means "never".
pub const THRESHOLD_NEVER: u8 = 101;

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LabelsConfig {
    pub call_info: bool,
    pub x_headers: bool,
    pub display_prefix: String,
}

impl Default for LabelsConfig {
    fn default() -> Self {
        Self {
            call_info: true,
            x_headers: true,
            display_prefix: "SPAM? ".into(),
        }
    }
}
