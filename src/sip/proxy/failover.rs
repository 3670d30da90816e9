//! Serial forking over the next-hop targets (RFC 3261 §16.6–16.7, RFC 3263
//! §4.3): an initial INVITE whose target sent nothing within
//! `sip.failover_timeout_ms`, refused the connection (or its TLS
//! handshake), or answered 503 goes to the next target in the list, with a
//! branch of its own. The trunk sees one final response: the 503 is
//! ACKed here and not relayed while another target is left.
//!
//! Only requests routed by `sip.next_hop` fail over; one that followed a
//! Route set has nowhere else to go.

use std::time::{Duration, Instant};

use bytes::Bytes;

use super::{Proxy, Screen, attempt_branch, split_attempt};
use crate::sip::header::{Via, lossy};
use crate::sip::message::{Message, Method};
use crate::sip::relay;
use crate::sip::transaction::{Retransmit, TxRef, TxState};
use crate::sip::transport::Peer;

/// Why a target is given up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Failure {
    /// Nothing came back within `sip.failover_timeout_ms`.
    Silent,
    /// The connection (or its TLS handshake) failed.
    Refused,
    /// It answered 503.
    Unavailable,
}

impl Failure {
    fn as_str(self) -> &'static str {
        match self {
            Failure::Silent => "no response within sip.failover_timeout_ms",
            Failure::Refused => "connection refused or TLS handshake failed",
            Failure::Unavailable => "503 Service Unavailable",
        }
    }
}

impl<S: Screen> Proxy<S> {
    /// The timers of an INVITE relayed to `dest`: Timer A over UDP, Timer B
    /// alone over a stream; given up at `sip.failover_timeout_ms` while the
    /// target (at `index` in the next-hop list) has one after it.
    pub(super) fn timers_for(&self, dest: Peer, out: &Bytes, index: Option<usize>) -> Retransmit {
        let r = if dest.is_stream() {
            Retransmit::timer_b(dest)
        } else {
            Retransmit::new(dest, out.clone(), None, true)
        };
        match index.and_then(|i| self.next_hops.after(i)) {
            Some(_) => {
                let wait = Duration::from_millis(u64::from(self.options.failover_timeout_ms));
                r.failing_over_at(Instant::now() + wait)
            }
            None => r,
        }
    }

    /// Whether a 503 on this transaction goes to the next target rather
    /// than to the trunk.
    pub(super) fn can_fail_over(&self, fwd: Option<&crate::sip::transaction::Forwarded>) -> bool {
        fwd.and_then(|f| f.target)
            .is_some_and(|i| self.next_hops.after(i).is_some())
    }

    /// Sends a forwarded INVITE on to the next target after the one that
    /// failed. With none left: 503 to the trunk for a refused connection
    /// (Timer B's 408 would only say the same 32 s later), 408 for silence.
    pub(super) fn fail_over(&self, tx: &TxRef, why: Failure) {
        let mut t = tx.lock();
        if t.state != TxState::Forwarded || (why == Failure::Silent && t.provisional) {
            return;
        }
        let Some(fwd) = t.forwarded.as_ref() else {
            return;
        };
        let Some(index) = fwd.target else {
            return;
        };
        let failed = fwd.dest;
        let Some((next_index, next)) = self.next_hops.after(index) else {
            drop(t);
            let code = if why == Failure::Refused { 503 } else { 408 };
            return self.final_response(tx, code, &[]);
        };
        let attempt = fwd.attempt.saturating_add(1);
        let via = self.via_line(&attempt_branch(&t.key, attempt), next);
        let Some(out) = relay::replace_top_via(&fwd.sent, &via) else {
            return;
        };
        let r = self.timers_for(next, &out, Some(next_index));
        if let Some(fwd) = t.forwarded.as_mut() {
            fwd.dest = next;
            fwd.attempt = attempt;
            fwd.target = Some(next_index);
            fwd.sent = out.clone();
        }
        t.provisional = false;
        t.touched = Instant::now();
        self.txs.start_retransmit(tx, &mut t, r);
        drop(t);
        self.stats
            .failovers
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        tracing::info!(failed = %failed.addr(), next = %next.addr(), why = why.as_str(), "next hop target failed; trying the next");
        self.send(next, out);
    }

    /// The ACK for a 503 absorbed from the target of `tx`, sent there.
    pub(super) fn ack_absorbed(&self, tx: &TxRef, response: &Message) {
        let t = tx.lock();
        let (Some(invite), Some(fwd)) = (t.invite.as_ref(), t.forwarded.as_ref()) else {
            return;
        };
        let (via, ruri, own) = self.as_forwarded(&t.key, invite, fwd);
        let to = response
            .header(crate::sip::message::HeaderName::To)
            .unwrap_or_default();
        let ack = crate::sip::cancel::ack_for(invite, &via, ruri, &own, to);
        let dest = fwd.dest;
        drop(t);
        self.send(dest, ack);
    }

    /// A message the transport could not deliver to `to` (the connection
    /// or its TLS handshake failed): an INVITE of the proxy's own tries
    /// the next target at once.
    pub(super) fn on_undeliverable(&self, message: Bytes, to: Peer) {
        let Ok(msg) = Message::parse(message) else {
            return;
        };
        if msg.method() != Some(Method::Invite) {
            return;
        }
        let Some(top) = relay::top_via(&msg) else {
            return;
        };
        let text = lossy(&msg.buf[top]);
        let Some(branch) = Via::parse(&text).and_then(|v| v.branch()) else {
            return;
        };
        let (key, attempt) = split_attempt(branch);
        let Some(tx) = self.txs.get(key) else {
            return;
        };
        let current = tx
            .lock()
            .forwarded
            .as_ref()
            .is_some_and(|f| f.attempt == attempt && f.dest == to);
        if current {
            self.fail_over(&tx, Failure::Refused);
        }
    }
}
