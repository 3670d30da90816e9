//! The enabled provider clients, built once from the configuration and
//! shared by the pipeline and the commands that call them directly
//! (balance, bulk, `check --own`).

use std::sync::Arc;
use std::time::Duration;

use crate::config::{Config, ConfigError};
use crate::reputation::providers::didchecks::DidChecks;
use crate::reputation::providers::gilraen::{Gilraen, GilraenSource};
use crate::reputation::providers::hiya_status::HiyaStatus;
use crate::reputation::{LiveSource, SourceError};

#[derive(Debug, Clone, Default)]
pub struct Providers {
    pub didchecks: Option<Arc<DidChecks>>,
    pub gilraen: Option<Arc<Gilraen>>,
    pub hiya_status: Option<Arc<HiyaStatus>>,
}

impl Providers {
    /// Clients for the enabled providers. A missing credential for an
    /// enabled provider is a configuration error: better to refuse to start
    /// than to screen silently without it.
    pub fn from_config(config: &Config) -> Result<Self, ConfigError> {
        let p = &config.providers;
        let missing = |key: &'static str| {
            move |e: SourceError| ConfigError::Invalid {
                key,
                message: e.to_string(),
            }
        };
        Ok(Providers {
            didchecks: p
                .didchecks
                .enabled
                .then(|| DidChecks::from_config(&p.didchecks))
                .transpose()
                .map_err(missing("providers.didchecks.token_env"))?,
            gilraen: p
                .gilraen
                .enabled
                .then(|| Gilraen::from_config(&p.gilraen))
                .transpose()
                .map_err(missing("providers.gilraen"))?,
            hiya_status: p
                .hiya_status
                .enabled
                .then(|| HiyaStatus::from_config(&p.hiya_status))
                .transpose()
                .map_err(missing("providers.hiya_status.api_key_env"))?,
        })
    }

    /// The clients as live sources, each with its request timeout.
    pub fn live_sources(&self, config: &Config) -> Vec<(Arc<dyn LiveSource>, Duration)> {
        let p = &config.providers;
        let ms = Duration::from_millis;
        let mut out: Vec<(Arc<dyn LiveSource>, Duration)> = Vec::new();
        if let Some(c) = &self.didchecks {
            out.push((Arc::clone(c) as _, ms(p.didchecks.timeout_ms)));
        }
        if let Some(c) = &self.gilraen {
            out.push((
                Arc::new(GilraenSource(Arc::clone(c))),
                ms(p.gilraen.timeout_ms),
            ));
        }
        if let Some(c) = &self.hiya_status {
            out.push((Arc::clone(c) as _, ms(p.hiya_status.timeout_ms)));
        }
        out
    }
}
