//! What the Hiya local cache reports to `/metrics`: lookups, and per
//! country the serving generation's size and age.

use std::sync::atomic::Ordering;

use super::store::HiyaCache;
use crate::metrics::{Collect, Scrape};

impl Collect for HiyaCache {
    fn collect(&self, out: &mut Scrape) {
        let lookups = out.counter(
            "sipsentry_lookups",
            "Reputation lookups by source and outcome",
        );
        for (outcome, n) in [("found", &self.hits), ("not_found", &self.misses)] {
            let labels = vec![
                ("source", "hiya-cache".to_string()),
                ("outcome", outcome.to_string()),
            ];
            lookups.count(labels, n.load(Ordering::Relaxed));
        }
        let unavailable = out.gauge(
            "sipsentry_hiya_cache_unavailable",
            "1 for a country on disk with no intact generation (served without the local cache)",
        );
        for cc in self.unavailable() {
            unavailable.set(vec![("country", cc)], 1.0);
        }
        let now_ms = jiff::Timestamp::now().as_millisecond().max(0) as u64;
        let snap = self.snapshot();
        let rows = out.gauge(
            "sipsentry_hiya_cache_rows",
            "Numbers in the serving Hiya cache generation",
        );
        for c in snap.values() {
            rows.set(
                vec![("country", c.manifest.country.clone())],
                c.rows() as f64,
            );
        }
        let age = out.gauge(
            "sipsentry_hiya_cache_age_seconds",
            "Age of the serving Hiya cache generation",
        );
        for c in snap.values() {
            let s = now_ms.saturating_sub(c.manifest.built_at_ms) / 1000;
            age.set(vec![("country", c.manifest.country.clone())], s as f64);
        }
    }
}
