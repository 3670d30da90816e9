//! Responses from downstream, routed back by the Via the proxy removes.

use std::sync::Arc;
use std::time::Instant;

use super::failover::Failure;
use super::{BRANCH_PREFIX, Proxy, Screen, split_attempt};
use crate::sip::header::{self, Via, lossy};
use crate::sip::message::{HeaderName, Message, Method};
use crate::sip::relay;
use crate::sip::transaction::{Forwarded, TxState};
use crate::sip::transport::Peer;

impl<S: Screen> Proxy<S> {
    pub(super) fn on_response(self: &Arc<Self>, msg: Message) {
        if let Some(code) = msg.status() {
            self.stats.count_response(code);
        }
        let Some(top_range) = relay::top_via(&msg) else {
            return self.drop_msg("response without Via");
        };
        let top_text = lossy(&msg.buf[top_range]);
        let Some(top) = Via::parse(&top_text) else {
            return self.drop_msg("response with a bad Via");
        };
        let branch = top.branch().unwrap_or_default();
        if !branch.starts_with(BRANCH_PREFIX) || !self.is_self(top.host, top.port) {
            return self.drop_msg("response whose top Via is not ours");
        }
        let code = msg.status().unwrap_or(0);
        if branch.starts_with(super::PING_BRANCH) {
            return self.on_ping_response(branch, code);
        }
        let (key, attempt) = split_attempt(branch);
        let tx = (msg.cseq_method == Method::Invite)
            .then(|| self.txs.get(key))
            .flatten();
        if let Some(tx) = &tx {
            let mut t = tx.lock();
            let current = t
                .forwarded
                .as_ref()
                .map_or(attempt == 0, |f| f.attempt == attempt);
            if !current && !(200..300).contains(&code) {
                // From a target given up on (a late answer after the
                // failover): only an answered call still goes through.
                drop(t);
                return self.drop_msg("response from a next-hop target given up on");
            }
            if code == 100 {
                // Stops Timers A and B; never forwarded (RFC 3261 §16.7 step 3).
                t.stop_timer();
                t.provisional = true;
                return;
            }
            let absorb = code == 503
                && current
                && t.state == TxState::Forwarded
                && self.can_fail_over(t.forwarded.as_ref());
            drop(t);
            if absorb {
                self.ack_absorbed(tx, &msg);
                return self.fail_over(tx, Failure::Unavailable);
            }
        }
        if code == 100 {
            return; // never forwarded, with or without a transaction
        }
        let Some(out) = relay::forward_response(&msg) else {
            return self.drop_msg("response with only our Via");
        };
        if let Some(tx) = tx {
            let (peer, _invite, track) = {
                let mut t = tx.lock();
                if !t.relays_upstream(code) {
                    drop(t);
                    return self.drop_msg("response after the proxy's own final response");
                }
                let mut track = None;
                let invite = if code >= 200 && t.state == TxState::Forwarded {
                    track = t.forwarded.as_mut().and_then(Forwarded::take_track);
                    t.complete(out.clone(), false)
                } else {
                    t.stop_timer();
                    t.provisional |= code < 200;
                    t.touched = Instant::now();
                    t.trying_owed = false;
                    t.last_response = Some(out.clone());
                    None
                };
                (t.reply_to, invite, track)
            };
            // The finished INVITE is freed after the send, not before it.
            self.send(peer, out);
            if let Some((track, after)) = track {
                self.screen.relayed_final(track, code, after);
            }
            return;
        }
        // Stateless: the Via below ours says where (received/rport honoured).
        let next = second_via(&msg).and_then(|text| {
            let via = Via::parse(&text)?;
            let addr = via.response_target()?;
            Some(if via.is_tls() {
                Peer::Tls(addr)
            } else if via.is_tcp() {
                Peer::Tcp(addr)
            } else {
                Peer::Udp(addr)
            })
        });
        match next {
            Some(peer) if routable(peer.addr()) => self.send(peer, out),
            Some(_) => self.drop_msg(
                "response whose next Via is a broadcast, multicast or unspecified address",
            ),
            None => self.drop_msg("response whose next Via is unreachable"),
        }
    }
}

/// The second Via element of a message (the one below the proxy's own).
fn second_via(msg: &Message) -> Option<std::borrow::Cow<'_, str>> {
    msg.headers_named(HeaderName::Via)
        .flat_map(|h| {
            let v = msg.value(h);
            header::split_commas(v).into_iter().map(move |r| &v[r])
        })
        .nth(1)
        .and_then(header::text)
}

/// Whether a message may be sent to `addr`: never to a broadcast,
/// multicast or unspecified address, or port 0 (a Via may name anything, as RFC 4475's
/// `bcast` shows).
fn routable(addr: std::net::SocketAddr) -> bool {
    let ip = addr.ip();
    let broadcast = match ip {
        std::net::IpAddr::V4(v4) => v4.is_broadcast(),
        std::net::IpAddr::V6(_) => false,
    };
    addr.port() != 0 && !ip.is_unspecified() && !ip.is_multicast() && !broadcast
}
