//! Sockets and framing: UDP and TCP on one port.
//!
//! The transport knows nothing of what a message means. It binds the port,
//! frames what arrives (a datagram is one message; a TCP stream is cut by
//! Content-Length) and hands each message up with its [`Peer`] to an
//! [`Inbound`] handler, the proxy. Datagrams are read on the SIP thread
//! ([`udp`]); each TCP connection has a reader and a writer fed by a
//! bounded queue, so a slow peer can never make the proxy buffer without
//! limit or stall other calls.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use dashmap::DashMap;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};

use super::message::{self, MAX_MESSAGE_BYTES};

pub mod udp;

/// Concurrent TCP connections, inbound and outbound together.
pub const MAX_TCP_CONNECTIONS: usize = 4096;
/// Messages queued for one TCP connection before further ones are dropped.
pub const TCP_QUEUE: usize = 256;
/// A TCP connection idle this long is closed.
pub const TCP_IDLE: Duration = Duration::from_secs(600);
/// How long an outbound TCP connect may take.
pub const TCP_CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
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
    tcp_slots: Arc<Semaphore>,
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
    pub async fn bind(listen: SocketAddr) -> Result<(Arc<Transport>, TcpListener), BindError> {
        let (udp, tcp) = bind_pair(listen).await?;
        let transport = Transport {
            udp,
            tcp: DashMap::new(),
            tcp_slots: Arc::new(Semaphore::new(MAX_TCP_CONNECTIONS)),
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
            let permit = Arc::clone(&transport.tcp_slots).try_acquire_owned();
            let stream = match (
                permit,
                tokio::time::timeout(TCP_CONNECT_TIMEOUT, TcpStream::connect(addr)).await,
            ) {
                (Ok(permit), Ok(Ok(stream))) => (permit, stream),
                (Err(_), _) => {
                    tracing::warn!(%addr, "too many TCP connections; not connecting");
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
            transport.run_connection(stream.1, addr, rx, stream.0).await;
        });
        tx
    }

    /// Serves one TCP connection until it closes or idles out.
    async fn run_connection(
        self: &Arc<Self>,
        stream: TcpStream,
        addr: SocketAddr,
        mut queue: mpsc::Receiver<Bytes>,
        _permit: OwnedSemaphorePermit,
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
        let mut buf = BytesMut::with_capacity(8 * 1024);
        'read: loop {
            match tokio::time::timeout(TCP_IDLE, rd.read_buf(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
                Ok(Ok(_)) => {}
            }
            loop {
                // RFC 5626 keep-alive: a CRLFCRLF ping gets a CRLF pong.
                if buf.starts_with(b"\r\n\r\n") {
                    let _ = buf.split_to(4);
                    if let Some(q) = self.tcp.get(&addr) {
                        let _ = q.try_send(Bytes::from_static(b"\r\n"));
                    }
                    continue;
                }
                match message::frame_len(&buf) {
                    Ok(Some(n)) => {
                        let frame = buf.split_to(n).freeze();
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
            if buf.capacity() > MAX_MESSAGE_BYTES * 2 && buf.is_empty() {
                buf = BytesMut::with_capacity(8 * 1024);
            }
        }
        self.tcp.remove(&addr);
        writer.abort();
    }

    /// Accepts TCP connections until `stop` completes.
    pub async fn accept_loop(
        self: Arc<Self>,
        listener: TcpListener,
        stop: impl std::future::Future<Output = ()>,
    ) {
        tokio::pin!(stop);
        loop {
            let permit = tokio::select! {
                p = Arc::clone(&self.tcp_slots).acquire_owned() => match p { Ok(p) => p, Err(_) => return },
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
            let (tx, rx) = mpsc::channel(TCP_QUEUE);
            self.tcp.insert(addr, tx);
            let transport = Arc::clone(&self);
            tokio::spawn(async move { transport.run_connection(stream, addr, rx, permit).await });
        }
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
