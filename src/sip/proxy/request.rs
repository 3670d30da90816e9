//! Every request but an initial INVITE's own screening: the checks each
//! request passes (a readable Via, well-formed From and To, the source
//! allowed, Max-Forwards, loops), OPTIONS to the proxy itself, loose
//! routing (RFC 3261 §16.4, §16.12) and the stateless relay.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::{BRANCH_PREFIX, Proxy, Screen, StackText};
use crate::sip::header::{self, NameAddr, Via, lossy};
use crate::sip::message::{HeaderName, Message, Method};
use crate::sip::relay::{self, RequestEdit};
use crate::sip::respond;
use crate::sip::transport::Peer;
use crate::sip::uri::{DEFAULT_SIP_PORT, DEFAULT_SIPS_PORT, Scheme, Uri};

/// The proxy's own elements at the top of a request's Route set.
#[derive(Debug, Clone, Default)]
pub(super) struct OwnRoute {
    /// Their absolute byte ranges: one, or two where the proxy
    /// record-routed a change of transport (RFC 5658).
    pub elems: smallvec::SmallVec<[std::ops::Range<usize>; 2]>,
    /// The Route element after them, if any.
    pub next: Option<String>,
}

impl<S: Screen> Proxy<S> {
    /// Whether `from` may send this request: initial requests only from
    /// `sip.accept_from`; in-dialog ones from there or from the next hop
    /// (the PBX's BYE toward the trunk). A made-up To tag gets a request
    /// no further than an initial one would.
    pub(super) fn may_send(&self, from: Peer, in_dialog: bool) -> bool {
        let ip = from.addr().ip();
        self.is_accepted(ip) || (in_dialog && self.next_hops.has_ip(ip))
    }

    /// RFC 3261 §16.3 step 4: our own Via below, with the branch this request
    /// would get again, means the same request came back unchanged.
    pub(super) fn is_loop(&self, msg: &Message, ruri: &[u8]) -> bool {
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

    pub(super) fn on_request(self: &Arc<Self>, msg: Message, from: Peer) {
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
        if from.is_tls() {
            // Where this TLS peer listens, for in-dialog requests to it.
            self.transport.alias_tls(from, top.sent_by().1);
        }
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

        if !self.may_send(from, in_dialog) {
            self.stats.forbidden.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(peer = %from.addr(), in_dialog, "request from a source outside sip.accept_from");
            return self.reply(&msg, &top, from, 403, &[]);
        }
        let ruri_str = lossy(&ruri);
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
        // §16.3 step 5: the proxy supports no extension a request may
        // require of it.
        if let Some(unsupported) = proxy_require(&msg) {
            let unsupported = format!("Unsupported: {unsupported}");
            return self.reply(&msg, &top, from, 420, &[unsupported]);
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
                own_route: own_route.as_ref().map_or(&[], |o| &o.elems[..]),
                labels: None,
                verstat: None,
            },
        );
        self.send(dest, out);
    }

    /// The proxy's own Route elements at the top of the Route set (at most
    /// two, the pair it writes when the transport changes), and the next
    /// Route URI after them, if any.
    pub(super) fn own_route(&self, msg: &Message) -> Option<OwnRoute> {
        // Most requests have no Route at all: nothing to collect.
        msg.header(HeaderName::Route)?;
        let mut own = OwnRoute::default();
        let elems = msg.headers_named(HeaderName::Route).flat_map(|h| {
            header::split_commas(msg.value(h))
                .into_iter()
                .map(move |r| h.value.start + r.start..h.value.start + r.end)
        });
        for elem in elems {
            let text = header::text(&msg.buf[elem.clone()])?;
            let ours = own.elems.len() < 2
                && NameAddr::parse(&text)
                    .and_then(|na| Uri::parse(na.uri))
                    .is_some_and(|uri| self.is_self(uri.host, uri.port.or(default_port(&uri))));
            if !ours {
                own.next = Some(text.into_owned());
                break;
            }
            own.elems.push(elem);
        }
        (!own.elems.is_empty()).then_some(own)
    }

    /// Next hop of a relayed request: the Route set (loose routing), else the
    /// Request-URI for in-dialog requests, else `sip.next_hop`.
    pub(super) fn route(
        &self,
        msg: &Message,
        own: Option<&OwnRoute>,
        in_dialog: bool,
        to_self: bool,
    ) -> Peer {
        if let Some(peer) = route_set(msg, own) {
            return peer;
        }
        if in_dialog && !to_self {
            let ruri = lossy(msg.request_uri());
            if let Some(peer) = Uri::parse(&ruri).and_then(|u| peer_of(&u)) {
                return peer;
            }
        }
        self.first_hop().1
    }

