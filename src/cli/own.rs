//! `sipsentry own …`: the operator's own numbers: their latest status per
//! provider, their history, and the DIDChecks routines that watch them.

use std::io::{BufRead, IsTerminal, Write};
use std::sync::Arc;

use anyhow::{Context, anyhow};

use super::ConfigArg;
use crate::error::Result;
use crate::own::schedule::{self, WhenOpen};
use crate::own::{Monitor, Origin, OwnResult, OwnView, routines};
use crate::reputation::breaker::Breaker;

#[derive(Debug, clap::Subcommand)]
pub enum OwnCommand {
    /// Each own number's latest status per provider, the change since the
    /// check before, and Hiya's report card.
    Status {
        #[command(flatten)]
        config: ConfigArg,
        /// Check every number with Hiya status first (DIDChecks results come
        /// from its routines; a DIDChecks check would cost a credit each).
        #[arg(long)]
        refresh: bool,
        #[arg(long)]
        json: bool,
    },
    /// Every stored result of one own number, newest first.
    History {
        /// E.164, e.g. +15551234567.
        number: String,
        #[command(flatten)]
        config: ConfigArg,
        #[arg(long, default_value_t = 50)]
        limit: usize,
        #[arg(long)]
        json: bool,
    },
    /// DIDChecks monitoring routines.
    Routines {
        #[command(subcommand)]
        command: RoutinesCommand,
    },
}

#[derive(Debug, clap::Subcommand)]
pub enum RoutinesCommand {
    /// The account's routines with their last score and check time.
    List {
        #[command(flatten)]
        config: ConfigArg,
        #[arg(long)]
        json: bool,
    },
    /// Create, update and delete routines so there is one per own number,
    /// as [own_numbers] says. Prints the plan; routine checks are billed,
    /// so it applies only with --yes (or when confirmed at a terminal).
    Sync {
        #[command(flatten)]
        config: ConfigArg,
        /// Apply without asking.
        #[arg(long)]
        yes: bool,
        /// Print the plan and change nothing.
        #[arg(long, conflicts_with = "yes")]
        dry_run: bool,
    },
}

pub fn run(command: OwnCommand, runtime: &tokio::runtime::Runtime) -> Result<()> {
    match command {
        OwnCommand::Status {
            config,
            refresh,
            json,
        } => status(&config, refresh, json, runtime),
        OwnCommand::History {
            number,
            config,
            limit,
            json,
        } => history(&config, &number, limit, json),
        OwnCommand::Routines {
            command: RoutinesCommand::List { config, json },
        } => list(&config, json, runtime),
        OwnCommand::Routines {
            command:
                RoutinesCommand::Sync {
                    config,
                    yes,
                    dry_run,
                },
        } => sync(&config, yes, dry_run, runtime),
    }
}

fn monitor(config: &crate::config::Config) -> Result<Arc<Monitor>> {
    crate::app::own::monitor(config)?.ok_or_else(|| {
        anyhow!(
            "no own numbers configured: list them in [own_numbers] numbers (docs/own-numbers.md)"
        )
        .into()
    })
}

fn status(
    config: &ConfigArg,
    refresh: bool,
    json: bool,
    rt: &tokio::runtime::Runtime,
) -> Result<()> {
    let config = config.load()?;
    let m = monitor(&config)?;
    if refresh {
        let client = crate::app::own::hiya_client(&config)?.ok_or_else(|| {
            anyhow!("own status --refresh asks Hiya status: add \"hiya_status\" to own_numbers.providers")
        })?;
        let rate = config.own_numbers.requests_per_second;
        let round = rt.block_on(schedule::round(
            &m,
            &client,
            &Breaker::default(),
            m.numbers(),
            rate,
            Origin::Refresh,
            WhenOpen::Stop,
        ));
        for (n, e) in &round.failed {
            eprintln!("{n}: not refreshed: {e}");
        }
        if round.checked.is_empty() && !round.failed.is_empty() {
            return Err(anyhow!("no own number could be checked with Hiya status").into());
        }
    }
    let view = m.view()?;
    if json {
        println!(
            "{}",
            serde_json::to_string(&view).context("cannot encode the status")?
        );
    } else {
        print!("{}", describe(&view));
    }
    Ok(())
}

