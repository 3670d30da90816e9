//! `/metrics`: every counter the proxy keeps, in the Prometheus (OpenMetrics)
//! text format, via `prometheus-client`.
//!
//! The hot paths count in plain atomics and fixed arrays (no registry lookup
//! per packet); a [`Collector`] reads them at scrape time. The two latency
//! histograms are `prometheus-client` histograms observed where they happen.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

use crate::admin::AdminState;
use crate::config::Action;
use crate::policy::Rule;
use crate::reputation::live::Outcome;
use crate::sip::proxy::METHODS;

type Labels = Vec<(&'static str, String)>;

/// Renders the current metrics.
pub fn render(state: &Arc<AdminState>) -> Result<String, std::fmt::Error> {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Snapshot(Arc::clone(state))));
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, &registry)?;
    Ok(out)
}

#[derive(Debug)]
struct Snapshot(Arc<AdminState>);

fn load(a: &AtomicU64) -> u64 {
    a.load(Ordering::Relaxed)
}

fn counters(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    samples: Vec<(Labels, u64)>,
) -> Result<(), std::fmt::Error> {
    let mut m = enc.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (labels, v) in samples {
        if labels.is_empty() {
            // A bare sample, not `name{} v`.
            return ConstCounter::new(v).encode(m);
        }
        ConstCounter::new(v).encode(m.encode_family(&labels)?)?;
    }
    Ok(())
}

fn gauges(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    samples: Vec<(Labels, f64)>,
) -> Result<(), std::fmt::Error> {
    let mut m = enc.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (labels, v) in samples {
        if labels.is_empty() {
            return ConstGauge::new(v).encode(m);
        }
        ConstGauge::new(v).encode(m.encode_family(&labels)?)?;
    }
    Ok(())
}

impl Collector for Snapshot {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let s = &self.0;
        let p = &s.pipeline;

        // Calls by action and rule, and how long deciding took.
        let mut calls = Vec::new();
        for action in Action::ALL {
            for rule in Rule::ALL {
                let n = load(&p.metrics.calls[action as usize][rule as usize]);
                if n > 0 {
                    let labels = vec![
                        ("action", action.as_str().to_string()),
                        ("rule", rule.as_str().to_string()),
                    ];
                    calls.push((labels, n));
                }
            }
        }
        counters(
            &mut enc,
            "sipsentry_calls",
            "Screened calls by action done and rule that fired",
            calls,
        )?;
        let m = enc.encode_descriptor(
            "sipsentry_decision_seconds",
            "Time from INVITE to decision",
            None,
            MetricType::Histogram,
        )?;
        p.metrics.decision_seconds.encode(m)?;

        // Lookups by source and outcome.
        let mut lookups = Vec::new();
        if let Some(h) = &s.hiya {
            for (outcome, n) in [("found", load(&h.hits)), ("not_found", load(&h.misses))] {
                lookups.push((
                    vec![
                        ("source", "hiya-cache".to_string()),
                        ("outcome", outcome.to_string()),
                    ],
                    n,
                ));
            }
        }
        let providers = p.live().providers();
        for pr in providers {
            for o in Outcome::ALL {
                lookups.push((
                    vec![
                        ("source", pr.source.name().to_string()),
                        ("outcome", o.as_str().to_string()),
                    ],
                    load(&pr.stats.outcomes[o as usize]),
                ));
            }
        }
        counters(
            &mut enc,
            "sipsentry_lookups",
            "Reputation lookups by source and outcome",
            lookups,
        )?;

        // Providers: requests, errors, latency, breaker.
        let per = |f: &dyn Fn(&crate::reputation::live::Provider) -> u64| {
            providers
                .iter()
                .map(|pr| (vec![("provider", pr.source.name().to_string())], f(pr)))
                .collect::<Vec<_>>()
        };
        counters(
            &mut enc,
            "sipsentry_provider_requests",
            "Requests sent to live providers",
            per(&|pr| load(&pr.stats.requests)),
        )?;
        counters(
            &mut enc,
            "sipsentry_provider_errors",
            "Failed provider requests (errors, timeouts)",
            per(&|pr| load(&pr.stats.errors)),
        )?;
        counters(
            &mut enc,
            "sipsentry_provider_skipped",
            "Lookups skipped: circuit open or too many in flight",
            per(&|pr| load(&pr.stats.skipped)),
        )?;
        let mut m = enc.encode_descriptor(
            "sipsentry_provider_latency_seconds",
            "Provider request latency",
            None,
            MetricType::Histogram,
        )?;
        for pr in providers {
            let labels = [("provider", pr.source.name())];
            pr.stats.latency_seconds.encode(m.encode_family(&labels)?)?;
        }
        gauges(
            &mut enc,
            "sipsentry_circuit_breaker_state",
            "Provider circuit breaker: 0 closed, 1 half-open, 2 open",
            providers
                .iter()
                .map(|pr| {
                    (
                        vec![("provider", pr.source.name().to_string())],
                        f64::from(pr.breaker.state().gauge()),
                    )
                })
                .collect(),
        )?;

