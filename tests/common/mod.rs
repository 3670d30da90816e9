//! Test harness: the real proxy on loopback sockets between a raw-bytes UAC
//! (the trunk) and UAS (the PBX).
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use sipsentry::config::Config;
use sipsentry::pipeline::Pipeline;
use sipsentry::reputation::{Evidence, LiveSource, LocalSource, LookupFuture, Source};
use sipsentry::server::Server;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::oneshot;

pub mod fakes;
pub mod pki;
pub mod tls;

pub const WAIT: Duration = Duration::from_secs(3);

/// A running proxy; stops (and drains) when dropped or `stop`ped.
pub struct Proxy {
    pub addr: SocketAddr,
    /// The TLS listener (`sip.tls_listen`), when configured.
    pub tls_addr: Option<SocketAddr>,
    /// The running proxy, for its counters.
    pub core: Arc<sipsentry::server::SipProxy>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Proxy {
    pub async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(15), t).await;
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

/// Scores by number, as a local (in-memory) source.
pub struct StaticScores(pub Vec<(&'static str, u8, &'static str)>);

impl LocalSource for StaticScores {
    fn lookup(&self, e164: &str) -> Option<Evidence> {
        self.0
            .iter()
            .find(|(n, _, _)| *n == e164)
            .map(|(_, score, cat)| Evidence {
                source: Source::HiyaCache,
                score: *score,
                category: Some(cat.to_string()),
                cached: false,
                latency_us: 1,
                raw: serde_json::json!({ "level": "SPAM" }).into(),
            })
    }
}

/// A live source that answers `score` after `delay` (a slow provider).
pub struct SlowSource {
    pub delay: Duration,
    pub score: u8,
    pub lookups: std::sync::atomic::AtomicUsize,
}

impl SlowSource {
    pub fn new(delay: Duration, score: u8) -> Arc<Self> {
        Arc::new(SlowSource {
            delay,
            score,
            lookups: Default::default(),
        })
    }

    pub fn lookups(&self) -> usize {
        self.lookups.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl LiveSource for SlowSource {
    fn name(&self) -> &'static str {
        "slow"
    }
    fn lookup<'a>(&'a self, _e164: &'a str) -> LookupFuture<'a> {
        self.lookups
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Box::pin(async move {
            tokio::time::sleep(self.delay).await;
            Ok(Some(Evidence {
                source: Source::Custom,
                score: self.score,
                category: None,
                cached: false,
                latency_us: self.delay.as_micros() as u64,
                raw: Default::default(),
            }))
        })
    }
}

/// Parses a config with `[sip]` listen/next_hop filled in for the test.
pub fn config(uas: SocketAddr, extra: &str) -> Config {
    let text = format!("[sip]\nlisten = \"127.0.0.1:0\"\nnext_hop = \"sip:{uas}\"\n{extra}");
    Config::from_toml(&text).unwrap_or_else(|e| panic!("test config: {e}\n{text}"))
}

pub async fn start(config: Config, customize: impl FnOnce(Pipeline) -> Pipeline) -> Proxy {
    let pipeline = customize(Pipeline::new(Arc::new(config.policy().unwrap())));
    let server = Server::bind(config.sip.clone(), Arc::new(pipeline))
        .await
        .expect("bind proxy");
    let addr = server.local_addr();
    let tls_addr = server.tls_addr();
    let core = server.proxy();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(server.run(async {
        let _ = stopped.await;
    }));
    Proxy {
        addr,
        tls_addr,
        core,
        stop: Some(stop),
        task: Some(task),
    }
}

/// A UDP endpoint (UAC or UAS) speaking raw bytes.
pub struct Udp {
    pub sock: UdpSocket,
    pub addr: SocketAddr,
}

impl Udp {
    pub async fn new() -> Udp {
        let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = sock.local_addr().unwrap();
        Udp { sock, addr }
    }

    pub async fn send(&self, to: SocketAddr, msg: &str) {
        self.sock.send_to(msg.as_bytes(), to).await.unwrap();
    }

    /// The next datagram, or `None` after `wait`.
    pub async fn recv_within(&self, wait: Duration) -> Option<(String, SocketAddr)> {
        let mut buf = vec![0u8; 70_000];
        match tokio::time::timeout(wait, self.sock.recv_from(&mut buf)).await {
            Ok(Ok((n, from))) => Some((String::from_utf8_lossy(&buf[..n]).into_owned(), from)),
            _ => None,
        }
    }

    pub async fn recv(&self) -> String {
        self.recv_within(WAIT)
            .await
            .expect("expected a SIP message")
            .0
    }

    /// The next message whose first line starts with `prefix`, skipping others.
    pub async fn recv_starting(&self, prefix: &str) -> String {
        loop {
            let m = self.recv().await;
            if m.starts_with(prefix) {
                return m;
            }
        }
    }

