//! The proxy core (RFC 3261 §16): what happens to each received message.
//!
//! Initial INVITEs are screened inside an INVITE server transaction
//! ([`super::transaction`]); every other request is relayed statelessly with a
//! deterministic branch, and responses follow the Via chain back. Relayed bytes
//! are the received bytes with edits spliced in ([`super::relay`]).
//!
//! This file routes requests (loose routing, checks); `in_transaction`
//! handles what belongs to an INVITE under way (retransmissions, CANCEL,
//! ACK, timers); `invite` holds the screened INVITE and carries out
//! decisions; `response` routes responses back.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use bytes::Bytes;
use dashmap::DashMap;
use sha2::{Digest, Sha256};
use tokio::sync::{Semaphore, mpsc};

use super::header::{self, NameAddr, Via};
use super::message::{HeaderName, Message, Method, ParseError};
use super::relay::{self, RequestEdit};
use super::respond;
use super::transaction::TxTable;
use super::transport::Peer;
use super::uri::Uri;
use crate::config::Config;
use crate::pipeline::Pipeline;

mod in_transaction;
mod invite;
mod response;

/// Every branch the proxy writes starts with this (RFC 3261 magic cookie + our mark).
pub const BRANCH_PREFIX: &str = "z9hG4bK-ss-";
/// Bytes of keyed hash in the proxy's own To tags (written as hex).
const TO_TAG_BYTES: usize = 6;
/// Calls waiting on live lookups at once; beyond this, `on_lookup_failure` applies.
pub const MAX_SCREENING: usize = 10_000;

/// Methods counted in [`Stats::requests`], in index order.
pub const METHODS: [&str; 7] = [
    "INVITE", "ACK", "CANCEL", "BYE", "OPTIONS", "REGISTER", "other",
];

/// Counters for tests, logs and metrics. Fixed arrays, not maps: the SIP
/// thread bumps them per packet without hashing or locking.
#[derive(Debug, Default)]
pub struct Stats {
    pub received: AtomicU64,
    /// Requests received, by [`METHODS`] index.
    pub requests: [AtomicU64; 7],
    /// Responses received, by class (index 0 = 1xx … 5 = 6xx).
    pub responses: [AtomicU64; 6],
    pub parse_errors: AtomicU64,
    pub forbidden: AtomicU64,
    pub invites_screened: AtomicU64,
    pub retransmissions_absorbed: AtomicU64,
    /// New INVITEs answered 503 because the transaction table was full.
    pub refused_full: AtomicU64,
    /// Forwarded INVITEs given up on at Timer C (408 up; CANCEL down after
    /// a provisional).
    pub timer_c: AtomicU64,
    pub dropped: AtomicU64,
}

/// The proxy's addresses, as written into Via and Record-Route.
#[derive(Debug, Clone)]
pub struct LocalAddr {
    pub addr: SocketAddr,
    /// Host as written in SIP (IPv6 in brackets).
    pub host: String,
}

