//! What the history writer reports to `/metrics`.

use std::sync::atomic::{AtomicU64, Ordering};

use super::stats::HistoryStats;
use crate::metrics::{Collect, Scrape};

impl Collect for HistoryStats {
    fn collect(&self, out: &mut Scrape) {
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        out.gauge(
            "sipsentry_history_queue_depth",
            "Records waiting for the history writer",
        )
        .set(vec![], self.depth.load(Ordering::Relaxed) as f64);
        out.gauge(
            "sipsentry_history_spool_bytes",
            "Bytes of records waiting in the local spool for PostgreSQL",
        )
        .set(vec![], self.spool_bytes.load(Ordering::Relaxed) as f64);
        for (name, help, n) in [
            (
                "sipsentry_history_written",
                "Records written to the history",
                &self.written,
            ),
            (
                "sipsentry_history_dropped",
                "Records lost (queue full or write failed)",
                &self.dropped,
            ),
            (
                "sipsentry_history_write_errors",
                "Batches the history database refused (their records are counted as dropped)",
                &self.write_errors,
            ),
            (
                "sipsentry_history_spooled",
                "Records and final responses put in the spool while PostgreSQL was unreachable",
                &self.spooled,
            ),
            (
                "sipsentry_history_unspooled",
                "Records and final responses sent from the spool to PostgreSQL",
                &self.unspooled,
            ),
            (
                "sipsentry_history_pruned",
                "Records deleted for being older than history.retention_days",
                &self.pruned,
            ),
        ] {
            out.counter(name, help).count(vec![], load(n));
        }
    }
}
