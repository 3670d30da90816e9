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
use crate::server::{Server, ServerError};
use crate::sip::caller::{CallerId, Trust};

/// Builds the screening pipeline the configuration describes.
pub fn build_pipeline(config: &Config) -> Result<Pipeline, ConfigError> {
    Ok(Pipeline::new(Arc::new(Policy::new(config)?)))
}

/// `sipsentry serve`: runs until SIGINT or SIGTERM.
pub async fn serve(config: Config) -> Result<(), ServerError> {
    let config = Arc::new(config);
    let pipeline = build_pipeline(&config)?;
    let server = Server::bind(Arc::clone(&config), pipeline).await?;
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
    let pipeline = build_pipeline(config)?;
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
            e.raw
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

/// Loads the config for a command.
pub fn load_config(path: Option<&Path>) -> Result<Config, ConfigError> {
    Config::load(path)
}
