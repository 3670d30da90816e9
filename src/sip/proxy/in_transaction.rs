//! Requests and timers of an INVITE transaction already under way: a
//! retransmitted INVITE, its CANCEL and its ACK, and what the ticker finds
//! due (retransmissions, Timer B, expiry, Timer C).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use super::{Proxy, Screen, attempt_branch};
use crate::sip::cancel;
use crate::sip::header::{Via, lossy};
use crate::sip::message::Message;
use crate::sip::proxy::failover::Failure;
use crate::sip::relay::{self, RequestEdit};
use crate::sip::transaction::{Forwarded, TimerAction, TxRef, TxState};
use crate::sip::transport::Peer;
use crate::sip::uri::Uri;

impl<S: Screen> Proxy<S> {
    pub(super) fn on_retransmission(self: &Arc<Self>, tx: &TxRef) {
        self.stats
            .retransmissions_absorbed
            .fetch_add(1, Ordering::Relaxed);
        let (resend, peer) = {
            let tx = tx.lock();
            (tx.last_response.clone(), tx.reply_to)
        };
        match resend {
            Some(resp) => self.send(peer, resp),
            // Its 100 held (`sip.trying_delay_ms`): the trunk asks, so now.
            None => self.send_owed_trying(tx),
        }
    }

    /// Runs the retransmission timers that are due, then expiry and Timer C
    /// (called by the ticker).
    pub(super) fn fire_timers(self: &Arc<Self>, now: Instant) {
        for action in self.txs.due_timers(now) {
            match action {
                TimerAction::Resend(peer, bytes) => self.send(peer, bytes),
                TimerAction::Timeout408(tx) => self.final_response(&tx, 408, &[]),
                TimerAction::Trying(tx) => self.send_owed_trying(&tx),
                TimerAction::Failover(tx) => self.fail_over(&tx, Failure::Silent),
            }
        }
        for tx in self.txs.sweep(now) {
            self.timer_c_fired(&tx);
        }
    }

    /// Timer C ran out on a forwarded INVITE whose final response never came
    /// (RFC 3261 §16.8): the proxy answers the trunk 408 itself and, if the
    /// PBX sent a provisional response, CANCELs the INVITE there. The PBX's
    /// 487 that follows is not relayed
    /// ([`crate::sip::transaction::ServerTx::relays_upstream`]), and its 200
    /// to the CANCEL, carrying only the proxy's Via, ends here. With no
    /// provisional yet (a Timer C shorter than Timer B) a CANCEL is not
    /// allowed (§9.1): the 408 alone, as if the PBX had sent it.
    fn timer_c_fired(self: &Arc<Self>, tx: &TxRef) {
        let cancel = {
            let t = tx.lock();
            let (Some(invite), Some(fwd), TxState::Forwarded) =
                (t.invite.as_ref(), t.forwarded.as_ref(), t.state)
            else {
                return; // answered meanwhile
            };
            self.stats.timer_c.fetch_add(1, Ordering::Relaxed);
            if !t.provisional {
                tracing::debug!(branch = %t.key, "Timer C: no response at all from the PBX; 408");
                drop(t);
                return self.final_response(tx, 408, &[]);
            }
            let (via, ruri, own) = self.as_forwarded(&t.key, invite, fwd);
            tracing::debug!(branch = %t.key, "Timer C: no final response from the PBX; CANCEL and 408");
            (fwd.dest, cancel::cancel_for(invite, &via, ruri, &own))
        };
        self.final_response(tx, 408, &[]);
        self.send(cancel.0, cancel.1);
    }

    pub(super) fn on_cancel(
        self: &Arc<Self>,
        msg: Message,
        top: &Via<'_>,
        from: Peer,
        key: String,
    ) {
        let Some(tx) = self.txs.get(&key) else {
            // No transaction, and none can exist for a source outside
            // `sip.accept_from` (its INVITEs get 403): refused like them
            // rather than carried to the PBX.
            if !self.is_accepted(from.addr().ip()) {
                self.stats.forbidden.fetch_add(1, Ordering::Relaxed);
                return self.reply(&msg, top, from, 403, &[]);
            }
            // RFC 3261 §16.10: forward statelessly.
            let dest = self.route(&msg, None, false, false);
            let via = self.via_line(&key, dest);
            let out = relay::forward_request(&msg, &self.plain_edit(&via, from, None));
            return self.send(dest, out);
        };
        let (state, forwarded) = {
            let t = tx.lock();
            (t.state, t.forwarded.clone())
        };
        match (state, forwarded) {
            (TxState::Screening, _) => {
                self.reply(&msg, top, from, 200, &[]);
                self.final_response(&tx, 487, &[]);
            }
            (TxState::Forwarded, Some(fwd)) => {
                let via = self.via_line(&attempt_branch(&key, fwd.attempt), fwd.dest);
                let out = relay::forward_request(
                    &msg,
                    &self.plain_edit(&via, from, fwd.new_ruri.as_deref()),
                );
                self.send(fwd.dest, out);
            }
            _ => self.reply(&msg, top, from, 200, &[]),
        }
    }

