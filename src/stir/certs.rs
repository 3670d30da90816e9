//! The signers' certificates, fetched from their `x5u` URL and cached.
//!
//! HTTPS only, no redirect followed, at most [`MAX_BODY`] bytes, within
//! `stir.fetch_timeout_ms`. A certificate is kept for `stir.cert_cache_ttl_s`
//! (or the response's `Cache-Control: max-age`, if shorter); a failure for
//! [`FAILURE_TTL`], so an unreachable repository gets one try a minute, not
//! one per call. One fetch per URL at a time: calls that need the same
//! certificate wait for the same answer. The cache holds at most
//! `stir.cert_cache_entries` URLs.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use dashmap::DashMap;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject as _;
use tokio::sync::watch;

use super::StirConfig;

/// Largest x5u response read.
pub const MAX_BODY: usize = 64 * 1024;

/// How long a failed fetch is remembered.
pub const FAILURE_TTL: Duration = Duration::from_secs(60);

/// A signer's certificate and the intermediates served with it.
#[derive(Debug)]
pub struct CertChain {
    pub leaf: CertificateDer<'static>,
    pub intermediates: Vec<CertificateDer<'static>>,
    /// The last chain check and when it was made (unix seconds): the
    /// chain's validity changes only with time, so calls signed under one
    /// certificate share one check a minute instead of two signature
    /// verifications each.
    pub(super) checked: parking_lot::Mutex<Option<(u64, Result<(), super::Reason>)>>,
}

impl PartialEq for CertChain {
    fn eq(&self, other: &Self) -> bool {
        self.leaf == other.leaf && self.intermediates == other.intermediates
    }
}

impl Eq for CertChain {}

/// How long a chain check is reused.
pub const CHAIN_CHECK_REUSE_S: u64 = 60;

/// Why a certificate could not be had.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FetchError {
    #[error("x5u {0:?} is not an https URL")]
    NotHttps(String),
    #[error("x5u answered {0}")]
    Status(u16),
    #[error("x5u answered a redirect ({0}); redirects are not followed")]
    Redirect(u16),
    #[error("x5u answer is larger than {MAX_BODY} bytes")]
    TooLarge,
    #[error("x5u did not answer within stir.fetch_timeout_ms")]
    Timeout,
    #[error("x5u could not be reached: {0}")]
    Unreachable(String),
    #[error("x5u answer holds no certificate")]
    NoCertificate,
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CertFetcherError {
    #[error("cannot read stir.x5u_ca_file {path}: {message}")]
    CaFile {
        path: std::path::PathBuf,
        message: String,
    },
    #[error("cannot build the x5u HTTPS client: {0}")]
    Client(String),
}

type FetchResult = Result<Arc<CertChain>, FetchError>;

struct Cached {
    result: FetchResult,
    until: Instant,
}

struct Inner {
    client: reqwest::Client,
    ttl: Duration,
    max_entries: usize,
    cache: DashMap<String, Cached>,
    inflight: DashMap<String, watch::Receiver<Option<FetchResult>>>,
    /// HTTPS fetches made; those that failed.
    fetches: AtomicU64,
    failures: AtomicU64,
}

/// The x5u fetcher and its cache; cheap to clone.
#[derive(Clone)]
pub struct CertFetcher {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for CertFetcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertFetcher")
            .field("cached", &self.inner.cache.len())
            .finish_non_exhaustive()
    }
}

impl CertFetcher {
    pub fn new(config: &StirConfig) -> Result<CertFetcher, CertFetcherError> {
        let mut builder = reqwest::Client::builder()
            .https_only(true)
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_millis(config.fetch_timeout_ms))
            .user_agent(concat!("sipsentry/", env!("CARGO_PKG_VERSION")));
        if !config.x5u_ca_file.as_os_str().is_empty() {
            let path = &config.x5u_ca_file;
            let pem = std::fs::read(path).map_err(|e| CertFetcherError::CaFile {
                path: path.clone(),
                message: e.to_string(),
            })?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
                CertFetcherError::CaFile {
                    path: path.clone(),
                    message: e.to_string(),
                }
            })?;
            if certs.is_empty() {
                return Err(CertFetcherError::CaFile {
                    path: path.clone(),
                    message: "no PEM certificate in it".into(),
                });
            }
            for c in certs {
                builder = builder.add_root_certificate(c);
            }
        }
        let client = builder
            .build()
            .map_err(|e| CertFetcherError::Client(e.to_string()))?;
        Ok(CertFetcher {
            inner: Arc::new(Inner {
                client,
                ttl: Duration::from_secs(config.cert_cache_ttl_s),
                max_entries: config.cert_cache_entries.max(1),
                cache: DashMap::new(),
                inflight: DashMap::new(),
                fetches: AtomicU64::new(0),
                failures: AtomicU64::new(0),
            }),
        })
    }

    /// The cached answer for `url`, if there is a fresh one (no waiting).
    pub fn cached(&self, url: &str) -> Option<FetchResult> {
        let c = self.inner.cache.get(url)?;
        (c.until > Instant::now()).then(|| c.result.clone())
    }

    /// HTTPS fetches made so far, and how many failed.
    pub fn fetch_counts(&self) -> (u64, u64) {
        (
            self.inner.fetches.load(Ordering::Relaxed),
            self.inner.failures.load(Ordering::Relaxed),
        )
    }

    /// The certificate of `url`: from the cache, from a fetch already under
    /// way, or fetched now. The fetch runs on its own task, so a caller that
    /// gives up (its call's budget ran out) does not stop it.
    pub async fn get(&self, url: &str) -> FetchResult {
        if let Some(r) = self.cached(url) {
            return r;
        }
        let mut rx = match self.inner.inflight.entry(url.to_string()) {
            dashmap::Entry::Occupied(e) => e.get().clone(),
            dashmap::Entry::Vacant(e) => {
                // A fetch that finished since the look above has cached
                // its answer before leaving `inflight`.
                if let Some(r) = self.cached(url) {
                    return r;
                }
                let (tx, rx) = watch::channel(None);
                e.insert(rx.clone());
                let inner = Arc::clone(&self.inner);
                let url = url.to_string();
                tokio::spawn(async move {
                    let (result, ttl) = fetch(&inner, &url).await;
                    inner.remember(&url, result.clone(), ttl);
                    inner.inflight.remove(&url);
                    let _ = tx.send(Some(result));
                });
                rx
            }
        };
        match rx.wait_for(Option::is_some).await {
            Ok(r) => r.clone().unwrap_or(Err(FetchError::Timeout)),
            Err(_) => Err(FetchError::Unreachable("the fetch task ended".into())),
        }
    }
}

