//! Writes a synthetic Hiya cache file (gzip TSV) of any size, with a share of
//! malformed rows, for trying `sipsentry cache import` on realistic volumes:
//!
//!     cargo run --release --example gen_hiya_cache -- in-10m.tsv.gz 10000000 0.01
//!     sipsentry cache import in-10m.tsv.gz --country IN --memory-mb 64

use std::io::BufWriter;

use sipsentry::reputation::hiya_cache::sample::write_tsv_gz;

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: gen_hiya_cache OUT.tsv.gz ROWS [BAD_SHARE] [CALLING_CODE] [SEED]";
    let out = args.next().ok_or_else(|| anyhow::anyhow!(usage))?;
    let rows: u64 = args.next().ok_or_else(|| anyhow::anyhow!(usage))?.parse()?;
    let bad: f64 = args.next().map_or(Ok(0.01), |s| s.parse())?;
    let cc = args.next().unwrap_or_else(|| "91".into());
    let seed: u64 = args.next().map_or(Ok(1), |s| s.parse())?;
    let file = BufWriter::new(std::fs::File::create(&out)?);
    let stats = write_tsv_gz(file, &cc, rows, bad, seed)?;
    eprintln!("{out}: {} rows, {} malformed", stats.rows, stats.bad_rows);
    Ok(())
}
