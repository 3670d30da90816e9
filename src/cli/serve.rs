//! `sipsentry serve`: the proxy, the admin server and the cache refresh.

use std::sync::Arc;

use super::{Built, build, shutdown_signal};
use crate::admin::{self, AdminError, AdminState};
use crate::config::{Config, ConfigError};
use crate::history::HistoryWriter;
use crate::reload::Reloader;
use crate::reputation::hiya_cache::build::{BuildError, BuildOptions, build_generation};
use crate::reputation::hiya_cache::store::HiyaCache;
use crate::reputation::hiya_cache::sync::{SyncClient, SyncOutcome};
use crate::reputation::hiya_cache::{self};
use crate::reputation::providers::didchecks::DidChecks;
use crate::server::{Server, ServerError};

/// With the cache enabled and nothing on disk, builds the bundled demo cache
/// (India) so a new user sees calls screened with no account.
pub fn ensure_demo_cache(config: &Config) -> Result<bool, BuildError> {
    let h = &config.hiya_cache;
    let dir = &h.dir;
    if !h.enabled || !h.countries.is_empty() || !HiyaCache::open(dir, &[]).snapshot().is_empty() {
        return Ok(false);
    }
    let opts = BuildOptions::new("IN");
    build_generation(hiya_cache::sample::DEMO_IN, &dir.join("IN"), &opts)?;
    Ok(true)
}

/// Refreshes `country` every `refresh_minutes` (±10% jitter, so countries and
/// proxies spread out), honouring each error's retry policy; stops for good
/// on 410 Gone. One task per country: never two syncs of one country at once.
pub async fn refresh_loop(
    config: Arc<Config>,
    cache: Arc<HiyaCache>,
    client: Arc<SyncClient>,
    country: String,
) {
    let h = &config.hiya_cache;
    let normal = std::time::Duration::from_secs(h.refresh_minutes * 60);
    // The first sync starts within seconds (jittered so countries and proxies
    // do not all call at once); calls are served from disk meanwhile.
    let mut wait = jitter(FIRST_SYNC_DELAY, &country);
    loop {
        tokio::time::sleep(wait).await;
        match client
            .sync_country(&h.dir, &country, h.max_bad_percent)
            .await
        {
            Ok(SyncOutcome::Updated(m)) => {
                let (cache, cc) = (Arc::clone(&cache), country.clone());
                let _ = tokio::task::spawn_blocking(move || cache.reload_changed(&[cc])).await;
                tracing::info!(country = %country, generation = %m.generation, rows = m.rows_kept, "Hiya cache updated");
                wait = jitter(normal, &country);
            }
            Ok(_) => wait = jitter(normal, &country),
            Err(e) => match e.retry_after(normal) {
                Some(after) => {
                    tracing::warn!(country = %country, error = %e, retry_in_s = after.as_secs(), "Hiya cache sync failed; still serving the previous generation");
                    wait = after;
                }
                None => {
                    tracing::error!(country = %country, error = %e, "Hiya cache sync stopped for this country");
                    return;
                }
            },
        }
    }
}

/// `base` ± 10%, varying by country and time.
fn jitter(base: std::time::Duration, country: &str) -> std::time::Duration {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write(country.as_bytes());
    let unit = (h.finish() % 2001) as f64 / 1000.0 - 1.0; // -1.0..=1.0
    base.mul_f64(1.0 + unit * 0.1)
}

/// How long after start `serve` runs the first sync of each country.
pub const FIRST_SYNC_DELAY: std::time::Duration = std::time::Duration::from_secs(2);

/// How often `serve` looks for generations built by `cache import` or a sync.
pub const CACHE_POINTER_CHECK: std::time::Duration = std::time::Duration::from_secs(30);

/// Reloads the policy on every SIGHUP; a bad file is refused and logged.
#[cfg(unix)]
async fn reload_on_sighup(state: Arc<AdminState>) {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut hup) = signal(SignalKind::hangup()) else {
        return;
    };
    while hup.recv().await.is_some() {
        if let Some(r) = &state.reloader {
            match r.reload() {
                Ok(done) if done.restart_needed.is_empty() => {
                    tracing::info!("SIGHUP: policy reloaded")
                }
                Ok(done) => tracing::warn!(
                    restart_needed = ?done.restart_needed,
                    "SIGHUP: policy reloaded; other changed sections need a restart"
                ),
                Err(e) => {
                    tracing::error!(error = %e, "SIGHUP: config refused; the policy in force is unchanged")
                }
            }
        }
    }
}

