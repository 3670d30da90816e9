//! The TOML configuration (docs/configuration.md).
//!
//! Each module owns the options type of its own section (`[sip]` is
//! [`crate::sip::proxy::SipConfig`], `[policy]` is
//! [`crate::policy::PolicyConfig`], each provider's section sits beside
//! its client); this module assembles them into [`Config`], loads and
//! validates the file. Nothing below the composition root imports it.
//!
//! Every key has a default, so an empty file (or no file) is a working
//! configuration. Unknown keys and bad values are refused with the key's dotted
//! path and the reason, so an operator can fix the file without reading code.
//! Secrets never live here: the config only names the environment variables
//! that hold them.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::number::Country;
pub use crate::policy::{LabelsConfig, PolicyConfig};
use crate::policy::{Policy, PolicyInput};
pub use crate::reputation::hiya_cache::HiyaCacheConfig;
pub use crate::reputation::live_cache::LiveCacheConfig;
pub use crate::reputation::providers::didchecks::DidChecksConfig;
pub use crate::reputation::providers::gilraen::GilraenConfig;
pub use crate::reputation::providers::hiya_status::HiyaStatusConfig;
pub use crate::reputation::score::ScoresConfig;
pub use crate::sip::proxy::SipConfig;

mod example;
mod validate;

pub use example::example;

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
    pub log: LogConfig,
    /// The evidence → score mappings (docs/providers.md).
    pub scores: ScoresConfig,
    /// Caller-ID authentication (STIR/SHAKEN).
    pub stir: crate::stir::StirConfig,
    /// The state shared with the other nodes of a cluster.
    pub cluster: crate::cluster::ClusterConfig,
    /// Copies of every SIP message to a Homer collector (HEPv3).
    pub hep: crate::sip::capture::HepConfig,
    /// The operator's own numbers, watched for spam labels.
    pub own_numbers: crate::own::OwnNumbersConfig,
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

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProvidersConfig {
    pub didchecks: DidChecksConfig,
    pub gilraen: GilraenConfig,
    pub hiya_status: HiyaStatusConfig,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct HistoryConfig {
    /// Record every decision (on by default; off only for measurements or
    /// when another system keeps the record).
    pub enabled: bool,
    pub path: PathBuf,
    pub retention_days: u32,
    /// How often the writer takes what is queued, in ms: an abrupt kill can
    /// lose the records of the last interval (docs/operations.md).
    pub batch_ms: u64,
    /// `sqlite` (one file per node) or `postgres` (one database for a
    /// cluster, docs/scale-out.md).
    pub backend: crate::history::Backend,
    /// The PostgreSQL database: `postgres://user@host:port/database`.
    pub url: String,
    /// The environment variable holding the PostgreSQL password.
    pub password_env: String,
    /// Where records wait while PostgreSQL is unreachable.
    pub spool_path: PathBuf,
    /// The spool's bound; beyond it records are dropped (counted, logged).
    pub spool_max_mb: u64,
    /// PEM roots for the PostgreSQL server's certificate (TLS); empty: the
    /// system's roots alone, and TLS only with `sslmode=require`.
    pub ca_file: PathBuf,
}

impl HistoryConfig {
    /// `ca_file`, when set.
    pub fn ca_file(&self) -> Option<&Path> {
        (!self.ca_file.as_os_str().is_empty()).then_some(self.ca_file.as_path())
    }
}

impl Default for HistoryConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            batch_ms: crate::history::writer::BATCH_INTERVAL.as_millis() as u64,
            path: "sipsentry-data/history.db".into(),
            retention_days: 90,
            backend: crate::history::Backend::Sqlite,
            url: String::new(),
            password_env: "SIPSENTRY_PG_PASSWORD".into(),
            spool_path: "sipsentry-data/history.spool".into(),
            spool_max_mb: 256,
            ca_file: PathBuf::new(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    pub listen: SocketAddr,
    pub token_env: String,
    /// Clients of `GET /api/v1/events` (the console's Live page) at once.
    pub event_clients: usize,
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".parse().expect("static address"),
            token_env: "SIPSENTRY_ADMIN_TOKEN".into(),
            event_clients: 8,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One human-readable line per event.
    Text,
    /// One JSON object per line, for a log shipper.
    Json,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    pub format: LogFormat,
    /// One line per screened call at info: Call-ID, caller, called, action,
    /// rule, score and decision time.
    pub decisions: bool,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::Text,
            decisions: true,
        }
    }
}

impl Config {
    /// Parses TOML text and validates every value.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        // One line with the position: the bare message has none, the full
        // Display spans several lines (errors on the command line are one line).
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
            let mut message = e.into_inner().message().to_string();
            if key.ends_with("listen") && message.contains("socket address") {
                message.push_str("; give an address and a port, e.g. \"0.0.0.0:5060\"");
            }
            ConfigError::Syntax { key, message }
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
        let mut config = Self::from_toml(&text)?;
        config.resolve_paths(path.parent().unwrap_or(Path::new("")));
        Ok(config)
    }

    /// Makes the data paths a file names relative to that file's directory
    /// absolute, so `serve -c /etc/sipsentry/sipsentry.toml` finds its data
    /// wherever it is started from. Without a file they stay relative to the
    /// working directory.
    fn resolve_paths(&mut self, base: &Path) {
        if base.as_os_str().is_empty() {
            return;
        }
        for path in [
            &mut self.hiya_cache.dir,
            &mut self.history.path,
            &mut self.history.spool_path,
            &mut self.history.ca_file,
            &mut self.cluster.redis_ca_file,
            &mut self.stir.trust_anchors,
            &mut self.stir.x5u_ca_file,
        ] {
            if path.is_relative() && !path.as_os_str().is_empty() {
                *path = base.join(&*path);
            }
        }
    }

    /// `numbers.default_country`, for reading national numbers.
    pub fn country(&self) -> Result<Country, ConfigError> {
        Country::from_iso(&self.numbers.default_country).ok_or(ConfigError::Invalid {
            key: "numbers.default_country",
            message: format!(
                "unknown country {:?}; use an uppercase ISO code such as \"US\"",
                self.numbers.default_country
            ),
        })
    }

    /// The screening policy these sections describe, validated first.
    pub fn policy(&self) -> Result<Policy, ConfigError> {
        self.validate()?;
        Policy::new(PolicyInput {
            policy: &self.policy,
            labels: &self.labels,
            scores: &self.scores,
            default_country: &self.numbers.default_country,
        })
        .map_err(|e| ConfigError::Invalid {
            key: e.key,
            message: e.message,
        })
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
            ("[sip]\ntrying_delay_ms = 201\n", "sip.trying_delay_ms"),
            ("[sip]\nmax_transactions = 0\n", "sip.max_transactions"),
            ("[sip]\ntimer_c_s = 0\n", "sip.timer_c_s"),
            ("[sip]\nmax_held_mb = 0\n", "sip.max_held_mb"),
            ("[sip]\nmax_message_bytes = 100\n", "sip.max_message_bytes"),
            (
                "[sip]\nmax_message_bytes = 70000\n",
                "sip.max_message_bytes",
            ),
            ("[history]\nbatch_ms = 0\n", "history.batch_ms"),
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
