//! The live lookup engine: every live provider behind the same machinery.
//!
//! - **Live cache** first ([`LiveCache`]): a repeat caller costs a hash lookup.
//! - **Single-flight**: one request per provider and number at a time; every
//!   call that needs the same answer waits on the same flight (a `watch`).
//! - **Flights outlive calls**: a flight runs on its own task under the
//!   provider's `timeout_ms`, so an answer that comes after a call's budget
//!   still fills the cache for the next call.
//! - **Circuit breaker** ([`Breaker`]) and a bound on requests in flight per
//!   provider: a provider that is down or drowning is skipped at no cost.
//!
//! - **Shared tier** ([`SharedTier`], in a cluster): on a local miss the flight
//!   asks the cluster first and claims the lookup there, so one node pays for
//!   a number and the others take its answer; a provider's rate limit holds
//!   across the cluster.
//!
//! The pipeline calls [`LiveLookup::from_cache`] on the packet path and
//! [`LiveLookup::lookup`] (or [`LiveLookup::prefetch`] in background mode) on a
//! miss.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use dashmap::DashMap;
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use serde::Serialize;
use tokio::sync::{Semaphore, watch};
use tokio::time::{Duration, Instant};

use super::breaker::Breaker;
use super::live_cache::LiveCacheConfig;
use super::live_cache::{Cached, LiveCache};
use super::shared::{Claim, SharedTier, Slot};
use super::{Evidence, LiveSource, SourceError};

/// Requests in flight per provider before new numbers are skipped. With
/// single-flight this is distinct new numbers at once; beyond it the provider
/// (or our link to it) is not keeping up and queueing would only add latency.
pub const MAX_IN_FLIGHT: usize = 256;

/// How long a flight waiting for another node's answer sleeps between looks
/// at the shared tier.
pub const SHARED_POLL: Duration = Duration::from_millis(5);

/// How long a claim outlives the provider's timeout: a node that dies holding
/// one blocks the number's lookup no longer than this beyond the timeout.
pub const CLAIM_MARGIN: Duration = Duration::from_secs(1);

/// What one provider contributed to one call (`check` shows these).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LookupReport {
    pub source: &'static str,
    pub outcome: Outcome,
    /// How long this call waited for it (0 from the cache).
    pub latency_us: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Outcome {
    /// Answered with data now.
    Found,
    /// Answered now: knows nothing about the number.
    NoData,
    /// Data from the live cache.
    Cached,
    /// "No data" from the live cache.
    CachedNoData,
    /// Failed (error, timeout, open circuit...).
    Error,
    /// Still running when the call's budget ran out; it will fill the cache.
    Late,
}

impl Outcome {
    /// Every outcome, in declaration order (metrics index by `outcome as usize`).
    pub const ALL: [Outcome; 6] = [
        Outcome::Found,
        Outcome::NoData,
        Outcome::Cached,
        Outcome::CachedNoData,
        Outcome::Error,
        Outcome::Late,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Found => "found",
            Outcome::NoData => "no_data",
            Outcome::Cached => "cached",
            Outcome::CachedNoData => "cached_no_data",
            Outcome::Error => "error",
            Outcome::Late => "late",
        }
    }

    /// Whether the provider gave an answer (with or without data).
    pub fn answered(self) -> bool {
        matches!(
            self,
            Outcome::Found | Outcome::NoData | Outcome::Cached | Outcome::CachedNoData
        )
    }
}

type FlightResult = Result<Option<Evidence>, SourceError>;

/// Provider request latency buckets (seconds).
pub const PROVIDER_BUCKETS: [f64; 10] = [0.005, 0.01, 0.02, 0.05, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5];

/// Counters per provider, for metrics.
#[derive(Debug)]
pub struct ProviderStats {
    /// What calls got from this provider, by `Outcome as usize`.
    pub outcomes: [AtomicU64; 6],
    /// Request latency, seconds (requests actually sent).
    pub latency_seconds: prometheus_client::metrics::histogram::Histogram,
    /// Requests sent; failed ones; lookups skipped (circuit open, too many
    /// in flight). What the requests found is in `outcomes`.
    pub requests: AtomicU64,
    pub errors: AtomicU64,
    pub skipped: AtomicU64,
    /// The requests' latency summed, µs (the console's mean).
    pub latency_us_total: AtomicU64,
}

