//! The background work `serve` runs beside the proxy. Each is an endless
//! loop; [`until`] ends it when the shutdown token is cancelled.

use std::future::Future;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::admin::AdminState;
use crate::reputation::hiya_cache::refresh::CACHE_POINTER_CHECK;
use crate::reputation::hiya_cache::store::HiyaCache;
use crate::reputation::providers::didchecks::DidChecks;

/// Runs `work` until it ends or `stop` is cancelled.
pub(super) fn until(
    stop: &CancellationToken,
    work: impl Future<Output = ()> + Send + 'static,
) -> impl Future<Output = ()> + Send + 'static {
    let stop = stop.clone();
    async move {
        tokio::select! {
            _ = stop.cancelled() => {}
            _ = work => {}
        }
    }
}

/// Reloads the policy on every SIGHUP; a bad file is refused and logged.
#[cfg(unix)]
pub(super) async fn reload_on_sighup(state: Arc<AdminState>) {
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

/// Keeps the DIDChecks balance known; the client warns below the floor.
pub(super) async fn balance_watch(client: Arc<DidChecks>) {
    let mut tick = tokio::time::interval(super::BALANCE_CHECK);
    loop {
        tick.tick().await;
        if let Err(e) = client.balance().await {
            tracing::warn!(error = %e, "DIDChecks balance not available");
        }
    }
}

/// Serves generations built by `cache import` or a sync in another process
/// as soon as their `current` pointer moves.
pub(super) async fn watch_cache_pointers(cache: Arc<HiyaCache>, countries: Vec<String>) {
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
}

/// Takes in list changes made by another process (`sipsentry lists`,
/// `sipsentry report`) and drops expired entries, every
/// [`crate::lists::POLL_INTERVAL`]. A failing read is logged once per
/// spell of failures; the lists in force stay.
pub(super) async fn watch_lists(lists: Arc<crate::lists::Lists>) {
    let mut tick = tokio::time::interval(lists.poll_interval());
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        tick.tick().await;
        let l = Arc::clone(&lists);
        match tokio::task::spawn_blocking(move || l.refresh()).await {
            Ok(Ok(())) => failing = false,
            Ok(Err(e)) if !failing => {
                failing = true;
                tracing::warn!(error = %e, "cannot read the runtime lists; the ones in force stay");
            }
            _ => {}
        }
    }
}
