//! The composition root: the one place that knows every part.
//!
//! [`build`] turns a configuration into the screening pipeline (the Hiya
//! local cache, then the enabled live providers behind the live cache).
//! [`serve`] builds everything `sipsentry serve` runs (the history writer,
//! the SIP server, the admin server, the cache refresh and the watchers),
//! runs each as a task under one [`CancellationToken`] and one
//! [`TaskTracker`], and on shutdown cancels them all and joins every one
//! before the history is flushed and the function returns.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::admin::{self, AdminState};
use crate::cluster::Cluster;
use crate::config::{Config, ConfigError};
use crate::error::Result;
use crate::history::{Backend, HistoryStore, HistoryWriter, PgHistory, PgOptions, PgTarget};
use crate::lists::Lists;
use crate::pipeline::Pipeline;
use crate::reload::Reloader;
use crate::reputation::hiya_cache::refresh;
use crate::reputation::hiya_cache::store::HiyaCache;
use crate::reputation::hiya_cache::sync::SyncClient;
use crate::reputation::shared::SharedTier;
use crate::reputation::{LiveSource, LocalSource};
use crate::server::Server;

pub mod own;
mod providers;
mod tasks;

pub use providers::Providers;

/// What [`build`] assembles from the configuration.
pub struct Built {
    pub pipeline: Pipeline,
    /// The Hiya local cache, so `serve` can swap in new generations.
    pub hiya: Option<Arc<HiyaCache>>,
    pub providers: Providers,
    /// The runtime lists, when their database (`history.path`) exists.
    pub lists: Option<Arc<Lists>>,
    /// The shared state, when `[cluster] redis_url` is set.
    pub cluster: Option<Cluster>,
}

fn cluster(config: &Config) -> Result<Option<Cluster>, ConfigError> {
    Cluster::from_config(&config.cluster).map_err(|e| ConfigError::Invalid {
        key: "cluster.redis_url",
        message: e.to_string(),
    })
}

/// Builds the screening pipeline the configuration describes: the Hiya local
/// cache, then the enabled live providers behind the live cache. Call inside
/// the tokio runtime (live lookups are spawned on it).
pub fn build(config: &Config) -> Result<Built, ConfigError> {
    let mut pipeline =
        Pipeline::new(Arc::new(config.policy()?)).with_live_cache(config.live_cache.clone());
    let cluster = cluster(config)?;
    if let Some(c) = &cluster {
        pipeline = pipeline.with_shared(Arc::clone(&c.tier) as Arc<dyn SharedTier>);
    }
    let hiya = config.hiya_cache.enabled.then(|| {
        Arc::new(HiyaCache::open(
            &config.hiya_cache.dir,
            &config.hiya_cache.countries,
        ))
    });
    if let Some(cache) = &hiya {
        pipeline = pipeline.with_local(Arc::clone(cache) as Arc<dyn LocalSource>);
    }
    let stir = crate::stir::Stir::from_config(&config.stir).map_err(|e| ConfigError::Invalid {
        key: "stir",
        message: e.to_string(),
    })?;
    if let Some(s) = stir {
        pipeline = pipeline.with_stir(Arc::new(s));
    }
    let providers = Providers::from_config(config)?;
    for (source, timeout) in providers.live_sources(config) {
        pipeline = pipeline.with_live_timeout(source as Arc<dyn LiveSource>, timeout);
    }
    // `check` and `bulk` screen with the operator's lists too; only `serve`
    // creates the database.
    let lists = if config.history.backend == Backend::Sqlite && config.history.path.exists() {
        match Lists::open(&config.history.path) {
            Ok(l) => Some(Arc::new(l)),
            Err(e) => {
                tracing::warn!(error = %e, "runtime lists not read; screening without them");
                None
            }
        }
    } else {
        None
    };
    if let Some(l) = &lists {
        pipeline = pipeline.with_lists(Arc::clone(l.runtime()));
    }
    Ok(Built {
        pipeline,
        hiya,
        providers,
        lists,
        cluster,
    })
}

