//! The history writer's counters, and the rule that keeps its repeated
//! errors to a log line every few seconds.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

/// At most one "records dropped" warning per this many milliseconds.
const DROP_LOG_INTERVAL_MS: i64 = 10_000;

/// Counters for metrics.
#[derive(Debug, Default)]
pub struct HistoryStats {
    /// Records queued and not yet written.
    pub depth: AtomicI64,
    pub written: AtomicU64,
    /// Records lost: queue full, or a failed write. Never silent: logged too.
    pub dropped: AtomicU64,
    pub write_errors: AtomicU64,
    pub pruned: AtomicU64,
    /// Records (and final responses) put in the PostgreSQL spool, and sent
    /// from it; what it holds now, in bytes.
    pub spooled: AtomicU64,
    pub unspooled: AtomicU64,
    pub spool_bytes: AtomicI64,
    pub(super) last_drop_log_ms: AtomicI64,
    pub(super) last_write_error_log_ms: AtomicI64,
    pub(super) last_spool_log_ms: AtomicI64,
}

/// Whether a repeated error may be logged again at `now` (ms): at most once
/// per [`DROP_LOG_INTERVAL_MS`] per `slot`, so a full disk or a full queue
/// gives a line every 10 s, not one per batch or per call.
pub(super) fn log_due(slot: &AtomicI64, now: i64) -> bool {
    let last = slot.load(Ordering::Relaxed);
    now - last >= DROP_LOG_INTERVAL_MS
        && slot
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repeated_error_is_logged_once_per_interval() {
        let slot = AtomicI64::new(0);
        let start = 1_000_000;
        let logged: Vec<bool> = [
            0,
            20,
            40,
            DROP_LOG_INTERVAL_MS - 1,
            DROP_LOG_INTERVAL_MS,
            DROP_LOG_INTERVAL_MS + 20,
        ]
        .iter()
        .map(|t| log_due(&slot, start + t))
        .collect();
        assert_eq!(logged, [true, false, false, false, true, false]);
    }
}
