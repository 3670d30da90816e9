//! Verification as the pipeline uses it. What needs no cryptography (no
//! header, a malformed one, a claim that fails, `trust_upstream`) is
//! decided on the SIP thread; the signature check is left to the call's
//! task ([`Stir::finish`]), with the certificate from the cache or fetched
//! within the call's budget.
//!
//! Why off the SIP thread: one ES256 verification costs about 55 µs of CPU
//! (`cargo bench --bench stir_verify`), twenty times a whole unsigned call,
//! and every datagram queued behind it would wait that long. A signed call
//! pays a hand-off to a worker thread instead; the SIP thread stays as
//! fast for everyone else. Counts every outcome for `/metrics`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use super::verify::AnchorError;
use super::{
    CertFetcher, Outcome, Reason, StirConfig, StirMode, TrustAnchors, Verified, Verstat,
    verify_with,
};
use crate::metrics::{Collect, Scrape};

/// Why verification cannot be set up from the config.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StirError {
    #[error(transparent)]
    Anchors(#[from] AnchorError),
    #[error(transparent)]
    Fetcher(#[from] super::certs::CertFetcherError),
    #[error(
        "stir.mode = \"verify\" needs stir.trust_anchors: a PEM bundle of the STI certificate authorities to trust"
    )]
    NoAnchors,
}

/// What a call offers to verification.
#[derive(Debug, Clone, Copy)]
pub struct StirCall<'a> {
    /// The first Identity header's value.
    pub identity: Option<&'a str>,
    /// The caller, E.164.
    pub caller: &'a str,
    /// The called number as received (compared as digits).
    pub called: &'a str,
    /// The INVITE came from `sip.trusted_peers`.
    pub trusted: bool,
    /// A `verstat` already on the caller's identity.
    pub verstat: Option<&'a str>,
    /// The PASSporT's `attest`, as the SIP layer read it.
    pub attest: Option<&'a str>,
}

/// The first look's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Check {
    Done(Outcome),
    /// The claims hold: the signature and chain are to be checked with the
    /// certificate at this URL ([`Stir::finish`]).
    Verify(String),
}

const VERSTATS: [Verstat; 3] = [Verstat::Passed, Verstat::Failed, Verstat::NoValidation];

const REASONS: [Reason; 12] = [
    Reason::Malformed,
    Reason::UnsupportedAlg,
    Reason::UnsupportedPpt,
    Reason::BadTyp,
    Reason::X5uMismatch,
    Reason::Stale,
    Reason::OrigMismatch,
    Reason::DestMismatch,
    Reason::X5uUnreachable,
    Reason::UntrustedChain,
    Reason::CertExpired,
    Reason::BadSignature,
];

/// The verification service of a running proxy.
pub struct Stir {
    mode: StirMode,
    anchors: TrustAnchors,
    fetcher: Option<CertFetcher>,
    max_age_s: u64,
    /// Put `;verstat=` on the relayed identity.
    pub add_verstat: bool,
    by_verstat: [AtomicU64; 3],
    by_reason: [AtomicU64; 12],
}

impl std::fmt::Debug for Stir {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stir")
            .field("mode", &self.mode)
            .field("anchors", &self.anchors.len())
            .finish_non_exhaustive()
    }
}

fn now_s() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

fn parse_verstat(v: &str) -> Option<Verstat> {
    VERSTATS
        .into_iter()
        .find(|s| s.as_str().eq_ignore_ascii_case(v))
}

impl Stir {
    /// The service the config asks for; `None` when `stir.mode` is off.
    pub fn from_config(c: &StirConfig) -> Result<Option<Stir>, StirError> {
        let mode = c.effective_mode();
        let (anchors, fetcher) = match mode {
            StirMode::Verify => {
                if c.trust_anchors.as_os_str().is_empty() {
                    return Err(StirError::NoAnchors);
                }
                (
                    TrustAnchors::from_pem_file(&c.trust_anchors)?,
                    Some(CertFetcher::new(c)?),
                )
            }
            StirMode::TrustUpstream => (TrustAnchors::default(), None),
            _ => return Ok(None),
        };
        Ok(Some(Stir {
            mode,
            anchors,
            fetcher,
            max_age_s: c.max_age_s,
            add_verstat: c.add_verstat,
            by_verstat: Default::default(),
            by_reason: Default::default(),
        }))
    }

