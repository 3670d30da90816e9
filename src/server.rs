//! Starting and stopping the proxy.
//!
//! [`Server::bind`] opens UDP and TCP on the same port (port 0 picks a free
//! one, which the tests use) and [`Server::run`] serves until the shutdown
//! future completes. Shutdown follows mini-redis: stop accepting TCP
//! connections, answer new INVITEs 503, wait until every task screening a call
//! has dropped its clone of the drain sender, then stop.

use std::future::Future;
use std::net::{IpAddr, SocketAddr, UdpSocket as StdUdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};

use crate::config::Config;
use crate::pipeline::Pipeline;
use crate::sip::proxy::{LocalAddr, Proxy};
use crate::sip::transport::Peer;
use crate::sip::uri::SipUri;

/// Resolution of the retransmission timers.
pub const TIMER_TICK: Duration = Duration::from_millis(10);

/// How long shutdown waits for calls still being screened.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    #[error("cannot listen on {addr} (is another SIP server running there? change sip.listen)")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(
        "cannot resolve sip.next_hop host {host:?} ({reason}); use an IP address or a resolvable name"
    )]
    NextHop { host: String, reason: String },
    #[error("invalid configuration: {0}")]
    Config(#[from] crate::config::ConfigError),
    #[error(transparent)]
    Admin(#[from] crate::admin::AdminError),
    #[error(transparent)]
    History(crate::history::HistoryError),
}

pub struct Server {
    proxy: Arc<Proxy>,
    tcp: TcpListener,
    drain: mpsc::Receiver<()>,
}

impl Server {
    /// Binds the SIP port (UDP and TCP) and prepares the proxy.
    pub async fn bind(config: Arc<Config>, pipeline: Pipeline) -> Result<Server, ServerError> {
        let listen = config.sip.listen;
        let (udp, tcp) = bind_pair(listen).await?;
        let addr = udp.local_addr().map_err(|source| ServerError::Bind {
            addr: listen,
            source,
        })?;
        let hop =
            SipUri::parse_config(&config.sip.next_hop).map_err(|reason| ServerError::NextHop {
                host: config.sip.next_hop.clone(),
                reason,
            })?;
        let hop_addr = resolve(&hop.host, hop.port).await?;
        let next_hop = if hop.tcp {
            Peer::Tcp(hop_addr)
        } else {
            Peer::Udp(hop_addr)
        };
        let local = LocalAddr {
            addr: SocketAddr::new(advertised_ip(addr.ip(), hop_addr), addr.port()),
            host: String::new(),
        };
        let local = LocalAddr {
            host: match local.addr.ip() {
                IpAddr::V6(v6) => format!("[{v6}]"),
                IpAddr::V4(v4) => v4.to_string(),
            },
            ..local
        };
        let (drain_tx, drain) = mpsc::channel(1);
        let proxy = Proxy::new(
            config,
            Arc::new(pipeline),
            local,
            next_hop,
            Arc::new(udp),
            drain_tx,
            tokio::runtime::Handle::current(),
        );
        Ok(Server {
            proxy: Arc::new(proxy),
            tcp,
            drain,
        })
    }

    /// The address the proxy listens on (UDP and TCP).
    pub fn local_addr(&self) -> SocketAddr {
        self.proxy.udp.local_addr().unwrap_or(self.proxy.local.addr)
    }

    /// The pipeline the proxy screens with (shared with the admin server).
    pub fn pipeline(&self) -> Arc<Pipeline> {
        Arc::clone(&self.proxy.pipeline)
    }

    pub fn proxy(&self) -> Arc<Proxy> {
        Arc::clone(&self.proxy)
    }

    /// Serves until `shutdown` completes, then drains.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let Server {
            proxy,
            tcp,
            mut drain,
        } = self;
        let (stop_accept_tx, stop_accept) = watch::channel(false);
        let stop_udp = Arc::new(AtomicBool::new(false));
        let mut tasks = tokio::task::JoinSet::new();
        tasks.spawn(Arc::clone(&proxy).accept_loop(tcp, stop_accept));
        let udp_thread = {
            let (proxy, stop) = (Arc::clone(&proxy), Arc::clone(&stop_udp));
            std::thread::Builder::new()
                .name("sip-udp".into())
                .spawn(move || proxy.udp_thread(stop))
                .expect("spawn the SIP thread")
        };
        // One ticker for every transaction's retransmissions (10 ms is far
        // finer than SIP timers need) and expiry. Expiry runs on every tick:
        // run once every 500 ms, it took 1.2–1.9 ms of CPU at a time at
        // 2,000 calls/s, a pause that on a small machine lands on the SIP
        // thread's core. It wakes only when something may be due, so an
        // idle proxy does not wake every tick (see `transaction/wake.rs`).
        let sweeper = {
            let proxy = Arc::clone(&proxy);
            tokio::spawn(async move {
                loop {
                    let now = Instant::now();
                    proxy.fire_timers(now);
                    proxy.txs.next_tick(now + TIMER_TICK).await;
                }
            })
        };
        tracing::info!(listen = %proxy.local.addr, next_hop = %proxy.next_hop.addr(), "sipsentry proxy running");

        shutdown.await;
        tracing::info!("shutting down: no new calls; finishing calls under screening");
        let _ = stop_accept_tx.send(true);
        proxy.draining.store(true, Ordering::Relaxed);
        drop(proxy.drain_guard.lock().take());
        if tokio::time::timeout(DRAIN_TIMEOUT, drain.recv())
            .await
            .is_err()
        {
            tracing::warn!("calls still under screening after {DRAIN_TIMEOUT:?}; stopping anyway");
        }
        stop_udp.store(true, Ordering::Relaxed);
        poke(&proxy.udp);
        sweeper.abort();
        while tasks.join_next().await.is_some() {}
        let _ = tokio::task::spawn_blocking(move || udp_thread.join()).await;
        tracing::info!(
            received = proxy.stats.received.load(Ordering::Relaxed),
            screened = proxy.stats.invites_screened.load(Ordering::Relaxed),
            "stopped"
        );
    }
}

