//! `sipsentry check NUMBER [--own] [--json]`.

use anyhow::Context;

use super::ConfigArg;
use crate::check;
use crate::error::Result;

#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    /// The caller to screen: E.164 (+15551234567) or the national form of
    /// numbers.default_country.
    pub number: String,
    #[command(flatten)]
    pub config: ConfigArg,
    /// Print one JSON object instead of the explanation.
    #[arg(long)]
    pub json: bool,
    /// NUMBER is one of our own registered numbers: show how Hiya labels
    /// calls from it (reputation status and report card).
    #[arg(long)]
    pub own: bool,
}

pub fn run(args: CheckArgs, runtime: &tokio::runtime::Runtime) -> Result<()> {
    let config = args.config.load()?;
    if args.own {
        let providers = crate::app::Providers::from_config(&config)?;
        let report = runtime.block_on(check::check_own(
            providers.hiya_status.as_deref(),
            &config.country()?,
            &args.number,
        ))?;
        return emit(args.json, &report, || check::explain_own(&report));
    }
    let (report, decision) = runtime.block_on(async {
        let built = crate::app::build(&config)?;
        super::warn_if_no_local_cache(&config, &built);
        Ok::<_, crate::Error>(check::check_with(&built.pipeline, &args.number).await)
    })?;
    emit(args.json, &report, || check::explain(&report, &decision))
}

/// Prints `doc` as one line of JSON, or the explanation.
fn emit<T: serde::Serialize>(json: bool, doc: &T, text: impl FnOnce() -> String) -> Result<()> {
    if json {
        let line = serde_json::to_string(doc).context("cannot encode the report")?;
        println!("{line}");
    } else {
        print!("{}", text());
    }
    Ok(())
}
