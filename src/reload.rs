//! Reloading the policy without dropping calls (SIGHUP, `POST /api/v1/reload`).
//!
//! The config file is read and validated again; a bad file is refused and
//! the policy in force stays. A good one replaces the policy (`[policy]`,
//! `[labels]`, `[scores]`, `numbers.default_country`) atomically: calls in
//! flight finish with the policy they started with, new calls get the new
//! one. Sections that need a restart (listeners, caches, providers, history,
//! admin) are named in the answer, not applied. The TLS certificate and key
//! (`sip.tls_cert`, `sip.tls_key`) are read again on every reload, so a
//! renewed certificate is served to new connections without a restart;
//! established connections keep theirs.

use std::path::PathBuf;
use std::sync::Arc;

use crate::config::{Config, ConfigError};
use crate::pipeline::Pipeline;
use crate::sip::transport::Tls;

pub struct Reloader {
    /// The file `serve` was started with (`None`: ./sipsentry.toml or defaults).
    pub path: Option<PathBuf>,
    pub pipeline: Arc<Pipeline>,
    /// The configuration the process started with.
    pub running: Arc<Config>,
    /// The SIP transport's TLS, whose certificate a reload re-reads.
    pub tls: Option<Arc<Tls>>,
}

/// What a reload did.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Reloaded {
    pub reloaded: bool,
    /// Whether the TLS certificate was read again.
    pub certificate: bool,
    /// Sections that changed in the file but only take effect on a restart.
    pub restart_needed: Vec<&'static str>,
}

impl Reloader {
    pub fn reload(&self) -> Result<Reloaded, ConfigError> {
        let new = Config::load(self.path.as_deref())?;
        let policy = new.policy()?;
        // The certificate first: a bad one refuses the whole reload, so the
        // operator sees the error rather than a half-applied file.
        let certificate = match &self.tls {
            Some(tls) => tls.reload().map_err(|e| ConfigError::Invalid {
                key: "sip.tls_cert",
                message: e.to_string(),
            })?,
            None => false,
        };
        self.pipeline.set_policy(Arc::new(policy));
        let old = &self.running;
        let mut restart_needed = Vec::new();
        for (name, changed) in [
            ("sip", differs(&old.sip, &new.sip)),
            ("hiya_cache", differs(&old.hiya_cache, &new.hiya_cache)),
            ("providers", differs(&old.providers, &new.providers)),
            ("live_cache", differs(&old.live_cache, &new.live_cache)),
            ("history", differs(&old.history, &new.history)),
            ("admin", differs(&old.admin, &new.admin)),
            ("log", differs(&old.log, &new.log)),
            ("hep", differs(&old.hep, &new.hep)),
        ] {
            if changed {
                restart_needed.push(name);
            }
        }
        tracing::info!(restart_needed = ?restart_needed, "policy reloaded");
        Ok(Reloaded {
            reloaded: true,
            certificate,
            restart_needed,
        })
    }
}

/// Whether two config sections differ (compared by their serialized form).
fn differs<T: serde::Serialize>(a: &T, b: &T) -> bool {
    serde_json::to_value(a).ok() != serde_json::to_value(b).ok()
}