impl Default for ProviderStats {
    fn default() -> Self {
        ProviderStats {
            outcomes: Default::default(),
            latency_seconds: prometheus_client::metrics::histogram::Histogram::new(
                PROVIDER_BUCKETS,
            ),
            requests: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            skipped: AtomicU64::new(0),
            latency_us_total: AtomicU64::new(0),
        }
    }
}

/// One provider with its breaker, bound and flights.
pub struct Provider {
    pub source: Arc<dyn LiveSource>,
    pub breaker: Breaker,
    pub stats: ProviderStats,
    index: usize,
    timeout: Duration,
    gate: Semaphore,
    inflight: DashMap<Box<str>, watch::Receiver<Option<FlightResult>>>,
}

/// Removes a flight from the in-flight table however its task ends (even by
/// a panicking source), so the next call starts a new one.
struct InflightGuard {
    provider: Arc<Provider>,
    key: Box<str>,
}

impl Provider {
    /// The per-request timeout.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }
}

impl Drop for InflightGuard {
    fn drop(&mut self) {
        self.provider.inflight.remove(&self.key);
    }
}

/// The live providers of a pipeline.
pub struct LiveLookup {
    providers: Vec<Arc<Provider>>,
    cache: Arc<LiveCache>,
    shared: Option<Arc<dyn SharedTier>>,
    rt: Option<tokio::runtime::Handle>,
}

impl LiveLookup {
    /// `sources` with their per-request timeouts, behind a cache configured
    /// by `[live_cache]`. Call inside a tokio runtime: flights are spawned on it.
    pub fn new(config: &LiveCacheConfig, sources: Vec<(Arc<dyn LiveSource>, Duration)>) -> Self {
        let names = sources.iter().map(|(s, _)| s.name()).collect();
        let providers = sources
            .into_iter()
            .enumerate()
            .map(|(index, (source, timeout))| {
                Arc::new(Provider {
                    source,
                    breaker: Breaker::default(),
                    stats: ProviderStats::default(),
                    index,
                    timeout,
                    gate: Semaphore::new(MAX_IN_FLIGHT),
                    inflight: DashMap::new(),
                })
            })
            .collect();
        LiveLookup {
            providers,
            cache: Arc::new(LiveCache::new(config, names)),
            shared: None,
            rt: tokio::runtime::Handle::try_current().ok(),
        }
    }

    /// Looks up behind `tier` on a local miss (a cluster's shared state).
    pub fn with_shared(mut self, tier: Option<Arc<dyn SharedTier>>) -> Self {
        self.shared = tier;
        self
    }

    /// The shared tier, when the node is part of a cluster.
    pub fn shared(&self) -> Option<&Arc<dyn SharedTier>> {
        self.shared.as_ref()
    }

    /// Replaces provider `source`'s answer for `e164` (a webhook's update):
    /// here at once, and on every node of the cluster through the shared tier.
    pub async fn update(&self, source: usize, e164: &str, evidence: Evidence) {
        if let Some(tier) = &self.shared
            && let Some(p) = self.providers.get(source)
        {
            let ttl = self.cache.ttl_for(true);
            tier.publish(p.source.name(), e164, Some(&evidence), ttl, true)
                .await;
        }
        self.cache.put(source, e164, Some(evidence));
    }

    pub fn is_empty(&self) -> bool {
        self.providers.is_empty()
    }

    pub fn cache(&self) -> &Arc<LiveCache> {
        &self.cache
    }

    pub fn providers(&self) -> &[Arc<Provider>] {
        &self.providers
    }

    /// Packet-path phase: pushes cached evidence and reports; returns the
    /// providers (a bit each) that have no fresh answer for `e164`.
    pub fn from_cache(
        &self,
        e164: &str,
        evidence: &mut Vec<Evidence>,
        reports: &mut Vec<LookupReport>,
    ) -> u64 {
        let mut missing = 0u64;
        self.cache.get_each(e164, |index, cached| {
            let p = &self.providers[index];
            let outcome = match cached {
                Cached::Hit(ev) => {
                    let mut ev = Evidence::clone(&ev);
                    ev.cached = true;
                    evidence.push(ev);
                    Outcome::Cached
                }
                Cached::NoData => Outcome::CachedNoData,
                _ => {
                    missing |= 1 << index;
                    return;
                }
            };
            p.stats.outcomes[outcome as usize].fetch_add(1, Ordering::Relaxed);
            reports.push(LookupReport {
                source: p.source.name(),
                outcome,
                latency_us: 0,
                error: None,
            });
        });
        missing
    }

