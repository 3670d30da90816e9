//! The SIP service: the transport bound, the proxy built on it with the
//! screening pipeline, and the threads and tasks that run them.
//!
//! [`Server::bind`] opens UDP and TCP on the same port (port 0 picks a free
//! one, which the tests use), and TLS on `sip.tls_listen` when set, and
//! [`Server::run`] serves until the shutdown future completes. Shutdown follows mini-redis: stop accepting TCP
//! connections, answer new INVITEs 503, wait until every call under
//! screening is decided (at most [`DRAIN_TIMEOUT`]), stop the SIP thread and
//! the ticker, and join them all.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::pipeline::Pipeline;
use crate::sip::next_hop::{NextHops, ResolveError};
use crate::sip::proxy::{LocalAddr, Proxy, SipConfig};
use crate::sip::transport::{self, BindError, Tls, TlsError, Transport};

/// How long shutdown waits for calls still being screened.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// The proxy as `serve` runs it: screened by the pipeline.
pub type SipProxy = Proxy<Pipeline>;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    #[error(transparent)]
    Bind(#[from] BindError),
    #[error(
        "cannot resolve sip.next_hop host {host:?} ({reason}); use an IP address or a resolvable name"
    )]
    NextHop { host: String, reason: String },
    #[error(
        "sip.next_hop: {0}; use an IP address or a name DNS answers (sip.dns_servers names the servers asked)"
    )]
    Locate(#[from] ResolveError),
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error(
        "cannot listen for TLS on {addr} (is another SIP server running there? change sip.tls_listen)"
    )]
    TlsBind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("sip.tls_listen: {0}")]
    TlsListen(String),
}

pub struct Server {
    proxy: Arc<SipProxy>,
    tcp: TcpListener,
    tls: Option<TcpListener>,
}

impl Server {
    /// Binds the SIP port (UDP and TCP) and prepares the proxy.
    pub async fn bind(options: SipConfig, pipeline: Arc<Pipeline>) -> Result<Server, ServerError> {
        let tls = tls(&options)?;
        let (transport, tcp) =
            Transport::bind(options.listen, options.tcp_limits(), tls.clone()).await?;
        let addr = transport.local_addr().map_err(|source| BindError {
            addr: options.listen,
            source,
        })?;
        let tls_listener = match options.tls_listen_addr().map_err(ServerError::TlsListen)? {
            Some(at) => Some(
                TcpListener::bind(at)
                    .await
                    .map_err(|source| ServerError::TlsBind { addr: at, source })?,
            ),
            None => None,
        };
        let next_hops = Arc::new(next_hops(&options).await?);
        next_hops.name_tls_targets(&transport);
        let hop_addr = next_hops.first().map_or(addr, |(_, peer)| peer.addr());
        let mut local = LocalAddr::new(SocketAddr::new(
            advertised_ip(addr.ip(), hop_addr),
            addr.port(),
        ));
        if let Some(port) = tls_listener
            .as_ref()
            .and_then(|l| l.local_addr().ok())
            .map(|a| a.port())
        {
            local = local.with_tls_port(port);
        }
        let proxy = Proxy::new(options, pipeline, local, next_hops, transport);
        Ok(Server {
            proxy,
            tcp,
            tls: tls_listener,
        })
    }