/// The longest the SIP thread sleeps in a blocking read before it looks at
/// the stop flag. Only a fallback: shutdown wakes it at once ([`poke`]), so
/// an idle proxy's SIP thread need not wake often to notice.
const UDP_READ_TIMEOUT: Duration = Duration::from_secs(1);

/// Wakes the SIP thread out of its blocking read with an empty datagram to
/// the proxy's own socket (read as a keep-alive, after which the thread
/// sees the stop flag).
fn poke(udp: &StdUdpSocket) {
    let Ok(mut me) = udp.local_addr() else {
        return;
    };
    if me.ip().is_unspecified() {
        me.set_ip(match me {
            SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    let _ = udp.send_to(&[], me);
}

/// Binds UDP (a blocking socket for the SIP thread) and TCP on the same port;
/// with port 0, retries until a port is free on both.
async fn bind_pair(listen: SocketAddr) -> Result<(StdUdpSocket, TcpListener), ServerError> {
    let mut last_err = None;
    for _ in 0..20 {
        let bind_err = |source| ServerError::Bind {
            addr: listen,
            source,
        };
        let udp = StdUdpSocket::bind(listen).map_err(bind_err)?;
        udp.set_read_timeout(Some(UDP_READ_TIMEOUT))
            .map_err(bind_err)?;
        let addr = udp.local_addr().map_err(|source| ServerError::Bind {
            addr: listen,
            source,
        })?;
        match TcpListener::bind(addr).await {
            Ok(tcp) => return Ok((udp, tcp)),
            Err(e) if listen.port() == 0 => last_err = Some(e),
            Err(source) => return Err(ServerError::Bind { addr, source }),
        }
    }
    Err(ServerError::Bind {
        addr: listen,
        source: last_err.unwrap_or_else(|| std::io::Error::other("no free port")),
    })
}

async fn resolve(host: &str, port: u16) -> Result<SocketAddr, ServerError> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, port));
    }
    let mut addrs =
        tokio::net::lookup_host((host, port))
            .await
            .map_err(|e| ServerError::NextHop {
                host: host.to_string(),
                reason: e.to_string(),
            })?;
    addrs.next().ok_or_else(|| ServerError::NextHop {
        host: host.to_string(),
        reason: "no addresses".into(),
    })
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
    StdUdpSocket::bind(any)
        .and_then(|s| s.connect(next_hop).and_then(|_| s.local_addr()))
        .map(|a| a.ip())
        .unwrap_or(listen)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn poke_wakes_a_blocking_read_on_a_wildcard_or_loopback_socket() {
        for bind in ["0.0.0.0:0", "127.0.0.1:0"] {
            let sock = StdUdpSocket::bind(bind).unwrap();
            // Far longer than the test may take: only the poke ends the read.
            sock.set_read_timeout(Some(Duration::from_secs(30)))
                .unwrap();
            poke(&sock);
            let mut buf = [0u8; 16];
            let (n, from) = sock.recv_from(&mut buf).expect("the poke arrives");
            assert_eq!(n, 0, "an empty datagram, read as a keep-alive");
            assert_eq!(from.port(), sock.local_addr().unwrap().port());
        }
    }
}
