//! `sipsentry bulk FILE`: audit a list of numbers through the real pipeline.
//!
//! With DIDChecks enabled, the numbers are first checked with its bulk
//! endpoint (100 per request) and the answers put in the live cache, so the
//! pipeline then finds them there instead of making one request per number.
//! Lookups run with bounded concurrency; a progress bar shows on a terminal.

use std::io::{BufRead, IsTerminal, Write};
use std::sync::Arc;

use futures_util::StreamExt;
use serde::Serialize;

use anyhow::Context;

use super::ConfigArg;
use crate::app::{Built, build};
use crate::config::Config;
use crate::error::Result;
use crate::history::export::csv_line;
use crate::number;
use crate::reputation::providers::didchecks;

#[derive(Debug, clap::Args)]
pub struct BulkArgs {
    /// Numbers, one per line (or the first column of a CSV); blank lines
    /// and # comments are skipped.
    pub file: std::path::PathBuf,
    /// Output format, written to standard output.
    #[arg(long, value_enum, default_value = "csv")]
    pub format: BulkFormat,
    #[command(flatten)]
    pub config: ConfigArg,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum BulkFormat {
    Csv,
    Json,
}

/// `sipsentry bulk FILE`.
pub fn run(args: BulkArgs, runtime: &tokio::runtime::Runtime) -> Result<()> {
    let config = args.config.load()?;
    let file = &args.file;
    let input =
        std::fs::File::open(file).with_context(|| format!("cannot open {}", file.display()))?;
    let numbers = read_numbers(std::io::BufReader::new(input))
        .with_context(|| format!("cannot read {}", file.display()))?;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let json = matches!(args.format, BulkFormat::Json);
    let n = runtime.block_on(bulk(&config, numbers, json, &mut out))?;
    eprintln!("{n} numbers audited");
    Ok(())
}

/// Numbers screened at once.
pub const BULK_CONCURRENCY: usize = 16;

/// One audited number.
#[derive(Debug, Clone, Serialize)]
pub struct BulkRow {
    pub number: String,
    pub e164: Option<String>,
    pub action: Option<&'static str>,
    pub rule: Option<&'static str>,
    pub score: Option<u8>,
    pub category: Option<String>,
    pub sources: String,
    pub error: Option<String>,
}

impl BulkRow {
    const HEADER: [&'static str; 8] = [
        "number", "e164", "action", "rule", "score", "category", "sources", "error",
    ];

    fn csv(&self) -> Vec<String> {
        vec![
            self.number.clone(),
            self.e164.clone().unwrap_or_default(),
            self.action.unwrap_or_default().to_string(),
            self.rule.unwrap_or_default().to_string(),
            self.score.map(|s| s.to_string()).unwrap_or_default(),
            self.category.clone().unwrap_or_default(),
            self.sources.clone(),
            self.error.clone().unwrap_or_default(),
        ]
    }
}

/// Reads the numbers: one per line; blank lines and `#` comments skipped;
/// in a CSV line the first field is the number.
pub fn read_numbers(input: impl BufRead) -> std::io::Result<Vec<String>> {
    let mut out = Vec::new();
    for line in input.lines() {
        let line = line?;
        let t = line.trim();
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        let first = t.split(',').next().unwrap_or(t).trim().trim_matches('"');
        if !first.is_empty() {
            out.push(first.to_string());
        }
    }
    Ok(out)
}

/// Audits `numbers`, writing rows to `out` in `json` or CSV form. Returns
/// how many were audited.
pub async fn bulk(
    config: &Config,
    numbers: Vec<String>,
    json: bool,
    out: &mut dyn Write,
) -> anyhow::Result<usize> {
    let built = build(config)?;
    super::warn_if_no_local_cache(config, &built);
    let Built {
        pipeline,
        providers,
        ..
    } = built;
    let pipeline = Arc::new(pipeline);
    let country = pipeline.policy().country;
    let e164s: Vec<Option<String>> = numbers
        .iter()
        .map(|n| number::to_e164(n, &country).ok())
        .collect();

    // DIDChecks: one bulk request per 100 numbers, answers into the live cache.
    if let Some(dc) = &providers.didchecks {
        let cache = pipeline.live().cache();
        if let Some(index) = cache.source_index("didchecks") {
            let wanted: Vec<String> = e164s.iter().flatten().cloned().collect();
            match dc.check_bulk(&wanted).await {
                Ok(b) => {
                    let mut answered = std::collections::HashSet::new();
                    for data in b.results {
                        let check = didchecks::Check {
                            data,
                            cost: None,
                            balance: b.balance,
                        };
                        if let Some(n) = check.data.phone_number.clone() {
                            cache.put(index, &n, didchecks::evidence(&check, 0));
                            answered.insert(n);
                        }
                    }
                    for n in wanted.iter().filter(|n| !answered.contains(*n)) {
                        cache.put(index, n, None);
                    }
                    tracing::info!(
                        requests = b.requests,
                        cost = b.cost,
                        "DIDChecks bulk check done"
                    );
                }
                Err(e) => {
                    tracing::warn!(error = %e, "DIDChecks bulk check failed; checking numbers one by one")
                }
            }
        }
    }

    let bar = std::io::stderr().is_terminal().then(|| {
        let bar = indicatif::ProgressBar::new(numbers.len() as u64);
        bar.set_style(
            indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} numbers, eta {eta}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar
    });
    let jobs = numbers.into_iter().zip(e164s).map(|(n, e164)| {
        let pipeline = Arc::clone(&pipeline);
        async move {
            if e164.is_none() {
                return BulkRow {
                    number: n.clone(),
                    e164: None,
                    action: None,
                    rule: None,
                    score: None,
                    category: None,
                    sources: String::new(),
                    error: Some("not a phone number".into()),
                };
            }
            let (report, decision) = crate::check::check_with(&pipeline, &n).await;
            BulkRow {
                number: n,
                e164: report.e164,
                action: Some(report.action),
                rule: Some(report.rule),
                score: Some(report.score),
                category: report.category,
                sources: decision.sources(),
                error: None,
            }
        }
    });
    let mut rows = futures_util::stream::iter(jobs).buffered(BULK_CONCURRENCY);
    if json {
        out.write_all(b"[")?;
    } else {
        out.write_all(&csv_line(&BulkRow::HEADER)?)?;
    }
    let mut n = 0;
    while let Some(row) = rows.next().await {
        if json {
            out.write_all(if n == 0 { b"\n" } else { b",\n" })?;
            serde_json::to_writer(&mut *out, &row)?;
        } else {
            out.write_all(&csv_line(&row.csv())?)?;
        }
        n += 1;
        if let Some(b) = &bar {
            b.inc(1);
        }
    }
    if json {
        out.write_all(b"\n]\n")?;
    }
    out.flush()?;
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    Ok(n)
}