impl Inner {
    fn remember(&self, url: &str, result: FetchResult, ttl: Duration) {
        if self.cache.len() >= self.max_entries {
            let now = Instant::now();
            self.cache.retain(|_, c| c.until > now);
            if self.cache.len() >= self.max_entries
                && let Some(k) = self.cache.iter().next().map(|e| e.key().clone())
            {
                self.cache.remove(&k);
            }
        }
        self.cache.insert(
            url.to_string(),
            Cached {
                result,
                until: Instant::now() + ttl,
            },
        );
    }
}

/// `max-age=N` of a Cache-Control value.
fn max_age(value: &str) -> Option<Duration> {
    value
        .split(',')
        .filter_map(|d| d.trim().strip_prefix("max-age="))
        .find_map(|n| n.trim_matches('"').parse::<u64>().ok())
        .map(Duration::from_secs)
}

/// One HTTPS fetch: the result and how long to keep it.
async fn fetch(inner: &Inner, url: &str) -> (FetchResult, Duration) {
    inner.fetches.fetch_add(1, Ordering::Relaxed);
    let result = fetch_once(inner, url).await;
    match result {
        Ok((chain, ttl)) => (Ok(Arc::new(chain)), ttl.min(inner.ttl)),
        Err(e) => {
            inner.failures.fetch_add(1, Ordering::Relaxed);
            tracing::info!(x5u = url, error = %e, "STIR certificate not fetched; retried in a minute");
            (Err(e), FAILURE_TTL)
        }
    }
}

async fn fetch_once(inner: &Inner, url: &str) -> Result<(CertChain, Duration), FetchError> {
    if !url.starts_with("https://") {
        return Err(FetchError::NotHttps(url.to_string()));
    }
    let mut resp = inner.client.get(url).send().await.map_err(|e| {
        if e.is_timeout() {
            FetchError::Timeout
        } else {
            FetchError::Unreachable(e.to_string())
        }
    })?;
    let status = resp.status();
    if status.is_redirection() {
        return Err(FetchError::Redirect(status.as_u16()));
    }
    if !status.is_success() {
        return Err(FetchError::Status(status.as_u16()));
    }
    let ttl = resp
        .headers()
        .get(reqwest::header::CACHE_CONTROL)
        .and_then(|v| v.to_str().ok())
        .and_then(max_age)
        .unwrap_or(inner.ttl);
    if resp.content_length().is_some_and(|n| n > MAX_BODY as u64) {
        return Err(FetchError::TooLarge);
    }
    let mut body = Vec::new();
    loop {
        match resp.chunk().await {
            Ok(Some(chunk)) => {
                if body.len() + chunk.len() > MAX_BODY {
                    return Err(FetchError::TooLarge);
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => break,
            Err(e) if e.is_timeout() => return Err(FetchError::Timeout),
            Err(e) => return Err(FetchError::Unreachable(e.to_string())),
        }
    }
    Ok((parse_chain(&body)?, ttl))
}

/// The certificates of an x5u answer: PEM (leaf first, then its
/// intermediates), or one DER certificate.
pub fn parse_chain(body: &[u8]) -> Result<CertChain, FetchError> {
    let mut certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(body)
        .filter_map(Result::ok)
        .collect();
    if certs.is_empty() && body.first() == Some(&0x30) {
        certs.push(CertificateDer::from(body.to_vec()));
    }
    if certs.is_empty() {
        return Err(FetchError::NoCertificate);
    }
    let leaf = certs.remove(0);
    Ok(CertChain {
        leaf,
        intermediates: certs,
        checked: parking_lot::Mutex::new(None),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_age_is_read_from_cache_control() {
        assert_eq!(
            max_age("public, max-age=300"),
            Some(Duration::from_secs(300))
        );
        assert_eq!(max_age("no-cache"), None);
    }

    #[test]
    fn an_answer_without_a_certificate_is_refused() {
        assert_eq!(
            parse_chain(b"<html>not here</html>"),
            Err(FetchError::NoCertificate)
        );
    }
}
