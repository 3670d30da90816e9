//! The proxy core (RFC 3261 §16): what happens to each received message.
//!
//! The transport hands every framed message to [`Proxy::handle`]. Initial
//! INVITEs are screened inside an INVITE server transaction
//! ([`super::transaction`]) by whatever implements [`Screen`]; every other
//! request is relayed statelessly with a deterministic branch, and
//! responses follow the Via chain back. Relayed bytes are the received
//! bytes with edits spliced in ([`super::relay`]).
//!
//! Where each part lives:
//! - this file: the proxy's state, parsing and dispatch, its identities
//!   (branch, Via, To tag) and who it trusts;
//! - `request`: checks every request passes, loose routing, the stateless
//!   relay of everything but an initial INVITE;
//! - `invite`: the initial INVITE from arrival to the decision carried out,
//!   top to bottom;
//! - `in_transaction`: an INVITE already under way (retransmissions,
//!   CANCEL, ACK, timers);
//! - `response`: responses routed back;
//! - `screen`: the trait screening implements; `stats`: the counters.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use bytes::Bytes;
use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;
use tokio_util::task::TaskTracker;

use super::header::{self, Via};
use super::message::{HeaderName, Message, ParseError};
use super::next_hop::NextHops;
use super::respond;
use super::transaction::TxTable;
use super::transport::{Inbound, Peer, Transport};

mod failover;
mod in_transaction;
mod invite;
mod options;
mod ping;
mod request;
mod response;
mod screen;
mod stats;

pub use options::{NextHopSetting, SipConfig};
pub use ping::PING_BRANCH;
pub use screen::{Labels, NewCall, Screen, Screened, Verdict};
pub use stats::{METHODS, Stats};

/// Every branch the proxy writes starts with this (RFC 3261 magic cookie + our mark).
pub const BRANCH_PREFIX: &str = "z9hG4bK-ss-";
/// Bytes of keyed hash in the proxy's own To tags (written as hex).
const TO_TAG_BYTES: usize = 6;
/// How often the ticker may wake for retransmission timers (far finer than
/// SIP timers need); it sleeps longer when nothing is due.
pub const TIMER_TICK: std::time::Duration = std::time::Duration::from_millis(10);
/// Calls waiting on live lookups at once; beyond this, [`Screen::overloaded`]
/// decides.
pub const MAX_SCREENING: usize = 10_000;

/// The proxy's addresses, as written into Via and Record-Route.
#[derive(Debug, Clone)]
pub struct LocalAddr {
    /// UDP and TCP.
    pub addr: SocketAddr,
    /// Host as written in SIP (IPv6 in brackets).
    pub host: String,
    /// The TLS listener's port (`sip.tls_listen`), when there is one.
    pub tls_port: Option<u16>,
}

impl LocalAddr {
    pub fn new(addr: SocketAddr) -> Self {
        let host = match addr.ip() {
            std::net::IpAddr::V6(v6) => format!("[{v6}]"),
            std::net::IpAddr::V4(v4) => v4.to_string(),
        };
        LocalAddr {
            addr,
            host,
            tls_port: None,
        }
    }

    /// The same, with a TLS listener on `port`.
    pub fn with_tls_port(mut self, port: u16) -> Self {
        self.tls_port = Some(port);
        self
    }

    /// The port the proxy is reached on over `transport`'s kind. Without a
    /// TLS listener, TLS peers reach the proxy over the connections it made.
    pub fn port_for(&self, transport: Peer) -> u16 {
        match transport {
            Peer::Tls(_) => self.tls_port.unwrap_or(self.addr.port()),
            _ => self.addr.port(),
        }
    }
}

/// Index of a transport in per-transport tables (UDP, TCP, TLS).
fn transport_index(p: Peer) -> usize {
    match p {
        Peer::Udp(_) => 0,
        Peer::Tcp(_) => 1,
        Peer::Tls(_) => 2,
    }
}