        // Live cache.
        let c = p.live().cache().stats();
        gauges(
            &mut enc,
            "sipsentry_live_cache_entries",
            "Numbers in the live cache",
            vec![(vec![], c.entries as f64)],
        )?;
        counters(
            &mut enc,
            "sipsentry_live_cache_hits",
            "Live cache lookups answered",
            vec![(vec![], c.hits)],
        )?;
        counters(
            &mut enc,
            "sipsentry_live_cache_misses",
            "Live cache lookups not answered",
            vec![(vec![], c.misses)],
        )?;
        counters(
            &mut enc,
            "sipsentry_live_cache_evictions",
            "Entries evicted at max_entries",
            vec![(vec![], c.evictions)],
        )?;
        let ratio = if c.hits + c.misses == 0 {
            0.0
        } else {
            c.hits as f64 / (c.hits + c.misses) as f64
        };
        gauges(
            &mut enc,
            "sipsentry_live_cache_hit_ratio",
            "hits / (hits + misses) since start",
            vec![(vec![], ratio)],
        )?;

        // Hiya cache per country.
        if let Some(h) = &s.hiya {
            let now_ms = crate::history::now_ms() as u64;
            let snap = h.snapshot();
            gauges(
                &mut enc,
                "sipsentry_hiya_cache_rows",
                "Numbers in the serving Hiya cache generation",
                snap.values()
                    .map(|c| {
                        (
                            vec![("country", c.manifest.country.clone())],
                            c.rows() as f64,
                        )
                    })
                    .collect(),
            )?;
            gauges(
                &mut enc,
                "sipsentry_hiya_cache_age_seconds",
                "Age of the serving Hiya cache generation",
                snap.values()
                    .map(|c| {
                        let age = now_ms.saturating_sub(c.manifest.built_at_ms) / 1000;
                        (vec![("country", c.manifest.country.clone())], age as f64)
                    })
                    .collect(),
            )?;
        }

        // History writer.
        if let Some(h) = &s.history {
            gauges(
                &mut enc,
                "sipsentry_history_queue_depth",
                "Records waiting for the history writer",
                vec![(vec![], h.depth.load(Ordering::Relaxed) as f64)],
            )?;
            counters(
                &mut enc,
                "sipsentry_history_written",
                "Records written to the history",
                vec![(vec![], load(&h.written))],
            )?;
            counters(
                &mut enc,
                "sipsentry_history_dropped",
                "Records lost (queue full or write failed)",
                vec![(vec![], load(&h.dropped))],
            )?;
            counters(
                &mut enc,
                "sipsentry_history_write_errors",
                "Batches the history database refused (their records are counted as dropped)",
                vec![(vec![], load(&h.write_errors))],
            )?;
            counters(
                &mut enc,
                "sipsentry_history_pruned",
                "Records deleted for being older than history.retention_days",
                vec![(vec![], load(&h.pruned))],
            )?;
        }

        // SIP traffic.
        if let Some(proxy) = &s.proxy {
            let st = proxy.stats();
            counters(
                &mut enc,
                "sipsentry_sip_requests",
                "SIP requests received by method",
                METHODS
                    .iter()
                    .enumerate()
                    .map(|(i, m)| (vec![("method", m.to_string())], load(&st.requests[i])))
                    .collect(),
            )?;
            counters(
                &mut enc,
                "sipsentry_sip_responses",
                "SIP responses received by class",
                (0..6)
                    .map(|i| {
                        (
                            vec![("class", format!("{}xx", i + 1))],
                            load(&st.responses[i]),
                        )
                    })
                    .collect(),
            )?;
            counters(
                &mut enc,
                "sipsentry_sip_parse_errors",
                "SIP messages that could not be parsed or were malformed",
                vec![(vec![], load(&st.parse_errors))],
            )?;
            counters(
                &mut enc,
                "sipsentry_sip_forbidden",
                "Requests refused: source outside sip.accept_from",
                vec![(vec![], load(&st.forbidden))],
            )?;
            counters(
                &mut enc,
                "sipsentry_sip_retransmissions_absorbed",
                "Retransmitted INVITEs answered from their transaction, not forwarded again",
                vec![(vec![], load(&st.retransmissions_absorbed))],
            )?;
            counters(
                &mut enc,
                "sipsentry_sip_dropped",
                "Messages dropped without an answer (e.g. a response whose Via is not ours)",
                vec![(vec![], load(&st.dropped))],
            )?;
            counters(
                &mut enc,
                "sipsentry_sip_timer_c",
                "Forwarded calls the PBX left without a final response past sip.timer_c_s (408 upstream; CANCELled if the PBX sent a provisional)",
                vec![(vec![], load(&st.timer_c))],
            )?;
            counters(
                &mut enc,
                "sipsentry_sip_refused_full",
                "New calls answered 503: sip.max_transactions calls were remembered",
                vec![(vec![], load(&st.refused_full))],
            )?;
            gauges(
                &mut enc,
                "sipsentry_sip_transactions",
                "INVITE transactions remembered now (kept 64xT1 after their last change)",
                vec![(vec![], proxy.transactions() as f64)],
            )?;
        }

        // Provider account and webhook.
        if let Some(b) = s
            .providers
            .didchecks
            .as_ref()
            .and_then(|d| d.last_balance())
        {
            gauges(
                &mut enc,
                "sipsentry_didchecks_balance",
                "DIDChecks credit balance last reported",
                vec![(vec![], b as f64)],
            )?;
        }
        let w = &s.webhook;
        counters(
            &mut enc,
            "sipsentry_webhook_events",
            "DIDChecks webhook deliveries by result",
            vec![
                (
                    vec![("result", "status_change".to_string())],
                    load(&w.status_changes),
                ),
                (
                    vec![("result", "other_event".to_string())],
                    load(&w.other_events),
                ),
                (
                    vec![("result", "bad_signature".to_string())],
                    load(&w.bad_signatures),
                ),
                (
                    vec![("result", "malformed".to_string())],
                    load(&w.malformed),
                ),
            ],
        )?;
        Ok(())
    }
}