    /// Nothing arrives for `wait`.
    pub async fn silent_for(&self, wait: Duration) -> Option<String> {
        self.recv_within(wait).await.map(|(m, _)| m)
    }
}

/// A TCP (or, with a TLS stream, TLS) connection speaking raw bytes,
/// framed by Content-Length.
pub struct Tcp<S = TcpStream> {
    pub stream: S,
    pub buf: Vec<u8>,
}

impl Tcp {
    /// The PBX side: the proxy's next connection to `listener`.
    pub async fn accept(listener: &tokio::net::TcpListener) -> Tcp {
        let (stream, _) = tokio::time::timeout(WAIT, listener.accept())
            .await
            .expect("the proxy should connect to the TCP next hop")
            .unwrap();
        Tcp {
            stream,
            buf: Vec::new(),
        }
    }

    pub async fn connect(to: SocketAddr) -> Tcp {
        Tcp {
            stream: TcpStream::connect(to).await.unwrap(),
            buf: Vec::new(),
        }
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.stream.local_addr().unwrap()
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Tcp<S> {
    pub async fn send(&mut self, msg: &str) {
        self.stream.write_all(msg.as_bytes()).await.unwrap();
        self.stream.flush().await.unwrap();
    }

    pub async fn recv(&mut self) -> String {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            if let Ok(Some(n)) = sipsentry::sip::message::frame_len(&self.buf) {
                let frame: Vec<u8> = self.buf.drain(..n).collect();
                return String::from_utf8_lossy(&frame).into_owned();
            }
            let mut chunk = [0u8; 8192];
            let n = tokio::time::timeout_at(deadline, self.stream.read(&mut chunk))
                .await
                .expect("expected a SIP message over TCP")
                .unwrap();
            assert!(n > 0, "connection closed");
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    pub async fn recv_starting(&mut self, prefix: &str) -> String {
        loop {
            let m = self.recv().await;
            if m.starts_with(prefix) {
                return m;
            }
        }
    }
}

/// A realistic INVITE from `uac` (sent-by), with SDP.
pub fn invite(uac: SocketAddr, transport: &str, branch: &str, from: &str, extra: &str) -> String {
    let sdp = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n";
    format!(
        "INVITE sip:+15551234567@pbx.example SIP/2.0\r\n\
         Via: SIP/2.0/{transport} {uac};branch={branch}\r\n\
         Max-Forwards: 70\r\n\
         From: {from};tag=1928301774\r\n\
         To: <sip:+15551234567@pbx.example>\r\n\
         Call-ID: {branch}@test\r\n\
         CSeq: 314159 INVITE\r\n\
         Contact: <sip:caller@{uac}>\r\n\
         {extra}\
         Content-Type: application/sdp\r\n\
         Content-Length: {}\r\n\r\n{sdp}",
        sdp.len()
    )
}

/// The CANCEL or ACK matching an INVITE built by [`invite`].
pub fn in_transaction(
    method: &str,
    uac: SocketAddr,
    transport: &str,
    branch: &str,
    to_tag: Option<&str>,
) -> String {
    let to_tag = to_tag.map(|t| format!(";tag={t}")).unwrap_or_default();
    format!(
        "{method} sip:+15551234567@pbx.example SIP/2.0\r\n\
         Via: SIP/2.0/{transport} {uac};branch={branch}\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:+15557654321@carrier.example>;tag=1928301774\r\n\
         To: <sip:+15551234567@pbx.example>{to_tag}\r\n\
         Call-ID: {branch}@test\r\n\
         CSeq: 314159 {method}\r\n\
         Content-Length: 0\r\n\r\n"
    )
}

/// A response to `req` (as the UAS), copying Via/From/To/Call-ID/CSeq.
pub fn response_to(req: &str, code: u16, reason: &str, to_tag: &str) -> String {
    let mut out = format!("SIP/2.0 {code} {reason}\r\n");
    for line in req.split("\r\n").skip(1) {
        if line.is_empty() {
            break;
        }
        let lower = line.to_ascii_lowercase();
        if lower.starts_with("via:")
            || lower.starts_with("from:")
            || lower.starts_with("call-id:")
            || lower.starts_with("cseq:")
        {
            out.push_str(line);
            out.push_str("\r\n");
        } else if lower.starts_with("to:") {
            out.push_str(line);
            if !lower.contains("tag=") {
                out.push_str(&format!(";tag={to_tag}"));
            }
            out.push_str("\r\n");
        }
    }
    out.push_str("Content-Length: 0\r\n\r\n");
    out
}

/// Splits the proxy's Via (the first Via line) off a relayed request.
pub fn split_proxy_via(relayed: &str) -> (String, String) {
    let start = relayed.find("\r\nVia: ").expect("a Via line") + 2;
    let end = start + relayed[start..].find("\r\n").unwrap() + 2;
    let via = relayed[start..end].to_string();
    let rest = format!("{}{}", &relayed[..start], &relayed[end..]);
    (via, rest)
}

pub fn header<'a>(msg: &'a str, name: &str) -> Option<&'a str> {
    msg.split("\r\n").find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// The To tag of a response (for the ACK that answers it).
pub fn to_tag(msg: &str) -> String {
    header(msg, "To")
        .and_then(|t| t.split("tag=").nth(1))
        .expect("a To tag")
        .to_string()
}

pub fn status(msg: &str) -> u16 {
    msg.split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}