/// The PostgreSQL database `history.url` names, with the password from
/// `history.password_env`.
fn pg_target(config: &Config) -> Result<PgTarget> {
    let password = std::env::var(&config.history.password_env)
        .ok()
        .filter(|p| !p.is_empty());
    Ok(PgTarget::new(
        &config.history.url,
        password.as_deref(),
        config.history.ca_file(),
    )?)
}

/// Where `history`, the API and the console read the history from;
/// PostgreSQL readers run on `handle`.
pub fn history_store(config: &Config, handle: tokio::runtime::Handle) -> Result<HistoryStore> {
    Ok(match config.history.backend {
        Backend::Postgres => HistoryStore::Postgres(PgHistory::new(pg_target(config)?, handle)?),
        _ => HistoryStore::Sqlite(config.history.path.clone()),
    })
}

/// The runtime lists' store for the command line: the SQLite file, or a
/// connection to the cluster's PostgreSQL database (blocking: call outside
/// the runtime's tasks).
pub fn lists_store(config: &Config, handle: tokio::runtime::Handle) -> Result<crate::lists::Store> {
    Ok(match history_store(config, handle)? {
        HistoryStore::Postgres(pg) => crate::lists::Store::postgres(pg.read()?),
        _ => crate::lists::Store::open(&config.history.path)?,
    })
}

/// The history writer `history.backend` names. Blocking (a PostgreSQL
/// writer tries its database once): call from a blocking context.
fn history_writer(config: &Config) -> Result<HistoryWriter> {
    let h = &config.history;
    let batch = Duration::from_millis(h.batch_ms);
    let capacity = crate::history::writer::QUEUE_CAPACITY;
    Ok(match h.backend {
        Backend::Postgres => HistoryWriter::postgres(
            PgOptions {
                target: pg_target(config)?,
                node_id: config.cluster.node_id(),
                spool_path: h.spool_path.clone(),
                spool_max_bytes: h.spool_max_mb.saturating_mul(1 << 20),
            },
            h.retention_days,
            capacity,
            batch,
        )?,
        _ => HistoryWriter::with_options(&h.path, h.retention_days, capacity, batch)?,
    })
}

/// What `serve` checks before it binds anything, so that `config check`
/// refuses exactly what `serve` would: every enabled provider's secret in
/// the environment, readable STIR trust anchors, no network-facing admin API
/// without a token, a next hop that resolves.
pub async fn preflight(config: &Config) -> Result<()> {
    Providers::from_config(config)?;
    cluster(config)?;
    if config.history.backend == Backend::Postgres {
        // The URL and history.ca_file (the database may be down: not checked).
        pg_target(config)?;
    }
    crate::stir::Stir::from_config(&config.stir).map_err(|e| ConfigError::Invalid {
        key: "stir",
        message: e.to_string(),
    })?;
    admin::check_exposure(config).map_err(|e| ConfigError::Invalid {
        key: "admin.listen",
        message: e.to_string(),
    })?;
    own::hiya_client(config)?;
    crate::server::next_hops(&config.sip).await?;
    crate::server::tls(&config.sip)?;
    hep_collector(config)?;
    Ok(())
}

/// The `[hep]` collector checked (its address resolved), without starting
/// capture.
fn hep_collector(config: &Config) -> Result<()> {
    if config.hep.collector.is_empty() {
        return Ok(());
    }
    std::net::ToSocketAddrs::to_socket_addrs(&config.hep.collector)
        .ok()
        .and_then(|mut a| a.next())
        .map(|_| ())
        .ok_or_else(|| {
            ConfigError::Invalid {
                key: "hep.collector",
                message: format!(
                    "{:?} does not resolve; give host:port, e.g. \"homer.example:9060\"",
                    config.hep.collector
                ),
            }
            .into()
        })
}

