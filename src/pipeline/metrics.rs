//! What the pipeline counts: calls by the action done and the rule that
//! fired, and how long deciding took. The live providers and their cache
//! report their own part ([`crate::reputation::live::LiveLookup`]).

use std::sync::atomic::{AtomicU64, Ordering};

use prometheus_client::metrics::histogram::Histogram;

use super::Pipeline;
use crate::metrics::{Collect, Scrape};
use crate::policy::{Action, Rule};

/// Decision-latency buckets (seconds): 10 µs … 1 s, covering packet-path
/// decisions and ones that waited for a provider.
pub const DECISION_BUCKETS: [f64; 12] = [
    0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.005, 0.025, 0.1, 0.3, 1.0,
];

#[derive(Debug)]
pub struct PipelineMetrics {
    /// By `[action as usize][rule as usize]`: two loads and an add per call,
    /// no hashing.
    calls: [[AtomicU64; Rule::ALL.len()]; Action::ALL.len()],
    decision_seconds: Histogram,
}

impl Default for PipelineMetrics {
    fn default() -> Self {
        PipelineMetrics {
            calls: Default::default(),
            decision_seconds: Histogram::new(DECISION_BUCKETS),
        }
    }
}

impl PipelineMetrics {
    /// Counts one decided call.
    pub(super) fn decided(&self, action: Action, rule: Rule, decision_us: u64) {
        self.calls[action as usize][rule as usize].fetch_add(1, Ordering::Relaxed);
        self.decision_seconds.observe(decision_us as f64 / 1e6);
    }

    /// Calls decided so far with `action` by `rule`.
    pub fn calls(&self, action: Action, rule: Rule) -> u64 {
        self.calls[action as usize][rule as usize].load(Ordering::Relaxed)
    }
}

impl Collect for Pipeline {
    fn collect(&self, out: &mut Scrape) {
        let m = &self.metrics;
        let calls = out.counter(
            "sipsentry_calls",
            "Screened calls by action done and rule that fired",
        );
        for action in Action::ALL {
            for rule in Rule::ALL {
                let n = m.calls(action, rule);
                if n > 0 {
                    let labels = vec![
                        ("action", action.as_str().to_string()),
                        ("rule", rule.as_str().to_string()),
                    ];
                    calls.count(labels, n);
                }
            }
        }
        out.histogram("sipsentry_decision_seconds", "Time from INVITE to decision")
            .observe(vec![], &m.decision_seconds);
        self.live().collect(out);
        if let Some(stir) = self.stir() {
            stir.collect(out);
        }
    }
}
