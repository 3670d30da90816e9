//! The live cache: what the live providers said about a number, kept for
//! `ttl_minutes` (answers with data) or `negative_ttl_minutes` ("no data"),
//! so a repeat caller is screened from memory on the packet path.
//!
//! One dashmap entry per E.164 number holds a slot per provider, so a call
//! costs one hash lookup whatever the number of providers. Evidence is shared
//! (`Arc`), so a hit copies a pointer, not the provider's JSON.
//!
//! Bounded by `max_entries` without a sweeper that could lock a shard for
//! long: expired slots are dropped when read, and an insert at capacity evicts
//! by sampling a few entries (expired ones first, else the oldest of the
//! sample), the way Redis approximates LRU. The work per insert is constant and
//! it runs on the lookup task, never on the SIP thread.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use crossbeam_utils::CachePadded;
use dashmap::DashMap;
use serde::{Deserialize, Serialize};
use smallvec::SmallVec;
use tokio::time::{Duration, Instant};

use super::Evidence;

/// Entries examined per eviction.
pub const EVICTION_SAMPLE: usize = 16;

/// Stripes of the hit/miss counters: threads bumping one shared counter
/// would fight over its cache line on every call.
const STRIPES: usize = 16;

/// A counter split over cache-padded stripes, one per thread (modulo).
#[derive(Debug, Default)]
struct Striped([CachePadded<AtomicU64>; STRIPES]);

impl Striped {
    fn add(&self) {
        thread_local! {
            static STRIPE: usize = {
                static NEXT: AtomicUsize = AtomicUsize::new(0);
                NEXT.fetch_add(1, Ordering::Relaxed) % STRIPES
            };
        }
        let i = STRIPE.with(|s| *s);
        self.0[i].fetch_add(1, Ordering::Relaxed);
    }

    fn sum(&self) -> u64 {
        self.0.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }
}

/// The map key of an E.164 number: its digits as an integer, tagged with
/// their count (so "+1" and "+01" differ). Integers hash and compare without
/// following a pointer. `None` for text that is not `+digits` (≤ 17 digits).
pub fn key(e164: &str) -> Option<u64> {
    let digits = e164.strip_prefix('+').unwrap_or(e164).as_bytes();
    if digits.is_empty() || digits.len() > 17 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let value = digits
        .iter()
        .fold(0u64, |acc, d| acc * 10 + u64::from(d - b'0'));
    Some(((digits.len() as u64) << 57) | value)
}

#[derive(Debug, Clone)]
struct Slot {
    source: u8,
    /// `None`: the provider answered but knows nothing about the number.
    evidence: Option<Arc<Evidence>>,
    expires: Instant,
}

/// A cached answer for one provider.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Cached {
    Hit(Arc<Evidence>),
    NoData,
    Miss,
}

#[derive(Debug)]
pub struct LiveCache {
    map: DashMap<u64, SmallVec<[Slot; 3]>>,
    sources: Vec<&'static str>,
    ttl: Duration,
    negative_ttl: Duration,
    max_entries: usize,
    len: AtomicUsize,
    hits: Striped,
    misses: Striped,
    evictions: AtomicU64,
}

/// Counters for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    pub entries: usize,
    pub hits: u64,
    pub misses: u64,
    pub evictions: u64,
}

impl LiveCache {
    /// A cache for the named providers (their [`LiveSource::name`](super::LiveSource::name)s,
    /// in the order the lookup engine holds them).
    pub fn new(config: &LiveCacheConfig, sources: Vec<&'static str>) -> Self {
        LiveCache {
            map: DashMap::new(),
            sources,
            ttl: Duration::from_secs(config.ttl_minutes * 60),
            negative_ttl: Duration::from_secs(config.negative_ttl_minutes * 60),
            max_entries: config.max_entries.max(1),
            len: AtomicUsize::new(0),
            hits: Striped::default(),
            misses: Striped::default(),
            evictions: AtomicU64::new(0),
        }
    }

    /// How long an answer is kept: `ttl_minutes` with data, else
    /// `negative_ttl_minutes`.
    pub fn ttl_for(&self, has_data: bool) -> Duration {
        if has_data {
            self.ttl
        } else {
            self.negative_ttl
        }
    }

    /// The index of a provider by name.
    pub fn source_index(&self, name: &str) -> Option<usize> {
        self.sources.iter().position(|s| *s == name)
    }

    /// The fresh answer of provider `source` for `e164`.
    pub fn get(&self, source: usize, e164: &str) -> Cached {
        let now = Instant::now();
        let slots = key(e164).and_then(|k| self.map.get(&k));
        self.count(Self::answer(slots.as_deref(), source, now))
    }

    /// Every provider's fresh answer for `e164`, from one map lookup:
    /// `f(source index, answer)` once per provider, in order.
    pub fn get_each(&self, e164: &str, mut f: impl FnMut(usize, Cached)) {
        let now = Instant::now();
        let slots = key(e164).and_then(|k| self.map.get(&k));
        for source in 0..self.sources.len() {
            f(
                source,
                self.count(Self::answer(slots.as_deref(), source, now)),
            );
        }
    }

    fn answer(slots: Option<&SmallVec<[Slot; 3]>>, source: usize, now: Instant) -> Cached {
        let slot = slots.and_then(|slots| {
            slots
                .iter()
                .find(|s| s.source as usize == source && s.expires > now)
        });
        match slot {
            Some(Slot {
                evidence: Some(ev), ..
            }) => Cached::Hit(Arc::clone(ev)),
            Some(_) => Cached::NoData,
            None => Cached::Miss,
        }
    }

    fn count(&self, c: Cached) -> Cached {
        if matches!(c, Cached::Miss) {
            self.misses.add();
        } else {
            self.hits.add();
        }
        c
    }

