//! The initial INVITE, top to bottom: admitted or refused, screened inside
//! its server transaction, and the verdict carried out (relay with labels,
//! retarget, or a final response of the proxy's own).
//!
//! ```text
//! on_initial_invite ─▶ Screen::begin ─┬─ Decided ─▶ forward_first (UDP) / apply
//!                                     └─ Pending ─▶ task: Screen::finish ─▶ apply
//! apply ─┬─ Relay  ─▶ build_forward ─▶ record_forward ─▶ send
//!        └─ Answer ─▶ final_response (Timer G over UDP until the ACK)
//! ```

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use tracing::Instrument;

use super::{Labels, NewCall, Proxy, Screen, Screened, Verdict};
use crate::sip::header::{Via, lossy};
use crate::sip::message::Message;
use crate::sip::relay::{self, RequestEdit};
use crate::sip::respond;
use crate::sip::transaction::{Forwarded, Retransmit, ServerTx, T2, TxRef, TxState};
use crate::sip::transport::Peer;

impl<S: Screen> Proxy<S> {
    pub(super) fn on_initial_invite(
        self: &Arc<Self>,
        msg: Message,
        top: &Via<'_>,
        from: Peer,
        key: String,
    ) {
        let reply_to = self.reply_peer(top, from);
        // Held from before anything is sent until the call is decided, so a
        // shutdown that starts meanwhile waits for this call. Closed: the
        // shutdown has begun.
        let guard = self.calls.token();
        if self.calls.is_closed() {
            return self.reply(&msg, top, from, 503, &["Retry-After: 5".into()]);
        }
        if self.txs.is_full() {
            // Bounded memory: `sip.max_transactions` calls are remembered.
            // Logged on the first refusal and every 10,000th, not per INVITE.
            if self
                .stats
                .refused_full
                .fetch_add(1, Ordering::Relaxed)
                .is_multiple_of(10_000)
            {
                tracing::warn!(
                    limit = self.options.max_transactions,
                    "transaction table full: new calls get 503 until calls expire; raise sip.max_transactions if memory allows"
                );
            }
            return self.reply(&msg, top, from, 503, &["Retry-After: 5".into()]);
        }
        self.stats.invites_screened.fetch_add(1, Ordering::Relaxed);
        let inv = Invite {
            msg,
            key,
            from,
            reply_to,
        };

        let span = tracing::debug_span!("call", call_id = %lossy(inv.msg.call_id()));
        let call = NewCall {
            invite: &inv.msg,
            source: from.addr(),
            trusted: self.is_trusted(from.addr().ip()),
        };
        let screened = span.in_scope(|| self.screen.begin(call));
        // Decided at once and relayed over UDP: the INVITE goes out first and
        // the transaction is recorded after it (see `forward_first`).
        let screened = match screened {
            Screened::Decided(Verdict::Relay {
                retarget,
                labels,
                track,
                verstat,
            }) if !from.is_stream() => {
                let edits = RelayEdits {
                    retarget: retarget.as_deref(),
                    labels: labels.as_ref(),
                    verstat,
                };
                return span.in_scope(|| self.forward_first(&inv, edits, track));
            }
            other => other,
        };
        let (tx, fresh) = self.txs.insert(inv.server_tx());
        if !fresh {
            // A twin of this INVITE on the other transport got here first.
            return self.on_retransmission(&tx);
        }
        // Answered here, or relayed over TCP (where responses arrive on
        // another thread and could overtake a later 100): the 100 is sent,
        // or held, before anything else goes out.
        self.trying(&tx);
        let pending = match screened {
            Screened::Decided(verdict) => {
                return span.in_scope(|| self.apply(&tx, &inv, verdict));
            }
            Screened::Pending(call) => call,
        };
        let Ok(permit) = Arc::clone(&self.screening).try_acquire_owned() else {
            let verdict = self.screen.overloaded(pending);
            return span.in_scope(|| self.apply(&tx, &inv, verdict));
        };
        // Only a call that needs a live provider leaves the SIP thread.
        let proxy = Arc::clone(self);
        self.rt.spawn(
            async move {
                let verdict = proxy.screen.finish(pending).await;
                proxy.apply(&tx, &inv, verdict);
                drop((permit, guard));
            }
            .instrument(span),
        );
    }

