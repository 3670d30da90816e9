//! The `sipsentry` command line. Parsing and exit codes only; the work is in
//! the library (`sipsentry::cli`).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use sipsentry::cli;
use sipsentry::config::{Config, ConfigError};

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
        /// NUMBER is one of our own registered numbers: show how Hiya labels
        /// calls from it (reputation status and report card).
        #[arg(long)]
        own: bool,
    },
    /// Per-call latency load test in microseconds (trunk side), or with
    /// --uas the PBX side that answers it.
    Bench(BenchArgs),
    /// The Hiya local cache.
    Cache {
        #[command(subcommand)]
        command: CacheCommand,
    },
    /// Audit a list of numbers (one per line, or first CSV column) through
    /// the screening pipeline.
    Bulk {
        file: PathBuf,
        #[arg(long, value_enum, default_value = "csv")]
        format: BulkFormat,
        #[arg(short = 'c', long = "config")]
        config: Option<PathBuf>,
    },
    /// Query or export the decision history.
    History {
        /// From this time (2026-11-21T10:00:00Z, 2026-11-21, or epoch ms).
        #[arg(long)]
        from: Option<String>,
        /// Until this time (exclusive).
        #[arg(long)]
        to: Option<String>,
        /// Only this caller (normalised to E.164).
        #[arg(long)]
        number: Option<String>,
        /// Only this action: pass, tag, divert, reject.
        #[arg(long)]
        action: Option<String>,
        /// At most K rows, newest first (table default 50; csv/json without
        /// a limit export every row, oldest first).
        #[arg(long, value_name = "K")]
        limit: Option<u64>,
        #[arg(long, value_enum, default_value = "table")]
        format: HistoryFormat,
        #[arg(short = 'c', long = "config")]
        config: Option<PathBuf>,
    },
    /// Configuration commands.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
}