    /// Stores provider `source`'s answer (`None` = no data) with its TTL.
    /// Text that is not an E.164 number is not cached.
    pub fn put(&self, source: usize, e164: &str, evidence: Option<Evidence>) {
        let Some(k) = key(e164) else { return };
        let ttl = self.ttl_for(evidence.is_some());
        let slot = Slot {
            source: source as u8,
            evidence: evidence.map(Arc::new),
            expires: Instant::now() + ttl,
        };
        // Evict before taking the entry's shard lock: eviction iterates shards.
        if !self.map.contains_key(&k) && self.len.load(Ordering::Relaxed) >= self.max_entries {
            self.evict();
        }
        match self.map.entry(k) {
            dashmap::Entry::Occupied(mut o) => {
                let now = Instant::now();
                let slots = o.get_mut();
                slots.retain(|s| s.source != slot.source && s.expires > now);
                slots.push(slot);
            }
            dashmap::Entry::Vacant(v) => {
                let mut slots = SmallVec::new();
                slots.push(slot);
                v.insert(slots);
                self.len.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Removes every expired entry of a sample, or the oldest one of it.
    fn evict(&self) {
        let now = Instant::now();
        let mut expired: SmallVec<[u64; EVICTION_SAMPLE]> = SmallVec::new();
        let mut oldest: Option<(Instant, u64)> = None;
        for entry in self.map.iter().take(EVICTION_SAMPLE) {
            let latest = entry.value().iter().map(|s| s.expires).max().unwrap_or(now);
            if latest <= now {
                expired.push(*entry.key());
            } else if oldest.as_ref().is_none_or(|(t, _)| latest < *t) {
                oldest = Some((latest, *entry.key()));
            }
        }
        // The iterator's shard locks are released before removing.
        if expired.is_empty()
            && let Some((_, key)) = oldest
        {
            expired.push(key);
        }
        for key in expired {
            if self.map.remove(&key).is_some() {
                self.len.fetch_sub(1, Ordering::Relaxed);
                self.evictions.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    pub fn stats(&self) -> CacheStats {
        CacheStats {
            entries: self.len.load(Ordering::Relaxed),
            hits: self.hits.sum(),
            misses: self.misses.sum(),
            evictions: self.evictions.load(Ordering::Relaxed),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LiveCacheConfig {
    pub ttl_minutes: u64,
    pub negative_ttl_minutes: u64,
    pub max_entries: usize,
}

impl Default for LiveCacheConfig {
    fn default() -> Self {
        Self {
            ttl_minutes: 1440,
            negative_ttl_minutes: 60,
            max_entries: 1_000_000,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reputation::Source;

    fn ev(score: u8) -> Evidence {
        Evidence {
            source: Source::Custom,
            score,
            category: None,
            cached: false,
            latency_us: 1,
            raw: Default::default(),
        }
    }

    fn cache(max: usize) -> LiveCache {
        let cfg = LiveCacheConfig {
            ttl_minutes: 10,
            negative_ttl_minutes: 1,
            max_entries: max,
        };
        LiveCache::new(&cfg, vec!["a", "b"])
    }

    #[tokio::test(start_paused = true)]
    async fn answers_expire_after_their_ttl_and_no_data_sooner() {
        let c = cache(100);
        c.put(0, "+1", Some(ev(70)));
        c.put(1, "+1", None);
        assert!(matches!(c.get(0, "+1"), Cached::Hit(e) if e.score == 70));
        assert_eq!(c.get(1, "+1"), Cached::NoData);
        assert_eq!(c.get(0, "+2"), Cached::Miss);
        tokio::time::advance(Duration::from_secs(61)).await;
        assert_eq!(c.get(1, "+1"), Cached::Miss, "negative TTL is 1 minute");
        assert!(matches!(c.get(0, "+1"), Cached::Hit(_)));
        tokio::time::advance(Duration::from_secs(9 * 60)).await;
        assert_eq!(c.get(0, "+1"), Cached::Miss, "TTL is 10 minutes");
        let s = c.stats();
        assert_eq!((s.hits, s.misses), (3, 3));
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_cache_evicts_and_stays_within_max_entries() {
        let c = cache(50);
        for i in 0..500 {
            c.put(0, &format!("+1{i}"), Some(ev(1)));
            tokio::time::advance(Duration::from_millis(1)).await;
        }
        assert!(c.stats().entries <= 50, "{:?}", c.stats());
        assert_eq!(c.map.len(), c.stats().entries);
        assert!(c.stats().evictions >= 450);
        // The newest entry is always there.
        assert!(matches!(c.get(0, "+1499"), Cached::Hit(_)));
    }

    #[test]
    fn keys_are_distinct_per_digit_string_and_refuse_non_numbers() {
        assert_ne!(key("+1"), key("+01"));
        assert_eq!(key("+15551234567"), key("15551234567"));
        assert_ne!(key("+15551234567"), key("+15551234568"));
        assert_eq!(key("anonymous"), None);
        assert_eq!(key("+"), None);
        assert_eq!(key("+123456789012345678"), None);
    }

    #[tokio::test(start_paused = true)]
    async fn replacing_one_providers_answer_keeps_the_others() {
        let c = cache(10);
        c.put(0, "+1", Some(ev(10)));
        c.put(1, "+1", Some(ev(20)));
        c.put(0, "+1", Some(ev(30)));
        assert!(matches!(c.get(0, "+1"), Cached::Hit(e) if e.score == 30));
        assert!(matches!(c.get(1, "+1"), Cached::Hit(e) if e.score == 20));
        assert_eq!(c.stats().entries, 1);
    }
}
