//! The four things the proxy can do with a call, and the two choices that
//! shape how (divert by retarget or redirect; live lookups inline or in the
//! background).

use serde::{Deserialize, Serialize};

/// The four things the proxy can do with a call (docs/sip.md, "Actions").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Action {
    Pass,
    Tag,
    Divert,
    Reject,
}

impl Action {
    /// Every action, in declaration order (`action as usize` indexes it).
    pub const ALL: [Action; 4] = [Action::Pass, Action::Tag, Action::Divert, Action::Reject];

    pub fn as_str(self) -> &'static str {
        match self {
            Action::Pass => "pass",
            Action::Tag => "tag",
            Action::Divert => "divert",
            Action::Reject => "reject",
        }
    }
}

// `ALL` is kept by hand beside the enum; this fails to compile if a variant
// is added without it.
const _: () = assert!(Action::ALL.len() == Action::Reject as usize + 1);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DivertMode {
    /// Rewrite the Request-URI to `divert_to` and relay to the next hop.
    Retarget,
    /// Answer `302 Moved Temporarily` with `Contact: <divert_to>`.
    Redirect,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LiveMode {
    /// A call the local sources do not know waits for the live providers.
    Inline,
    /// Such a call goes on at once; the answers serve the next call.
    Background,
}