#[derive(clap::Args)]
#[command(group(clap::ArgGroup::new("role").required(true).args(["target", "uas"])))]
struct BenchArgs {
    /// Where to send calls (the proxy, or a UAS directly).
    #[arg(long, value_name = "HOST:PORT")]
    target: Option<String>,
    /// Run the answering side on this address instead.
    #[arg(long, value_name = "LISTEN", conflicts_with_all = ["target", "compare"])]
    uas: Option<std::net::SocketAddr>,
    #[arg(long, value_enum, default_value = "udp")]
    transport: Transport,
    /// INVITEs per second (open loop).
    #[arg(long, default_value_t = 100.0)]
    rate: f64,
    /// Number of calls.
    #[arg(long, conflicts_with = "duration")]
    count: Option<u64>,
    /// Seconds of load (count = rate × duration).
    #[arg(long)]
    duration: Option<f64>,
    /// Caller numbers, one per line, used in turn (default: generated).
    #[arg(long, value_name = "FILE")]
    callers: Option<PathBuf>,
    /// The called number.
    #[arg(long, default_value = "+15551234567")]
    called: String,
    /// At most K calls in flight.
    #[arg(long, value_name = "K")]
    concurrency: Option<u64>,
    /// Seconds without a final response before a call counts as a timeout.
    #[arg(long, default_value_t = 5.0)]
    timeout: f64,
    /// Also send calls to this target, taking turns on one schedule, and print
    /// what each target adds over the last one (e.g. --target PROXY --compare
    /// UAS). Repeatable: --compare KAMAILIO --compare UAS.
    #[arg(long, value_name = "TARGET2")]
    compare: Vec<String>,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
    /// UAS: send 180 Ringing before answering.
    #[arg(long)]
    ring: bool,
    /// UAS: wait this many milliseconds before the 200 OK.
    #[arg(long, value_name = "MS", default_value_t = 0)]
    answer_delay: u64,
    /// Also answer as the UAS on this UDP address, on the UAC's own thread
    /// (point the proxy's next hop and the --compare baseline here): the
    /// UAS's wake-ups leave the figures. With --ring; not with --answer-delay.
    #[arg(long, value_name = "LISTEN", conflicts_with = "uas")]
    with_uas: Option<std::net::SocketAddr>,
    /// Never sleep between messages: poll the sockets, yielding the CPU in
    /// between. Takes a core; with --with-uas the instrument then wakes no
    /// thread of its own, so what is left is what the target adds.
    #[arg(long, conflicts_with = "uas")]
    spin: bool,
    /// Also write every call's figures to FILE as CSV (call, target,
    /// scheduled time on CLOCK_MONOTONIC in ns, µs to the provisional, to the
    /// final and from BYE to its 200, status code), to match latencies with
    /// a scheduler trace or a capture taken at the same time.
    #[arg(long, value_name = "FILE", conflicts_with = "uas")]
    samples: Option<PathBuf>,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum BulkFormat {
    Csv,
    Json,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum HistoryFormat {
    Table,
    Csv,
    Json,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Transport {
    Udp,
    Tcp,
}

#[derive(Subcommand)]
enum CacheCommand {
    /// Build a cache generation from a local gzip TSV file and make it current.
    Import {
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
        #[arg(short = 'c', long = "config")]
        config: Option<PathBuf>,
    },
    /// Pull the Hiya caches now (the configured countries, or those given).
    Sync {
        #[arg(long = "country")]
        countries: Vec<String>,
        #[arg(short = 'c', long = "config")]
        config: Option<PathBuf>,
    },
    /// Per country: generation, rows, rejected rows, ETag, last check, age.
    Status {
        #[arg(short = 'c', long = "config")]
        config: Option<PathBuf>,
        #[arg(long)]
        json: bool,
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
        // Colour codes only for a person at a terminal, not in log files.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sipsentry: {e:#}");
            use sipsentry::reputation::hiya_cache::build::BuildError;
            let config_error = e.chain().any(|c| {
                c.downcast_ref::<ConfigError>().is_some()
                    || c.downcast_ref::<UsageError>().is_some()
                    || matches!(
                        c.downcast_ref::<cli::OwnCheckError>(),
                        Some(
                            cli::OwnCheckError::NotEnabled
                                | cli::OwnCheckError::NotANumber(_)
                                | cli::OwnCheckError::Config(_)
                        )
                    )
                    || matches!(c.downcast_ref::<BuildError>(), Some(BuildError::Country(_)))
                    || matches!(
                        c.downcast_ref::<sipsentry::history::HistoryError>(),
                        Some(sipsentry::history::HistoryError::Filter { .. })
                    )
            });
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
            let loaded = Config::load(config.as_deref())?;
            runtime
                .block_on(cli::serve(loaded, config))
                .map_err(|e| match e {
                    sipsentry::server::ServerError::Config(c) => anyhow::Error::new(c),
                    other => anyhow::Error::new(other),
                })
        }
        Command::Check {
            number,
            config,
            json,
            own,
        } => {
            let config = Config::load(config.as_deref())?;
            if own {
                let report = runtime.block_on(cli::check_own(&config, &number))?;
                if json {
                    println!("{}", serde_json::to_string(&report)?);
                } else {
                    print!("{}", cli::explain_own(&report));
                }
                return Ok(());
            }
            let (report, decision) = runtime.block_on(cli::check(&config, &number))?;
            if json {
                println!("{}", serde_json::to_string(&report)?);
            } else {
                print!("{}", cli::explain(&report, &decision));
            }
            Ok(())
        }
        Command::Bench(args) => bench(args, &runtime),
        Command::Cache {
            command:
                CacheCommand::Import {
                    file,
                    country,
                    etag,
                    memory_mb,
                    config,
                },
        } => {
            let config = Config::load(config.as_deref())?;
            let m = cli::cache_import(&config, &file, &country, etag, memory_mb)?;
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
        Command::Cache {
            command: CacheCommand::Sync { countries, config },
        } => {
            let config = Config::load(config.as_deref())?;
            anyhow::ensure!(
                !countries.is_empty() || !config.hiya_cache.countries.is_empty(),
                "no countries to sync: pass --country CC or set hiya_cache.countries"
            );
            let mut failed = 0;
            for (cc, result) in runtime.block_on(cli::cache_sync(&config, &countries))? {
                match result {
                    Ok(sipsentry::reputation::hiya_cache::sync::SyncOutcome::Updated(m)) => {
                        println!(
                            "{cc}: updated to {} ({} numbers, {} rows rejected)",
                            m.generation,
                            m.rows_kept,
                            m.rows_rejected.values().sum::<u64>()
                        )
                    }
                    Ok(_) => println!("{cc}: not modified"),
                    Err(e) => {
                        failed += 1;
                        eprintln!("{cc}: {e}");
                    }
                }
            }
            anyhow::ensure!(
                failed == 0,
                "{failed} countries failed to sync; the serving generations are unchanged"
            );
            Ok(())
        }
        Command::Cache {
            command: CacheCommand::Status { config, json },
        } => {
            let config = Config::load(config.as_deref())?;
            let status = cli::cache_status(&config);
            let balance = match cli::Providers::from_config(&config)?.didchecks {
                Some(dc) => Some(runtime.block_on(cli::didchecks_balance(
                    &dc,
                    config.providers.didchecks.balance_floor,
                ))),
                None => None,
            };
            if json {
                let doc = serde_json::json!({ "hiya": status, "didchecks": balance });
                println!("{}", serde_json::to_string_pretty(&doc)?);
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
        Command::Bulk {
            file,
            format,
            config,
        } => {
            let config = Config::load(config.as_deref())?;
            let input = std::fs::File::open(&file)
                .with_context(|| format!("cannot open {}", file.display()))?;
            let numbers = cli::bulk::read_numbers(std::io::BufReader::new(input))
                .with_context(|| format!("cannot read {}", file.display()))?;
            let stdout = std::io::stdout();
            let mut out = std::io::BufWriter::new(stdout.lock());
            let json = matches!(format, BulkFormat::Json);
            let n = runtime.block_on(cli::bulk::bulk(&config, numbers, json, &mut out))?;
            eprintln!("{n} numbers audited");
            Ok(())
        }
        Command::History {
            from,
            to,
            number,
            action,
            limit,
            format,
            config,
        } => {
            use cli::history::Format;
            let config = Config::load(config.as_deref())?;
            let filter = cli::history::filter(
                &config,
                from.as_deref(),
                to.as_deref(),
                number.as_deref(),
                action.as_deref(),
            )?;
            let format = match format {
                HistoryFormat::Table => Format::Table,
                HistoryFormat::Csv => Format::Csv,
                HistoryFormat::Json => Format::Json,
            };
            let stdout = std::io::stdout();
            let mut out = std::io::BufWriter::new(stdout.lock());
            cli::history::history(&config, &filter, limit, format, &mut out)?;
            Ok(())
        }
        Command::Config {
            command: ConfigCommand::Check { config },
        } => {
            let config = Config::load(config.as_deref())?;
            print!("{}", config.to_toml());
            eprintln!("config ok");
            Ok(())
        }
    }
}

fn resolve(target: &str) -> anyhow::Result<std::net::SocketAddr> {
    use std::net::ToSocketAddrs;
    target
        .to_socket_addrs()
        .with_context(|| format!("cannot resolve {target:?}; use HOST:PORT"))?
        .next()
        .with_context(|| format!("{target:?} resolves to no address"))
}

/// A combination of arguments that cannot work (exit 2, like clap's own).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct UsageError(&'static str);

fn usage(ok: bool, why: &'static str) -> Result<(), UsageError> {
    if ok { Ok(()) } else { Err(UsageError(why)) }
}

fn bench(args: BenchArgs, runtime: &tokio::runtime::Runtime) -> anyhow::Result<()> {
    use sipsentry::bench::{uac, uas};
    use std::time::Duration;
    if let Some(listen) = args.uas {
        let opts = uas::UasOptions {
            listen,
            ring: args.ring,
            answer_delay: Duration::from_millis(args.answer_delay),
        };
        return runtime
            .block_on(uas::run(opts, cli::shutdown_signal()))
            .with_context(|| format!("cannot run the UAS on {listen}"));
    }
    let mut targets = vec![resolve(args.target.as_deref().unwrap_or_default())?];
    for other in &args.compare {
        targets.push(resolve(other)?);
    }
    usage(
        args.rate > 0.0 && args.rate.is_finite(),
        "--rate must be a positive number",
    )?;
    let count = match (args.count, args.duration) {
        (Some(n), _) => n,
        (None, Some(s)) => (s * args.rate).round() as u64,
        (None, None) => (args.rate * 10.0).round() as u64,
    };
    let callers = match &args.callers {
        Some(path) => std::fs::read_to_string(path)
            .with_context(|| format!("cannot read callers file {}", path.display()))?
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(str::to_string)
            .collect(),
        None => vec![],
    };
    usage(
        args.with_uas.is_none() || matches!(args.transport, Transport::Udp),
        "--with-uas answers over UDP only; for TCP run the UAS on its own (sipsentry bench --uas LISTEN)",
    )?;
    usage(
        args.with_uas.is_none() || args.answer_delay == 0,
        "--with-uas answers at once; for --answer-delay run the UAS on its own (sipsentry bench --uas LISTEN)",
    )?;
    let opts = uac::UacOptions {
        targets,
        tcp: matches!(args.transport, Transport::Tcp),
        rate: args.rate,
        count,
        callers,
        called: args.called,
        concurrency: args.concurrency,
        timeout: Duration::from_secs_f64(args.timeout),
        progress: !args.json,
        uas: args.with_uas.map(|listen| uas::UasOptions {
            listen,
            ring: args.ring,
            answer_delay: Duration::from_millis(args.answer_delay),
        }),
        spin: args.spin,
    };
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    {
        let stop = std::sync::Arc::clone(&stop);
        ctrlc::set_handler(move || stop.store(true, std::sync::atomic::Ordering::Relaxed))
            .context("cannot install the Ctrl-C handler")?;
    }
    let report = uac::run(&opts, stop).context("bench could not start")?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.text());
    }
    // After the report, so a samples file that cannot be written loses
    // nothing else.
    if let Some(path) = &args.samples {
        std::fs::File::create(path)
            .map_err(csv::Error::from)
            .and_then(|f| report.write_samples(std::io::BufWriter::new(f)))
            .with_context(|| format!("cannot write the samples to {}", path.display()))?;
    }
    Ok(())
}
