//! Sockets and framing: UDP and TCP on one port, TLS on another.
//!
//! The transport knows nothing of what a message means. It binds the ports,
//! frames what arrives (a datagram is one message; a TCP or TLS stream is
//! cut by Content-Length) and hands each message up with its [`Peer`] to an
//! [`Inbound`] handler, the proxy. Datagrams are read on the SIP thread
//! ([`udp`]); each stream connection has a reader and a writer fed by a
//! bounded queue, so a slow peer can never make the proxy buffer without
//! limit or stall other calls. TLS connections ([`tls`]) are TCP
//! connections with a handshake first: the same limits, the same framing.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use dashmap::DashMap;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};

use super::capture::{Capture, IPPROTO_TCP, IPPROTO_UDP};
use super::message::{self, MAX_MESSAGE_BYTES};

pub mod tls;
pub mod udp;

pub use tls::{Tls, TlsError, TlsOptions};

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
    /// A TLS handshake, in or out, must finish within this.
    pub handshake_timeout: Duration,
}

impl Default for TcpLimits {
    fn default() -> Self {
        TcpLimits {
            max_inbound: 4096,
            max_outbound: 1024,
            max_per_source: 256,
            idle: Duration::from_secs(120),
            message_timeout: Duration::from_secs(5),
            handshake_timeout: tls::HANDSHAKE_TIMEOUT,
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
    Tls(SocketAddr),
}

impl Peer {
    pub fn addr(self) -> SocketAddr {
        match self {
            Peer::Udp(a) | Peer::Tcp(a) | Peer::Tls(a) => a,
        }
    }

    /// Whether the transport is a reliable stream (TCP or TLS): no
    /// retransmissions of the proxy's own (RFC 3261 §17.1.1.2), and
    /// responses go back over the connection the request came on.
    pub fn is_stream(self) -> bool {
        !matches!(self, Peer::Udp(_))
    }

    pub fn is_tls(self) -> bool {
        matches!(self, Peer::Tls(_))
    }

    /// The transport as written in Via (`SIP/2.0/UDP`).
    pub fn via_name(self) -> &'static str {
        match self {
            Peer::Udp(_) => "UDP",
            Peer::Tcp(_) => "TCP",
            Peer::Tls(_) => "TLS",
        }
    }
}

/// Whoever handles what arrives (the proxy). Called on the SIP thread for
/// UDP and on a connection's reader task for TCP and TLS; must not block.
pub trait Inbound: Send + Sync + 'static {
    /// One framed message (not yet parsed) from `from`.
    fn received(self: Arc<Self>, message: Bytes, from: Peer);

    /// A message queued for `to` that could not be sent: the connection
    /// (or its TLS handshake) failed. Called on the connection's task.
    fn undeliverable(self: Arc<Self>, _message: Bytes, _to: Peer) {}
}

/// Why the SIP port could not be opened.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {addr} (is another SIP server running there? change sip.listen)")]
pub struct BindError {
    pub addr: SocketAddr,
    #[source]
    pub source: std::io::Error,
}

