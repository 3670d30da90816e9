//! Keeping the serving caches current: the first-run demo cache, syncing
//! now (command and API), the periodic refresh of each country, and what
//! `cache status` shows.

use std::sync::Arc;

use serde::Serialize;

use super::HiyaCacheConfig;
use super::build::{BuildError, BuildOptions, build_generation};
use super::store::HiyaCache;
use super::sync::{SyncClient, SyncError, SyncOutcome};

/// With the cache enabled, no countries configured and nothing at all
/// under `hiya_cache.dir`, builds the bundled demo cache (India) so a new
/// user sees calls screened with no account. Anything of the operator's on
/// disk, even a damaged generation, means no demo: demo numbers must never
/// be enforced in place of the operator's data.
pub fn ensure_demo_cache(h: &HiyaCacheConfig) -> Result<bool, BuildError> {
    let dir = &h.dir;
    let anything_on_disk = std::fs::read_dir(dir)
        .map(|mut entries| entries.next().is_some())
        .unwrap_or(false);
    if !h.enabled || !h.countries.is_empty() || anything_on_disk {
        return Ok(false);
    }
    let opts = BuildOptions::new("IN");
    build_generation(super::sample::DEMO_IN, &dir.join("IN"), &opts)?;
    Ok(true)
}

/// Pulls each country now (`countries`, or the configured ones when empty),
/// as `sipsentry cache sync` and `POST /api/v1/cache/sync` do. Fails as a
/// whole only when the credentials are missing; otherwise returns each
/// country's outcome.
pub async fn sync_now(
    h: &HiyaCacheConfig,
    countries: &[String],
) -> Result<Vec<(String, Result<SyncOutcome, SyncError>)>, SyncError> {
    let wanted: Vec<String> = if countries.is_empty() {
        h.countries.clone()
    } else {
        countries.to_vec()
    };
    let client = SyncClient::from_env(&h.base_url, &h.credential_id_env, &h.credential_secret_env)?
        .with_progress();
    let mut out = Vec::new();
    for cc in wanted {
        let r = client.sync_country(&h.dir, &cc, h.max_bad_percent).await;
        out.push((cc, r));
    }
    Ok(out)
}

/// Refreshes `country` every `refresh_minutes` (±10% jitter, so countries and
/// proxies spread out), honouring each error's retry policy; stops for good
/// on 410 Gone. One task per country: never two syncs of one country at once.
pub async fn refresh_loop(
    h: Arc<HiyaCacheConfig>,
    cache: Arc<HiyaCache>,
    client: Arc<SyncClient>,
    country: String,
) {
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

/// One line of `cache status`.
#[derive(Debug, Serialize)]
pub struct CacheStatus {
    pub country: String,
    pub generation: String,
    pub rows: u64,
    pub rejected: u64,
    pub duplicates: u64,
    pub etag: Option<String>,
    /// Last change: when the serving generation was built.
    pub built_at_ms: u64,
    /// Last successful check with the API (200 or 304), if any.
    pub last_check_ms: Option<u64>,
    pub age_s: u64,
}

/// The status of the caches on disk (`sipsentry cache status`): opens them.
pub fn status_on_disk(h: &HiyaCacheConfig) -> Vec<CacheStatus> {
    status_of(&HiyaCache::open(&h.dir, &h.countries))
}

/// The status of caches already open (the serving ones, for the admin API:
/// no re-reading and re-hashing of the files per request).
pub fn status_of(cache: &HiyaCache) -> Vec<CacheStatus> {
    let now_ms = jiff::Timestamp::now().as_millisecond().max(0) as u64;
    cache
        .snapshot()
        .values()
        .map(|c| {
            let m = &c.manifest;
            CacheStatus {
                country: m.country.clone(),
                generation: m.generation.clone(),
                rows: m.rows_kept,
                rejected: m.rows_rejected.values().sum(),
                duplicates: m.duplicates,
                etag: m.etag.clone(),
                built_at_ms: m.built_at_ms,
                last_check_ms: super::sync::last_check(c.dir.parent().unwrap_or(&c.dir)),
                age_s: now_ms.saturating_sub(m.built_at_ms) / 1000,
            }
        })
        .collect()
}
