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

/// `sipsentry serve`: runs until SIGINT or SIGTERM.
pub fn serve(config: &ConfigArg, runtime: &tokio::runtime::Runtime) -> Result<()> {
    let loaded = config.load()?;
    runtime.block_on(crate::app::serve(
        loaded,
        config.config.clone(),
        shutdown_signal(),
    ))
}

/// `sipsentry config check`: validates and prints the effective values.
pub fn config_check(config: &ConfigArg) -> Result<()> {
    print!("{}", config.load()?.to_toml());
    eprintln!("config ok");
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