pub struct Proxy {
    pub(crate) config: Arc<Config>,
    pub(crate) pipeline: Arc<Pipeline>,
    pub(crate) local: LocalAddr,
    pub(crate) next_hop: Peer,
    /// Blocking UDP socket: read by the SIP thread, written from anywhere.
    pub(crate) udp: Arc<std::net::UdpSocket>,
    /// Runtime for what does wait (live lookups, TCP connections).
    pub(crate) rt: tokio::runtime::Handle,
    pub(crate) tcp: DashMap<SocketAddr, mpsc::Sender<Bytes>>,
    pub(crate) tcp_slots: Arc<Semaphore>,
    pub(crate) txs: TxTable,
    pub(crate) stats: Stats,
    pub(crate) screening: Arc<Semaphore>,
    pub(crate) draining: AtomicBool,
    /// Held by each task screening a call; shutdown waits for all to be dropped.
    pub(crate) drain_guard: parking_lot::Mutex<Option<mpsc::Sender<()>>>,
    secret: [u8; 16],
    /// `Via: SIP/2.0/UDP host:port;branch=`, then the same for TCP: the part
    /// of the proxy's Via that never changes, written once here so that
    /// each forwarded request only copies bytes ([`Proxy::via_line`]).
    via_prefix: [String; 2],
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

impl Proxy {
    pub(crate) fn new(
        config: Arc<Config>,
        pipeline: Arc<Pipeline>,
        local: LocalAddr,
        next_hop: Peer,
        udp: Arc<std::net::UdpSocket>,
        drain_guard: mpsc::Sender<()>,
        rt: tokio::runtime::Handle,
    ) -> Self {
        let max_transactions = config.sip.max_transactions;
        let timer_c = std::time::Duration::from_secs(u64::from(config.sip.timer_c_s));
        let via_prefix = ["UDP", "TCP"].map(|transport| {
            format!(
                "Via: SIP/2.0/{transport} {}:{};branch=",
                local.host,
                local.addr.port()
            )
        });
        Proxy {
            config,
            pipeline,
            local,
            next_hop,
            udp,
            rt,
            tcp: DashMap::new(),
            tcp_slots: Arc::new(Semaphore::new(super::transport::MAX_TCP_CONNECTIONS)),
            txs: TxTable::new(max_transactions, timer_c),
            stats: Stats::default(),
            screening: Arc::new(Semaphore::new(MAX_SCREENING)),
            draining: AtomicBool::new(false),
            drain_guard: parking_lot::Mutex::new(Some(drain_guard)),
            secret: random_secret(),
            via_prefix,
        }
    }

    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// INVITE transactions remembered now.
    pub fn transactions(&self) -> usize {
        self.txs.len()
    }