    /// What a request of the proxy's own for a forwarded INVITE copies
    /// from it as forwarded (a CANCEL, the ACK of an absorbed 503): the Via
    /// of its current try, its Request-URI, the proxy's own Route entries.
    pub(super) fn as_forwarded<'a>(
        &self,
        key: &str,
        invite: &'a Message,
        fwd: &'a Forwarded,
    ) -> (
        super::ViaLine,
        &'a [u8],
        smallvec::SmallVec<[std::ops::Range<usize>; 2]>,
    ) {
        let via = self.via_line(&attempt_branch(key, fwd.attempt), fwd.dest);
        let ruri = fwd
            .new_ruri
            .as_deref()
            .map_or(invite.request_uri(), str::as_bytes);
        let own = self.own_route(invite).map(|o| o.elems).unwrap_or_default();
        (via, ruri, own)
    }

    pub(super) fn plain_edit<'a>(
        &self,
        via: &'a [u8],
        from: Peer,
        new_ruri: Option<&'a str>,
    ) -> RequestEdit<'a> {
        RequestEdit {
            via_line: via,
            source: from.addr(),
            new_ruri,
            record_route: None,
            strip_labels: !self.is_trusted(from.addr().ip()),
            own_route: &[],
            labels: None,
            verstat: None,
        }
    }

    /// `answers_us`: the ACK carries the To tag of a response of the proxy's
    /// own ([`Proxy::is_own_to_tag`]).
    pub(super) fn on_ack(
        self: &Arc<Self>,
        msg: Message,
        from: Peer,
        key: String,
        answers_us: bool,
    ) {
        if let Some(tx) = self.txs.get(&key) {
            let forwarded = {
                let mut t = tx.lock();
                if t.local_final {
                    // The ACK for our own final response ends Timer G; absorbed.
                    t.stop_timer();
                    t.state = TxState::Confirmed;
                    t.touched = Instant::now();
                    return;
                }
                t.forwarded.clone()
            };
            if let Some(fwd) = forwarded {
                let via = self.via_line(&attempt_branch(&key, fwd.attempt), fwd.dest);
                let out = relay::forward_request(
                    &msg,
                    &self.plain_edit(&via, from, fwd.new_ruri.as_deref()),
                );
                return self.send(fwd.dest, out);
            }
        }
        // The ACK of a final response the proxy sent without a transaction
        // (403, 482, 483, 503, 400): its To tag is the one `reply` wrote, a
        // keyed hash of this branch no UAS can produce. It ends here (RFC
        // 3261 §17.1.1.3: a non-2xx ACK goes to whoever answered), rather
        // than reaching the PBX, which never saw the call, on behalf of a
        // source that may not even be in `sip.accept_from`.
        if answers_us {
            return tracing::debug!(peer = %from.addr(), "ACK for a response of our own; absorbed");
        }
        // ACK for a 2xx: a request of its own, routed like any in-dialog
        // request, and from the same sources (it cannot be answered 403).
        if !self.may_send(from, true) {
            self.stats.forbidden.fetch_add(1, Ordering::Relaxed);
            return self.drop_msg("ACK from a source outside sip.accept_from");
        }
        let own = self.own_route(&msg);
        let ruri = lossy(msg.request_uri());
        let to_self = Uri::parse(&ruri).is_some_and(|u| self.is_self(u.host, u.port));
        let dest = self.route(&msg, own.as_ref(), true, to_self);
        let via = self.via_line(&key, dest);
        let mut edit = self.plain_edit(&via, from, None);
        edit.own_route = own.as_ref().map_or(&[], |o| &o.elems[..]);
        let out = relay::forward_request(&msg, &edit);
        self.send(dest, out);
    }
}
