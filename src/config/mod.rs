//! The TOML configuration of DESIGN.md §5.
//!
//! Every key has a default, so an empty file (or no file) is a working
//! configuration. Unknown keys and bad values are refused with the key's dotted
//! path and the reason, so an operator can fix the file without reading code.
//! Secrets never live here: the config only names the environment variables
//! that hold them.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

mod validate;

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    #[error("cannot read config file {path} (check the path given with -c)")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file is not valid TOML: {message}")]
    Toml { message: String },
    #[error("config key `{key}`: {message}")]
    Syntax { key: String, message: String },
    #[error("config key `{key}`: {message}")]
    Invalid { key: &'static str, message: String },
}

/// The whole configuration. `deny_unknown_fields` makes a typo a start-up error
/// instead of a silently ignored setting.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub sip: SipConfig,
    pub numbers: NumbersConfig,
    pub policy: PolicyConfig,
    pub labels: LabelsConfig,
    pub hiya_cache: HiyaCacheConfig,
    pub providers: ProvidersConfig,
    pub live_cache: LiveCacheConfig,
    pub history: HistoryConfig,
    pub admin: AdminConfig,
    /// The evidence → score mappings of DESIGN.md §4.
    pub scores: crate::reputation::score::ScoresConfig,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SipConfig {
    pub listen: SocketAddr,
    pub next_hop: String,
    pub accept_from: Vec<IpNet>,
    pub trusted_peers: Vec<IpNet>,
    pub record_route: bool,
    /// After each datagram, keep polling the UDP socket without sleeping for
    /// this many microseconds (0 = off). Trades CPU for latency: see
    /// [`crate::sip::udp`].
    pub busy_poll_us: u32,
    /// INVITE transactions remembered at once (each 64×T1 after its last
    /// change, about 1.2 KB); new calls beyond get 503 Retry-After.
    pub max_transactions: usize,
    /// Timer C in seconds: how long a forwarded INVITE waits for a final
    /// response after the PBX's last provisional before the proxy CANCELs
    /// it and answers 408 (RFC 3261 §16.6: over 3 minutes; carriers often
    /// use 60–120 s as a ring timeout).
    pub timer_c_s: u32,
}

impl Default for SipConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:5060".parse().expect("static address"),
            next_hop: "sip:127.0.0.1:5080".into(),
            accept_from: vec!["0.0.0.0/0".parse().expect("static net")],
            trusted_peers: vec!["127.0.0.1/32".parse().expect("static net")],
            record_route: false,
            busy_poll_us: 0,
            max_transactions: crate::sip::transaction::MAX_TRANSACTIONS,
            timer_c_s: crate::sip::transaction::TIMER_C.as_secs() as u32,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct NumbersConfig {
    pub default_country: String,
}

impl Default for NumbersConfig {
    fn default() -> Self {
        Self {
            default_country: "US".into(),
        }
    }
}

/// The four things the proxy can do with a call (DESIGN.md §3).
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
    /// Every action, in declaration order (metrics index by `action as usize`).
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
    Inline,
    Background,
}

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
        }
    }
}

/// Reject codes an operator may choose (DESIGN.md §3).
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

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProvidersConfig {
    pub didchecks: DidChecksConfig,
    pub gilraen: GilraenConfig,
    pub hiya_status: HiyaStatusConfig,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct DidChecksConfig {
    pub enabled: bool,
    pub base_url: String,
    pub token_env: String,
    pub webhook_secret_env: String,
    pub timeout_ms: u64,
    /// Client-side request rate limit (the API documents 10/s).
    pub max_requests_per_second: u32,
    /// A warning is logged when the credit balance falls below this.
    pub balance_floor: i64,
}

impl Default for DidChecksConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            base_url: "https://num.huhu.fr/api".into(),
            token_env: "DIDCHECKS_TOKEN".into(),
            webhook_secret_env: "DIDCHECKS_WEBHOOK_SECRET".into(),
            timeout_ms: 250,
            max_requests_per_second: 10,
            balance_floor: 100,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct GilraenConfig {
    pub enabled: bool,
    pub base_url: String,
    pub key_env: String,
    pub secret_env: String,
    pub fields: Vec<String>,
    pub timeout_ms: u64,
}

impl Default for GilraenConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            base_url: "https://api.gilraen.biz".into(),
            key_env: "GILRAEN_KEY".into(),
            secret_env: "GILRAEN_SECRET".into(),
            fields: vec!["index".into(), "unwanted".into(), "bans".into()],
            timeout_ms: 250,
        }
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

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LiveCacheConfig {
    pub ttl_minutes: u64,
    pub negative_ttl_minutes: u64,
    pub max_entries: usize,
}

