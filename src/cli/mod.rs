//! What the subcommands do; `main.rs` only parses arguments and maps errors to
//! exit codes.

use std::sync::Arc;
use std::time::Duration;

use crate::config::{Config, ConfigError};
use crate::pipeline::Pipeline;
use crate::policy::Policy;
use crate::reputation::hiya_cache::store::HiyaCache;
use crate::reputation::providers::didchecks::DidChecks;
use crate::reputation::providers::gilraen::{Gilraen, GilraenSource};
use crate::reputation::providers::hiya_status::HiyaStatus;
use crate::reputation::{LiveSource, LocalSource, SourceError};

pub mod bulk;
mod cache;
mod check;
pub mod history;
mod serve;

pub use cache::{
    BalanceStatus, CacheStatus, cache_import, cache_status, cache_status_of, cache_sync,
    didchecks_balance,
};
pub use check::{
    CheckReport, OwnCheckError, OwnReport, check, check_own, check_with, explain, explain_own,
};
pub use serve::{CACHE_POINTER_CHECK, FIRST_SYNC_DELAY, ensure_demo_cache, refresh_loop, serve};

/// The enabled provider clients, shared by the pipeline and the commands
/// that call them directly (balance, bulk, `check --own`).
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
}

/// What `build` assembles from the configuration.
pub struct Built {
    pub pipeline: Pipeline,
    /// The Hiya local cache, so `serve` can swap in new generations.
    pub hiya: Option<Arc<HiyaCache>>,
    pub providers: Providers,
}

/// Builds the screening pipeline the configuration describes: the Hiya local
/// cache, then the enabled live providers behind the live cache. Call inside
/// the tokio runtime (live lookups are spawned on it).
pub fn build(config: &Config) -> Result<Built, ConfigError> {
    let mut pipeline =
        Pipeline::new(Arc::new(Policy::new(config)?)).with_live_cache(config.live_cache.clone());
    let hiya = config.hiya_cache.enabled.then(|| {
        Arc::new(HiyaCache::open(
            &config.hiya_cache.dir,
            &config.hiya_cache.countries,
        ))
    });
    if let Some(cache) = &hiya {
        pipeline = pipeline.with_local(Arc::clone(cache) as Arc<dyn LocalSource>);
    }
    let providers = Providers::from_config(config)?;
    let p = &config.providers;
    let ms = Duration::from_millis;
    if let Some(c) = &providers.didchecks {
        pipeline = pipeline.with_live_timeout(
            Arc::clone(c) as Arc<dyn LiveSource>,
            ms(p.didchecks.timeout_ms),
        );
    }
    if let Some(c) = &providers.gilraen {
        pipeline = pipeline.with_live_timeout(
            Arc::new(GilraenSource(Arc::clone(c))),
            ms(p.gilraen.timeout_ms),
        );
    }
    if let Some(c) = &providers.hiya_status {
        pipeline = pipeline.with_live_timeout(
            Arc::clone(c) as Arc<dyn LiveSource>,
            ms(p.hiya_status.timeout_ms),
        );
    }
    Ok(Built {
        pipeline,
        hiya,
        providers,
    })
}

/// Completes on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