/// The SIP ports: one UDP socket and the stream connections (TCP and
/// TLS), inbound and out.
pub struct Transport {
    /// Blocking UDP socket: read by the SIP thread, written from anywhere.
    udp: std::net::UdpSocket,
    /// Every open stream connection's send queue, by its far end.
    streams: DashMap<Peer, mpsc::Sender<Bytes>>,
    /// TLS, when configured (a certificate to serve, or a TLS next hop).
    tls: Option<Arc<Tls>>,
    /// The name to verify for an outbound TLS connection to an address (the
    /// next hop's configured host name); any other address is verified
    /// against an IP address in its certificate.
    tls_names: DashMap<SocketAddr, String>,
    /// TLS peers' own addresses (the sent-by of their Via: where they
    /// listen) → the connection they opened to the proxy, whose port is
    /// another. A trunk is reached over its connection when the PBX sends
    /// in-dialog requests toward its Contact (RFC 5923 in spirit: TLS
    /// trunks rarely accept connections, and a new one would fail its
    /// certificate check).
    tls_aliases: DashMap<SocketAddr, SocketAddr>,
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
    /// HEP capture, when `[hep]` is on, and the UDP address it reports
    /// (the advertised one: the socket may be bound to 0.0.0.0).
    capture: OnceLock<(Capture, SocketAddr)>,
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transport")
            .field("udp", &self.udp)
            .field("stream_connections", &self.streams.len())
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
        tls: Option<Arc<Tls>>,
    ) -> Result<(Arc<Transport>, TcpListener), BindError> {
        let (udp, tcp) = bind_pair(listen).await?;
        let transport = Transport {
            udp,
            streams: DashMap::new(),
            tls,
            tls_names: DashMap::new(),
            tls_aliases: DashMap::new(),
            limits,
            inbound_slots: Arc::new(Semaphore::new(limits.max_inbound)),
            outbound_slots: Arc::new(Semaphore::new(limits.max_outbound)),
            per_source: DashMap::new(),
            rt: tokio::runtime::Handle::current(),
            inbound: OnceLock::new(),
            capture: OnceLock::new(),
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

    /// TLS, when configured.
    pub fn tls(&self) -> Option<&Arc<Tls>> {
        self.tls.as_ref()
    }

    /// Copies every message from now on to `capture`, reporting `udp` as
    /// the UDP address. Only the first call counts; call before serving.
    pub fn set_capture(&self, capture: Capture, udp: SocketAddr) {
        let _ = self.capture.set((capture, udp));
    }

    /// Captures a datagram the SIP thread received (stream messages are
    /// captured on their connection's task).
    pub fn captured_udp(&self, bytes: &Bytes, from: SocketAddr) {
        if let Some((c, local)) = self.capture.get() {
            c.record(from, *local, IPPROTO_UDP, bytes);
        }
    }

    /// Outbound TLS connections to `addr` verify `host` in its certificate.
    pub fn set_tls_name(&self, addr: SocketAddr, host: &str) {
        self.tls_names.insert(addr, host.to_string());
    }

    /// Sends a message; never blocks on a slow TCP peer (a full queue drops
    /// the message, which SIP's retransmissions or the peer's timers recover).
    pub fn send(self: &Arc<Self>, to: Peer, bytes: Bytes) {
        match to {
            Peer::Udp(addr) => {
                if let Err(e) = self.udp.send_to(&bytes, addr) {
                    tracing::debug!(%addr, error = %e, "UDP send failed");
                }
                if let Some((c, local)) = self.capture.get() {
                    c.record(*local, addr, IPPROTO_UDP, &bytes);
                }
            }
            stream => {
                let queue = match self.streams.get(&stream) {
                    Some(q) => q.clone(),
                    None => match self.tls_alias(stream) {
                        Some(q) => q,
                        // Queued before the connection is tried, so a quick
                        // refusal hands it back rather than losing it.
                        None => return self.connect(stream, bytes),
                    },
                };
                match queue.try_send(bytes) {
                    Ok(()) => {}
                    Err(mpsc::error::TrySendError::Closed(bytes)) => {
                        // The connection failed a moment ago.
                        if let Some(i) = self.inbound.get().and_then(Weak::upgrade) {
                            i.undeliverable(bytes, stream);
                        }
                    }
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        let addr = stream.addr();
                        tracing::warn!(%addr, transport = stream.via_name(), "send queue full; message dropped");
                    }
                }
            }
        }
    }

    /// For a TLS peer with no connection of its own: the connection it
    /// opened to the proxy, if one is open.
    fn tls_alias(&self, to: Peer) -> Option<mpsc::Sender<Bytes>> {
        let Peer::Tls(addr) = to else { return None };
        let conn = *self.tls_aliases.get(&addr)?;
        self.streams.get(&Peer::Tls(conn)).map(|q| q.clone())
    }

    /// Notes that the TLS peer on connection `from` listens on `port` of
    /// its own address (its Via's sent-by), so messages for that address
    /// use this connection. A peer can only name its own IP address.
    pub fn alias_tls(&self, from: Peer, port: u16) {
        let Peer::Tls(conn) = from else { return };
        if port == conn.port() {
            return;
        }
        let listening = SocketAddr::new(conn.ip(), port);
        if self.tls_aliases.get(&listening).as_deref() != Some(&conn) {
            self.tls_aliases.insert(listening, conn);
        }
    }

    /// Wakes the SIP thread out of its blocking read with an empty datagram
    /// to the proxy's own socket (read as a keep-alive, after which the
    /// thread sees its stop flag).
    pub fn wake_udp(&self) {
        poke(&self.udp);
    }

    /// Hands what waited for a connection that failed back to the handler
    /// (an INVITE may go to another target), and forgets the connection.
    fn connect_failed(&self, peer: Peer, mut queue: mpsc::Receiver<Bytes>) {
        self.streams.remove(&peer);
        queue.close();
        let inbound = self.inbound.get().and_then(Weak::upgrade);
        while let Ok(message) = queue.try_recv() {
            if let Some(i) = &inbound {
                Arc::clone(i).undeliverable(message, peer);
            }
        }
    }

    /// Opens an outbound TCP or TLS connection in the background, with
    /// `first` queued on it; later messages queue meanwhile.
    fn connect(self: &Arc<Self>, peer: Peer, first: Bytes) {
        let (tx, rx) = mpsc::channel(TCP_QUEUE);
        let _ = tx.try_send(first);
        self.streams.insert(peer, tx);
        let transport = Arc::clone(self);
        self.rt.spawn(async move {
            let addr = peer.addr();
            let Ok(permit) = Arc::clone(&transport.outbound_slots).try_acquire_owned() else {
                tracing::warn!(%addr, "sip.tcp_max_outbound connections are open; not connecting");
                return transport.connect_failed(peer, rx);
            };
            let stream = match tokio::time::timeout(TCP_CONNECT_TIMEOUT, TcpStream::connect(addr)).await {
                Ok(Ok(stream)) => stream,
                Ok(Err(e)) => {
                    tracing::warn!(%addr, transport = peer.via_name(), error = %e, "connect failed");
                    return transport.connect_failed(peer, rx);
                }
                Err(_) => {
                    tracing::warn!(%addr, transport = peer.via_name(), "connect timed out");
                    return transport.connect_failed(peer, rx);
                }
            };
            let _ = stream.set_nodelay(true);
            let local = stream.local_addr().unwrap_or(addr);
            if !peer.is_tls() {
                return transport.run_connection(stream, peer, local, rx, permit, None).await;
            }
            match transport.tls_connect(stream, addr).await {
                Some(tls) => {
                    transport
                        .run_connection(tls, peer, local, rx, permit, None)
                        .await
                }
                None => transport.connect_failed(peer, rx),
            }
        });
    }

    /// The client side of a TLS handshake toward `addr`, verified against
    /// the name configured for it (or its address).
    async fn tls_connect(
        &self,
        stream: TcpStream,
        addr: SocketAddr,
    ) -> Option<tokio_rustls::client::TlsStream<TcpStream>> {
        let Some(tls) = &self.tls else {
            tracing::warn!(%addr, "a TLS destination, but no TLS is configured; set sip.tls_next_hop_ca or sip.tls_cert");
            return None;
        };
        let connector = match tls.connector() {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(%addr, error = e, "cannot make TLS connections");
                return None;
            }
        };
        let name = tls::server_name(
            self.tls_names.get(&addr).as_deref().map(String::as_str),
            addr,
        );
        match tokio::time::timeout(
            self.limits.handshake_timeout,
            connector.connect(name, stream),
        )
        .await
        {
            Ok(Ok(s)) => {
                tls.handshake_done();
                Some(s)
            }
            Ok(Err(e)) => {
                tls.handshake_failed(addr, &e);
                None
            }
            Err(_) => {
                tls.handshake_failed(addr, &"timed out (sip.tls_handshake_timeout_ms)");
                None
            }
        }
    }

    /// Serves one stream connection (TCP, or TLS after its handshake) until
    /// it closes, idles out (no complete message for `limits.idle`) or a
    /// message takes longer than `limits.message_timeout` to arrive whole.
    async fn run_connection<S>(
        self: &Arc<Self>,
        stream: S,
        peer: Peer,
        local: SocketAddr,
        mut queue: mpsc::Receiver<Bytes>,
        _permit: OwnedSemaphorePermit,
        _source: Option<SourceGuard>,
    ) where
        S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        let addr = peer.addr();
        let (mut rd, mut wr) = tokio::io::split(stream);
        // Stream messages are captured here, on the connection's own task,
        // where both ends' addresses are known (TLS ones in plaintext).
        let capture = self.capture.get().map(|(c, _)| c.clone());
        let out_capture = capture.clone();
        let writer = tokio::spawn(async move {
            while let Some(bytes) = queue.recv().await {
                // TLS buffers records: each message is flushed whole.
                if wr.write_all(&bytes).await.is_err() || wr.flush().await.is_err() {
                    break;
                }
                if let Some(c) = &out_capture
                    && bytes.len() > 2
                {
                    c.record(local, addr, IPPROTO_TCP, &bytes);
                }
            }
            let _ = wr.shutdown().await;
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
                    tracing::debug!(%addr, transport = peer.via_name(), why, "connection closed");
                    break;
                }
                Ok(Ok(_)) => {}
            }
            let mut completed = false;
            loop {
                // RFC 5626 keep-alive: a CRLFCRLF ping gets a CRLF pong.
                if buf.starts_with(b"\r\n\r\n") {
                    let _ = buf.split_to(4);
                    if let Some(q) = self.streams.get(&peer) {
                        let _ = q.try_send(Bytes::from_static(b"\r\n"));
                    }
                    completed = true;
                    continue;
                }
                match message::frame_len(&buf) {
                    Ok(Some(n)) => {
                        let frame = buf.split_to(n).freeze();
                        completed = true;
                        if let Some(c) = &capture {
                            c.record(addr, local, IPPROTO_TCP, &frame);
                        }
                        match self.inbound.get().and_then(Weak::upgrade) {
                            Some(inbound) => inbound.received(frame, peer),
                            // The proxy is gone: the server is stopping.
                            None => break 'read,
                        }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        tracing::debug!(%addr, transport = peer.via_name(), error = %e, "framing lost; closing");
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
        self.streams.remove(&peer);
        if peer.is_tls() {
            self.tls_aliases.retain(|_, conn| *conn != addr);
        }
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

    /// Accepts connections on `listener` until `stop` completes: plain TCP,
    /// or TLS when `tls` (each handshake on the connection's own task, so a
    /// slow one holds up nobody). At `sip.tcp_max_connections` (TCP and TLS
    /// together) it waits for one to close; a source at
    /// `sip.tcp_max_per_source` has its new connection closed at once.
    pub async fn accept_loop(
        self: Arc<Self>,
        listener: TcpListener,
        tls: bool,
        stop: impl std::future::Future<Output = ()>,
    ) {
        let acceptor = match (tls, self.tls.as_ref().and_then(|t| t.acceptor())) {
            (false, _) => None,
            (true, Some(a)) => Some(a.clone()),
            (true, None) => return,
        };
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
            let _ = stream.set_nodelay(true);
            let transport = Arc::clone(&self);
            let Some(acceptor) = acceptor.clone() else {
                let (tx, rx) = mpsc::channel(TCP_QUEUE);
                self.streams.insert(Peer::Tcp(addr), tx);
                let local = stream.local_addr().unwrap_or(addr);
                tokio::spawn(async move {
                    transport
                        .run_connection(stream, Peer::Tcp(addr), local, rx, permit, Some(guard))
                        .await
                });
                continue;
            };
            let local = stream.local_addr().unwrap_or(addr);
            tokio::spawn(async move {
                let Some(tls) = transport.tls.clone() else {
                    return;
                };
                let handshake = tokio::time::timeout(
                    transport.limits.handshake_timeout,
                    acceptor.accept(stream),
                );
                let stream = match handshake.await {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => return tls.handshake_failed(addr, &e),
                    Err(_) => {
                        return tls
                            .handshake_failed(addr, &"timed out (sip.tls_handshake_timeout_ms)");
                    }
                };
                tls.handshake_done();
                let peer = Peer::Tls(addr);
                let (tx, rx) = mpsc::channel(TCP_QUEUE);
                transport.streams.insert(peer, tx);
                transport
                    .run_connection(stream, peer, local, rx, permit, Some(guard))
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
