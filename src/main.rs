//! The `sipsentry` command line: argument parsing, dispatch and the exit
//! code. The commands themselves are in the library (`sipsentry::cli`).

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use sipsentry::cli::{
    self, ConfigArg, bench, bulk, cache, check, history, lists, next_hops, own, stir,
};
use sipsentry::config::LogFormat;

#[derive(Parser)]
#[command(name = "sipsentry", version, about = "Inline SIP call-screening proxy")]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log format on stderr (serve's default: log.format in the config).
    #[arg(long, value_enum, global = true)]
    log_format: Option<LogFormat>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy (UDP and TCP on sip.listen) until SIGINT/SIGTERM.
    Serve {
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Run the screening pipeline for one number and explain the decision.
    Check(check::CheckArgs),
    /// Per-call latency load test in microseconds (trunk side), or with
    /// --uas the PBX side that answers it.
    Bench(Box<bench::BenchArgs>),
    /// The Hiya local cache.
    Cache {
        #[command(subcommand)]
        command: cache::CacheCommand,
    },
    /// Audit a list of numbers (one per line, or first CSV column) through
    /// the screening pipeline.
    Bulk(bulk::BulkArgs),
    /// Query or export the decision history.
    History(history::HistoryArgs),
    /// The runtime allow and deny lists (applied by a running serve within
    /// a second, no reload).
    Lists {
        #[command(subcommand)]
        command: lists::ListsCommand,
    },
    /// Report a caller as spam or not spam.
    Report(lists::ReportArgs),
    /// Export the spam / not-spam reports (CSV or JSON).
    Reports(lists::ReportsArgs),
    /// Where sip.next_hop leads: the targets DNS gives, in the order tried.
    NextHops(next_hops::NextHopsArgs),
    /// Our own numbers: how providers label the calls we place.
    Own {
        #[command(subcommand)]
        command: own::OwnCommand,
    },
    /// Caller-ID authentication (STIR/SHAKEN) tools.
    Stir {
        #[command(subcommand)]
        command: stir::StirCommand,
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
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Print a configuration file to start from: every key with its
    /// default and a comment (it passes `config check` unchanged).
    Example,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // `serve` installs its logger once it has read the config.
    let _logs = (!matches!(cli.command, Command::Serve { .. })).then(|| {
        cli::logging::init(
            cli.log_format.unwrap_or(LogFormat::Text),
            false,
            cli::logging::Output::Direct,
        )
    });
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sipsentry: {}", e.report());
            ExitCode::from(e.exit_code())
        }
    }
}

fn run(cli: Cli) -> sipsentry::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| anyhow::Error::new(e).context("cannot start the async runtime"))?;
    match cli.command {
        Command::Serve { config } => cli::serve(&config, cli.log_format, &runtime),
        Command::Check(args) => check::run(args, &runtime),
        Command::Bench(args) => bench::run(*args, &runtime),
        Command::Cache { command } => cache::run(command, &runtime),
        Command::Bulk(args) => bulk::run(args, &runtime),
        Command::History(args) => history::run(args, &runtime),
        Command::Lists { command } => lists::run(command, &runtime),
        Command::Report(args) => lists::report(args, &runtime),
        Command::Reports(args) => lists::reports(args, &runtime),
        Command::Stir { command } => stir::run(command, &runtime),
        Command::NextHops(args) => next_hops::run(args, &runtime),
        Command::Own { command } => own::run(command, &runtime),
        Command::Config {
            command: ConfigCommand::Check { config },
        } => cli::config_check(&config, &runtime),
        Command::Config {
            command: ConfigCommand::Example,
        } => cli::config_example(),
    }
}
