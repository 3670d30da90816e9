//! `sipsentry cache import | sync | status`.

use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::Serialize;

use super::ConfigArg;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::reputation::hiya_cache::build::{BuildOptions, Manifest, build_generation};
use crate::reputation::hiya_cache::refresh;
use crate::reputation::hiya_cache::sync::SyncOutcome;
use crate::reputation::providers::didchecks::DidChecks;

#[derive(Debug, clap::Subcommand)]
pub enum CacheCommand {
    /// Build a cache generation from a local gzip TSV file and make it current.
    Import {
        /// The Hiya cache file: gzip TSV with seven columns.
        file: PathBuf,
        /// Uppercase ISO country code of the file (e.g. IN).
        #[arg(long)]
        country: String,
        /// ETag to record in the manifest.
        #[arg(long)]
        etag: Option<String>,
        /// Memory for sorting, in MiB; larger files spill sorted runs to disk.
        #[arg(long, default_value_t = 256)]
        memory_mb: usize,
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Pull the Hiya caches now (the configured countries, or those given).
    Sync {
        /// A country to sync (repeatable; default: hiya_cache.countries).
        #[arg(long = "country")]
        countries: Vec<String>,
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Per country: generation, rows, rejected rows, ETag, last check, age.
    Status {
        #[command(flatten)]
        config: ConfigArg,
        /// Print one JSON document instead of the table.
        #[arg(long)]
        json: bool,
    },
}

pub fn run(command: CacheCommand, runtime: &tokio::runtime::Runtime) -> Result<()> {
    match command {
        CacheCommand::Import {
            file,
            country,
            etag,
            memory_mb,
            config,
        } => {
            let m = import(&config.load()?, &file, &country, etag, memory_mb)?;
            println!(
                "{}: generation {} serving {} numbers ({} rows read, {} rejected {:?}, {} duplicates)",
                m.country,
                m.generation,
                m.rows_kept,
                m.rows_total,
                m.rows_rejected.values().sum::<u64>(),
                m.rows_rejected,
                m.duplicates
            );
            Ok(())
        }
        CacheCommand::Sync { countries, config } => sync(&config.load()?, &countries, runtime),
        CacheCommand::Status { config, json } => status(&config.load()?, json, runtime),
    }
}

/// Builds a generation from a local file.
fn import(
    config: &Config,
    file: &Path,
    country: &str,
    etag: Option<String>,
    memory_mb: usize,
) -> Result<Manifest> {
    let input =
        std::fs::File::open(file).with_context(|| format!("cannot open {}", file.display()))?;
    let size = input.metadata().map(|m| m.len()).unwrap_or(0);
    let progress = progress_reader(input, size);
    let mut opts = BuildOptions::new(country);
    opts.etag = etag;
    opts.max_bad_percent = config.hiya_cache.max_bad_percent;
    opts.memory_budget = memory_mb << 20;
    build_generation(progress, &config.hiya_cache.dir.join(country), &opts).map_err(|source| {
        Error::CacheBuild {
            country: country.to_string(),
            source,
        }
    })
}

fn sync(config: &Config, countries: &[String], runtime: &tokio::runtime::Runtime) -> Result<()> {
    if countries.is_empty() && config.hiya_cache.countries.is_empty() {
        return Err(anyhow::anyhow!(
            "no countries to sync: pass --country CC or set hiya_cache.countries"
        )
        .into());
    }
    let mut failed = 0;
    for (cc, result) in runtime.block_on(refresh::sync_now(&config.hiya_cache, countries))? {
        match result {
            Ok(SyncOutcome::Updated(m)) => println!(
                "{cc}: updated to {} ({} numbers, {} rows rejected)",
                m.generation,
                m.rows_kept,
                m.rows_rejected.values().sum::<u64>()
            ),
            Ok(_) => println!("{cc}: not modified"),
            Err(e) => {
                failed += 1;
                eprintln!("{cc}: {e}");
            }
        }
    }
    if failed > 0 {
        return Err(anyhow::anyhow!(
            "{failed} countries failed to sync; the serving generations are unchanged"
        )
        .into());
    }
    Ok(())
}

fn status(config: &Config, json: bool, runtime: &tokio::runtime::Runtime) -> Result<()> {
    let status = refresh::status_on_disk(&config.hiya_cache);
    let balance = crate::app::Providers::from_config(config)?
        .didchecks
        .map(|dc| {
            runtime.block_on(didchecks_balance(
                &dc,
                config.providers.didchecks.balance_floor,
            ))
        });
    if json {
        let doc = serde_json::json!({ "hiya": status, "didchecks": balance });
        let text = serde_json::to_string_pretty(&doc).context("cannot encode the status")?;
        println!("{text}");
        return Ok(());
    }
    if status.is_empty() {
        println!(
            "no Hiya cache generations under {}",
            config.hiya_cache.dir.display()
        );
    } else {
        println!(
            "{:<8}{:<16}{:>12}{:>10}{:>12}  {:<20}{:>10}",
            "country", "generation", "rows", "rejected", "duplicates", "etag", "age"
        );
        for s in status {
            println!(
                "{:<8}{:<16}{:>12}{:>10}{:>12}  {:<20}{:>9}s",
                s.country,
                s.generation,
                s.rows,
                s.rejected,
                s.duplicates,
                s.etag.as_deref().unwrap_or("-"),
                s.age_s
            );
        }
    }
    if let Some(b) = balance {
        println!("{}", b.line());
    }
    Ok(())
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
