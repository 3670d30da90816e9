//! Sockets and framing: UDP and TCP on one port.
//!
//! The transport knows nothing of what a message means. It binds the port,
//! frames what arrives (a datagram is one message; a TCP stream is cut by
//! Content-Length) and hands each message up with its [`Peer`] to an
//! [`Inbound`] handler, the proxy. Datagrams are read on the SIP thread
//! ([`udp`]); each TCP connection has a reader and a writer fed by a
//! bounded queue, so a slow peer can never make the proxy buffer without
//! limit or stall other calls.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use dashmap::DashMap;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};

use super::message::{self, MAX_MESSAGE_BYTES};

pub mod udp;

/// Messages queued for one TCP connection before further ones are dropped.
pub const TCP_QUEUE: usize = 256;
/// How long an outbound TCP connect may take.
pub const TCP_CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// Limits on TCP connections (`sip.tcp_*`), so that idle or slow peers
/// cannot take the port from everyone else.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpLimits {
    /// Inbound connections at once (`sip.tcp_max_connections`).
    pub max_inbound: usize,
    /// Outbound connections at once (to the next hop, or where a Route or
    /// Via points), counted apart so inbound ones never crowd them out.
    pub max_outbound: usize,
    /// Inbound connections from one address at once.
    pub max_per_source: usize,
    /// A connection with no complete message for this long is closed; a
    /// trickle of bytes does not count.
    pub idle: Duration,
    /// Once a message's first byte has arrived, the whole message must
    /// arrive within this.
    pub message_timeout: Duration,
}

impl Default for TcpLimits {
    fn default() -> Self {
        TcpLimits {
            max_inbound: 4096,
            max_outbound: 1024,
            max_per_source: 256,
            idle: Duration::from_secs(120),
            message_timeout: Duration::from_secs(5),
        }
    }
}
/// The longest the SIP thread sleeps in a blocking read before it looks at
/// its stop flag. Only a fallback: shutdown wakes it at once
/// ([`Transport::wake_udp`]), so an idle proxy's SIP thread need not wake
/// often to notice.
pub const UDP_READ_TIMEOUT: Duration = Duration::from_secs(1);

/// A message's other end: the transport and the remote address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Peer {
    Udp(SocketAddr),
    Tcp(SocketAddr),
}

impl Peer {
    pub fn addr(self) -> SocketAddr {
        match self {
            Peer::Udp(a) | Peer::Tcp(a) => a,
        }
    }

    pub fn is_tcp(self) -> bool {
        matches!(self, Peer::Tcp(_))
    }
}

/// Whoever handles what arrives (the proxy). Called on the SIP thread for
/// UDP and on a connection's reader task for TCP; must not block.
pub trait Inbound: Send + Sync + 'static {
    /// One framed message (not yet parsed) from `from`.
    fn received(self: Arc<Self>, message: Bytes, from: Peer);
}

/// Why the SIP port could not be opened.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {addr} (is another SIP server running there? change sip.listen)")]
pub struct BindError {
    pub addr: SocketAddr,
    #[source]
    pub source: std::io::Error,
}

/// The SIP port: one UDP socket and the TCP connections, inbound and out.
pub struct Transport {
    /// Blocking UDP socket: read by the SIP thread, written from anywhere.
    udp: std::net::UdpSocket,
    tcp: DashMap<SocketAddr, mpsc::Sender<Bytes>>,
    limits: TcpLimits,
    inbound_slots: Arc<Semaphore>,
    outbound_slots: Arc<Semaphore>,
    /// Inbound connections open now, by source address.
    per_source: DashMap<IpAddr, usize>,
    /// Runtime for what does wait (TCP connections).
    rt: tokio::runtime::Handle,
    /// Set once the handler exists; weak so that the handler (which holds
    /// this transport) is freed when the server stops.
    inbound: OnceLock<Weak<dyn Inbound>>,
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transport")
            .field("udp", &self.udp)
            .field("tcp_connections", &self.tcp.len())
            .finish_non_exhaustive()
    }
}

impl Transport {
    /// Binds UDP (a blocking socket for the SIP thread) and TCP on the same
    /// port; with port 0, retries until a port is free on both. Call inside
    /// the tokio runtime.
    pub async fn bind(
        listen: SocketAddr,
        limits: TcpLimits,
    ) -> Result<(Arc<Transport>, TcpListener), BindError> {
        let (udp, tcp) = bind_pair(listen).await?;
        let transport = Transport {
            udp,
            tcp: DashMap::new(),
            limits,
            inbound_slots: Arc::new(Semaphore::new(limits.max_inbound)),
            outbound_slots: Arc::new(Semaphore::new(limits.max_outbound)),
            per_source: DashMap::new(),
            rt: tokio::runtime::Handle::current(),
            inbound: OnceLock::new(),
        };
        Ok((Arc::new(transport), tcp))
    }

