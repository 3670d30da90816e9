//! Synthetic Hiya caches: realistic rows of any size with a chosen share of
//! malformed ones, for tests, benchmarks and the bundled demo cache.

use std::io::{self, Write};

use flate2::Compression;
use flate2::write::GzEncoder;

/// The bundled demo cache for India (gzip TSV), 2,008 rows. Documented
/// numbers: +919000000001 FRAUD/Scam, +919000000002 SPAM/Telemarketer,
/// +919000000003 SPAM/Nonprofit Call, +919000000004 NEUTRAL.
pub const DEMO_IN: &[u8] = include_bytes!("../../../data/hiya-sample-IN.tsv.gz");

/// A tiny deterministic generator (SplitMix64), so a seed always gives the
/// same file.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// What a generated file holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SampleStats {
    pub rows: u64,
    pub bad_rows: u64,
}

const NAMES: [&str; 8] = [
    "ACME Telemarketing",
    "Credit Services",
    "Survey Research",
    "Holiday Deals",
    "Tech Support",
    "Unknown Caller",
    "Loan Offers",
    "Insurance Desk",
];
const CATEGORIES: [&str; 8] = ["6", "3", "7", "1006", "1005", "", "8", "4242"];
const BAD: [&str; 5] = [
    "91/900\tSPAM\t6\tShort\t\t\t",
    "91/9876543210\tMAYBE\t6\t\t\t\t",
    "91/9876543210\tSPAM\t6",
    "919876543210\tSPAM\t6\t\t\t\t",
    "91/9876543210\tSPAM\tsix\t\t\t\t",
];

/// Writes a gzip TSV of `rows` rows for country calling code `cc` (digits),
/// `bad_share` of them malformed, numbers drawn from `cc`/9xxxxxxxxx.
pub fn write_tsv_gz<W: Write>(
    out: W,
    cc: &str,
    rows: u64,
    bad_share: f64,
    seed: u64,
) -> io::Result<SampleStats> {
    let mut gz = GzEncoder::new(out, Compression::fast());
    let mut rng = Rng(seed);
    let mut stats = SampleStats::default();
    for _ in 0..rows {
        if (rng.below(1_000_000) as f64) < bad_share * 1_000_000.0 {
            gz.write_all(BAD[rng.below(BAD.len() as u64) as usize].as_bytes())?;
            stats.bad_rows += 1;
        } else {
            let level = match rng.below(10) {
                0..=1 => "FRAUD",
                2..=7 => "SPAM",
                _ => "NEUTRAL",
            };
            let pick = rng.below(NAMES.len() as u64) as usize;
            write!(
                gz,
                "{cc}/9{:09}\t{level}\t{}\t{}\t\t\t",
                rng.below(1_000_000_000),
                CATEGORIES[pick],
                NAMES[pick]
            )?;
        }
        gz.write_all(b"\n")?;
        stats.rows += 1;
    }
    gz.finish()?;
    Ok(stats)
}
