//! `sipsentry lists`, `sipsentry report` and `sipsentry reports`: the runtime
//! lists and spam reports, on the same store `serve` uses (beside
//! `history.path`), whether or not it is running; a running `serve` takes
//! a change in within a second.

use std::io::Write;

use super::ConfigArg;
use crate::config::Config;
use crate::error::Result;
use crate::history::export::Format;
use crate::lists::NewReport;
use crate::lists::store::write_reports;
use crate::lists::{Entry, Feedback, ListKind, ReportFilter, parse_expiry};

#[derive(Debug, clap::Subcommand)]
pub enum ListsCommand {
    /// Add (or replace) an entry: an E.164 number or a prefix ending in `*`.
    Add {
        list: ListKind,
        /// `+15551234567` or `+1555*`.
        pattern: String,
        /// Why it is there.
        #[arg(long, default_value = "")]
        comment: String,
        /// When it stops applying: 30d, 12h, 90m, 2027-01-01 or RFC 3339.
        #[arg(long)]
        expires: Option<String>,
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Remove an entry.
    Rm {
        list: ListKind,
        pattern: String,
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Show the entries (the config file's read-only ones first).
    Show {
        /// Only this list.
        list: Option<ListKind>,
        /// As JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        config: ConfigArg,
    },
}

#[derive(Debug, clap::Args)]
pub struct ReportArgs {
    /// The caller (E.164, or national in numbers.default_country).
    pub number: String,
    /// spam: the `operator` source scores it from the next call on;
    /// not_spam: allowlisted for policy.not_spam_days.
    pub verdict: Feedback,
    /// A note kept with the report.
    #[arg(long, default_value = "")]
    pub note: String,
    /// The decision id of the call the report is about.
    #[arg(long)]
    pub decision: Option<String>,
    #[command(flatten)]
    pub config: ConfigArg,
}

#[derive(Debug, clap::Args)]
pub struct ReportsArgs {
    /// Output format, to standard output.
    #[arg(long, value_enum, default_value = "csv")]
    pub format: ReportsFormat,
    /// From this time (2026-11-21T10:00:00Z, 2026-11-21, or epoch ms).
    #[arg(long)]
    pub from: Option<String>,
    /// Until this time (exclusive).
    #[arg(long)]
    pub to: Option<String>,
    #[command(flatten)]
    pub config: ConfigArg,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum ReportsFormat {
    Csv,
    Json,
}

/// Who is changing the store, for `added_by` / `reported_by`.
fn actor() -> String {
    match std::env::var("USER").or_else(|_| std::env::var("LOGNAME")) {
        Ok(u) if !u.is_empty() => format!("cli:{u}"),
        _ => "cli".into(),
    }
}

fn config_entries(config: &Config, list: ListKind) -> Vec<Entry> {
    let patterns = match list {
        ListKind::Allow => &config.policy.allow,
        ListKind::Deny => &config.policy.deny,
    };
    crate::lists::config_entries(list, patterns)
}

pub fn run(command: ListsCommand, runtime: &tokio::runtime::Runtime) -> Result<()> {
    match command {
        ListsCommand::Add {
            list,
            pattern,
            comment,
            expires,
            config,
        } => {
            let config = config.load()?;
            let expires = expires
                .map(|t| parse_expiry("--expires", &t, crate::history::now_ms()))
                .transpose()?;
            let mut store = crate::app::lists_store(&config, runtime.handle().clone())?;
            let e = store.add(list, &pattern, &comment, &actor(), expires)?;
            println!(
                "{} added to the {} list{}",
                e.pattern,
                list.as_str(),
                e.expires_at
                    .map(|t| format!(" until {t}"))
                    .unwrap_or_default()
            );
        }
        ListsCommand::Rm {
            list,
            pattern,
            config,
        } => {
            let config = config.load()?;
            if config_entries(&config, list)
                .iter()
                .any(|e| e.pattern == pattern.trim())
            {
                return Err(crate::Error::Usage(format!(
                    "{pattern} is in policy.{} in the config file: remove it there and reload",
                    list.as_str()
                )));
            }
            let mut store = crate::app::lists_store(&config, runtime.handle().clone())?;
            if !store.remove(list, &pattern)? {
                return Err(crate::Error::Usage(format!(
                    "{pattern} is not in the {} list (see `sipsentry lists show`)",
                    list.as_str()
                )));
            }
            println!("{} removed from the {} list", pattern.trim(), list.as_str());
        }
        ListsCommand::Show { list, json, config } => {
            let config = config.load()?;
            let mut store = crate::app::lists_store(&config, runtime.handle().clone())?;
            let lists: Vec<ListKind> = match list {
                Some(l) => vec![l],
                None => vec![ListKind::Allow, ListKind::Deny],
            };
            let mut entries = Vec::new();
            for l in &lists {
                entries.extend(config_entries(&config, *l));
            }
            entries.extend(
                store
                    .entries(None, crate::history::now_ms())?
                    .into_iter()
                    .filter(|e| lists.contains(&e.list)),
            );
            let stdout = std::io::stdout();
            let mut out = stdout.lock();
            let io = |e: std::io::Error| anyhow::Error::new(e).context("cannot write to stdout");
            if json {
                serde_json::to_writer_pretty(&mut out, &entries)
                    .map_err(|e| anyhow::Error::new(e).context("cannot write to stdout"))?;
                writeln!(out).map_err(io)?;
            } else {
                writeln!(
                    out,
                    "{:<6} {:<17} {:<9} {:<21} {:<14} comment",
                    "list", "pattern", "origin", "expires", "added by"
                )
                .map_err(io)?;
                for e in &entries {
                    writeln!(
                        out,
                        "{:<6} {:<17} {:<9} {:<21} {:<14} {}",
                        e.list.as_str(),
                        e.pattern,
                        e.origin.as_str(),
                        e.expires_at.as_deref().unwrap_or("never"),
                        e.added_by,
                        e.comment
                    )
                    .map_err(io)?;
                }
            }
        }
    }
    Ok(())
}

/// `sipsentry report NUMBER spam|not_spam`.
pub fn report(args: ReportArgs, runtime: &tokio::runtime::Runtime) -> Result<()> {
    let config = args.config.load()?;
    let number = crate::number::to_e164(&args.number, &config.country()?).map_err(|e| {
        crate::lists::ListsError::Invalid {
            field: "number",
            message: format!("{:?}: {e}", args.number),
        }
    })?;
    let mut store = crate::app::lists_store(&config, runtime.handle().clone())?;
    let r = store.report(&NewReport {
        number: &number,
        verdict: args.verdict,
        decision_id: args.decision.as_deref(),
        note: &args.note,
        reported_by: &actor(),
        not_spam_days: config.policy.not_spam_days,
    })?;
    match r.verdict {
        Feedback::Spam => println!(
            "{} reported as spam: the operator source scores it {} from the next call",
            r.number, config.scores.operator_spam
        ),
        Feedback::NotSpam => println!(
            "{} reported as not spam: allowlisted for {} days",
            r.number, config.policy.not_spam_days
        ),
    }
    Ok(())
}

/// `sipsentry reports`: every report, oldest first, for a provider.
pub fn reports(args: ReportsArgs, runtime: &tokio::runtime::Runtime) -> Result<()> {
    let config = args.config.load()?;
    let time = |key, v: &Option<String>| {
        v.as_deref()
            .map(|t| crate::history::query::parse_time(key, t))
            .transpose()
    };
    let filter = ReportFilter {
        from_ms: time("from", &args.from)?,
        to_ms: time("to", &args.to)?,
        ..Default::default()
    };
    let mut store = crate::app::lists_store(&config, runtime.handle().clone())?;
    let reports = store.reports(&filter)?;
    let format = match args.format {
        ReportsFormat::Csv => Format::Csv,
        ReportsFormat::Json => Format::Json,
    };
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    write_reports(&reports, format, &mut out)?;
    out.flush()
        .map_err(|e| anyhow::Error::new(e).context("cannot write to stdout"))?;
    Ok(())
}