    /// Starts (or joins) the flights for the `missing` providers without
    /// waiting: `live_mode = "background"`.
    pub fn prefetch(&self, e164: &str, missing: u64) {
        for p in self.selected(missing) {
            drop(self.flight(p, e164));
        }
    }

    /// Waits for the `missing` providers' answers until `deadline`, pushing
    /// evidence and one report per provider. Providers still running at the
    /// deadline are reported `Late`; their flights go on and fill the cache.
    pub async fn lookup(
        &self,
        e164: &str,
        missing: u64,
        deadline: Instant,
        evidence: &mut Vec<Evidence>,
        reports: &mut Vec<LookupReport>,
    ) {
        let started = Instant::now();
        let mut waits = FuturesUnordered::new();
        let mut pending = 0u64;
        for p in self.selected(missing) {
            pending |= 1 << p.index;
            let mut rx = self.flight(p, e164);
            let index = p.index;
            waits.push(async move {
                let r = rx
                    .wait_for(Option::is_some)
                    .await
                    .map(|v| v.clone().unwrap_or(Ok(None)));
                (index, r)
            });
        }
        loop {
            match tokio::time::timeout_at(deadline, waits.next()).await {
                Ok(Some((index, result))) => {
                    pending &= !(1 << index);
                    let name = self.providers[index].source.name();
                    let latency_us = started.elapsed().as_micros() as u64;
                    let (outcome, error) = match result {
                        Ok(Ok(Some(ev))) => {
                            evidence.push(ev);
                            (Outcome::Found, None)
                        }
                        Ok(Ok(None)) => (Outcome::NoData, None),
                        Ok(Err(e)) => (Outcome::Error, Some(e.to_string())),
                        Err(_) => (
                            Outcome::Error,
                            Some(format!("{name}: lookup task ended without an answer")),
                        ),
                    };
                    self.providers[index].stats.outcomes[outcome as usize]
                        .fetch_add(1, Ordering::Relaxed);
                    reports.push(LookupReport {
                        source: name,
                        outcome,
                        latency_us,
                        error,
                    });
                }
                Ok(None) => break,
                Err(_) => {
                    let latency_us = started.elapsed().as_micros() as u64;
                    for p in self.selected(pending) {
                        p.stats.outcomes[Outcome::Late as usize].fetch_add(1, Ordering::Relaxed);
                        reports.push(LookupReport {
                            source: p.source.name(),
                            outcome: Outcome::Late,
                            latency_us,
                            error: None,
                        });
                    }
                    break;
                }
            }
        }
    }

    fn selected(&self, mask: u64) -> impl Iterator<Item = &Arc<Provider>> {
        self.providers
            .iter()
            .filter(move |p| mask & (1 << p.index) != 0)
    }

    /// The flight for `(provider, e164)`: joins the running one or starts one.
    fn flight(&self, p: &Arc<Provider>, e164: &str) -> watch::Receiver<Option<FlightResult>> {
        match p.inflight.entry(e164.into()) {
            dashmap::Entry::Occupied(o) => o.get().clone(),
            dashmap::Entry::Vacant(v) => {
                // A flight that ended since the caller's cache check has
                // filled the cache (it writes the cache before leaving this
                // table): answer from there instead of asking again.
                match self.cache.get(p.index, e164) {
                    Cached::Hit(ev) => return watch::channel(Some(Ok(Some((*ev).clone())))).1,
                    Cached::NoData => return watch::channel(Some(Ok(None))).1,
                    _ => {}
                }
                let (tx, rx) = watch::channel(None);
                v.insert(rx.clone());
                let guard = InflightGuard {
                    provider: Arc::clone(p),
                    key: e164.into(),
                };
                let cache = Arc::clone(&self.cache);
                let shared = self.shared.clone();
                let task = async move {
                    let result = match shared {
                        Some(tier) => {
                            shared_flight(&*tier, &guard.provider, &guard.key, &cache).await
                        }
                        None => run(&guard.provider, &guard.key, None).await,
                    };
                    if let Ok(answer) = &result {
                        cache.put(guard.provider.index, &guard.key, answer.clone());
                    }
                    drop(guard);
                    let _ = tx.send(Some(result));
                };
                match self
                    .rt
                    .clone()
                    .or_else(|| tokio::runtime::Handle::try_current().ok())
                {
                    Some(rt) => {
                        rt.spawn(task);
                    }
                    None => tracing::error!("live lookup outside a tokio runtime; not started"),
                }
                rx
            }
        }
    }
}