/// `own status` as a person reads it.
pub fn describe(v: &OwnView) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    for n in &v.numbers {
        if n.providers.is_empty() {
            let _ = writeln!(out, "{}  not checked yet", n.number);
            continue;
        }
        let _ = writeln!(out, "{}", n.number);
        for p in &n.providers {
            let value = match (p.provider, p.value) {
                (crate::own::Provider::DidChecks, Some(s)) => format!(" (score {s:.0})"),
                _ => String::new(),
            };
            let before = match &p.previous {
                Some(prev) if p.changed => {
                    format!(", changed from {} at {}", prev.status, prev.checked_at)
                }
                Some(_) => ", unchanged".to_string(),
                None => ", first check".to_string(),
            };
            let flag = if p.flagged { "  FLAGGED" } else { "" };
            let _ = writeln!(
                out,
                "  {:<12} {}{value}{before}; checked {}{flag}",
                p.provider.as_str(),
                p.status,
                p.checked_at
            );
            if let Some(card) = p.report_card.as_ref().and_then(|c| c.as_object()) {
                let grades: Vec<String> = crate::own::REPORT_CARD
                    .iter()
                    .map(|k| {
                        format!(
                            "{k} {}",
                            card.get(*k)
                                .and_then(|g| g.as_str())
                                .unwrap_or("not graded")
                        )
                    })
                    .collect();
                let _ = writeln!(out, "  {:<12} {}", "", grades.join(" · "));
            }
        }
    }
    let _ = writeln!(
        out,
        "{} own numbers, {} flagged, {} not checked yet",
        v.numbers.len(),
        v.flagged,
        v.unchecked
    );
    out
}

fn history(config: &ConfigArg, number: &str, limit: usize, json: bool) -> Result<()> {
    let config = config.load()?;
    let m = monitor(&config)?;
    if !m.is_own(number) {
        return Err(crate::Error::Usage(format!(
            "{number} is not one of own_numbers.numbers (give it in E.164, e.g. +15551234567)"
        )));
    }
    let rows: Vec<OwnResult> = m.results(number, limit.max(1))?;
    if json {
        println!(
            "{}",
            serde_json::to_string(&rows).context("cannot encode the results")?
        );
        return Ok(());
    }
    if rows.is_empty() {
        println!("{number}: no results yet");
    }
    for r in rows {
        let at = crate::lists::rfc3339(r.time_ms);
        let value = r.value.map(|v| format!(" {v:.0}")).unwrap_or_default();
        println!(
            "{at}  {:<12} {}{value}  ({})",
            r.provider.as_str(),
            r.status,
            r.origin.as_str()
        );
    }
    Ok(())
}

fn list(config: &ConfigArg, json: bool, rt: &tokio::runtime::Runtime) -> Result<()> {
    let config = config.load()?;
    let client = crate::app::own::didchecks_client(&config)?;
    let listed = rt.block_on(client.routines())?;
    if json {
        println!(
            "{}",
            serde_json::to_string(&listed).context("cannot encode the routines")?
        );
        return Ok(());
    }
    for r in &listed {
        let schedule = match r.schedule_type.as_str() {
            "interval" => format!("every {} d", r.interval_days.unwrap_or(0)),
            "weekly" => format!("weekly {:?}", r.weekly_days.clone().unwrap_or_default()),
            other => other.to_string(),
        };
        println!(
            "{:<16} {:<14} {:<16} last score {:<4} last checked {}{}",
            r.phone_number,
            r.id,
            schedule,
            r.last_score.map_or("—".to_string(), |s| format!("{s:.0}")),
            r.last_checked_at.as_deref().unwrap_or("never"),
            if r.is_active == Some(false) {
                "  (inactive)"
            } else {
                ""
            }
        );
    }
    println!("{} routines", listed.len());
    Ok(())
}

fn sync(config: &ConfigArg, yes: bool, dry_run: bool, rt: &tokio::runtime::Runtime) -> Result<()> {
    let config = config.load()?;
    let numbers = config.own_numbers.expand().map_err(|e| anyhow!("{e}"))?;
    let client = crate::app::own::didchecks_client(&config)?;
    let listed = rt.block_on(client.routines())?;
    let plan = routines::plan(&numbers, &listed, &config.own_numbers.routine_settings());
    print!("{}", plan.describe());
    if plan.is_empty() {
        println!("routines already match own_numbers: nothing to do");
        return Ok(());
    }
    if dry_run {
        println!("dry run: nothing changed");
        return Ok(());
    }
    if !yes && !confirmed()? {
        return Err(crate::Error::Usage(
            "not applied: routine checks are billed, so the sync changes nothing without --yes (or a yes at a terminal); --dry-run shows the plan only".into(),
        ));
    }
    let done = rt
        .block_on(routines::apply(&client, &plan))
        .map_err(|e| anyhow!("{e}"))?;
    println!(
        "applied: {} created, {} updated, {} deleted in {} requests",
        done.created, done.updated, done.deleted, done.requests
    );
    Ok(())
}

/// Asks at a terminal; anything but y/yes (or no terminal) is a no.
fn confirmed() -> Result<bool> {
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        return Ok(false);
    }
    print!("apply this plan? [y/N] ");
    std::io::stdout().flush().ok();
    let mut line = String::new();
    stdin
        .lock()
        .read_line(&mut line)
        .context("cannot read the answer")?;
    Ok(matches!(
        line.trim().to_ascii_lowercase().as_str(),
        "y" | "yes"
    ))
}
