//! The commands behind the thin `main.rs`: each subcommand's arguments
//! (clap definitions) and the code that turns them into calls of the
//! library. Nothing else in the library imports this module.

use std::path::PathBuf;

use crate::config::Config;
use crate::error::Result;

pub mod bench;
pub mod bulk;
pub mod cache;
pub mod check;
pub mod history;
pub mod lists;
pub mod log_format;
pub mod log_time;
pub mod log_writer;
pub mod logging;
pub mod next_hops;
pub mod own;
pub mod stir;

/// `-c/--config FILE`, shared by every command that reads the config.
#[derive(Debug, Clone, clap::Args)]
pub struct ConfigArg {
    /// Config file (default: ./sipsentry.toml if present, else built-in defaults).
    #[arg(short = 'c', long = "config")]
    pub config: Option<PathBuf>,
}

impl ConfigArg {
    pub fn load(&self) -> Result<Config> {
        Ok(Config::load(self.config.as_deref())?)
    }
}

/// `sipsentry serve`: runs until SIGINT or SIGTERM. Its logs take their
/// format from `log.format` unless `log_format` (`--log-format`) says.
pub fn serve(
    config: &ConfigArg,
    log_format: Option<crate::config::LogFormat>,
    runtime: &tokio::runtime::Runtime,
) -> Result<()> {
    let loaded = config.load()?;
    let _logs = logging::init(
        log_format.unwrap_or(loaded.log.format),
        loaded.log.decisions,
        logging::Output::Batched,
    );
    runtime.block_on(crate::app::serve(
        loaded,
        config.config.clone(),
        shutdown_signal(),
    ))
}

/// `sipsentry config check`: validates, runs the checks `serve` runs
/// before binding, and prints the effective values.
pub fn config_check(config: &ConfigArg, runtime: &tokio::runtime::Runtime) -> Result<()> {
    let loaded = config.load()?;
    runtime.block_on(crate::app::preflight(&loaded))?;
    print!("{}", loaded.to_toml());
    eprintln!("config ok");
    Ok(())
}

/// `sipsentry config example`: every key with its default and what it
/// means, as a file to start from.
pub fn config_example() -> Result<()> {
    print!("{}", crate::config::example());
    Ok(())
}

/// Says on stderr when the Hiya cache is enabled but nothing is on disk
/// where this configuration looks, so an answer without it is not taken
/// for "this number is clean".
pub fn warn_if_no_local_cache(config: &Config, built: &crate::app::Built) {
    if let Some(cache) = &built.hiya
        && cache.snapshot().is_empty()
    {
        eprintln!(
            "warning: no Hiya cache under {} (is this the config `serve` uses? -c FILE); answering without it",
            config.hiya_cache.dir.display()
        );
    }
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