    /// Entry point for every received message.
    pub fn handle(self: &Arc<Self>, buf: Bytes, from: Peer) {
        self.stats.received.fetch_add(1, Ordering::Relaxed);
        match Message::parse_or_return(buf) {
            Ok(msg) => match msg.method() {
                Some(m) => {
                    self.stats.requests[method_index(m)].fetch_add(1, Ordering::Relaxed);
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
        let prefix = &self.via_prefix[usize::from(dest.is_tcp())];
        let mut line = ViaLine::new();
        line.extend_from_slice(prefix.as_bytes());
        line.extend_from_slice(branch.as_bytes());
        line.extend_from_slice(b"\r\n");
        line
    }

    /// Whether a host/port in a URI or Via is this proxy.
    fn is_self(&self, host: &str, port: Option<u16>) -> bool {
        let port_ok = port.unwrap_or(super::uri::DEFAULT_SIP_PORT) == self.local.addr.port();
        let host = host.trim_start_matches('[').trim_end_matches(']');
        port_ok
            && (host.parse::<std::net::IpAddr>().ok() == Some(self.local.addr.ip())
                || host
                    == self
                        .local
                        .host
                        .trim_start_matches('[')
                        .trim_end_matches(']')
                || (self.local.addr.ip().is_loopback() && host.eq_ignore_ascii_case("localhost")))
    }

    fn is_trusted(&self, ip: std::net::IpAddr) -> bool {
        self.config
            .sip
            .trusted_peers
            .iter()
            .any(|n| n.contains(&ip))
    }

    fn is_accepted(&self, ip: std::net::IpAddr) -> bool {
        self.config.sip.accept_from.iter().any(|n| n.contains(&ip))
    }

    /// RFC 3261 §16.3 step 4: our own Via below, with the branch this request
    /// would get again, means the same request came back unchanged.
    fn is_loop(&self, msg: &Message, ruri: &[u8]) -> bool {
        // Borrowed element texts (a fold is the only reason to copy): this
        // runs for every request, and most have one or two Vias.
        let mut vias: smallvec::SmallVec<[std::borrow::Cow<'_, str>; 4]> =
            smallvec::SmallVec::new();
        for h in msg.headers_named(HeaderName::Via) {
            let v = msg.value(h);
            for r in header::split_commas(v) {
                vias.extend(header::text(&v[r]));
            }
        }
        vias.windows(2).any(|pair| {
            let (Some(ours), Some(below)) = (Via::parse(&pair[0]), Via::parse(&pair[1])) else {
                return false;
            };
            let branch = ours.branch().unwrap_or_default();
            branch.starts_with(BRANCH_PREFIX)
                && self.is_self(ours.host, ours.port)
                && self.branch_for(msg, &below, ruri) == branch
        })
    }

    /// Where responses to a request go: the source, on the port the top Via
    /// asks for (RFC 3261 §18.2.2, RFC 3581).
    fn reply_peer(&self, top: &Via<'_>, from: Peer) -> Peer {
        match from {
            Peer::Tcp(_) => from,
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

    fn on_request(self: &Arc<Self>, msg: Message, from: Peer) {
        let method = msg.method().unwrap_or(Method::Other);
        // Copies on the stack of the top Via and the Request-URI: `msg` moves
        // on below while they are still needed, and a heap copy of each, for
        // every request, is what this avoids.
        let Some(top_copy) = relay::top_via(&msg).map(|r| StackText::from_slice(&msg.buf[r]))
        else {
            return self.drop_msg("request without a Via");
        };
        let Ok(top_text) = std::str::from_utf8(&top_copy) else {
            return self.drop_msg("request without a readable Via");
        };
        let Some(top) = Via::parse(top_text) else {
            if let Some(resp) = respond::build_minimal(&msg.buf, 400) {
                self.send(from, resp);
            }
            return self.drop_msg("bad top Via");
        };
        if let Err(why) = check_request(&msg) {
            self.stats.parse_errors.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(peer = %from.addr(), why, "malformed request");
            if method != Method::Ack {
                let reason = format!("Warning: 399 sipsentry \"{why}\"");
                self.reply(&msg, &top, from, 400, &[reason]);
            }
            return;
        }
        let ruri = StackText::from_slice(msg.request_uri());
        let key = self.branch_for(&msg, &top, &ruri);
        let to_text = header::text(msg.header(HeaderName::To).unwrap_or_default());
        let to_tag = to_text
            .as_deref()
            .and_then(NameAddr::parse)
            .and_then(|n| n.tag());
        let in_dialog = to_tag.is_some();

        match method {
            Method::Ack => {
                let answers_us = to_tag.is_some_and(|t| self.is_own_to_tag(&top, t));
                return self.on_ack(msg, from, key, answers_us);
            }
            Method::Cancel => return self.on_cancel(msg, &top, from, key),
            Method::Invite if !in_dialog => {
                if let Some(tx) = self.txs.get(&key) {
                    return self.on_retransmission(&tx);
                }
            }
            _ => {}
        }

        if !in_dialog && !self.is_accepted(from.addr().ip()) {
            self.stats.forbidden.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(peer = %from.addr(), "initial request from a source outside sip.accept_from");
            return self.reply(&msg, &top, from, 403, &[]);
        }
        let ruri_str = String::from_utf8_lossy(&ruri);
        let to_self = Uri::parse(&ruri_str).is_some_and(|u| self.is_self(u.host, u.port));
        let own_route = self.own_route(&msg);
        if method == Method::Options
            && to_self
            && own_route.is_none()
            && msg.header(HeaderName::Route).is_none()
        {
            return self.reply(
                &msg,
                &top,
                from,
                200,
                &["Allow: INVITE, ACK, CANCEL, BYE, OPTIONS".into()],
            );
        }
        if msg.max_forwards() == Some(0) {
            return self.reply(&msg, &top, from, 483, &[]);
        }
        if self.is_loop(&msg, &ruri) {
            return self.reply(&msg, &top, from, 482, &[]);
        }
        if method == Method::Invite && !in_dialog {
            return self.on_initial_invite(msg, &top, from, key);
        }
        // Everything else is relayed statelessly.
        let dest = self.route(&msg, own_route.as_ref(), in_dialog, to_self);
        let via = self.via_line(&key, dest);
        let out = relay::forward_request(
            &msg,
            &RequestEdit {
                via_line: &via,
                source: from.addr(),
                new_ruri: None,
                record_route: None,
                strip_labels: !self.is_trusted(from.addr().ip()),
                own_route: own_route.map(|(r, _)| r),
                labels: None,
            },
        );
        self.send(dest, out);
    }

    /// The proxy's own Route element at the top of the Route set, and the next
    /// Route URI after it, if any.
    pub(super) fn own_route(
        &self,
        msg: &Message,
    ) -> Option<(std::ops::Range<usize>, Option<String>)> {
        let mut elems = Vec::new();
        for h in msg.headers_named(HeaderName::Route) {
            let v = msg.value(h);
            for r in header::split_commas(v) {
                elems.push(h.value.start + r.start..h.value.start + r.end);
            }
        }
        let first = elems.first()?.clone();
        let text = header::text(&msg.buf[first.clone()])?;
        let na = NameAddr::parse(&text)?;
        let uri = Uri::parse(na.uri)?;
        if !self.is_self(uri.host, uri.port) {
            return None;
        }
        let next = elems
            .get(1)
            .and_then(|r| header::text(&msg.buf[r.clone()]).map(|t| t.into_owned()));
        Some((first, next))
    }

    /// Next hop of a relayed request: the Route set (loose routing), else the
    /// Request-URI for in-dialog requests, else `sip.next_hop`.
    fn route(
        &self,
        msg: &Message,
        own: Option<&(std::ops::Range<usize>, Option<String>)>,
        in_dialog: bool,
        to_self: bool,
    ) -> Peer {
        let route_uri = match own {
            Some((_, next)) => next.clone(),
            None => msg.header(HeaderName::Route).and_then(|v| {
                header::split_commas(v)
                    .first()
                    .and_then(|r| header::text(&v[r.clone()]).map(|t| t.into_owned()))
            }),
        };
        if let Some(route) = route_uri
            && let Some(peer) =
                NameAddr::parse(&route).and_then(|n| Uri::parse(n.uri).and_then(|u| peer_of(&u)))
        {
            return peer;
        }
        if in_dialog && !to_self {
            let ruri = String::from_utf8_lossy(msg.request_uri());
            if let Some(peer) = Uri::parse(&ruri).and_then(|u| peer_of(&u)) {
                return peer;
            }
        }
        self.next_hop
    }

    fn drop_msg(&self, why: &str) {
        self.stats.dropped.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(why, "dropped message");
    }
}

/// Header syntax a proxy depends on (RFC 4475 §3.1.2): every Via element
/// readable; From and To each exactly one name-addr with a URI.
fn check_request(msg: &Message) -> Result<(), &'static str> {
    for h in msg.headers_named(HeaderName::Via) {
        let v = msg.value(h);
        let elems = header::split_commas(v);
        if elems.is_empty() {
            return Err("empty Via");
        }
        for r in elems {
            let text = header::text(&v[r]).ok_or("Via is not UTF-8")?;
            Via::parse(&text).ok_or("malformed Via")?;
        }
    }
    for (name, what) in [
        (HeaderName::From, "malformed From"),
        (HeaderName::To, "malformed To"),
    ] {
        let v = msg.header(name).unwrap_or_default();
        if header::split_commas(v).len() != 1 {
            return Err(what);
        }
        let text = header::text(v).ok_or(what)?;
        let na = NameAddr::parse(&text).ok_or(what)?;
        if !na.uri.contains(':') {
            return Err(what);
        }
    }
    Ok(())
}

/// A URI's address when its host is an IP literal.
fn peer_of(uri: &Uri<'_>) -> Option<Peer> {
    let ip: std::net::IpAddr = uri.host.parse().ok()?;
    let addr = SocketAddr::new(ip, uri.port.unwrap_or(super::uri::DEFAULT_SIP_PORT));
    let tcp = uri
        .param("transport")
        .is_some_and(|t| t.eq_ignore_ascii_case("tcp"));
    Some(if tcp {
        Peer::Tcp(addr)
    } else {
        Peer::Udp(addr)
    })
}

/// The [`METHODS`] index of a method.
fn method_index(m: Method) -> usize {
    match m {
        Method::Invite => 0,
        Method::Ack => 1,
        Method::Cancel => 2,
        Method::Bye => 3,
        Method::Options => 4,
        Method::Register => 5,
        _ => 6,
    }
}