/// The proxy: routing, the transaction table and the screening it asks.
pub struct Proxy<S: Screen> {
    options: SipConfig,
    screen: Arc<S>,
    local: LocalAddr,
    next_hops: Arc<NextHops>,
    transport: Arc<Transport>,
    /// Runtime for calls that wait on a live lookup.
    rt: tokio::runtime::Handle,
    txs: TxTable,
    stats: Stats,
    screening: Arc<Semaphore>,
    /// Every call being screened holds a token from here, from before
    /// anything is sent until the call is decided; shutdown closes it (new
    /// INVITEs get 503) and waits for the tokens to be dropped.
    calls: TaskTracker,
    secret: [u8; 16],
    /// OPTIONS pings sent and not yet answered, by branch.
    pings: dashmap::DashMap<String, ping::Outstanding>,
    /// `Via: SIP/2.0/UDP host:port;branch=`, then the same for TCP and TLS:
    /// the part of the proxy's Via that never changes, written once here so
    /// that each forwarded request only copies bytes ([`Proxy::via_line`]).
    via_prefix: [String; 3],
}

/// The branch of try `attempt` of the transaction keyed `key`: the key
/// itself for the first, `key.N` after N failovers (a new branch each,
/// RFC 3261 §16.6 step 8).
pub(crate) fn attempt_branch(key: &str, attempt: u8) -> std::borrow::Cow<'_, str> {
    if attempt == 0 {
        std::borrow::Cow::Borrowed(key)
    } else {
        std::borrow::Cow::Owned(format!("{key}.{attempt}"))
    }
}

/// A branch of the proxy's split into its transaction key and try
/// ([`attempt_branch`]'s inverse).
pub(crate) fn split_attempt(branch: &str) -> (&str, u8) {
    match branch.rsplit_once('.') {
        Some((key, n)) if key.starts_with(BRANCH_PREFIX) => match n.parse() {
            Ok(n) => (key, n),
            Err(_) => (branch, 0),
        },
        _ => (branch, 0),
    }
}

/// The proxy's Via line for one forwarded request. Built on the stack: one
/// is written per relayed request, and with the proxy's address and a
/// branch it is about 70 bytes, so the heap is only touched for a very long
/// host name.
pub(crate) type ViaLine = smallvec::SmallVec<[u8; 128]>;

/// A short piece of a message copied to the stack (a Via, a Request-URI):
/// the heap only for one longer than 256 bytes.
type StackText = smallvec::SmallVec<[u8; 256]>;

fn random_secret() -> [u8; 16] {
    use std::hash::{BuildHasher, Hasher};
    let mut out = [0u8; 16];
    for chunk in out.chunks_mut(8) {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u128(Instant::now().elapsed().as_nanos() ^ std::process::id() as u128);
        chunk.copy_from_slice(&h.finish().to_le_bytes());
    }
    out
}

impl<S: Screen> Proxy<S> {
    /// A proxy on `transport` that relays to `next_hops` and screens with
    /// `screen`. It becomes the transport's handler of TCP messages. Call
    /// inside the tokio runtime.
    pub fn new(
        options: SipConfig,
        screen: Arc<S>,
        local: LocalAddr,
        next_hops: Arc<NextHops>,
        transport: Arc<Transport>,
    ) -> Arc<Self> {
        let timer_c = std::time::Duration::from_secs(u64::from(options.timer_c_s));
        let any: SocketAddr = ([0, 0, 0, 0], 0).into();
        let via_prefix = [Peer::Udp(any), Peer::Tcp(any), Peer::Tls(any)].map(|transport| {
            format!(
                "Via: SIP/2.0/{} {}:{};branch=",
                transport.via_name(),
                local.host,
                local.port_for(transport)
            )
        });
        let proxy = Arc::new(Proxy {
            txs: TxTable::new(
                options.max_transactions,
                (options.max_held_mb as usize) << 20,
                timer_c,
            ),
            options,
            screen,
            local,
            next_hops,
            transport,
            rt: tokio::runtime::Handle::current(),
            stats: Stats::default(),
            screening: Arc::new(Semaphore::new(MAX_SCREENING)),
            calls: TaskTracker::new(),
            secret: random_secret(),
            pings: dashmap::DashMap::new(),
            via_prefix,
        });
        let inbound: Arc<dyn Inbound> = Arc::clone(&proxy) as Arc<dyn Inbound>;
        proxy.transport.set_inbound(Arc::downgrade(&inbound));
        proxy
    }

    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// INVITE transactions remembered now.
    pub fn transactions(&self) -> usize {
        self.txs.len()
    }

