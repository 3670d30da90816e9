//! `sipsentry stir verify`: one Identity header checked step by step, with
//! the configured trust anchors and a real fetch of its certificate, for
//! debugging a trunk's signing.

use std::sync::Arc;

use serde::Serialize;

use super::ConfigArg;
use crate::error::Result;
use crate::stir::passport::{decode, parse_identity};
use crate::stir::verify::{check_certificate, check_claims};
use crate::stir::{CertFetcher, Outcome, Reason, TrustAnchors, Verstat};

#[derive(Debug, clap::Subcommand)]
pub enum StirCommand {
    /// Verify one Identity header and print each check.
    Verify(VerifyArgs),
}

#[derive(Debug, clap::Args)]
pub struct VerifyArgs {
    /// The Identity header's value (`<jws>;info=<https://…>;alg=ES256;ppt=shaken`).
    #[arg(long)]
    pub identity: String,
    /// The caller (E.164, or national in numbers.default_country).
    #[arg(long)]
    pub caller: String,
    /// The called number.
    #[arg(long)]
    pub called: String,
    /// As one JSON document.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub config: ConfigArg,
}

#[derive(Debug, Serialize)]
struct Step {
    check: &'static str,
    ok: bool,
    detail: String,
}

#[derive(Debug, Serialize)]
struct Report {
    checks: Vec<Step>,
    outcome: Outcome,
}

pub fn run(command: StirCommand, runtime: &tokio::runtime::Runtime) -> Result<()> {
    let StirCommand::Verify(args) = command;
    let config = args.config.load()?;
    let country = config.country()?;
    let number = |n: &str, key: &'static str| {
        crate::number::to_e164(n, &country)
            .map_err(|e| crate::Error::Usage(format!("--{key} {n:?}: {e}")))
    };
    let caller = number(&args.caller, "caller")?;
    let called = number(&args.called, "called")?;
    if config.stir.trust_anchors.as_os_str().is_empty() {
        return Err(crate::Error::Usage(
            "stir.trust_anchors is not set: give a config (-c FILE) whose [stir] section names the STI roots".into(),
        ));
    }
    let anchors = TrustAnchors::from_pem_file(&config.stir.trust_anchors).map_err(|e| {
        crate::config::ConfigError::Invalid {
            key: "stir.trust_anchors",
            message: e.to_string(),
        }
    })?;
    let fetcher =
        CertFetcher::new(&config.stir).map_err(|e| crate::config::ConfigError::Invalid {
            key: "stir.x5u_ca_file",
            message: e.to_string(),
        })?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let report = runtime.block_on(steps(
        &args.identity,
        &caller,
        &called,
        now,
        config.stir.max_age_s,
        &anchors,
        &fetcher,
    ));
    if args.json {
        let line = serde_json::to_string(&report)
            .map_err(|e| anyhow::Error::new(e).context("cannot encode the report"))?;
        println!("{line}");
    } else {
        for s in &report.checks {
            println!(
                "{:<4} {:<12} {}",
                if s.ok { "ok" } else { "FAIL" },
                s.check,
                s.detail
            );
        }
        let o = &report.outcome;
        println!(
            "verstat {}{}",
            o.verstat.as_str(),
            o.reason
                .map(|r| format!(" (reason {})", r.as_str()))
                .unwrap_or_default()
        );
    }
    if report.outcome.passed() {
        Ok(())
    } else {
        Err(crate::Error::Other(anyhow::anyhow!(
            "the Identity header did not verify"
        )))
    }
}

async fn steps(
    identity: &str,
    caller: &str,
    called: &str,
    now: i64,
    max_age_s: u64,
    anchors: &TrustAnchors,
    fetcher: &CertFetcher,
) -> Report {
    let mut checks = Vec::new();
    let mut outcome = Outcome {
        verstat: Verstat::Failed,
        attest: None,
        reason: None,
        x5u: None,
        origid: None,
    };
    let fail = |checks: &mut Vec<Step>, check, reason: Reason, detail: String| {
        checks.push(Step {
            check,
            ok: false,
            detail,
        });
        reason
    };
    let h = match parse_identity(identity) {
        Ok(h) => h,
        Err(r) => {
            outcome.reason = Some(fail(
                &mut checks,
                "header",
                r,
                "not `<jws>;info=<url>;…`".into(),
            ));
            return Report { checks, outcome };
        }
    };
    checks.push(Step {
        check: "header",
        ok: true,
        detail: format!(
            "info={} alg={} ppt={}",
            h.info.unwrap_or("-"),
            h.alg.unwrap_or("-"),
            h.ppt.unwrap_or("-")
        ),
    });
    let p = match decode(h.jws) {
        Ok(p) => p,
        Err(r) => {
            outcome.reason = Some(fail(
                &mut checks,
                "passport",
                r,
                "the JWS does not decode".into(),
            ));
            return Report { checks, outcome };
        }
    };
    outcome.attest = p.claims.attest.clone();
    outcome.x5u = p.header.x5u.clone();
    outcome.origid = p.claims.origid.clone();
    checks.push(Step {
        check: "passport",
        ok: true,
        detail: format!(
            "alg={} typ={} ppt={} attest={} iat={} ({} s from now) orig={} dest={}",
            p.header.alg,
            p.header.typ.as_deref().unwrap_or("-"),
            p.header.ppt.as_deref().unwrap_or("-"),
            p.claims.attest.as_deref().unwrap_or("-"),
            p.claims.iat,
            p.claims.iat - now,
            p.claims.orig.tn,
            p.claims.dest.tn.join(",")
        ),
    });
    if let Err(r) = check_claims(&h, &p, caller, called, now, max_age_s) {
        outcome.reason = Some(fail(&mut checks, "claims", r, r.as_str().into()));
        return Report { checks, outcome };
    }
    checks.push(Step {
        check: "claims",
        ok: true,
        detail: format!("ES256, shaken, passport; within {max_age_s} s; orig and dest match"),
    });
    let url = h.info.unwrap_or_default();
    let chain = match fetcher.get(url).await {
        Ok(c) => c,
        Err(e) => {
            outcome.reason = Some(fail(
                &mut checks,
                "certificate",
                Reason::X5uUnreachable,
                e.to_string(),
            ));
            return Report { checks, outcome };
        }
    };
    checks.push(Step {
        check: "certificate",
        ok: true,
        detail: format!(
            "{url}: a leaf and {} intermediate(s)",
            chain.intermediates.len()
        ),
    });
    match check_certificate(&p, &Arc::clone(&chain), anchors, now.max(0) as u64) {
        Ok(()) => {
            checks.push(Step {
                check: "signature",
                ok: true,
                detail: format!(
                    "verifies; the chain reaches one of {} trust anchor(s)",
                    anchors.len()
                ),
            });
            outcome.verstat = Verstat::Passed;
        }
        Err(r) => {
            outcome.reason = Some(fail(&mut checks, "signature", r, r.as_str().into()));
        }
    }
    Report { checks, outcome }
}