    fn count(&self, o: Outcome) -> Outcome {
        if let Some(i) = VERSTATS.iter().position(|v| *v == o.verstat) {
            self.by_verstat[i].fetch_add(1, Ordering::Relaxed);
        }
        if let Some(i) = o.reason.and_then(|r| REASONS.iter().position(|x| *x == r)) {
            self.by_reason[i].fetch_add(1, Ordering::Relaxed);
        }
        o
    }

    fn absent() -> Outcome {
        Outcome {
            verstat: Verstat::NoValidation,
            attest: None,
            reason: None,
            x5u: None,
            origid: None,
        }
    }

    /// Decides what can be decided without cryptography or waiting.
    pub fn begin(&self, call: &StirCall<'_>) -> Check {
        if self.mode == StirMode::TrustUpstream {
            let believed = call
                .verstat
                .filter(|_| call.trusted)
                .and_then(parse_verstat);
            return Check::Done(self.count(match believed {
                Some(v) => Outcome {
                    verstat: v,
                    attest: call.attest.map(str::to_string),
                    ..Self::absent()
                },
                None => Self::absent(),
            }));
        }
        let Some(identity) = call.identity else {
            return Check::Done(self.count(Self::absent()));
        };
        match self.verify(identity, call, None) {
            Verified::Done(o) => Check::Done(self.count(o)),
            Verified::NeedsCertificate(url) => Check::Verify(url),
        }
    }

    /// [`verify_with`] for `call`, with `chain` as the certificate (`None`:
    /// stop where one is needed).
    fn verify(
        &self,
        identity: &str,
        call: &StirCall<'_>,
        chain: Option<Result<Arc<super::CertChain>, Reason>>,
    ) -> Verified {
        verify_with(
            identity,
            call.caller,
            call.called,
            now_s(),
            self.max_age_s,
            &self.anchors,
            |_| chain,
        )
    }

    /// Takes the certificate from the cache, or fetches it (until
    /// `deadline`, after which the call goes on without it and the fetch
    /// goes on for the next call), then checks the signature and the chain.
    pub async fn finish(
        &self,
        call: &StirCall<'_>,
        url: &str,
        deadline: tokio::time::Instant,
    ) -> Outcome {
        let fetched = match &self.fetcher {
            Some(f) => tokio::time::timeout_at(deadline, f.get(url))
                .await
                .unwrap_or(Err(super::FetchError::Timeout)),
            None => Err(super::FetchError::Timeout),
        };
        let chain = fetched.map_err(|_| Reason::X5uUnreachable);
        let identity = call.identity.unwrap_or_default();
        let o = match self.verify(identity, call, Some(chain)) {
            Verified::Done(o) => o,
            Verified::NeedsCertificate(_) => Outcome {
                verstat: Verstat::Failed,
                reason: Some(Reason::X5uUnreachable),
                ..Self::absent()
            },
        };
        self.count(o)
    }
}

impl Collect for Stir {
    fn collect(&self, out: &mut Scrape) {
        let v = out.counter(
            "sipsentry_stir_verifications",
            "Identity verifications by verstat",
        );
        for (i, s) in VERSTATS.iter().enumerate() {
            v.count(
                vec![("verstat", s.as_str().to_string())],
                self.by_verstat[i].load(Ordering::Relaxed),
            );
        }
        let r = out.counter(
            "sipsentry_stir_failures",
            "Identity verifications failed, by the first check that failed",
        );
        for (i, reason) in REASONS.iter().enumerate() {
            let n = self.by_reason[i].load(Ordering::Relaxed);
            if n > 0 {
                r.count(vec![("reason", reason.as_str().to_string())], n);
            }
        }
        if let Some(f) = &self.fetcher {
            let (fetches, failures) = f.fetch_counts();
            out.counter(
                "sipsentry_stir_cert_fetches",
                "HTTPS fetches of x5u certificates",
            )
            .count(vec![], fetches);
            out.counter(
                "sipsentry_stir_cert_fetch_failures",
                "x5u fetches that failed",
            )
            .count(vec![], failures);
        }
    }
}