    /// The screening this proxy asks.
    pub fn screen(&self) -> &Arc<S> {
        &self.screen
    }

    /// The transport it sends on.
    pub fn transport(&self) -> &Arc<Transport> {
        &self.transport
    }

    /// The address written into its Via.
    pub fn local(&self) -> &LocalAddr {
        &self.local
    }

    /// Where initial requests go.
    pub fn next_hops(&self) -> &Arc<NextHops> {
        &self.next_hops
    }

    /// The configuration it runs with.
    pub fn options(&self) -> &SipConfig {
        &self.options
    }

    /// Runs the retransmission timers that are due, then expiry and Timer C,
    /// and waits until something may be due again (the ticker's loop).
    pub async fn run_timers(self: Arc<Self>) {
        loop {
            let now = Instant::now();
            self.fire_timers(now);
            self.txs.next_tick(now + TIMER_TICK).await;
        }
    }

    /// Stops taking new calls (they get 503) and waits until every call
    /// under screening is decided, or `limit` passes. False if calls were
    /// still being screened at the limit.
    pub async fn drain(&self, limit: std::time::Duration) -> bool {
        self.calls.close();
        tokio::time::timeout(limit, self.calls.wait()).await.is_ok()
    }

    /// Entry point for every received message.
    pub fn handle(self: &Arc<Self>, buf: Bytes, from: Peer) {
        self.stats.received.fetch_add(1, Ordering::Relaxed);
        if buf.len() > self.options.max_message_bytes {
            return self.on_parse_error(&buf, ParseError::TooLarge, from);
        }
        match Message::parse_or_return(buf) {
            Ok(msg) => match msg.method() {
                Some(m) => {
                    self.stats.count_request(m);
                    self.on_request(msg, from)
                }
                None => self.on_response(msg),
            },
            Err((e, buf)) => self.on_parse_error(&buf, e, from),
        }
    }

    fn on_parse_error(self: &Arc<Self>, buf: &[u8], e: ParseError, from: Peer) {
        self.stats.parse_errors.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(peer = %from.addr(), error = %e, "unparseable SIP message");
        let is_request = !buf.starts_with(b"SIP/") && !buf.starts_with(b"ACK ");
        if is_request && let Some(resp) = respond::build_minimal(buf, e.status()) {
            self.send(from, resp);
        }
    }

    fn send(&self, to: Peer, bytes: Bytes) {
        self.transport.send(to, bytes);
    }

    /// The branch for the proxy's Via on a request (RFC 3261 §16.11): a hash of
    /// the received top Via and Request-URI, so a retransmission, the CANCEL and
    /// the non-2xx ACK of an INVITE all get the INVITE's branch.
    fn branch_for(&self, msg: &Message, top: &Via<'_>, ruri: &[u8]) -> String {
        let mut h = Sha256::new();
        h.update(self.secret);
        match top.branch().filter(|b| b.starts_with("z9hG4bK")) {
            Some(b) => h.update(b.as_bytes()),
            // RFC 2543 peers: hash what identifies the transaction instead.
            None => {
                h.update(msg.call_id());
                h.update(msg.cseq.to_le_bytes());
                h.update(
                    header::text(msg.header(HeaderName::From).unwrap_or_default())
                        .unwrap_or_default()
                        .as_bytes(),
                );
            }
        }
        let (host, port) = top.sent_by();
        h.update(host.as_bytes());
        h.update(port.to_le_bytes());
        h.update(ruri);
        let digest = h.finalize();
        let mut hex = [0u8; 24];
        let mut out = String::with_capacity(BRANCH_PREFIX.len() + hex.len());
        out.push_str(BRANCH_PREFIX);
        hex::encode_to_slice(&digest[..12], &mut hex).expect("12 bytes are 24 hex digits");
        out.push_str(std::str::from_utf8(&hex).expect("hex digits are ASCII"));
        out
    }

