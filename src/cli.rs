//! What the subcommands do; `main.rs` only parses arguments and maps errors to
//! exit codes.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use serde::Serialize;

use crate::config::{Config, ConfigError};
use crate::number;
use crate::pipeline::{CallCtx, Pipeline};
use crate::policy::{Decision, Policy};
use crate::reputation::LocalSource;
use crate::reputation::hiya_cache::build::{BuildError, BuildOptions, Manifest, build_generation};
use crate::reputation::hiya_cache::store::HiyaCache;
use crate::reputation::hiya_cache::sync::{SyncClient, SyncError, SyncOutcome};
use crate::reputation::hiya_cache::{self};
use crate::server::{Server, ServerError};
use crate::sip::caller::{CallerId, Trust};

/// Builds the screening pipeline the configuration describes, with the Hiya
/// local cache (returned too, so `serve` can swap in new generations).
pub fn build_pipeline(config: &Config) -> Result<(Pipeline, Option<Arc<HiyaCache>>), ConfigError> {
    let pipeline = Pipeline::new(Arc::new(Policy::new(config)?));
    if !config.hiya_cache.enabled {
        return Ok((pipeline, None));
    }
    let cache = Arc::new(HiyaCache::open(
        &config.hiya_cache.dir,
        &config.hiya_cache.countries,
    ));
    let local: Arc<dyn LocalSource> = Arc::clone(&cache) as Arc<dyn LocalSource>;
    Ok((pipeline.with_local(local), Some(cache)))
}

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

/// `sipsentry serve`: runs until SIGINT or SIGTERM.
pub async fn serve(config: Config) -> Result<(), ServerError> {
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
    let (pipeline, cache) = build_pipeline(&config)?;
    let server = Server::bind(Arc::clone(&config), pipeline).await?;
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
        "sipsentry listening on {} (UDP+TCP), next hop {}; Ctrl-C to stop",
        server.local_addr(),
        config.sip.next_hop
    );
    server.run(shutdown_signal()).await;
    Ok(())
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

/// The `check --json` document (DESIGN.md §6).
#[derive(Debug, Serialize)]
pub struct CheckReport {
    pub number: String,
    pub e164: Option<String>,
    pub score: u8,
    pub action: &'static str,
    pub rule: &'static str,
    pub category: Option<String>,
    pub evidence: Vec<crate::reputation::Evidence>,
}

/// `sipsentry check NUMBER`: the full pipeline for one number, as if it called.
pub async fn check(
    config: &Config,
    number_text: &str,
) -> Result<(CheckReport, Decision), ConfigError> {
    let (pipeline, _) = build_pipeline(config)?;
    let e164 = number::to_e164(number_text, &pipeline.policy.country).ok();
    let caller = CallerId {
        trust: Trust::From,
        raw: number_text.to_string(),
        display: None,
        anonymous: e164.is_none() && number_text.trim().eq_ignore_ascii_case("anonymous"),
        e164: e164.clone(),
        verstat: None,
        attest: None,
    };
    let source: SocketAddr = ([127, 0, 0, 1], 0).into();
    let mut ctx = CallCtx::new("check".into(), source, caller, String::new());
    let decision = pipeline.screen(&mut ctx).await;
    let report = CheckReport {
        number: number_text.to_string(),
        e164,
        score: decision.score,
        action: decision.action.as_str(),
        rule: decision.rule.as_str(),
        category: decision.category.clone(),
        evidence: decision.evidence.clone(),
    };
    Ok((report, decision))
}

/// A person-readable explanation of a check.
pub fn explain(report: &CheckReport, decision: &Decision) -> String {
    let mut out = format!(
        "number   {}\nE.164    {}\n",
        report.number,
        report.e164.as_deref().unwrap_or("(not a phone number)")
    );
    if report.evidence.is_empty() {
        out.push_str("evidence none (no source knows this number)\n");
    }
    for e in &report.evidence {
        out.push_str(&format!(
            "evidence {:<12} score {:>3}  category {}  {}\n",
            e.source.as_str(),
            e.score,
            e.category.as_deref().unwrap_or("-"),
            *e.raw
        ));
    }
    out.push_str(&format!(
        "decision {} (rule: {}, score {}){}\n",
        report.action,
        report.rule,
        report.score,
        if decision.dry_run {
            format!(" — dry run, would {}", decision.decided.as_str())
        } else {
            String::new()
        }
    ));
    out
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

/// `sipsentry cache status`.
pub fn cache_status(config: &Config) -> Vec<CacheStatus> {
    let cache = HiyaCache::open(&config.hiya_cache.dir, &config.hiya_cache.countries);
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
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