/// `sipsentry serve`: runs until SIGINT or SIGTERM. `config_path` is the file
/// the config came from (reread on SIGHUP and `POST /api/v1/reload`).
pub async fn serve(
    config: Config,
    config_path: Option<std::path::PathBuf>,
) -> Result<(), ServerError> {
    match ensure_demo_cache(&config) {
        Ok(true) => eprintln!(
            "no Hiya cache under {}: serving the bundled demo cache for IN (try caller +919000000001)",
            config.hiya_cache.dir.display()
        ),
        Ok(false) => {}
        Err(e) => {
            tracing::warn!(error = %e, "could not build the bundled demo cache; running without it")
        }
    }
    let config = Arc::new(config);
    let Built {
        pipeline,
        hiya: cache,
        providers,
    } = build(&config)?;
    let writer = if config.history.enabled {
        Some(
            HistoryWriter::start(&config.history.path, config.history.retention_days)
                .map_err(ServerError::History)?,
        )
    } else {
        tracing::warn!("history.enabled = false: decisions are not recorded");
        None
    };
    let pipeline = match &writer {
        Some(w) => pipeline.with_history(w.sink()),
        None => pipeline,
    };
    let server = Server::bind(Arc::clone(&config), pipeline).await?;
    let admin_listener = admin::bind(&config).await.map_err(|e| match e {
        AdminError::NoToken { .. } => ServerError::Config(ConfigError::Invalid {
            key: "admin.listen",
            message: e.to_string(),
        }),
        other => ServerError::Admin(other),
    })?;
    let admin_addr = admin_listener.local_addr().ok();
    let reloader = Reloader {
        path: config_path,
        pipeline: server.pipeline(),
        running: Arc::clone(&config),
    };
    let admin_state = Arc::new(AdminState {
        hiya: cache.clone(),
        providers: providers.clone(),
        history: writer.as_ref().map(|w| Arc::clone(&w.sink().stats)),
        proxy: Some(server.proxy()),
        reloader: Some(reloader),
        ..AdminState::new(Arc::clone(&config), server.pipeline())
    });
    #[cfg(unix)]
    tokio::spawn(reload_on_sighup(Arc::clone(&admin_state)));
    // One signal, two listeners: the SIP server and the admin server.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown_signal().await;
        let _ = stop_tx.send(true);
    });
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    tokio::spawn(admin::serve(
        admin_listener,
        admin_state,
        stopped(stop_rx.clone()),
    ));
    if let Some(dc) = providers.didchecks.clone() {
        tokio::spawn(balance_watch(dc));
    }
    if let Some(cache) = &cache {
        for (cc, c) in cache.snapshot().iter() {
            tracing::info!(country = %cc, generation = %c.manifest.generation, rows = c.rows(), "Hiya cache serving");
        }
    }
    if let (Some(cache), false) = (&cache, config.hiya_cache.countries.is_empty()) {
        let h = &config.hiya_cache;
        match SyncClient::from_env(&h.base_url, &h.credential_id_env, &h.credential_secret_env) {
            Ok(client) => {
                let client = Arc::new(client);
                for cc in &h.countries {
                    tokio::spawn(refresh_loop(
                        Arc::clone(&config),
                        Arc::clone(cache),
                        Arc::clone(&client),
                        cc.clone(),
                    ));
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "Hiya cache refresh disabled; serving what is on disk")
            }
        }
    }
    if let Some(cache) = cache {
        let countries = config.hiya_cache.countries.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(CACHE_POINTER_CHECK);
            loop {
                tick.tick().await;
                let cache = Arc::clone(&cache);
                let countries = countries.clone();
                // Opening verifies checksums: file I/O, off the runtime threads.
                if let Ok(swapped) =
                    tokio::task::spawn_blocking(move || cache.reload_changed(&countries)).await
                {
                    for cc in swapped {
                        tracing::info!(country = %cc, "new Hiya cache generation serving");
                    }
                }
            }
        });
    }
    eprintln!(
        "sipsentry listening on {} (UDP+TCP), next hop {}, admin http://{}; Ctrl-C to stop",
        server.local_addr(),
        config.sip.next_hop,
        admin_addr.map_or_else(|| config.admin.listen.to_string(), |a| a.to_string())
    );
    server.run(stopped(stop_rx)).await;
    // Every call is decided now: write what is queued, then exit.
    if let Some(writer) = writer {
        let _ = tokio::task::spawn_blocking(move || writer.close()).await;
        tracing::info!("history flushed");
    }
    Ok(())
}

/// How often `serve` asks DIDChecks for the credit balance (the answers to
/// lookups carry it too; this catches a quiet proxy running dry).
pub const BALANCE_CHECK: std::time::Duration = std::time::Duration::from_secs(15 * 60);

/// Keeps the DIDChecks balance known; the client warns below the floor.
async fn balance_watch(client: Arc<DidChecks>) {
    let mut tick = tokio::time::interval(BALANCE_CHECK);
    loop {
        tick.tick().await;
        if let Err(e) = client.balance().await {
            tracing::warn!(error = %e, "DIDChecks balance not available");
        }
    }
}
