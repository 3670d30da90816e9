//! SIP over TLS (RFC 3261 §26, RFC 5630): the certificates the proxy serves
//! and presents, the peers it trusts, and the handshakes' bookkeeping.
//!
//! TLS 1.2 and 1.3 only (rustls, aws-lc-rs). The server certificate is read
//! from `sip.tls_cert` / `sip.tls_key` and kept behind a swap
//! ([`Tls::reload`]): a reload serves the new certificate to new connections
//! while the established ones keep theirs. The same certificate is offered
//! when the proxy connects out and the far end asks for one (mutual TLS
//! with a PBX). Outbound connections verify the peer against the system's
//! roots plus `sip.tls_next_hop_ca`; inbound ones, when `sip.tls_client_ca`
//! is set, must present a certificate that CA issued.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use parking_lot::Mutex;
use rustls::crypto::CryptoProvider;
use rustls::sign::CertifiedKey;
use rustls_pki_types::ServerName;
use tokio_rustls::{TlsAcceptor, TlsConnector};

use crate::metrics::{Collect, Scrape};
use crate::pem::{self, PemError};

/// Default `sip.tls_handshake_timeout_ms`: a TLS handshake, in or out, must
/// finish within this once the TCP connection is up.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// Failed handshakes are logged at most this often (with the count since
/// the last line): a scanner must not fill the log.
pub const HANDSHAKE_LOG_EVERY: Duration = Duration::from_secs(10);

/// What the `sip.tls_*` keys name.
#[derive(Debug, Clone, Default)]
pub struct TlsOptions {
    /// The certificate chain served (PEM, leaf first); with `key`, enables
    /// the TLS listener and client certificates.
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    /// Inbound connections must present a certificate issued by this CA.
    pub client_ca: Option<PathBuf>,
    /// Trusted beside the system's roots for outbound connections.
    pub next_hop_ca: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    #[error("sip.tls_cert or sip.tls_key: {0}")]
    Identity(PemError),
    #[error(
        "sip.tls_key {} does not go with the certificate in sip.tls_cert {} ({reason}); give the key the certificate was issued for",
        key.display(), cert.display()
    )]
    KeyMismatch {
        cert: PathBuf,
        key: PathBuf,
        reason: String,
    },
    #[error("sip.tls_client_ca: {0}")]
    ClientCa(PemError),
    #[error("sip.tls_next_hop_ca: {0}")]
    NextHopCa(PemError),
    #[error("TLS configuration refused by rustls: {0}")]
    Config(String),
}

/// The server certificate in use, swapped whole on reload.
#[derive(Debug)]
struct Identity {
    current: ArcSwap<CertifiedKey>,
}

