//! What the live providers and their cache report to `/metrics`.

use std::sync::atomic::{AtomicU64, Ordering};

use super::live::{LiveLookup, Outcome};
use crate::metrics::Scrape;

impl LiveLookup {
    /// Lookups by provider and outcome, requests, errors, latency, the
    /// breakers and the live cache.
    pub fn collect(&self, out: &mut Scrape) {
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let providers = self.providers();
        let name = |p: &super::live::Provider| vec![("provider", p.source.name().to_string())];
        let lookups = out.counter(
            "sipsentry_lookups",
            "Reputation lookups by source and outcome",
        );
        for p in providers {
            for o in Outcome::ALL {
                let labels = vec![
                    ("source", p.source.name().to_string()),
                    ("outcome", o.as_str().to_string()),
                ];
                lookups.count(labels, load(&p.stats.outcomes[o as usize]));
            }
        }
        for (family, help, pick) in [
            (
                "sipsentry_provider_requests",
                "Requests sent to live providers",
                (|p| &p.stats.requests) as fn(&super::live::Provider) -> &AtomicU64,
            ),
            (
                "sipsentry_provider_errors",
                "Failed provider requests (errors, timeouts)",
                |p| &p.stats.errors,
            ),
            (
                "sipsentry_provider_skipped",
                "Lookups skipped: circuit open or too many in flight",
                |p| &p.stats.skipped,
            ),
        ] {
            let f = out.counter(family, help);
            for p in providers {
                f.count(name(p), load(pick(p)));
            }
        }
        let latency = out.histogram(
            "sipsentry_provider_latency_seconds",
            "Provider request latency",
        );
        for p in providers {
            latency.observe(name(p), &p.stats.latency_seconds);
        }
        let breaker = out.gauge(
            "sipsentry_circuit_breaker_state",
            "Provider circuit breaker: 0 closed, 1 half-open, 2 open",
        );
        for p in providers {
            breaker.set(name(p), f64::from(p.breaker.state().gauge()));
        }

        let c = self.cache().stats();
        out.gauge("sipsentry_live_cache_entries", "Numbers in the live cache")
            .set(vec![], c.entries as f64);
        out.counter("sipsentry_live_cache_hits", "Live cache lookups answered")
            .count(vec![], c.hits);
        out.counter(
            "sipsentry_live_cache_misses",
            "Live cache lookups not answered",
        )
        .count(vec![], c.misses);
        out.counter(
            "sipsentry_live_cache_evictions",
            "Entries evicted at max_entries",
        )
        .count(vec![], c.evictions);
        let ratio = if c.hits + c.misses == 0 {
            0.0
        } else {
            c.hits as f64 / (c.hits + c.misses) as f64
        };
        out.gauge(
            "sipsentry_live_cache_hit_ratio",
            "hits / (hits + misses) since start",
        )
        .set(vec![], ratio);
    }
}
