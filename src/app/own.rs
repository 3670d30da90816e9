//! The own-number monitor and the clients it uses, built from the
//! configuration for `serve` and the `own` commands alike.

use std::sync::Arc;

use crate::config::{Config, ConfigError};
use crate::own::{Monitor, Provider};
use crate::reputation::providers::didchecks::DidChecks;
use crate::reputation::providers::hiya_status::HiyaStatus;

/// The monitor of `[own_numbers]`, its results in the node's SQLite file
/// (`history.path`); `None` when no numbers are configured.
pub fn monitor(config: &Config) -> crate::Result<Option<Arc<Monitor>>> {
    if config.own_numbers.numbers.is_empty() {
        return Ok(None);
    }
    let m = Monitor::open(&config.own_numbers, &config.history.path)
        .map_err(|e| anyhow::anyhow!("own numbers: {e}"))?;
    Ok(Some(Arc::new(m)))
}

/// The Hiya status client for the scheduled checks, when `hiya_status`
/// watches the numbers (whether or not it also screens inbound calls).
pub fn hiya_client(config: &Config) -> Result<Option<Arc<HiyaStatus>>, ConfigError> {
    if !config.own_numbers.watches(Provider::HiyaStatus) {
        return Ok(None);
    }
    HiyaStatus::from_config(&config.providers.hiya_status)
        .map(Some)
        .map_err(|e| ConfigError::Invalid {
            key: "providers.hiya_status.api_key_env",
            message: format!("{e} (own_numbers are watched with hiya_status)"),
        })
}

/// The DIDChecks client for routines and the balance, from
/// `[providers.didchecks]` (enabled for screening or not).
pub fn didchecks_client(config: &Config) -> Result<Arc<DidChecks>, ConfigError> {
    DidChecks::from_config(&config.providers.didchecks).map_err(|e| ConfigError::Invalid {
        key: "providers.didchecks.token_env",
        message: e.to_string(),
    })
}