impl Default for LiveCacheConfig {
    fn default() -> Self {
        Self {
            ttl_minutes: 1440,
            negative_ttl_minutes: 60,
            max_entries: 1_000_000,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct HistoryConfig {
    /// Record every decision (on by default; off only for measurements or
    /// when another system keeps the record).
    pub enabled: bool,
    pub path: PathBuf,
    pub retention_days: u32,
}

impl Default for HistoryConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            path: "sipsentry-data/history.db".into(),
            retention_days: 90,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    pub listen: SocketAddr,
    pub token_env: String,
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".parse().expect("static address"),
            token_env: "SIPSENTRY_ADMIN_TOKEN".into(),
        }
    }
}

impl Config {
    /// Parses TOML text and validates every value.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        // One line with the position: the bare message has none, the full
        // Display spans several lines (DESIGN.md §6 wants a one-line cause).
        let de = toml::Deserializer::parse(text).map_err(|e| {
            let at = e.span().map(|span| {
                let before = &text[..span.start.min(text.len())];
                let line = before.matches('\n').count() + 1;
                let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
                format!("line {line}, column {column}: ")
            });
            ConfigError::Toml {
                message: format!("{}{}", at.unwrap_or_default(), e.message()),
            }
        })?;
        let config: Config = serde_path_to_error::deserialize(de).map_err(|e| {
            let key = e.path().to_string();
            ConfigError::Syntax {
                key,
                message: e.into_inner().message().to_string(),
            }
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Loads `path`, or, with no path, `./sipsentry.toml` if it exists, or the
    /// embedded defaults.
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        let path = match path {
            Some(p) => p.to_path_buf(),
            None => {
                let local = PathBuf::from("sipsentry.toml");
                if !local.exists() {
                    let config = Config::default();
                    config.validate()?;
                    return Ok(config);
                }
                local
            }
        };
        let text = std::fs::read_to_string(&path).map_err(|source| ConfigError::Read {
            path: path.clone(),
            source,
        })?;
        Self::from_toml(&text)
    }

    /// The effective configuration as TOML. Secrets are never in it (only the
    /// names of their environment variables are), so it is safe to print.
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# cannot render config: {e}\n"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_gives_documented_defaults() {
        let c = Config::from_toml("").unwrap();
        assert_eq!(c.sip.listen.to_string(), "127.0.0.1:5060");
        assert_eq!(c.policy.reject_code, 603);
        assert_eq!(c.policy.divert_at, 101);
        assert_eq!(c.live_cache.max_entries, 1_000_000);
    }

    #[test]
    fn unknown_key_is_refused_with_its_path() {
        let err = Config::from_toml("[policy]\ntag_att = 3\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("tag_att"), "{err}");
        assert!(err.contains("policy"), "{err}");
    }

    #[test]
    fn bad_values_name_the_key() {
        for (toml, key) in [
            ("[policy]\nreject_code = 404\n", "policy.reject_code"),
            ("[policy]\ntag_at = 150\n", "policy.tag_at"),
            ("[policy]\nanonymous = \"maybe\"\n", "policy.anonymous"),
            ("[sip]\nlisten = \"nowhere\"\n", "sip.listen"),
            (
                "[sip]\ntrusted_peers = [\"10.0.0.0/33\"]\n",
                "sip.trusted_peers",
            ),
            ("[sip]\nnext_hop = \"http://x\"\n", "sip.next_hop"),
            ("[sip]\nbusy_poll_us = 20000\n", "sip.busy_poll_us"),
            ("[sip]\nbusy_poll_us = -1\n", "busy_poll_us"),
            ("[sip]\nmax_transactions = 0\n", "sip.max_transactions"),
            ("[sip]\ntimer_c_s = 0\n", "sip.timer_c_s"),
            (
                "[numbers]\ndefault_country = \"XX\"\n",
                "numbers.default_country",
            ),
            ("[policy]\ndeny = [\"12ab\"]\n", "policy.deny"),
            (
                "[policy]\nlookup_budget_ms = 0\n",
                "policy.lookup_budget_ms",
            ),
        ] {
            let err = Config::from_toml(toml).unwrap_err().to_string();
            assert!(err.contains(key), "{toml:?} gave {err}");
        }
    }

    #[test]
    fn a_toml_syntax_error_says_where() {
        let err = Config::from_toml("[sip]\nlisten = \"127.0.0.1:5060\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 2"), "{err}");
        assert_eq!(err.lines().count(), 1, "{err}");
    }

    #[test]
    fn rendered_defaults_load_back() {
        let c = Config::default();
        let again = Config::from_toml(&c.to_toml()).unwrap();
        assert_eq!(again.policy.allow, c.policy.allow);
    }
}