    pub(super) fn via_line(&self, branch: &str, dest: Peer) -> ViaLine {
        let prefix = &self.via_prefix[transport_index(dest)];
        let mut line = ViaLine::new();
        line.extend_from_slice(prefix.as_bytes());
        line.extend_from_slice(branch.as_bytes());
        line.extend_from_slice(b"\r\n");
        line
    }

    /// Whether a host/port in a URI or Via is this proxy.
    fn is_self(&self, host: &str, port: Option<u16>) -> bool {
        let port = port.unwrap_or(super::uri::DEFAULT_SIP_PORT);
        let port_ok = port == self.local.addr.port() || Some(port) == self.local.tls_port;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        // The text compare first: the proxy's own address written as it
        // is configured needs no parse.
        port_ok
            && (host
                == self
                    .local
                    .host
                    .trim_start_matches('[')
                    .trim_end_matches(']')
                || host.parse::<std::net::IpAddr>().ok() == Some(self.local.addr.ip())
                || (self.local.addr.ip().is_loopback() && host.eq_ignore_ascii_case("localhost")))
    }

    fn is_trusted(&self, ip: std::net::IpAddr) -> bool {
        self.options.trusted_peers.iter().any(|n| n.contains(&ip))
    }

    fn is_accepted(&self, ip: std::net::IpAddr) -> bool {
        self.options.accept_from.iter().any(|n| n.contains(&ip))
    }

    /// Where responses to a request go: the source, on the port the top Via
    /// asks for (RFC 3261 §18.2.2, RFC 3581).
    fn reply_peer(&self, top: &Via<'_>, from: Peer) -> Peer {
        match from {
            Peer::Tcp(_) | Peer::Tls(_) => from,
            Peer::Udp(src) => {
                let rport = header::param(top.params, "rport").is_some();
                let port = if rport { src.port() } else { top.sent_by().1 };
                Peer::Udp(SocketAddr::new(src.ip(), port))
            }
        }
    }

    fn reply(
        self: &Arc<Self>,
        msg: &Message,
        top: &Via<'_>,
        from: Peer,
        code: u16,
        extra: &[String],
    ) {
        let tag = self.to_tag(top);
        let resp = respond::build(msg, code, Some(&tag), extra);
        self.send(self.reply_peer(top, from), resp);
    }

    /// A To tag that is the same for every retransmission of one transaction.
    fn to_tag(&self, top: &Via<'_>) -> String {
        let mut h = Sha256::new();
        h.update(self.secret);
        h.update(top.branch().unwrap_or_default().as_bytes());
        hex::encode(&h.finalize()[..TO_TAG_BYTES])
    }

    /// Whether `tag` is the one [`Proxy::to_tag`] writes for this branch,
    /// i.e. the request answers a response of the proxy's own. Tags of
    /// another length (nearly every UAS's) are told apart without hashing.
    fn is_own_to_tag(&self, top: &Via<'_>, tag: &str) -> bool {
        tag.len() == 2 * TO_TAG_BYTES && tag == self.to_tag(top)
    }

    fn drop_msg(&self, why: &str) {
        self.stats.dropped.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(why, "dropped message");
    }
}

/// TCP and TLS messages arrive here from their connection's reader task.
impl<S: Screen> Inbound for Proxy<S> {
    fn received(self: Arc<Self>, message: Bytes, from: Peer) {
        self.handle(message, from);
    }

    fn undeliverable(self: Arc<Self>, message: Bytes, to: Peer) {
        self.on_undeliverable(message, to);
    }
}
