//! The PBX side of `sipsentry bench`: answers INVITE (optionally 180 first,
//! optionally after a fixed delay), BYE, CANCEL and OPTIONS; absorbs ACK.
//! Stateless, so it keeps up with the UAC at any rate the machine allows.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

use super::bind_udp;
use crate::sip::message::{Message, Method, frame_len};
use crate::sip::respond;
use crate::sip::transport::udp::try_recv_from;

#[derive(Clone)]
pub struct UasOptions {
    pub listen: SocketAddr,
    /// Send 180 Ringing before the 200.
    pub ring: bool,
    /// Wait this long before the 200.
    pub answer_delay: Duration,
    /// Serve TLS (not plain TCP) on the stream port.
    pub tls: Option<tokio_rustls::TlsAcceptor>,
}

const SDP: &[u8] = b"v=0\r\no=uas 1 1 IN IP4 127.0.0.1\r\ns=sipsentry bench uas\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 49180 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n";

impl std::fmt::Debug for UasOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UasOptions")
            .field("listen", &self.listen)
            .field("ring", &self.ring)
            .field("answer_delay", &self.answer_delay)
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

/// The responses to one request, and how long to wait before the last one.
fn answer(req: &Message, opts: &UasOptions, contact: &str) -> (Vec<Bytes>, Option<Bytes>) {
    let tag = Some("sbuas");
    match req.method() {
        Some(Method::Invite) => {
            let early = if opts.ring {
                vec![respond::build(req, 180, tag, &[])]
            } else {
                vec![]
            };
            let ok = respond::build_with_body(
                req,
                200,
                tag,
                &[contact.to_string()],
                Some(("application/sdp", SDP)),
            );
            (early, Some(ok))
        }
        Some(Method::Ack) | None => (vec![], None),
        Some(_) => (vec![respond::build(req, 200, tag, &[])], None),
    }
}

/// UDP on a thread of its own, blocking in `recvfrom`: each datagram costs
/// one wake-up, not an epoll round and a runtime task switch, so the UAS takes
/// as little CPU as possible from the relay being measured. Stops within
/// 200 ms of `stop`.
fn serve_udp(
    udp: &Arc<std::net::UdpSocket>,
    opts: &UasOptions,
    contact: &str,
    stop: &AtomicBool,
    rt: &tokio::runtime::Handle,
) {
    let _ = udp.set_read_timeout(Some(Duration::from_millis(200)));
    let mut buf = vec![0u8; 65_536];
    while !stop.load(Ordering::Relaxed) {
        let Ok((n, from)) = udp.recv_from(&mut buf) else {
            continue;
        };
        let Some(last) = reply_now(udp, &buf[..n], from, opts, contact) else {
            continue;
        };
        let (sock, delay) = (Arc::clone(udp), opts.answer_delay);
        rt.spawn(async move {
            tokio::time::sleep(delay).await;
            let _ = sock.send_to(&last, from);
        });
    }
}

/// Answers one datagram on `udp`; returns the last response when it is to
/// wait for `answer_delay`.
fn reply_now(
    udp: &std::net::UdpSocket,
    datagram: &[u8],
    from: SocketAddr,
    opts: &UasOptions,
    contact: &str,
) -> Option<Bytes> {
    let req = Message::parse(Bytes::copy_from_slice(datagram)).ok()?;
    let (now, later) = answer(&req, opts, contact);
    for r in now {
        let _ = udp.send_to(&r, from);
    }
    match later {
        Some(r) if opts.answer_delay.is_zero() => {
            let _ = udp.send_to(&r, from);
            None
        }
        other => other,
    }
}

/// The UAS inside the UAC's thread (`sipsentry bench --with-uas`): answers
/// without delay whatever is queued on its socket when the UAC looks.
pub(crate) struct Inline {
    pub(crate) sock: std::net::UdpSocket,
    opts: UasOptions,
    contact: String,
}

