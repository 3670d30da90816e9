//! The screened INVITE: the server transaction held while the pipeline
//! decides, and the decision carried out (relay with labels, retarget,
//! redirect, reject).

use std::sync::Arc;
use std::sync::atomic::Ordering;

use std::time::Instant;

use tracing::Instrument;

use super::Proxy;
use crate::config::{Action, DivertMode};
use crate::pipeline::CallCtx;
use crate::policy::{Decision, Policy};
use crate::sip::caller;
use crate::sip::header::Via;
use crate::sip::message::Message;
use crate::sip::relay::{self, RequestEdit};
use crate::sip::respond;
use crate::sip::transaction::{Forwarded, Retransmit, ServerTx, T2, TxRef, TxState};
use crate::sip::transport::Peer;
use crate::sip::uri::Uri;

impl Proxy {
    pub(super) fn on_initial_invite(
        self: &Arc<Self>,
        msg: Message,
        top: &Via<'_>,
        from: Peer,
        key: String,
    ) {
        let reply_to = self.reply_peer(top, from);
        // Held from before anything is sent until the call is decided, so a
        // shutdown that starts meanwhile waits for this call (mini-redis's
        // drop-the-last-sender drain). No guard left: shutdown has begun.
        let guard = self.drain_guard.lock().clone();
        if guard.is_none() || self.draining.load(Ordering::Relaxed) {
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
                    limit = self.config.sip.max_transactions,
                    "transaction table full: new calls get 503 until calls expire; raise sip.max_transactions if memory allows"
                );
            }
            return self.reply(&msg, top, from, 503, &["Retry-After: 5".into()]);
        }
        self.stats.invites_screened.fetch_add(1, Ordering::Relaxed);

        // One policy for the whole call: identification, screening and the
        // decision's execution (a reload mid-call does not mix two).
        let policy = self.pipeline.policy();
        let trusted = self.is_trusted(from.addr().ip());
        let caller = caller::identify(&msg, trusted, &policy.country);
        let called = Uri::parse(&String::from_utf8_lossy(msg.request_uri()))
            .and_then(|u| u.user_base().map(|u| u.into_owned()))
            .unwrap_or_default();
        let call_id = String::from_utf8_lossy(msg.call_id()).into_owned();
        let span = tracing::debug_span!(
            "call",
            call_id = %call_id,
            caller = caller.e164.as_deref().unwrap_or(&caller.raw),
            decision = tracing::field::Empty
        );
        let mut ctx =
            CallCtx::new(call_id, from.addr(), caller, called).with_policy(Arc::clone(&policy));
        let decided = span.in_scope(|| self.pipeline.screen_now(&mut ctx));
        if let Some(d) = &decided {
            span.record("decision", d.action.as_str());
        }
        // Decided at once and relayed over UDP: the INVITE goes out first and
        // the transaction is recorded after it (see `forward_first`).
        if let Some(d) = decided
            .as_ref()
            .filter(|d| !from.is_tcp() && forwards(&policy, d))
        {
            return span.in_scope(|| self.forward_first(&msg, &key, from, reply_to, &policy, d));
        }
        let (tx, fresh) = self
            .txs
            .insert(ServerTx::new(key.clone(), msg.clone(), reply_to));
        if !fresh {
            // A twin of this INVITE on the other transport got here first.
            return self.on_retransmission(&tx);
        }
        if let Some(decision) = decided {
            // Answered here, or relayed over TCP (where responses arrive on
            // another thread and could overtake a later 100): the 100 first.
            self.send_trying(&tx, &msg);
            return span.in_scope(|| self.apply(&tx, &msg, &key, from, &policy, decision));
        }
        self.send_trying(&tx, &msg);
        let Ok(permit) = Arc::clone(&self.screening).try_acquire_owned() else {
            let decision = self.pipeline.overload(&mut ctx);
            return span.in_scope(|| self.apply(&tx, &msg, &key, from, &policy, decision));
        };
        // Only a call that needs a live provider leaves the SIP thread.
        let proxy = Arc::clone(self);
        self.rt.spawn(
            async move {
                let decision = proxy.pipeline.screen_live(&mut ctx).await;
                tracing::Span::current().record("decision", decision.action.as_str());
                proxy.apply(&tx, &msg, &key, from, &policy, decision);
                drop((permit, guard));
            }
            .instrument(span),
        );
    }

    /// Sends 100 Trying upstream. It becomes the response a retransmitted
    /// INVITE gets unless a later one (relayed or ours) already took its place.
    fn send_trying(self: &Arc<Self>, tx: &TxRef, invite: &Message) {
        let trying = respond::build(invite, 100, None, &[]);
        let reply_to = {
            let mut t = tx.lock();
            t.last_response.get_or_insert_with(|| trying.clone());
            t.reply_to
        };
        self.send(reply_to, trying);
    }

    /// Carries out a decision on a screened INVITE, under the call's policy.
    fn apply(
        self: &Arc<Self>,
        tx: &TxRef,
        msg: &Message,
        key: &str,
        from: Peer,
        policy: &Policy,
        d: Decision,
    ) {
        if tx.lock().state != TxState::Screening {
            // Cancelled while screening: the 487 has gone already.
            return;
        }
        if !forwards(policy, &d) {
            return match d.action {
                Action::Reject => self.reject(tx, policy, &d),
                // Divert by redirect: tell the trunk where to send the call.
                _ => {
                    let contact = format!("Contact: <{}>", policy.divert_to.text);
                    self.final_response(tx, 302, &[contact]);
                }
            };
        }
        let (dest, out, new_ruri) = self.build_forward(msg, key, from, policy, &d);
        if self.record_forward(tx, dest, &out, new_ruri) {
            self.send(dest, out);
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
    fn forward_first(
        self: &Arc<Self>,
        msg: &Message,
        key: &str,
        from: Peer,
        reply_to: Peer,
        policy: &Policy,
        d: &Decision,
    ) {
        let (dest, out, new_ruri) = self.build_forward(msg, key, from, policy, d);
        let udp = !dest.is_tcp();
        if udp {
            self.send(dest, out.clone());
        }
        let (tx, fresh) = self
            .txs
            .insert(ServerTx::new(key.to_owned(), msg.clone(), reply_to));
        if !fresh {
            // A twin over TCP won the race and owns the transaction (over UDP
            // the PBX absorbs our copy as a retransmission).
            return;
        }
        // Fresh, so still screening: recorded.
        self.record_forward(&tx, dest, &out, new_ruri);
        self.send_trying(&tx, msg);
        if !udp {
            // After the 100: the PBX's 180 would come back on another thread
            // and could reach the trunk ahead of a 100 sent after the INVITE.
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
        new_ruri: Option<String>,
    ) -> bool {
        let mut t = tx.lock();
        if t.state != TxState::Screening {
            return false;
        }
        t.state = TxState::Forwarded;
        t.touched = Instant::now();
        t.forwarded = Some(Forwarded { dest, new_ruri });
        let r = if dest.is_tcp() {
            Retransmit::timer_b(dest)
        } else {
            Retransmit::new(dest, out.clone(), None, true)
        };
        self.txs.start_retransmit(tx, &mut t, r);
        true
    }

    /// The INVITE as relayed for a decision that forwards it (pass, tag,
    /// divert by retarget): where it goes, its bytes, and the new
    /// Request-URI if the decision changed it.
    fn build_forward(
        &self,
        msg: &Message,
        key: &str,
        from: Peer,
        policy: &Policy,
        d: &Decision,
    ) -> (Peer, bytes::Bytes, Option<String>) {
        let new_ruri = (d.action == Action::Divert).then(|| policy.divert_to.text.clone());
        // A retargeted call still goes to the next hop (DESIGN.md §3): the PBX
        // owns the voicemail or announcement service.
        let own_route = self.own_route(msg);
        let dest = self.route(msg, own_route.as_ref(), false, false);
        let via = self.via_line(key, dest);
        let rr = self.config.sip.record_route.then(|| {
            let t = if from.is_tcp() { ";transport=tcp" } else { "" };
            format!(
                "Record-Route: <sip:{}:{};lr{t}>\r\n",
                self.local.host,
                self.local.addr.port()
            )
        });
        let out = relay::forward_request(
            msg,
            &RequestEdit {
                via_line: &via,
                source: from.addr(),
                new_ruri: new_ruri.as_deref(),
                record_route: rr.as_deref(),
                strip_labels: !self.is_trusted(from.addr().ip()),
                own_route: own_route.map(|(r, _)| r),
                labels: (d.action == Action::Tag).then_some((d, &policy.labels)),
            },
        );
        (dest, out, new_ruri)
    }

    /// Answers a rejected call with `policy.reject_code` and its headers
    /// (603+ Reason per ATIS-1000099; 608 jwscard Call-Info).
    fn reject(self: &Arc<Self>, tx: &TxRef, policy: &Policy, d: &Decision) {
        let code = policy.config.reject_code;
        let url = &policy.config.redress_url;
        let mut extra = Vec::new();
        match code {
            603 => {
                let url_part = if url.is_empty() {
                    String::new()
                } else {
                    format!("url={url};")
                };
                extra.push(format!(
                    "Reason: SIP;cause=603;text=\"v=analytics1;{url_part}id={}\";location=LN",
                    d.id
                ));
            }
            608 if !url.is_empty() => extra.push(format!("Call-Info: <{url}>;purpose=jwscard")),
            _ => {}
        }
        self.final_response(tx, code, &extra);
    }

    /// Sends a final response the proxy generated, retransmitted over UDP
    /// with Timer G until the ACK (RFC 3261 §17.2.1).
    ///
    /// Only while the call is still pending: the ticker's Timer B (408), a
    /// CANCEL (487) and a live lookup's decision run on different threads
    /// than the PBX's answer, and whichever finishes the transaction first
    /// is the one the trunk gets.
    pub(super) fn final_response(self: &Arc<Self>, tx: &TxRef, code: u16, extra: &[String]) {
        let (resp, peer, _invite) = {
            let mut t = tx.lock();
            let Some(invite) = t.invite.as_ref().filter(|_| t.is_pending()) else {
                return;
            };
            let tag = relay::top_via(invite)
                .map(|r| String::from_utf8_lossy(&invite.buf[r]))
                .as_deref()
                .and_then(Via::parse)
                .map(|v| self.to_tag(&v));
            let resp = respond::build(invite, code, tag.as_deref(), extra);
            let invite = t.complete(resp.clone(), true);
            if !t.reply_to.is_tcp() {
                let r = Retransmit::new(t.reply_to, resp.clone(), Some(T2), false);
                self.txs.start_retransmit(tx, &mut t, r);
            }
            (resp, t.reply_to, invite)
        };
        self.send(peer, resp);
    }
}

/// Whether a decision relays the INVITE (rather than answering it here).
fn forwards(policy: &Policy, d: &Decision) -> bool {
    match d.action {
        Action::Reject => false,
        Action::Divert => policy.config.divert_mode == DivertMode::Retarget,
        _ => true,
    }
}
