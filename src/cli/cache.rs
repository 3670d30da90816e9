//! `sipsentry cache sync | import | status`.

use std::path::Path;

use serde::Serialize;

use crate::config::Config;
use crate::reputation::hiya_cache::build::{BuildOptions, Manifest, build_generation};
use crate::reputation::hiya_cache::store::HiyaCache;
use crate::reputation::hiya_cache::sync::{SyncClient, SyncError, SyncOutcome};
use crate::reputation::hiya_cache::{self};
use crate::reputation::providers::didchecks::DidChecks;

/// `sipsentry cache sync`: pulls each country now. Fails as a whole only when
/// the credentials are missing; otherwise returns each country's outcome.
pub async fn cache_sync(
    config: &Config,
    countries: &[String],
) -> Result<Vec<(String, Result<SyncOutcome, SyncError>)>, SyncError> {
    let h = &config.hiya_cache;
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

/// `sipsentry cache import`: builds a generation from a local file.
pub fn cache_import(
    config: &Config,
    file: &Path,
    country: &str,
    etag: Option<String>,
    memory_mb: usize,
) -> anyhow::Result<Manifest> {
    use anyhow::Context;
    let input =
        std::fs::File::open(file).with_context(|| format!("cannot open {}", file.display()))?;
    let size = input.metadata().map(|m| m.len()).unwrap_or(0);
    let progress = progress_reader(input, size);
    let mut opts = BuildOptions::new(country);
    opts.etag = etag;
    opts.max_bad_percent = config.hiya_cache.max_bad_percent;
    opts.memory_budget = memory_mb << 20;
    let manifest = build_generation(progress, &config.hiya_cache.dir.join(country), &opts)
        .with_context(|| {
            format!("cache for {country} not built; the serving generation is unchanged")
        })?;
    Ok(manifest)
}

/// Wraps a reader with a byte progress bar when stderr is a terminal.
fn progress_reader<R: std::io::Read + 'static>(r: R, size: u64) -> Box<dyn std::io::Read> {
    use std::io::IsTerminal;
    if std::io::stderr().is_terminal() {
        let bar = indicatif::ProgressBar::new(size);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        Box::new(bar.wrap_read(r))
    } else {
        Box::new(r)
    }
}

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

/// `sipsentry cache status`: opens the caches on disk.
pub fn cache_status(config: &Config) -> Vec<CacheStatus> {
    cache_status_of(&HiyaCache::open(
        &config.hiya_cache.dir,
        &config.hiya_cache.countries,
    ))
}

/// The status of caches already open (the serving ones, for the admin API:
/// no re-reading and re-hashing of the files per request).
pub fn cache_status_of(cache: &HiyaCache) -> Vec<CacheStatus> {
    let now_ms = crate::history::now_ms() as u64;
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
                last_check_ms: hiya_cache::sync::last_check(c.dir.parent().unwrap_or(&c.dir)),
                age_s: now_ms.saturating_sub(m.built_at_ms) / 1000,
            }
        })
        .collect()
}

/// The DIDChecks credit line of `cache status`.
#[derive(Debug, Serialize)]
pub struct BalanceStatus {
    pub balance: Option<i64>,
    pub check_price: Option<f64>,
    pub floor: i64,
    pub below_floor: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl BalanceStatus {
    pub fn line(&self) -> String {
        match (&self.error, self.balance) {
            (Some(e), _) => format!("didchecks balance unknown: {e}"),
            (None, Some(b)) if self.below_floor => format!(
                "didchecks balance {b} checks — below the floor of {}; top up the account",
                self.floor
            ),
            (None, Some(b)) => format!("didchecks balance {b} checks (floor {})", self.floor),
            (None, None) => "didchecks balance unknown".into(),
        }
    }
}

/// `GET /credits/balance`, for `cache status`.
pub async fn didchecks_balance(client: &DidChecks, floor: i64) -> BalanceStatus {
    match client.balance().await {
        Ok(b) => BalanceStatus {
            balance: Some(b.balance),
            check_price: b.check_price,
            floor,
            below_floor: b.balance < floor,
            error: None,
        },
        Err(e) => BalanceStatus {
            balance: None,
            check_price: None,
            floor,
            below_floor: false,
            error: Some(e.to_string()),
        },
    }
}
