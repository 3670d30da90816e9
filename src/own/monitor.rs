//! [`Monitor`]: the configured own numbers, their results store and the
//! latest result of each (number, provider) in memory, for `/metrics`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;

use parking_lot::Mutex;
use serde::Serialize;

use super::store::{OwnStore, StoreError};
use super::{OwnNumbersConfig, OwnResult, Provider};
use crate::lists::rfc3339;

/// The own numbers and what is known of them.
pub struct Monitor {
    numbers: Vec<String>,
    set: HashSet<String>,
    providers: Vec<Provider>,
    store: Mutex<OwnStore>,
    latest: Mutex<HashMap<(String, Provider), OwnResult>>,
    /// Checks made, by provider and outcome (`ok`, `not_registered`, or the
    /// error kind).
    checks: Mutex<BTreeMap<(Provider, &'static str), u64>>,
}

impl std::fmt::Debug for Monitor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Monitor")
            .field("numbers", &self.numbers.len())
            .finish_non_exhaustive()
    }
}

/// Why the monitor could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MonitorError {
    #[error(transparent)]
    Config(#[from] super::OwnConfigError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// One provider's latest word on one number, and the word before it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProviderView {
    pub provider: Provider,
    pub status: String,
    pub value: Option<f64>,
    pub flagged: bool,
    /// RFC 3339.
    pub checked_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub report_card: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// The result before this one, when there was one.
    pub previous: Option<Previous>,
    /// Whether the status differs from the previous result's.
    pub changed: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Previous {
    pub status: String,
    pub value: Option<f64>,
    pub checked_at: String,
}

/// One own number: each watching provider's latest result (none yet: not
/// checked).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NumberView {
    pub number: String,
    pub providers: Vec<ProviderView>,
}

/// What `own status`, `GET /api/v1/own` and the console show.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OwnView {
    pub numbers: Vec<NumberView>,
    /// Numbers some provider now labels spam.
    pub flagged: usize,
    /// Numbers no provider has answered for yet.
    pub unchecked: usize,
}

/// The view of `numbers` from the store's [`OwnStore::latest_two`] rows.
pub fn view_of(numbers: &[String], rows: Vec<OwnResult>) -> OwnView {
    let mut by_number: HashMap<String, Vec<OwnResult>> = HashMap::new();
    for r in rows {
        by_number.entry(r.number.clone()).or_default().push(r);
    }
    let mut out = Vec::with_capacity(numbers.len());
    let (mut flagged, mut unchecked) = (0, 0);
    for n in numbers {
        let rows = by_number.remove(n).unwrap_or_default();
        let mut providers: Vec<ProviderView> = Vec::new();
        let mut it = rows.into_iter().peekable();
        while let Some(cur) = it.next() {
            let prev = it.next_if(|p| p.provider == cur.provider);
            providers.push(ProviderView {
                provider: cur.provider,
                flagged: cur.flagged(),
                changed: prev.as_ref().is_some_and(|p| p.status != cur.status),
                previous: prev.map(|p| Previous {
                    status: p.status,
                    value: p.value,
                    checked_at: rfc3339(p.time_ms),
                }),
                status: cur.status,
                value: cur.value,
                checked_at: rfc3339(cur.time_ms),
                report_card: cur.report_card,
                detail: cur.detail,
            });
        }
        if providers.iter().any(|p| p.flagged) {
            flagged += 1;
        }
        if providers.is_empty() {
            unchecked += 1;
        }
        out.push(NumberView {
            number: n.clone(),
            providers,
        });
    }
    OwnView {
        numbers: out,
        flagged,
        unchecked,
    }
}

impl Monitor {
    /// The numbers `config` names, with their results in the SQLite file
    /// at `path` (created when missing).
    pub fn open(config: &OwnNumbersConfig, path: &Path) -> Result<Monitor, MonitorError> {
        let numbers = config.expand()?;
        let store = OwnStore::open(path)?;
        let set: HashSet<String> = numbers.iter().cloned().collect();
        let mut latest = HashMap::new();
        for r in store.latest_two()? {
            if set.contains(&r.number) {
                latest.entry((r.number.clone(), r.provider)).or_insert(r);
            }
        }
        let mut providers = config.providers.clone();
        providers.sort_unstable();
        providers.dedup();
        Ok(Monitor {
            numbers,
            set,
            providers,
            store: Mutex::new(store),
            latest: Mutex::new(latest),
            checks: Mutex::new(BTreeMap::new()),
        })
    }

    /// Every own number, sorted.
    pub fn numbers(&self) -> &[String] {
        &self.numbers
    }

    pub fn is_own(&self, e164: &str) -> bool {
        self.set.contains(e164)
    }