    /// The TLS listener's address, when there is one.
    pub fn tls_addr(&self) -> Option<SocketAddr> {
        self.tls.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// Copies every SIP message from now on to `capture` (HEP), with the
    /// proxy's advertised address as the UDP end.
    pub fn capture(&self, capture: crate::sip::capture::Capture) {
        self.proxy
            .transport()
            .set_capture(capture, self.proxy.local().addr);
    }

    /// TLS (certificates, handshake counts), when configured: what a reload
    /// re-reads and `/metrics` reports.
    pub fn tls(&self) -> Option<Arc<Tls>> {
        self.proxy.transport().tls().cloned()
    }

    /// The address the proxy listens on (UDP and TCP).
    pub fn local_addr(&self) -> SocketAddr {
        self.proxy
            .transport()
            .local_addr()
            .unwrap_or(self.proxy.local().addr)
    }

    /// The pipeline the proxy screens with (shared with the admin server).
    pub fn pipeline(&self) -> Arc<Pipeline> {
        Arc::clone(self.proxy.screen())
    }

    pub fn proxy(&self) -> Arc<SipProxy> {
        Arc::clone(&self.proxy)
    }

    /// Serves until `shutdown` completes, then drains and joins the SIP
    /// thread, the ticker and the TCP acceptor.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let Server { proxy, tcp, tls } = self;
        let stop_accept = CancellationToken::new();
        let stop_udp = Arc::new(AtomicBool::new(false));
        let acceptor = tokio::spawn(Arc::clone(proxy.transport()).accept_loop(
            tcp,
            false,
            stop_accept.clone().cancelled_owned(),
        ));
        let tls_acceptor = tls.map(|l| {
            tokio::spawn(Arc::clone(proxy.transport()).accept_loop(
                l,
                true,
                stop_accept.clone().cancelled_owned(),
            ))
        });
        let window = Duration::from_micros(u64::from(proxy.options().busy_poll_us));
        let udp_thread = {
            let (proxy, stop) = (Arc::clone(&proxy), Arc::clone(&stop_udp));
            std::thread::Builder::new()
                .name("sip-udp".into())
                .spawn(move || {
                    let sock = proxy.transport().udp();
                    transport::udp::serve(sock, window, &stop, |bytes, from| {
                        proxy.transport().captured_udp(&bytes, from.addr());
                        proxy.handle(bytes, from)
                    })
                })
                .expect("spawn the SIP thread")
        };
        // One ticker for every transaction's retransmissions and expiry. It
        // wakes only when something may be due, so an idle proxy does not
        // wake every tick (see `transaction/wake.rs`).
        let ticker = tokio::spawn(Arc::clone(&proxy).run_timers());
        let refresh =
            tokio::spawn(Arc::clone(proxy.next_hops()).refresh(Arc::clone(proxy.transport())));
        let pings = tokio::spawn(Arc::clone(&proxy).ping_next_hops());
        let first = proxy
            .next_hops()
            .first()
            .map(|(_, p)| p.addr().to_string())
            .unwrap_or_default();
        tracing::info!(listen = %proxy.local().addr, next_hop = %first, "sipsentry proxy running");

        shutdown.await;
        tracing::info!("shutting down: no new calls; finishing calls under screening");
        stop_accept.cancel();
        if !proxy.drain(DRAIN_TIMEOUT).await {
            tracing::warn!("calls still under screening after {DRAIN_TIMEOUT:?}; stopping anyway");
        }
        stop_udp.store(true, Ordering::Relaxed);
        proxy.transport().wake_udp();
        ticker.abort();
        let _ = ticker.await;
        refresh.abort();
        pings.abort();
        let _ = (refresh.await, pings.await);
        let _ = acceptor.await;
        if let Some(a) = tls_acceptor {
            let _ = a.await;
        }
        let _ = tokio::task::spawn_blocking(move || udp_thread.join()).await;
        tracing::info!(
            received = proxy.stats().received.load(Ordering::Relaxed),
            screened = proxy.stats().invites_screened.load(Ordering::Relaxed),
            "stopped"
        );
    }
}

/// Where `sip.next_hop` is: every URI located (RFC 3263: NAPTR, SRV,
/// A/AAAA through `sip.dns_servers` or the system's resolvers), in the
/// order to try. `config check` and `sipsentry next-hops` ask this too.
pub async fn next_hops(options: &SipConfig) -> Result<NextHops, ServerError> {
    let uris = options
        .next_hop
        .parse()
        .map_err(|reason| ServerError::NextHop {
            host: options.next_hop.uris().join(", "),
            reason,
        })?;
    Ok(NextHops::locate(uris, &options.dns_servers, options.health_limits()).await?)
}

/// TLS as `sip.tls_*` configure it (the files read and checked), when
/// anything uses it. `config check` asks this too.
pub fn tls(options: &SipConfig) -> Result<Option<Arc<Tls>>, ServerError> {
    if !options.uses_tls() {
        return Ok(None);
    }
    Ok(Some(Arc::new(Tls::new(options.tls_options())?)))
}

/// The address written into Via: the listen address, or, when listening on
/// all interfaces, the local address the OS would use toward the next hop
/// (a connected UDP socket sends nothing).
fn advertised_ip(listen: IpAddr, next_hop: SocketAddr) -> IpAddr {
    if !listen.is_unspecified() {
        return listen;
    }
    let any: SocketAddr = if next_hop.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    }
    .parse()
    .expect("static address");
    std::net::UdpSocket::bind(any)
        .and_then(|s| s.connect(next_hop).and_then(|_| s.local_addr()))
        .map(|a| a.ip())
        .unwrap_or(listen)
}
