//! The `sipsentry` command line. Parsing and exit codes only; the work is in
//! the library (`sipsentry::cli`).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use sipsentry::cli;
use sipsentry::config::ConfigError;

#[derive(Parser)]
#[command(name = "sipsentry", version, about = "Inline SIP call-screening proxy")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy (UDP and TCP on sip.listen) until SIGINT/SIGTERM.
    Serve {
        /// Config file (default: ./sipsentry.toml if present, else built-in defaults).
        #[arg(short = 'c', long = "config")]
        config: Option<PathBuf>,
    },
    /// Run the screening pipeline for one number and explain the decision.
    Check {
        number: String,
        #[arg(short = 'c', long = "config")]
        config: Option<PathBuf>,
        /// Print one JSON object instead of the explanation.
        #[arg(long)]
        json: bool,
    },
    /// Configuration commands.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Validate the configuration and print the effective values (secrets are
    /// never in the file, only the names of their environment variables).
    Check {
        #[arg(short = 'c', long = "config")]
        config: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "sipsentry=info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sipsentry: {e:#}");
            let config_error = e.chain().any(|c| c.downcast_ref::<ConfigError>().is_some());
            ExitCode::from(if config_error { 2 } else { 1 })
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    match cli.command {
        Command::Serve { config } => {
            let config = cli::load_config(config.as_deref())?;
            runtime.block_on(cli::serve(config)).map_err(|e| match e {
                sipsentry::server::ServerError::Config(c) => anyhow::Error::new(c),
                other => anyhow::Error::new(other),
            })
        }
        Command::Check {
            number,
            config,
            json,
        } => {
            let config = cli::load_config(config.as_deref())?;
            let (report, decision) = runtime.block_on(cli::check(&config, &number))?;
            if json {
                println!("{}", serde_json::to_string(&report)?);
            } else {
                print!("{}", cli::explain(&report, &decision));
            }
            Ok(())
        }
        Command::Config {
            command: ConfigCommand::Check { config },
        } => {
            let config = cli::load_config(config.as_deref())?;
            print!("{}", config.to_toml());
            eprintln!("config ok");
            Ok(())
        }
    }
}