    /// The 100 Trying of a new transaction: sent now when
    /// `sip.trying_delay_ms` is 0, else held that long and sent only if no
    /// other response went upstream meanwhile (RFC 3261 §17.2.1).
    ///
    /// Why hold it: nearly every call is decided on the SIP thread and most
    /// PBXs answer or ring within milliseconds, and then the 100 tells the
    /// trunk nothing its 180 or 200 does not. Each message sent costs the
    /// proxy a `sendto` and the trunk a wake-up, and the 100 is one of the
    /// six a relayed call sends (docs/performance.md). The trunk's own
    /// Timer A first fires at T1 (500 ms), later than the held 100, so it
    /// still does not retransmit; one that does gets the 100 at once
    /// ([`Proxy::on_retransmission`]).
    fn trying(&self, tx: &TxRef) {
        match self.options.trying_delay() {
            None => self.send_owed_trying(tx),
            Some(delay) => self.txs.hold_trying(tx, Instant::now() + delay),
        }
    }

    /// Sends the 100 Trying `tx` still owes upstream, if it owes one; it
    /// becomes the response a retransmitted INVITE gets until a later one
    /// takes its place. Sent with the transaction locked, so that a response
    /// relayed at this moment on another thread goes after it, never
    /// before.
    pub(super) fn send_owed_trying(&self, tx: &TxRef) {
        let mut t = tx.lock();
        if !t.trying_owed {
            return;
        }
        let Some(invite) = t.invite.as_ref() else {
            return;
        };
        let trying = respond::build(invite, 100, None, &[]);
        t.trying_owed = false;
        t.last_response.get_or_insert_with(|| trying.clone());
        self.send(t.reply_to, trying);
    }

    /// Carries out a verdict on a screened INVITE.
    fn apply(&self, tx: &TxRef, inv: &Invite, verdict: Verdict) {
        if tx.lock().state != TxState::Screening {
            // Cancelled while screening: the 487 has gone already.
            return;
        }
        match verdict {
            Verdict::Answer { code, headers } => self.final_response(tx, code, &headers),
            Verdict::Relay {
                retarget,
                labels,
                track,
                verstat,
            } => {
                let edits = RelayEdits {
                    retarget: retarget.as_deref(),
                    labels: labels.as_ref(),
                    verstat,
                };
                let (dest, out, target) = self.build_forward(inv, edits);
                if self.record_forward(tx, dest, &out, edits.retarget, track, target) {
                    self.send(dest, out);
                }
            }
        }
    }

    /// Relays an INVITE decided on the SIP thread, then records its
    /// transaction and sends the 100 (over TCP: records, sends the 100,
    /// then relays).
    ///
    /// Why in that order: the transaction's bookkeeping (the table insert,
    /// its deadlines, the Timer A entry) is a third of the INVITE's handling
    /// time and nothing on the wire needs it yet. When both sides are UDP,
    /// every message is handled on this one thread, so no response,
    /// retransmission or CANCEL for this call can be looked at before the
    /// transaction is in the table. A next hop over TCP answers on another
    /// thread, so there the transaction is recorded and the 100 sent first:
    /// a quick 180 would otherwise race both.
    fn forward_first(&self, inv: &Invite, edits: RelayEdits<'_>, track: Option<String>) {
        let (dest, out, target) = self.build_forward(inv, edits);
        let udp = !dest.is_stream();
        if udp {
            self.send(dest, out.clone());
        }
        let (tx, fresh) = self.txs.insert(inv.server_tx());
        if !fresh {
            // A twin over TCP won the race and owns the transaction (over UDP
            // the PBX absorbs our copy as a retransmission).
            return;
        }
        // Fresh, so still screening: recorded.
        self.record_forward(&tx, dest, &out, edits.retarget, track, target);
        self.trying(&tx);
        if !udp {
            // After the 100 is sent or held: the PBX's 180 comes back on
            // another thread and could reach the trunk ahead of a 100 sent
            // after the INVITE (a held one is dropped by the 180 instead).
            self.send(dest, out);
        }
    }

    /// Marks a transaction as relayed to `dest` and starts Timer A with the
    /// relayed bytes over UDP, Timer B alone over TCP (408 to the trunk if
    /// the PBX never answers either way). False, and nothing recorded, when the call is
    /// no longer screening (a CANCEL on the SIP thread answered it 487 while
    /// a live lookup was deciding): then the INVITE must not go out.
    fn record_forward(
        &self,
        tx: &TxRef,
        dest: Peer,
        out: &bytes::Bytes,
        retarget: Option<&str>,
        track: Option<String>,
        target: Option<usize>,
    ) -> bool {
        let mut t = tx.lock();
        if t.state != TxState::Screening {
            return false;
        }
        t.state = TxState::Forwarded;
        let now = Instant::now();
        t.touched = now;
        t.forwarded = Some(Forwarded {
            dest,
            new_ruri: retarget.map(str::to_owned),
            track,
            at: now,
            attempt: 0,
            target,
            sent: out.clone(),
        });
        let r = self.timers_for(dest, out, target);
        self.txs.start_retransmit(tx, &mut t, r);
        true
    }

