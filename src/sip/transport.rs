//! UDP and TCP on one port. Datagrams are handled on the SIP thread
//! ([`super::udp`]); each
//! TCP connection has a reader (framing by Content-Length) and a writer fed by
//! a bounded queue, so a slow peer can never make the proxy buffer without
//! limit or stall other calls.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, mpsc};

use super::message::{self, MAX_MESSAGE_BYTES};
use super::proxy::Proxy;

/// Concurrent TCP connections, inbound and outbound together.
pub const MAX_TCP_CONNECTIONS: usize = 4096;
/// Messages queued for one TCP connection before further ones are dropped.
pub const TCP_QUEUE: usize = 256;
/// A TCP connection idle this long is closed.
pub const TCP_IDLE: Duration = Duration::from_secs(600);
/// How long an outbound TCP connect may take.
pub const TCP_CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

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

impl Proxy {
    /// Sends a message; never blocks on a slow TCP peer (a full queue drops
    /// the message, which SIP's retransmissions or the peer's timers recover).
    pub(crate) fn send(self: &Arc<Self>, to: Peer, bytes: Bytes) {
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

    /// Opens an outbound TCP connection in the background; messages queue
    /// meanwhile.
    fn connect(self: &Arc<Self>, addr: SocketAddr) -> mpsc::Sender<Bytes> {
        let (tx, rx) = mpsc::channel(TCP_QUEUE);
        self.tcp.insert(addr, tx.clone());
        let proxy = Arc::clone(self);
        self.rt.spawn(async move {
            let permit = Arc::clone(&proxy.tcp_slots).try_acquire_owned();
            let stream = match (
                permit,
                tokio::time::timeout(TCP_CONNECT_TIMEOUT, TcpStream::connect(addr)).await,
            ) {
                (Ok(permit), Ok(Ok(stream))) => (permit, stream),
                (Err(_), _) => {
                    tracing::warn!(%addr, "too many TCP connections; not connecting");
                    proxy.tcp.remove(&addr);
                    return;
                }
                (_, Ok(Err(e))) => {
                    tracing::warn!(%addr, error = %e, "TCP connect failed");
                    proxy.tcp.remove(&addr);
                    return;
                }
                (_, Err(_)) => {
                    tracing::warn!(%addr, "TCP connect timed out");
                    proxy.tcp.remove(&addr);
                    return;
                }
            };
            proxy.run_connection(stream.1, addr, rx, stream.0).await;
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
                        self.handle(frame, Peer::Tcp(addr));
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

    /// Accepts TCP connections until `stop` fires.
    pub(crate) async fn accept_loop(
        self: Arc<Self>,
        listener: TcpListener,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) {
        loop {
            let permit = tokio::select! {
                p = Arc::clone(&self.tcp_slots).acquire_owned() => match p { Ok(p) => p, Err(_) => return },
                _ = stop.changed() => return,
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
                _ = stop.changed() => return,
            };
            let (tx, rx) = mpsc::channel(TCP_QUEUE);
            self.tcp.insert(addr, tx);
            let proxy = Arc::clone(&self);
            tokio::spawn(async move { proxy.run_connection(stream, addr, rx, permit).await });
        }
    }
}