    /// Keeps a result (blocking: SQLite). Results for numbers not in the
    /// configuration are kept too, but not shown or exported.
    pub fn record(&self, r: OwnResult) -> Result<(), StoreError> {
        self.store.lock().record(&r)?;
        if self.set.contains(&r.number) {
            self.latest.lock().insert((r.number.clone(), r.provider), r);
        }
        Ok(())
    }

    /// Counts one check by its outcome.
    pub fn count(&self, provider: Provider, outcome: &'static str) {
        *self.checks.lock().entry((provider, outcome)).or_default() += 1;
    }

    /// The latest stored result per number and provider, and the one before
    /// (blocking: SQLite).
    pub fn view(&self) -> Result<OwnView, StoreError> {
        let rows = self.store.lock().latest_two()?;
        Ok(view_of(&self.numbers, rows))
    }

    /// Every stored result for `number`, newest first (blocking).
    pub fn results(&self, number: &str, limit: usize) -> Result<Vec<OwnResult>, StoreError> {
        self.store.lock().results(number, limit)
    }

    /// When each number was last answered by `provider` (blocking).
    pub fn last_checked(&self, provider: Provider) -> Result<HashMap<String, i64>, StoreError> {
        self.store.lock().last_checked(provider)
    }
}

impl crate::metrics::Collect for Monitor {
    fn collect(&self, out: &mut crate::metrics::Scrape) {
        let latest = self.latest.lock();
        out.gauge("sipsentry_own_numbers", "Own numbers configured")
            .set(vec![], self.numbers.len() as f64);
        let f = out.gauge(
            "sipsentry_own_number_status",
            "Latest status of an own number: hiya_status 0 unflagged, 1 mixed_low, 2 mixed_high, 3 flagged; didchecks the spam score",
        );
        let mut flagged = HashSet::new();
        for ((number, provider), r) in latest.iter() {
            if r.flagged() {
                flagged.insert(number.as_str());
            }
            if let Some(v) = r.value {
                f.set(
                    vec![
                        ("number", number.clone()),
                        ("provider", provider.as_str().to_string()),
                    ],
                    v,
                );
            }
        }
        out.gauge(
            "sipsentry_own_numbers_flagged",
            "Own numbers a provider now labels spam (Hiya flagged, DIDChecks spam)",
        )
        .set(vec![], flagged.len() as f64);
        let not_registered = latest
            .values()
            .filter(|r| r.status == super::NOT_REGISTERED)
            .count();
        out.gauge(
            "sipsentry_own_numbers_not_registered",
            "Own numbers Hiya does not know (not registered with it)",
        )
        .set(vec![], not_registered as f64);
        let f = out.counter(
            "sipsentry_own_checks",
            "Own-number checks by provider and outcome (ok, not_registered, or the error)",
        );
        // Every watching provider's `ok` series exists from the start.
        let mut checks = self.checks.lock().clone();
        for p in &self.providers {
            checks.entry((*p, "ok")).or_default();
        }
        for ((p, outcome), n) in checks {
            f.count(
                vec![
                    ("provider", p.as_str().to_string()),
                    ("outcome", outcome.to_string()),
                ],
                n,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::Origin;
    use super::*;

    fn r(number: &str, provider: Provider, t: i64, status: &str, v: f64) -> OwnResult {
        OwnResult {
            number: number.into(),
            provider,
            time_ms: t,
            status: status.into(),
            value: Some(v),
            report_card: None,
            detail: None,
            origin: Origin::Schedule,
        }
    }

    #[test]
    fn the_view_pairs_each_latest_result_with_the_one_before_and_counts_flagged() {
        let numbers = vec![
            "+15550000001".to_string(),
            "+15550000002".to_string(),
            "+15550000003".to_string(),
        ];
        let rows = vec![
            r("+15550000001", Provider::DidChecks, 9, "clean", 10.0),
            r("+15550000001", Provider::HiyaStatus, 8, "flagged", 3.0),
            r("+15550000001", Provider::HiyaStatus, 4, "unflagged", 0.0),
            r("+15550000002", Provider::HiyaStatus, 8, "mixed_low", 1.0),
            r("+15550000002", Provider::HiyaStatus, 4, "mixed_low", 1.0),
            r("+19990000000", Provider::HiyaStatus, 4, "flagged", 3.0),
        ];
        let v = view_of(&numbers, rows);
        assert_eq!((v.flagged, v.unchecked, v.numbers.len()), (1, 1, 3));
        let first = &v.numbers[0].providers;
        assert_eq!(first.len(), 2);
        assert_eq!(
            (first[0].provider, first[0].previous.is_none()),
            (Provider::DidChecks, true)
        );
        assert!(first[1].changed && first[1].flagged);
        assert_eq!(first[1].previous.as_ref().unwrap().status, "unflagged");
        assert!(!v.numbers[1].providers[0].changed);
        assert!(v.numbers[2].providers.is_empty());
    }
}