impl Inline {
    pub(crate) fn bind(opts: UasOptions) -> std::io::Result<Inline> {
        if !opts.answer_delay.is_zero() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "a UAS on the UAC's thread answers at once; run `sipsentry bench --uas` for --answer-delay",
            ));
        }
        let sock = bind_udp(opts.listen).map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!(
                    "cannot answer as the UAS on {}: {e}; pick a free address for --with-uas (the proxy's next hop)",
                    opts.listen
                ),
            )
        })?;
        let contact = format!("Contact: <sip:uas@{}>", sock.local_addr()?);
        Ok(Inline {
            sock,
            opts,
            contact,
        })
    }

    /// Answers the requests already queued (at most `max`), without
    /// blocking.
    pub(crate) fn answer_queued(&self, buf: &mut [u8], max: usize) {
        for _ in 0..max {
            let Ok(Some((len, from))) = try_recv_from(&self.sock, buf) else {
                return;
            };
            reply_now(&self.sock, &buf[..len], from, &self.opts, &self.contact);
        }
    }
}

/// Answers the requests of one stream connection (TCP, or TLS after its
/// handshake) until it closes.
async fn serve_stream<S>(stream: S, opts: &UasOptions, contact: &str)
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let (mut rd, mut wr) = tokio::io::split(stream);
    let (tx, mut rx) = mpsc::channel::<Bytes>(1024);
    tokio::spawn(async move {
        while let Some(b) = rx.recv().await {
            if wr.write_all(&b).await.is_err() || wr.flush().await.is_err() {
                return;
            }
        }
    });
    let mut buf = BytesMut::with_capacity(65_536);
    while rd.read_buf(&mut buf).await.is_ok_and(|n| n > 0) {
        while let Ok(Some(len)) = frame_len(&buf) {
            let Ok(req) = Message::parse(buf.split_to(len).freeze()) else {
                continue;
            };
            let (now, later) = answer(&req, opts, contact);
            for r in now {
                let _ = tx.send(r).await;
            }
            match later {
                Some(r) if opts.answer_delay.is_zero() => {
                    let _ = tx.send(r).await;
                }
                Some(r) => {
                    let (tx, delay) = (tx.clone(), opts.answer_delay);
                    tokio::spawn(async move {
                        tokio::time::sleep(delay).await;
                        let _ = tx.send(r).await;
                    });
                }
                None => {}
            }
        }
    }
}

/// Serves until `shutdown` completes.
pub async fn run(
    opts: UasOptions,
    shutdown: impl std::future::Future<Output = ()>,
) -> std::io::Result<()> {
    let udp = Arc::new(bind_udp(opts.listen)?);
    let listen = udp.local_addr()?;
    let tcp = TcpListener::bind(listen).await?;
    let contact = format!("Contact: <sip:uas@{listen}>");
    let opts = Arc::new(opts);
    let stop = Arc::new(AtomicBool::new(false));
    let udp_thread = {
        let (opts, contact, stop) = (Arc::clone(&opts), contact.clone(), Arc::clone(&stop));
        let rt = tokio::runtime::Handle::current();
        std::thread::spawn(move || serve_udp(&udp, &opts, &contact, &stop, &rt))
    };
    let streams = if opts.tls.is_some() { "TLS" } else { "TCP" };
    let tcp_task = tokio::spawn(async move {
        while let Ok((stream, _)) = tcp.accept().await {
            let (opts, contact) = (Arc::clone(&opts), contact.clone());
            tokio::spawn(async move {
                let _ = stream.set_nodelay(true);
                match &opts.tls {
                    Some(acceptor) => {
                        if let Ok(tls) = acceptor.accept(stream).await {
                            serve_stream(tls, &opts, &contact).await;
                        }
                    }
                    None => serve_stream(stream, &opts, &contact).await,
                }
            });
        }
    });
    eprintln!("sipsentry bench UAS listening on {listen} (UDP+{streams})");
    shutdown.await;
    stop.store(true, Ordering::Relaxed);
    tcp_task.abort();
    let _ = tokio::task::spawn_blocking(move || udp_thread.join()).await;
    Ok(())
}
