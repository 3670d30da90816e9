//! `sipsentry next-hops`: where `sip.next_hop` leads now, located as
//! `serve` locates it (RFC 3263 through `sip.dns_servers` or the system's
//! resolvers), in the order calls try the targets. A running serve's
//! health of each target is in `GET /api/v1/next-hops` and `/metrics`.

use super::ConfigArg;
use crate::error::Result;
use crate::sip::next_hop::TargetStatus;

#[derive(Debug, clap::Args)]
pub struct NextHopsArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// Print one JSON document instead of the table.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: NextHopsArgs, runtime: &tokio::runtime::Runtime) -> Result<()> {
    let config = args.config.load()?;
    let hops = runtime.block_on(crate::server::next_hops(&config.sip))?;
    let targets = hops.status();
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({ "targets": targets }))
                .map_err(anyhow::Error::new)?
        );
        return Ok(());
    }
    print!("{}", table(&targets));
    Ok(())
}

fn table(targets: &[TargetStatus]) -> String {
    let mut out = format!(
        "{:<3} {:<9} {:<40} {:<30} {:>8} {:>6}  {}\n",
        "#", "transport", "address", "host", "priority", "weight", "from"
    );
    for (i, t) in targets.iter().enumerate() {
        out.push_str(&format!(
            "{:<3} {:<9} {:<40} {:<30} {:>8} {:>6}  {}\n",
            i + 1,
            t.transport,
            t.address,
            t.host.as_deref().unwrap_or("-"),
            t.priority,
            t.weight,
            t.from
        ));
    }
    out
}