    /// Names the handler of TCP messages (the UDP thread is given its own).
    /// Only the first call counts.
    pub fn set_inbound(&self, inbound: Weak<dyn Inbound>) {
        let _ = self.inbound.set(inbound);
    }

    /// The bound address (UDP and TCP).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.udp.local_addr()
    }

    /// The UDP socket, for the SIP thread.
    pub fn udp(&self) -> &std::net::UdpSocket {
        &self.udp
    }

    /// Sends a message; never blocks on a slow TCP peer (a full queue drops
    /// the message, which SIP's retransmissions or the peer's timers recover).
    pub fn send(self: &Arc<Self>, to: Peer, bytes: Bytes) {
        match to {
            Peer::Udp(addr) => {
                if let Err(e) = self.udp.send_to(&bytes, addr) {
                    tracing::debug!(%addr, error = %e, "UDP send failed");
                }
            }
            Peer::Tcp(addr) => {
                let queue = match self.tcp.get(&addr) {
                    Some(q) => q.clone(),
                    None => self.connect(addr),
                };
                if queue.try_send(bytes).is_err() {
                    tracing::warn!(%addr, "TCP send queue full or closed; message dropped");
                }
            }
        }
    }

    /// Wakes the SIP thread out of its blocking read with an empty datagram
    /// to the proxy's own socket (read as a keep-alive, after which the
    /// thread sees its stop flag).
    pub fn wake_udp(&self) {
        poke(&self.udp);
    }

    /// Opens an outbound TCP connection in the background; messages queue
    /// meanwhile.
    fn connect(self: &Arc<Self>, addr: SocketAddr) -> mpsc::Sender<Bytes> {
        let (tx, rx) = mpsc::channel(TCP_QUEUE);
        self.tcp.insert(addr, tx.clone());
        let transport = Arc::clone(self);
        self.rt.spawn(async move {
            let permit = Arc::clone(&transport.outbound_slots).try_acquire_owned();
            let stream = match (
                permit,
                tokio::time::timeout(TCP_CONNECT_TIMEOUT, TcpStream::connect(addr)).await,
            ) {
                (Ok(permit), Ok(Ok(stream))) => (permit, stream),
                (Err(_), _) => {
                    tracing::warn!(%addr, "sip.tcp_max_outbound connections are open; not connecting");
                    transport.tcp.remove(&addr);
                    return;
                }
                (_, Ok(Err(e))) => {
                    tracing::warn!(%addr, error = %e, "TCP connect failed");
                    transport.tcp.remove(&addr);
                    return;
                }
                (_, Err(_)) => {
                    tracing::warn!(%addr, "TCP connect timed out");
                    transport.tcp.remove(&addr);
                    return;
                }
            };
            transport.run_connection(stream.1, addr, rx, stream.0, None).await;
        });
        tx
    }

    /// Serves one TCP connection until it closes, idles out (no complete
    /// message for `limits.idle`) or a message takes longer than
    /// `limits.message_timeout` to arrive whole.
    async fn run_connection(
        self: &Arc<Self>,
        stream: TcpStream,
        addr: SocketAddr,
        mut queue: mpsc::Receiver<Bytes>,
        _permit: OwnedSemaphorePermit,
        _source: Option<SourceGuard>,
    ) {
        let _ = stream.set_nodelay(true);
        let (mut rd, mut wr) = stream.into_split();
        let writer = tokio::spawn(async move {
            while let Some(bytes) = queue.recv().await {
                if wr.write_all(&bytes).await.is_err() {
                    break;
                }
            }
        });
        let limits = self.limits;
        let mut buf = BytesMut::with_capacity(8 * 1024);
        let mut idle_until = tokio::time::Instant::now() + limits.idle;
        // Set while part of a message has arrived.
        let mut message_until: Option<tokio::time::Instant> = None;
        'read: loop {
            let deadline = message_until.unwrap_or(idle_until);
            match tokio::time::timeout_at(deadline, rd.read_buf(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => break,
                Err(_) => {
                    let why = if message_until.is_some() {
                        "a message did not arrive whole within sip.tcp_message_timeout_ms"
                    } else {
                        "no message within sip.tcp_idle_s"
                    };
                    tracing::debug!(%addr, why, "TCP connection closed");
                    break;
                }
                Ok(Ok(_)) => {}
            }
            let mut completed = false;
            loop {
                // RFC 5626 keep-alive: a CRLFCRLF ping gets a CRLF pong.
                if buf.starts_with(b"\r\n\r\n") {
                    let _ = buf.split_to(4);
                    if let Some(q) = self.tcp.get(&addr) {
                        let _ = q.try_send(Bytes::from_static(b"\r\n"));
                    }
                    completed = true;
                    continue;
                }
                match message::frame_len(&buf) {
                    Ok(Some(n)) => {
                        let frame = buf.split_to(n).freeze();
                        completed = true;
                        match self.inbound.get().and_then(Weak::upgrade) {
                            Some(inbound) => inbound.received(frame, Peer::Tcp(addr)),
                            // The proxy is gone: the server is stopping.
                            None => break 'read,
                        }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        tracing::debug!(%addr, error = %e, "TCP framing lost; closing");
                        break 'read;
                    }
                }
            }
            let now = tokio::time::Instant::now();
            if completed {
                idle_until = now + limits.idle;
            }
            // Stray line ends between messages are not a message begun.
            let partial = buf.iter().any(|b| *b != b'\r' && *b != b'\n');
            message_until = match (partial, message_until) {
                (false, _) => None,
                (true, Some(until)) if !completed => Some(until),
                (true, _) => Some(now + limits.message_timeout),
            };
            if buf.capacity() > MAX_MESSAGE_BYTES * 2 && buf.is_empty() {
                buf = BytesMut::with_capacity(8 * 1024);
            }
        }
        self.tcp.remove(&addr);
        writer.abort();
    }

    /// Counts an inbound connection from `ip`, unless it already has
    /// `limits.max_per_source`.
    fn admit(self: &Arc<Self>, ip: IpAddr) -> Option<SourceGuard> {
        let mut n = self.per_source.entry(ip).or_insert(0);
        if *n >= self.limits.max_per_source {
            return None;
        }
        *n += 1;
        Some(SourceGuard {
            transport: Arc::clone(self),
            ip,
        })
    }

    /// Accepts TCP connections until `stop` completes. At
    /// `sip.tcp_max_connections` it waits for one to close; a source at
    /// `sip.tcp_max_per_source` has its new connection closed at once.
    pub async fn accept_loop(
        self: Arc<Self>,
        listener: TcpListener,
        stop: impl std::future::Future<Output = ()>,
    ) {
        tokio::pin!(stop);
        loop {
            let permit = tokio::select! {
                p = Arc::clone(&self.inbound_slots).acquire_owned() => match p { Ok(p) => p, Err(_) => return },
                _ = &mut stop => return,
            };
            let (stream, addr) = tokio::select! {
                r = listener.accept() => match r {
                    Ok(x) => x,
                    Err(e) => {
                        tracing::warn!(error = %e, "TCP accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                _ = &mut stop => return,
            };
            let Some(guard) = self.admit(addr.ip()) else {
                tracing::debug!(%addr, "sip.tcp_max_per_source connections from this address are open; refused");
                continue;
            };
            let (tx, rx) = mpsc::channel(TCP_QUEUE);
            self.tcp.insert(addr, tx);
            let transport = Arc::clone(&self);
            tokio::spawn(async move {
                transport
                    .run_connection(stream, addr, rx, permit, Some(guard))
                    .await
            });
        }
    }
}

/// One inbound connection counted against its source's limit, for as long
/// as it lives.
struct SourceGuard {
    transport: Arc<Transport>,
    ip: IpAddr,
}

impl Drop for SourceGuard {
    fn drop(&mut self) {
        self.transport.per_source.remove_if_mut(&self.ip, |_, n| {
            *n -= 1;
            *n == 0
        });
    }
}

/// Sends an empty datagram to the socket itself.
fn poke(udp: &std::net::UdpSocket) {
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

/// Binds UDP and TCP on the same port; with port 0, retries until a port is
/// free on both.
async fn bind_pair(listen: SocketAddr) -> Result<(std::net::UdpSocket, TcpListener), BindError> {
    let mut last_err = None;
    for _ in 0..20 {
        let bind_err = |source| BindError {
            addr: listen,
            source,
        };
        let udp = std::net::UdpSocket::bind(listen).map_err(bind_err)?;
        udp.set_read_timeout(Some(UDP_READ_TIMEOUT))
            .map_err(bind_err)?;
        let addr = udp.local_addr().map_err(bind_err)?;
        match TcpListener::bind(addr).await {
            Ok(tcp) => return Ok((udp, tcp)),
            Err(e) if listen.port() == 0 => last_err = Some(e),
            Err(source) => return Err(BindError { addr, source }),
        }
    }
    Err(BindError {
        addr: listen,
        source: last_err.unwrap_or_else(|| std::io::Error::other("no free port")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn poke_wakes_a_blocking_read_on_a_wildcard_or_loopback_socket() {
        for bind in ["0.0.0.0:0", "127.0.0.1:0"] {
            let sock = std::net::UdpSocket::bind(bind).unwrap();
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