    /// The INVITE as relayed with a relay verdict's edits: where it goes,
    /// its bytes, and the target's place in the next-hop list when it goes
    /// there (not where a Route set points).
    fn build_forward(
        &self,
        inv: &Invite,
        edits: RelayEdits<'_>,
    ) -> (Peer, bytes::Bytes, Option<usize>) {
        let RelayEdits {
            retarget,
            labels,
            verstat,
        } = edits;
        let (msg, from) = (&inv.msg, inv.from);
        // A retargeted call still goes to the next hop: the PBX owns the
        // voicemail or announcement service it is diverted to.
        let own_route = self.own_route(msg);
        let (target, dest) = match super::request::route_set(msg, own_route.as_ref()) {
            Some(peer) => (None, peer),
            None => self.first_hop(),
        };
        let via = self.via_line(&inv.key, dest);
        let rr = self
            .options
            .record_route
            .then(|| self.record_route(from, dest));
        let out = relay::forward_request(
            msg,
            &RequestEdit {
                via_line: &via,
                source: from.addr(),
                new_ruri: retarget,
                record_route: rr.as_deref(),
                strip_labels: !self.is_trusted(from.addr().ip()),
                own_route: own_route.as_ref().map_or(&[], |o| &o.elems[..]),
                labels: labels.map(|l| relay::LabelEdit {
                    lines: l.lines.as_bytes(),
                    display_prefix: &l.display_prefix,
                }),
                verstat,
            },
        );
        (dest, out, target)
    }

    /// The Record-Route lines for a call from `from` relayed to `dest`: the
    /// proxy's address on the transport the call arrived on; where the
    /// transport changes (a TLS trunk, a UDP PBX), two, each side's own
    /// (RFC 5658), so that either end's in-dialog requests reach the proxy
    /// over the transport it speaks. The first faces the PBX, which uses
    /// the route set top down.
    fn record_route(&self, from: Peer, dest: Peer) -> String {
        let line = |side: Peer| {
            let t = match side {
                Peer::Udp(_) => "",
                Peer::Tcp(_) => ";transport=tcp",
                Peer::Tls(_) => ";transport=tls",
            };
            format!(
                "Record-Route: <sip:{}:{};lr{t}>\r\n",
                self.local.host,
                self.local.port_for(side)
            )
        };
        if from.via_name() == dest.via_name() {
            line(from)
        } else {
            line(dest) + &line(from)
        }
    }

    /// Sends a final response the proxy generated, retransmitted over UDP
    /// with Timer G until the ACK (RFC 3261 §17.2.1).
    ///
    /// Only while the call is still pending: the ticker's Timer B (408), a
    /// CANCEL (487) and a live lookup's decision run on different threads
    /// than the PBX's answer, and whichever finishes the transaction first
    /// is the one the trunk gets.
    pub(super) fn final_response(&self, tx: &TxRef, code: u16, extra: &[String]) {
        let (resp, peer, _invite, track) = {
            let mut t = tx.lock();
            if !t.is_pending() {
                return;
            }
            let track = if t.state == TxState::Forwarded {
                t.forwarded.as_mut().and_then(Forwarded::take_track)
            } else {
                None
            };
            let Some(invite) = t.invite.as_ref() else {
                return;
            };
            let tag = relay::top_via(invite)
                .map(|r| lossy(&invite.buf[r]))
                .as_deref()
                .and_then(Via::parse)
                .map(|v| self.to_tag(&v));
            let resp = respond::build(invite, code, tag.as_deref(), extra);
            let invite = t.complete(resp.clone(), true);
            if !t.reply_to.is_stream() {
                let r = Retransmit::new(t.reply_to, resp.clone(), Some(T2), false);
                self.txs.start_retransmit(tx, &mut t, r);
            }
            (resp, t.reply_to, invite, track)
        };
        self.send(peer, resp);
        if let Some((track, after)) = track {
            self.screen.relayed_final(track, code, after);
        }
    }
}

/// An initial INVITE as the proxy carries it from arrival to its verdict
/// (moved into the task when screening waits for a live provider).
struct Invite {
    msg: Message,
    /// The transaction's key: the branch of the proxy's own Via.
    key: String,
    /// Where it came from.
    from: Peer,
    /// Where responses go (the source, on the port its Via asks for).
    reply_to: Peer,
}

impl Invite {
    fn server_tx(&self) -> ServerTx {
        ServerTx::new(self.key.clone(), self.msg.clone(), self.reply_to)
    }
}

/// A relay verdict's edits: the new Request-URI, the labels, the verstat.
#[derive(Debug, Clone, Copy)]
struct RelayEdits<'a> {
    retarget: Option<&'a str>,
    labels: Option<&'a Labels>,
    verstat: Option<&'a str>,
}