/// A flight in a cluster: the shared answer when a node has one, else this
/// node's request (claimed, so the others wait for it), else the wait for
/// the node that holds the claim, all within the provider's timeout.
async fn shared_flight(
    tier: &dyn SharedTier,
    p: &Provider,
    e164: &str,
    cache: &LiveCache,
) -> FlightResult {
    let name = p.source.name();
    let give_up = Instant::now() + p.timeout;
    loop {
        match tier
            .fetch_or_claim(name, e164, p.timeout + CLAIM_MARGIN)
            .await
        {
            Claim::Answer(mut answer) => {
                if let Some(ev) = &mut answer {
                    ev.cached = true;
                    ev.latency_us = 0;
                }
                return Ok(answer);
            }
            Claim::Claimed => {
                let result = run(p, e164, Some(tier)).await;
                match &result {
                    Ok(answer) => {
                        let ttl = cache.ttl_for(answer.is_some());
                        tier.publish(name, e164, answer.as_ref(), ttl, false).await;
                    }
                    Err(_) => tier.release(name, e164).await,
                }
                return result;
            }
            Claim::Busy if Instant::now() + SHARED_POLL < give_up => {
                tokio::time::sleep(SHARED_POLL).await;
            }
            Claim::Busy => {
                return Err(SourceError::Timeout {
                    provider: name,
                    ms: p.timeout.as_millis() as u64,
                });
            }
            Claim::Unavailable => return run(p, e164, None).await,
        }
    }
}

/// One request to one provider, under its breaker, bound, timeout and (in a
/// cluster) the cluster-wide rate limit.
async fn run(p: &Provider, e164: &str, tier: Option<&dyn SharedTier>) -> FlightResult {
    let name = p.source.name();
    if !p.breaker.allow() {
        p.stats.skipped.fetch_add(1, Ordering::Relaxed);
        return Err(SourceError::CircuitOpen { provider: name });
    }
    let Ok(_permit) = p.gate.try_acquire() else {
        p.stats.skipped.fetch_add(1, Ordering::Relaxed);
        return Err(SourceError::Saturated {
            provider: name,
            limit: MAX_IN_FLIGHT,
        });
    };
    if let (Some(tier), Some(per_second)) = (tier, p.source.rate_limit()) {
        match tier.slot(name, per_second, p.timeout).await {
            Slot::After(wait) if !wait.is_zero() => tokio::time::sleep(wait).await,
            Slot::Refused => {
                p.stats.skipped.fetch_add(1, Ordering::Relaxed);
                return Err(SourceError::Throttled {
                    provider: name,
                    per_second,
                });
            }
            _ => {}
        }
    }
    p.stats.requests.fetch_add(1, Ordering::Relaxed);
    let started = Instant::now();
    let result = match tokio::time::timeout(p.timeout, p.source.lookup(e164)).await {
        Ok(r) => r,
        Err(_) => Err(SourceError::Timeout {
            provider: name,
            ms: p.timeout.as_millis() as u64,
        }),
    };
    let took = started.elapsed();
    p.stats.latency_seconds.observe(took.as_secs_f64());
    p.stats
        .latency_us_total
        .fetch_add(took.as_micros() as u64, Ordering::Relaxed);
    match &result {
        Ok(_) => p.breaker.success(),
        Err(e) => {
            p.stats.errors.fetch_add(1, Ordering::Relaxed);
            if e.trips_breaker() && p.breaker.failure() {
                tracing::warn!(provider = name, error = %e, "circuit opened: provider skipped for a while");
            } else {
                tracing::warn!(provider = name, error = %e, "live lookup failed");
            }
        }
    }
    result
}