impl rustls::server::ResolvesServerCert for Identity {
    fn resolve(&self, _hello: rustls::server::ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

impl rustls::client::ResolvesClientCert for Identity {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[rustls::SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// TLS for the SIP transport: the acceptor (when a certificate is
/// configured), the connector, and the handshake counters.
pub struct Tls {
    options: TlsOptions,
    provider: Arc<CryptoProvider>,
    identity: Option<Arc<Identity>>,
    acceptor: Option<TlsAcceptor>,
    /// Built on first use when nothing asked for it at start: the system's
    /// roots are only read when a TLS peer is actually dialled.
    connector: std::sync::OnceLock<Result<TlsConnector, String>>,
    handshakes: AtomicU64,
    failures: AtomicU64,
    /// When a failure was last logged, and the failures since.
    last_log: Mutex<(Option<Instant>, u64)>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("serving", &self.acceptor.is_some())
            .finish_non_exhaustive()
    }
}

impl Tls {
    /// Reads the configured files; every problem is refused here, at start.
    pub fn new(options: TlsOptions) -> Result<Tls, TlsError> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let identity = match (&options.cert, &options.key) {
            (Some(cert), Some(key)) => Some(Arc::new(Identity {
                current: ArcSwap::from_pointee(load_identity(cert, key, &provider)?),
            })),
            _ => None,
        };
        let acceptor = match &identity {
            Some(identity) => Some(server_config(&options, &provider, identity)?),
            None => None,
        };
        let tls = Tls {
            options,
            provider,
            identity,
            acceptor,
            connector: std::sync::OnceLock::new(),
            handshakes: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            last_log: Mutex::new((None, 0)),
        };
        if tls.options.next_hop_ca.is_some() {
            let built = client_config(&tls.options, &tls.provider, tls.identity.as_ref())?;
            let _ = tls.connector.set(Ok(built));
        }
        Ok(tls)
    }

    /// The acceptor for the TLS listener; `None` without a certificate.
    pub fn acceptor(&self) -> Option<&TlsAcceptor> {
        self.acceptor.as_ref()
    }

    /// The connector for outbound connections (built on first use).
    pub fn connector(&self) -> Result<&TlsConnector, &str> {
        self.connector
            .get_or_init(|| {
                client_config(&self.options, &self.provider, self.identity.as_ref())
                    .map_err(|e| e.to_string())
            })
            .as_ref()
            .map_err(String::as_str)
    }

    /// Reads `sip.tls_cert` and `sip.tls_key` again and serves them to new
    /// connections. A bad pair is refused and the certificate in use stays.
    /// False when no certificate is configured.
    pub fn reload(&self) -> Result<bool, TlsError> {
        let (Some(identity), Some(cert), Some(key)) =
            (&self.identity, &self.options.cert, &self.options.key)
        else {
            return Ok(false);
        };
        identity
            .current
            .store(Arc::new(load_identity(cert, key, &self.provider)?));
        tracing::info!(cert = %cert.display(), "TLS certificate reloaded");
        Ok(true)
    }

    /// Counts a completed handshake.
    pub fn handshake_done(&self) {
        self.handshakes.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a failed handshake; logs it unless one was logged within
    /// [`HANDSHAKE_LOG_EVERY`] (then it is in the next line's count).
    pub fn handshake_failed(&self, peer: SocketAddr, why: &dyn std::fmt::Display) {
        self.failures.fetch_add(1, Ordering::Relaxed);
        let mut last = self.last_log.lock();
        last.1 += 1;
        let now = Instant::now();
        if last
            .0
            .is_some_and(|at| now.duration_since(at) < HANDSHAKE_LOG_EVERY)
        {
            return;
        }
        let failed = std::mem::take(&mut last.1);
        last.0 = Some(now);
        drop(last);
        tracing::warn!(%peer, error = %why, failed, "TLS handshake failed (logged at most every 10 s; `failed` counts since the last line)");
    }

    /// Handshakes failed so far.
    pub fn failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }
}

impl Collect for Tls {
    fn collect(&self, out: &mut Scrape) {
        out.counter(
            "sipsentry_tls_handshakes",
            "TLS handshakes completed, inbound and outbound",
        )
        .count(vec![], self.handshakes.load(Ordering::Relaxed));
        out.counter(
            "sipsentry_tls_handshake_failures",
            "TLS handshakes that failed or timed out (bad or missing certificates, scanners)",
        )
        .count(vec![], self.failures());
    }
}

/// The name an outbound connection verifies: the configured host name when
/// there is one, else the address itself (a certificate with an IP SAN).
pub fn server_name(host: Option<&str>, addr: SocketAddr) -> ServerName<'static> {
    host.and_then(|h| ServerName::try_from(h.to_string()).ok())
        .unwrap_or_else(|| ServerName::IpAddress(addr.ip().into()))
}

fn load_identity(
    cert: &Path,
    key: &Path,
    provider: &CryptoProvider,
) -> Result<CertifiedKey, TlsError> {
    let chain = pem::certificates(cert).map_err(TlsError::Identity)?;
    let der = pem::private_key(key).map_err(TlsError::Identity)?;
    CertifiedKey::from_der(chain, der, provider).map_err(|e| TlsError::KeyMismatch {
        cert: cert.to_path_buf(),
        key: key.to_path_buf(),
        reason: e.to_string(),
    })
}

/// TLS 1.3 and 1.2; nothing older.
static VERSIONS: [&rustls::SupportedProtocolVersion; 2] =
    [&rustls::version::TLS13, &rustls::version::TLS12];

fn versions() -> &'static [&'static rustls::SupportedProtocolVersion] {
    &VERSIONS
}

fn server_config(
    options: &TlsOptions,
    provider: &Arc<CryptoProvider>,
    identity: &Arc<Identity>,
) -> Result<TlsAcceptor, TlsError> {
    let config = |e: rustls::Error| TlsError::Config(e.to_string());
    let builder = rustls::ServerConfig::builder_with_provider(Arc::clone(provider))
        .with_protocol_versions(versions())
        .map_err(config)?;
    let builder = match &options.client_ca {
        Some(ca) => {
            let roots = pem::roots(false, Some(ca)).map_err(TlsError::ClientCa)?;
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                Arc::clone(provider),
            )
            .build()
            .map_err(|e| TlsError::Config(e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let config = builder.with_cert_resolver(Arc::clone(identity) as _);
    Ok(TlsAcceptor::from(Arc::new(config)))
}

fn client_config(
    options: &TlsOptions,
    provider: &Arc<CryptoProvider>,
    identity: Option<&Arc<Identity>>,
) -> Result<TlsConnector, TlsError> {
    let roots = pem::roots(true, options.next_hop_ca.as_deref()).map_err(TlsError::NextHopCa)?;
    let builder = rustls::ClientConfig::builder_with_provider(Arc::clone(provider))
        .with_protocol_versions(versions())
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_root_certificates(roots);
    let config = match identity {
        Some(identity) => builder.with_client_cert_resolver(Arc::clone(identity) as _),
        None => builder.with_no_client_auth(),
    };
    Ok(TlsConnector::from(Arc::new(config)))
}