    /// The first next-hop target to try and its place in the list (`None`:
    /// the list is empty, which only an embedding program can arrange).
    pub(super) fn first_hop(&self) -> (Option<usize>, Peer) {
        match self.next_hops.first() {
            Some((i, peer)) => (Some(i), peer),
            None => (None, Peer::Udp(SocketAddr::from(([0, 0, 0, 0], 0)))),
        }
    }
}

/// Where the Route set sends a request: the first Route URI after the
/// proxy's own entries, when its host is an address.
pub(super) fn route_set(msg: &Message, own: Option<&OwnRoute>) -> Option<Peer> {
    let route_uri = match own {
        Some(own) => own.next.clone(),
        None => msg.header(HeaderName::Route).and_then(|v| {
            header::split_commas(v)
                .first()
                .and_then(|r| header::text(&v[r.clone()]).map(|t| t.into_owned()))
        }),
    };
    let route = route_uri?;
    NameAddr::parse(&route).and_then(|n| Uri::parse(n.uri).and_then(|u| peer_of(&u)))
}

/// Header syntax a proxy depends on (RFC 4475 §3.1.2): every Via element
/// readable; From and To each exactly one name-addr with a URI. The top
/// Via element is not parsed again: the caller has parsed it already (it
/// answers 400 to a request whose top Via does not parse), and a Via parse
/// is one of the costlier steps of a relayed request.
fn check_request(msg: &Message) -> Result<(), &'static str> {
    // RFC 4475 §3.1.2.19 (multi01): a request has one of each of these. A
    // second From could otherwise screen one caller and relay another.
    let mut seen = [0u8; 5];
    for h in &msg.headers {
        let i = match h.name {
            HeaderName::From => 0,
            HeaderName::To => 1,
            HeaderName::CallId => 2,
            HeaderName::CSeq => 3,
            HeaderName::MaxForwards => 4,
            _ => continue,
        };
        seen[i] += 1;
        if seen[i] > 1 {
            return Err([
                "more than one From",
                "more than one To",
                "more than one Call-ID",
                "more than one CSeq",
                "more than one Max-Forwards",
            ][i]);
        }
    }
    for (i, h) in msg.headers_named(HeaderName::Via).enumerate() {
        let v = msg.value(h);
        let elems = header::split_commas(v);
        if elems.is_empty() {
            return Err("empty Via");
        }
        // The top element: the first of the first Via header.
        for r in elems.into_iter().skip(usize::from(i == 0)) {
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

/// A URI's address when its host is an IP literal: over TLS for `sips:` or
/// `;transport=tls` (port 5061 unless given), TCP for `;transport=tcp`.
fn peer_of(uri: &Uri<'_>) -> Option<Peer> {
    let ip: std::net::IpAddr = uri.host.parse().ok()?;
    let port = uri.port.or(default_port(uri)).unwrap_or(DEFAULT_SIP_PORT);
    let addr = SocketAddr::new(ip, port);
    let transport = uri.param("transport").unwrap_or_default();
    Some(if is_tls(uri) {
        Peer::Tls(addr)
    } else if transport.eq_ignore_ascii_case("tcp") {
        Peer::Tcp(addr)
    } else {
        Peer::Udp(addr)
    })
}

fn is_tls(uri: &Uri<'_>) -> bool {
    uri.scheme == Scheme::Sips
        || uri
            .param("transport")
            .is_some_and(|t| t.eq_ignore_ascii_case("tls"))
}

/// 5061 for a URI reached over TLS without a port (RFC 3263 §4.2), else none
/// (the caller's default applies).
fn default_port(uri: &Uri<'_>) -> Option<u16> {
    is_tls(uri).then_some(DEFAULT_SIPS_PORT)
}

/// The option tags of the request's Proxy-Require headers, comma-joined, if
/// it has any.
fn proxy_require(msg: &Message) -> Option<String> {
    let mut tags: Vec<String> = Vec::new();
    for h in msg.headers_named(HeaderName::ProxyRequire) {
        let v = msg.value(h);
        for r in header::split_commas(v) {
            if let Some(t) = header::text(&v[r]) {
                let t = t.trim_ascii();
                // Only tokens go back into the header (RFC 3261 §25.1).
                if !t.is_empty() && t.bytes().all(|b| b.is_ascii_graphic() && b != b',') {
                    tags.push(t.to_string());
                }
            }
        }
    }
    (!tags.is_empty()).then(|| tags.join(", "))
}