/// `sipsentry serve`: runs until `shutdown` completes. `config_path` is the
/// file the config came from (reread on SIGHUP and `POST /api/v1/reload`).
pub async fn serve(
    config: Config,
    config_path: Option<PathBuf>,
    shutdown: impl Future<Output = ()>,
) -> Result<()> {
    match refresh::ensure_demo_cache(&config.hiya_cache) {
        Ok(true) => eprintln!(
            "no Hiya cache under {}: serving the bundled demo cache for IN (try caller +919000000001)",
            config.hiya_cache.dir.display()
        ),
        Ok(false) => {}
        Err(e) => {
            tracing::warn!(error = %e, "could not build the bundled demo cache; running without it")
        }
    }
    preflight(&config).await?;
    let config = Arc::new(config);
    let Built {
        pipeline,
        hiya,
        providers,
        lists,
        cluster,
    } = build(&config)?;
    let writer = if config.history.enabled {
        let c = Arc::clone(&config);
        Some(
            tokio::task::spawn_blocking(move || history_writer(&c))
                .await
                .map_err(anyhow::Error::new)??,
        )
    } else {
        tracing::warn!("history.enabled = false: decisions are not recorded");
        None
    };
    // The runtime lists live beside the history, recorded or not.
    let history = history_store(&config, tokio::runtime::Handle::current())?;
    let (lists, pipeline) = match (lists, &history) {
        (Some(l), _) => (l, pipeline),
        (None, HistoryStore::Postgres(pg)) => {
            // Read by the watcher's first round, at once.
            let l = Arc::new(Lists::postgres(Arc::clone(pg)));
            let p = pipeline.with_lists(Arc::clone(l.runtime()));
            (l, p)
        }
        (None, _) => {
            let l = Arc::new(Lists::open(&config.history.path)?);
            let p = pipeline.with_lists(Arc::clone(l.runtime()));
            (l, p)
        }
    };
    let pipeline = Arc::new(match &writer {
        Some(w) => pipeline.with_history(w.sink()),
        None => pipeline,
    });
    let server = Server::bind(config.sip.clone(), Arc::clone(&pipeline)).await?;
    let capture =
        crate::sip::capture::Capture::start(&config.hep).map_err(|e| ConfigError::Invalid {
            key: "hep",
            message: e.to_string(),
        })?;
    let capture_stats = capture.as_ref().map(|c| c.stats());
    if let Some(c) = capture {
        server.capture(c);
    }
    // `preflight` refused an exposed API already; what is left is the bind.
    let admin_listener = admin::bind(&config).await?;
    let admin_addr = admin_listener.local_addr().ok();

    let mut state = AdminState {
        hiya: hiya.clone(),
        didchecks: providers.didchecks.clone(),
        lists: Some(Arc::clone(&lists)),
        reloader: Some(Reloader {
            path: config_path,
            pipeline: Arc::clone(&pipeline),
            running: Arc::clone(&config),
            tls: server.tls(),
        }),
        history,
        next_hops: Some(Arc::clone(server.proxy().next_hops())),
        ..AdminState::new(Arc::clone(&config), Arc::clone(&pipeline))
    };
    state
        .metrics
        .register(Arc::clone(server.proxy().next_hops()) as _);
    state.metrics.register(server.proxy() as _);
    if let Some(h) = &hiya {
        state.metrics.register(Arc::clone(h) as _);
    }
    if let Some(w) = &writer {
        state.metrics.register(Arc::clone(&w.sink().stats) as _);
    }
    if let Some(dc) = &providers.didchecks {
        state.metrics.register(Arc::clone(dc) as _);
    }
    if let Some(c) = &cluster {
        state.metrics.register(Arc::clone(&c.tier.health) as _);
    }
    if let Some(tls) = server.tls() {
        state.metrics.register(tls as _);
    }
    if let Some(stats) = capture_stats {
        state.metrics.register(stats as _);
    }
    let own = own::monitor(&config)?;
    if let Some(m) = &own {
        state.metrics.register(Arc::clone(m) as _);
        if state.didchecks.is_none() && config.own_numbers.watches(crate::own::Provider::DidChecks)
        {
            // For the balance the credit webhooks report.
            if let Ok(dc) = own::didchecks_client(&config) {
                state.metrics.register(Arc::clone(&dc) as _);
                state.didchecks = Some(dc);
            }
        }
    }
    state.own = own.clone();
    let state = Arc::new(state);

    // Every task below runs until `stop` is cancelled and is joined before
    // this function returns.
    let stop = CancellationToken::new();
    let tasks = TaskTracker::new();
    tasks.spawn(admin::serve(
        admin_listener,
        Arc::clone(&state),
        stop.clone().cancelled_owned(),
    ));
    #[cfg(unix)]
    tasks.spawn(tasks::until(
        &stop,
        tasks::reload_on_sighup(Arc::clone(&state)),
    ));
    if let Some(dc) = providers.didchecks.clone() {
        tasks.spawn(tasks::until(&stop, tasks::balance_watch(dc)));
    }
    tasks.spawn(tasks::until(&stop, tasks::watch_lists(lists)));
    if let (Some(m), Some(client)) = (&own, own::hiya_client(&config)?) {
        let o = &config.own_numbers;
        let every = Duration::from_secs_f64(o.check_every_hours * 3600.0);
        let run = crate::own::schedule::run(Arc::clone(m), client, every, o.requests_per_second);
        tasks.spawn(tasks::until(&stop, run));
    }
    if let Some(c) = &cluster {
        tracing::info!(node_id = %c.node_id, "cluster node: live lookups shared through Redis");
        tasks.spawn(tasks::until(&stop, Arc::clone(&c.tier).probe_loop()));
        let cache = Arc::clone(pipeline.live().cache());
        let updates = crate::cluster::updates::subscribe(Arc::clone(&c.tier), cache);
        tasks.spawn(tasks::until(&stop, updates));
    }
    if let Some(cache) = &hiya {
        for (cc, c) in cache.snapshot().iter() {
            tracing::info!(country = %cc, generation = %c.manifest.generation, rows = c.rows(), "Hiya cache serving");
        }
        spawn_refresh(&tasks, &stop, &config, cache);
        tasks.spawn(tasks::until(
            &stop,
            tasks::watch_cache_pointers(Arc::clone(cache), config.hiya_cache.countries.clone()),
        ));
    }
    eprintln!(
        "sipsentry listening on {} (UDP+TCP), next hop {}, admin http://{}; Ctrl-C to stop",
        server.local_addr(),
        config.sip.next_hop.uris().join(", "),
        admin_addr.map_or_else(|| config.admin.listen.to_string(), |a| a.to_string())
    );
    tasks.spawn(server.run(stop.clone().cancelled_owned()));
    tasks.close();

    shutdown.await;
    stop.cancel();
    tasks.wait().await;
    // Every call is decided now: write what is queued, then exit.
    if let Some(writer) = writer {
        let _ = tokio::task::spawn_blocking(move || writer.close()).await;
        tracing::info!("history flushed");
    }
    Ok(())
}

/// One refresh task per configured country (never two syncs of a country
/// at once), when the credentials are there.
fn spawn_refresh(
    tasks: &TaskTracker,
    stop: &CancellationToken,
    config: &Config,
    cache: &Arc<HiyaCache>,
) {
    let h = &config.hiya_cache;
    if h.countries.is_empty() {
        return;
    }
    match SyncClient::from_env(&h.base_url, &h.credential_id_env, &h.credential_secret_env) {
        Ok(client) => {
            let (client, options) = (Arc::new(client), Arc::new(h.clone()));
            for cc in &h.countries {
                let run = refresh::refresh_loop(
                    Arc::clone(&options),
                    Arc::clone(cache),
                    Arc::clone(&client),
                    cc.clone(),
                );
                tasks.spawn(tasks::until(stop, run));
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "Hiya cache refresh disabled; serving what is on disk")
        }
    }
}

/// How often `serve` asks DIDChecks for the credit balance (the answers to
/// lookups carry it too; this catches a quiet proxy running dry).
pub const BALANCE_CHECK: Duration = Duration::from_secs(15 * 60);
