//! One number through the real pipeline, explained: `sipsentry check`,
//! `GET /api/v1/check/{number}`, and `check --own` for one of the
//! operator's own numbers.

use std::net::SocketAddr;

use serde::Serialize;

use crate::number::{self, Country};
use crate::pipeline::{CallCtx, Pipeline};
use crate::policy::Decision;
use crate::reputation::live::LookupReport;
use crate::reputation::providers::hiya_status::{self, HiyaStatus, Reputation};
use crate::reputation::{Evidence, SourceError};
use crate::sip::caller::{CallerId, Trust};

/// The `check --json` document (docs/http-api.md, "Check").
#[derive(Debug, Serialize)]
pub struct CheckReport {
    pub number: String,
    pub e164: Option<String>,
    pub score: u8,
    pub action: &'static str,
    pub rule: &'static str,
    pub category: Option<String>,
    pub evidence: Vec<Evidence>,
    /// Each live provider's part: from the cache, answered, no data, error, late.
    pub lookups: Vec<LookupReport>,
}

/// The check against a running pipeline (the admin API's; it shares the
/// serving caches). Not recorded in the history: it is not a call.
pub async fn check_with(pipeline: &Pipeline, number_text: &str) -> (CheckReport, Decision) {
    let e164 = number::to_e164(number_text, &pipeline.policy().country).ok();
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
    ctx.record = false;
    let decision = pipeline.screen(&mut ctx).await;
    let report = CheckReport {
        number: number_text.to_string(),
        e164,
        score: decision.score,
        action: decision.action.as_str(),
        rule: decision.rule.as_str(),
        category: decision.category.clone(),
        evidence: decision.evidence.clone(),
        lookups: ctx.lookups.clone(),
    };
    (report, decision)
}

/// A person-readable explanation of a check.
pub fn explain(report: &CheckReport, decision: &Decision) -> String {
    let mut out = format!(
        "number   {}\nE.164    {}\n",
        report.number,
        report.e164.as_deref().unwrap_or("(not a phone number)")
    );
    for l in &report.lookups {
        out.push_str(&format!(
            "lookup   {:<12} {}{}{}\n",
            l.source,
            l.outcome.as_str(),
            if l.latency_us > 0 {
                format!(" after {} µs", l.latency_us)
            } else {
                String::new()
            },
            l.error
                .as_deref()
                .map(|e| format!(": {e}"))
                .unwrap_or_default()
        ));
    }
    if report.evidence.is_empty() {
        out.push_str("evidence none (no source knows this number)\n");
    }
    for e in &report.evidence {
        out.push_str(&format!(
            "evidence {:<12} score {:>3}  category {}{}  {}\n",
            e.source.as_str(),
            e.score,
            e.category.as_deref().unwrap_or("-"),
            if e.cached { "  (cached)" } else { "" },
            *e.raw
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

/// Why `check --own` could not run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OwnCheckError {
    #[error(
        "check --own needs the Hiya reputation-status provider: set providers.hiya_status.enabled = true and its base_url"
    )]
    NotEnabled,
    #[error(
        "{0:?} is not a phone number; give it in E.164 (+15551234567) or in the national form of numbers.default_country"
    )]
    NotANumber(String),
    #[error(transparent)]
    Provider(#[from] SourceError),
}

/// The `check --own --json` document: one of our own outbound numbers.
#[derive(Debug, Serialize)]
pub struct OwnReport {
    pub number: String,
    pub e164: String,
    /// `None`: the number is not registered with Hiya.
    pub reputation: Option<Reputation>,
    pub evidence: Option<Evidence>,
}

/// `sipsentry check --own NUMBER`: how Hiya labels calls *from* one of our
/// own registered numbers (status and report card), asked of `client`
/// (`None`: the provider is not enabled).
pub async fn check_own(
    client: Option<&HiyaStatus>,
    country: &Country,
    number_text: &str,
) -> Result<OwnReport, OwnCheckError> {
    let e164 = number::to_e164(number_text, country)
        .map_err(|_| OwnCheckError::NotANumber(number_text.to_string()))?;
    let client = client.ok_or(OwnCheckError::NotEnabled)?;
    let started = std::time::Instant::now();
    let reputation = client.reputation(&e164).await?;
    let evidence = reputation
        .as_ref()
        .map(|r| hiya_status::evidence(r, started.elapsed().as_micros() as u64));
    Ok(OwnReport {
        number: number_text.to_string(),
        e164,
        reputation,
        evidence,
    })
}

/// A person-readable `check --own`.
pub fn explain_own(r: &OwnReport) -> String {
    let Some(rep) = &r.reputation else {
        return format!(
            "{}: not registered with Hiya (no reputation data)\n",
            r.e164
        );
    };
    let grade = |g: &Option<hiya_status::Grade>| {
        g.map_or("not yet graded".to_string(), |g| {
            serde_json::to_value(g)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default()
        })
    };
    let c = &rep.report_card;
    format!(
        "{}: {} (score {})\n  maturity      {}\n  desirability  {}\n  engagement    {}\n  reaction      {}\n",
        r.e164,
        rep.status.as_str(),
        rep.status.score(),
        grade(&c.maturity),
        grade(&c.desirability),
        grade(&c.engagement),
        grade(&c.reaction)
    )
}
