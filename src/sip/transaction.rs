//! INVITE server transactions while a call is screened and forwarded
//! (RFC 3261 §17.2.1, §16.10).
//!
//! A transaction is keyed by the branch the proxy derives for its own Via
//! (§16.11: a hash of the received branch, sent-by and Request-URI), so the
//! INVITE, its retransmissions, its CANCEL, the ACK of a non-2xx final
//! response and every response from downstream all find the same entry
//! without a second index.
//!
//! Retransmissions (Timer A toward the PBX, Timer G toward the trunk) are not
//! a task per transaction: each transaction holds its [`Retransmit`] state,
//! and shared deadline queues (`transaction/deadlines.rs`) are serviced by
//! one ticker ([`TxTable::due_timers`]). Stopping a timer is clearing a
//! field: no wake-up, no task to cancel, which keeps the forwarding path
//! lean at thousands of calls per second. The deadline left behind (one per
//! forwarded INVITE, as the PBX's answer stops nearly every Timer A) holds a
//! `Weak` to its transaction rather than the key, so pushing it allocates
//! nothing and popping it takes no hash lookup.
//!
//! Entries are dropped 64×T1 after their last change (the decision is
//! remembered that long, so a late retransmission gets the same treatment), or
//! after Timer C while a forwarded INVITE still waits for its final response.
//! A finished transaction lets go of its INVITE ([`ServerTx::complete`]): for
//! its remaining 64×T1 only the response it resends is needed, and the INVITE
//! is the larger part of what a remembered call holds (at 2,000 calls/s
//! about 66,000 calls are remembered).
//!
//! The table is bounded by count and by bytes ([`TxTable::is_full`],
//! `sip.max_transactions`, `sip.max_held_mb`): a flood of INVITEs, large or
//! small, is answered 503 rather than growing memory without end.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering as AtomicOrdering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use dashmap::DashMap;
use parking_lot::Mutex;

use super::message::Message;
use super::transport::Peer;

mod deadlines;
mod wake;
use deadlines::Deadlines;
use wake::Wake;

/// RFC 3261 §17.1.1.1: round-trip estimate.
pub const T1: Duration = Duration::from_millis(500);
/// RFC 3261 §17.1.2.2: longest retransmit interval for non-INVITE / Timer G.
pub const T2: Duration = Duration::from_secs(4);
/// Timer B / Timer H / how long a decision is remembered: 64×T1.
pub const TIMER_64T1: Duration = Duration::from_secs(32);
/// RFC 3261 §17.2.1: an INVITE server transaction sends 100 Trying unless
/// a response of the TU's goes upstream within 200 ms; the longest
/// `sip.trying_delay_ms`.
pub const TRYING_DELAY: Duration = Duration::from_millis(200);
/// Timer C (RFC 3261 §16.6 step 11): a proxy waits at least 3 minutes for a
/// final response to a forwarded INVITE.
pub const TIMER_C: Duration = Duration::from_secs(180);
/// A new transaction is first looked at for expiry this long after 64×T1.
/// A transaction is kept 64×T1 after its *last* change, and many calls
/// change last within moments of their INVITE (a local reject and its ACK,
/// a quick answer); looked at exactly 64×T1 after the INVITE, every one of
/// them would still be a few milliseconds too young and need a second look.
/// A second more of retention (3% more transactions held) spares that.
pub const EXPIRY_GRACE: Duration = Duration::from_secs(1);
/// Default `sip.max_transactions`: 64×T1 of calls at about 15,000 calls/s.
pub const MAX_TRANSACTIONS: usize = 500_000;
/// Default `sip.max_held_mb`: what the remembered calls may hold, counted
/// as [`ServerTx::charged`].
pub const MAX_HELD_MB: usize = 1024;
/// What a remembered call holds besides its INVITE twice: the entry, its
/// header index, locks, timers and the response it may resend. Measured:
/// 1 KB INVITEs held cost 4.3 KiB each in resident memory
/// (`bash bench/held-memory.sh 1000 16 8000`).
pub const TX_OVERHEAD_BYTES: usize = 2_304;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxState {
    /// The pipeline is deciding; retransmissions are absorbed.
    Screening,
    /// Relayed downstream; waiting for a final response.
    Forwarded,
    /// A final response went upstream (ours or relayed).
    Completed,
    /// The ACK for our own final response arrived.
    Confirmed,
}

/// A message being retransmitted over UDP until a response (Timer A) or an
/// ACK (Timer G) stops it.
#[derive(Debug, Clone)]
pub struct Retransmit {
    pub dest: Peer,
    pub bytes: Bytes,
    pub due: Instant,
    pub interval: Duration,
    /// Timer G caps the interval at T2; Timer A keeps doubling.
    pub cap: Option<Duration>,
    pub started: Instant,
    /// Timer B: answer 408 upstream if the PBX never answered.
    pub timeout_408: bool,
    /// While another next-hop target is left: give this one up here, if
    /// nothing at all came back from it ([`TimerAction::Failover`]).
    pub failover_at: Option<Instant>,
}

impl Retransmit {
    pub fn new(dest: Peer, bytes: Bytes, cap: Option<Duration>, timeout_408: bool) -> Self {
        let now = Instant::now();
        Retransmit {
            dest,
            bytes,
            due: now + T1,
            interval: T1,
            cap,
            started: now,
            timeout_408,
            failover_at: None,
        }
    }

    /// The same, giving the target up at `at` (Timer B shortened by
    /// `sip.failover_timeout_ms`) while it has sent nothing.
    pub fn failing_over_at(mut self, at: Instant) -> Self {
        self.failover_at = Some(at);
        self.due = self.due.min(at);
        self
    }

    /// Timer B alone, for an INVITE relayed over a reliable transport: no
    /// retransmission (RFC 3261 §17.1.1.2 sets Timer A for UDP only), but
    /// the trunk still gets 408 if the PBX sends nothing at all in 64×T1.
    /// Its first look is the timeout, so it never resends.
    pub fn timer_b(dest: Peer) -> Self {
        let now = Instant::now();
        Retransmit {
            dest,
            bytes: Bytes::new(),
            due: now + TIMER_64T1,
            interval: TIMER_64T1,
            cap: None,
            started: now,
            timeout_408: true,
            failover_at: None,
        }
    }
}

/// What a due timer asks the proxy to do.
#[derive(Debug)]
pub enum TimerAction {
    Resend(Peer, Bytes),
    /// Timer B fired with no answer from downstream.
    Timeout408(TxRef),
    /// The held 100 Trying is due and nothing else went upstream yet.
    Trying(TxRef),
    /// A next-hop target sent nothing within `sip.failover_timeout_ms`:
    /// try the next one.
    Failover(TxRef),
}

/// Where a forwarded INVITE went, so CANCEL and ACK follow it.
#[derive(Debug, Clone)]
pub struct Forwarded {
    pub dest: Peer,
    /// The Request-URI it was sent with, when the proxy changed it.
    pub new_ruri: Option<String>,
    /// The verdict's `track`, taken when the final response is reported.
    pub track: Option<String>,
    /// When the INVITE was relayed.
    pub at: Instant,
    /// Which try this is (0 the first; each failover adds one and uses a
    /// branch of its own).
    pub attempt: u8,
    /// The target's place in the next-hop list, when it came from there
    /// (not from a Route set): only then is there a next one to try.
    pub target: Option<usize>,
    /// The INVITE as relayed, for the next target (its Via replaced).
    pub sent: Bytes,
}

impl Forwarded {
    /// The track and the time since relaying, once: for the one report of
    /// the call's final response.
    pub fn take_track(&mut self) -> Option<(String, std::time::Duration)> {
        self.track.take().map(|t| (t, self.at.elapsed()))
    }
}

#[derive(Debug)]
pub struct ServerTx {
    /// The table key: the branch of the proxy's Via.
    pub key: String,
    pub state: TxState,
    /// The INVITE as received, for a 487, 408 or decision answered later;
    /// `None` once the transaction is finished ([`ServerTx::complete`]).
    pub invite: Option<Message>,
    /// Where responses go.
    pub reply_to: Peer,
    /// The latest response sent upstream, resent on a retransmitted INVITE.
    pub last_response: Option<Bytes>,
    /// No response has gone upstream yet, so a 100 Trying is still owed
    /// (RFC 3261 §17.2.1): sent when the INVITE arrives, or held for
    /// `sip.trying_delay_ms` and dropped if the PBX's answer or the proxy's
    /// own goes first.
    pub trying_owed: bool,
    pub forwarded: Option<Forwarded>,
    /// The running retransmission (Timer A or G), if any.
    pub retransmit: Option<Retransmit>,
    /// Whether the final response upstream was generated by the proxy.
    pub local_final: bool,
    /// Whether the PBX sent a provisional response (a 100 included). Until
    /// then a CANCEL must not be sent (RFC 3261 §9.1): Timer C answers the
    /// trunk 408 and sends nothing downstream (§16.8).
    pub provisional: bool,
    pub touched: Instant,
    /// What this call counts against `sip.max_held_mb`: the INVITE twice (as
    /// received, and as relayed for Timer A) and [`TX_OVERHEAD_BYTES`]. An
    /// upper bound: a finished call lets go of its INVITE.
    pub charged: usize,
}

impl ServerTx {
    pub fn new(key: String, invite: Message, reply_to: Peer) -> Self {
        let charged = 2 * invite.buf.len() + TX_OVERHEAD_BYTES;
        ServerTx {
            charged,
            key,
            state: TxState::Screening,
            invite: Some(invite),
            reply_to,
            last_response: None,
            trying_owed: true,
            forwarded: None,
            retransmit: None,
            local_final: false,
            provisional: false,
            touched: Instant::now(),
        }
    }

    /// Stops the running retransmission, if any.
    pub fn stop_timer(&mut self) {
        self.retransmit = None;
    }

    /// Whether a final response is still to come (screening, or forwarded
    /// and waiting for the PBX). Only such a transaction may be answered.
    pub fn is_pending(&self) -> bool {
        matches!(self.state, TxState::Screening | TxState::Forwarded)
    }

    /// Whether a response with status `code` from the PBX goes on upstream.
    /// Not after the proxy answered the call itself (Timer B's 408 while
    /// the PBX was silent), except a 2xx: the trunk must not see a second,
    /// different final response, but a call the PBX did answer must reach it
    /// (RFC 3261 §16.7 step 5 forwards every 2xx).
    pub fn relays_upstream(&self, code: u16) -> bool {
        !self.local_final || (200..300).contains(&code)
    }

    /// Records the final response sent upstream (relayed, or the proxy's own
    /// when `local`): no more retransmissions toward the PBX, and the INVITE
    /// is let go, as nothing left to do with this call needs it. It is
    /// returned so the caller can free it after sending the response, off
    /// the path the response takes.
    pub fn complete(&mut self, response: Bytes, local: bool) -> Option<Message> {
        self.state = TxState::Completed;
        self.trying_owed = false;
        self.local_final = local;
        self.touched = Instant::now();
        self.last_response = Some(response);
        self.stop_timer();
        self.invite.take()
    }
}

pub type TxRef = Arc<Mutex<ServerTx>>;

/// All live INVITE server transactions.
pub struct TxTable {
    map: DashMap<String, TxRef>,
    /// Entries in `map`, kept beside it: `DashMap::len` locks every shard.
    len: AtomicUsize,
    /// [`TxTable::is_full`] from this many entries.
    limit: usize,
    /// The sum of the entries' [`ServerTx::charged`].
    held: AtomicUsize,
    /// [`TxTable::is_full`] from this many bytes held.
    byte_limit: usize,
    /// How long a forwarded INVITE waits for a final response after its last
    /// provisional (Timer C; `sip.timer_c_s`).
    timer_c: Duration,
    /// When to look at each transaction for expiry (one entry each).
    expiry: Deadlines,
    /// When retransmissions are due.
    timers: Deadlines,
    /// When held 100 Tryings are due ([`TxTable::hold_trying`]).
    trying: Deadlines,
    /// When the ticker servicing all three wakes.
    wake: Wake,
}

impl Default for TxTable {
    fn default() -> Self {
        TxTable::new(MAX_TRANSACTIONS, MAX_HELD_MB << 20, TIMER_C)
    }
}

impl TxTable {
    /// A table that counts as full at `limit` transactions or `byte_limit`
    /// bytes held, whose forwarded INVITEs wait `timer_c` for a final
    /// response.
    pub fn new(limit: usize, byte_limit: usize, timer_c: Duration) -> Self {
        TxTable {
            map: DashMap::new(),
            len: AtomicUsize::new(0),
            limit,
            held: AtomicUsize::new(0),
            byte_limit,
            timer_c,
            expiry: Deadlines::default(),
            timers: Deadlines::default(),
            trying: Deadlines::default(),
            wake: Wake::default(),
        }
    }

    /// Waits until something may be due: the earliest deadline, but not
    /// before `not_before`; while nothing is queued, until something is.
    /// The ticker calls [`TxTable::due_timers`] and [`TxTable::sweep`] after.
    pub async fn next_tick(&self, not_before: Instant) {
        let earliest = || {
            let (t, e) = (self.timers.earliest(), self.expiry.earliest());
            let h = self.trying.earliest();
            t.into_iter().chain(e).chain(h).min()
        };
        let at = self.wake.plan(earliest, not_before);
        self.wake.sleep(at).await;
    }

    /// Transactions held now.
    pub fn len(&self) -> usize {
        self.len.load(AtomicOrdering::Relaxed)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes the remembered calls are charged with now.
    pub fn held_bytes(&self) -> usize {
        self.held.load(AtomicOrdering::Relaxed)
    }

    /// Whether the table holds its limit of calls or of bytes: a new INVITE
    /// is then refused (503) before anything is sent. A bound, not an exact
    /// cap: INVITEs arriving at once on several threads can each pass the
    /// check.
    pub fn is_full(&self) -> bool {
        self.len() >= self.limit || self.held_bytes() >= self.byte_limit
    }

    pub fn get(&self, key: &str) -> Option<TxRef> {
        self.map.get(key).map(|e| Arc::clone(e.value()))
    }

    /// Inserts a new transaction unless one exists (a retransmission racing
    /// the original): returns the entry and whether it is new.
    pub fn insert(&self, tx: ServerTx) -> (TxRef, bool) {
        use dashmap::mapref::entry::Entry;
        match self.map.entry(tx.key.clone()) {
            Entry::Occupied(e) => (Arc::clone(e.get()), false),
            Entry::Vacant(v) => {
                // Timer C shorter than 64×T1 (a configured ring timeout)
                // needs an earlier look.
                let first_look = tx.touched + (TIMER_64T1 + EXPIRY_GRACE).min(self.timer_c);
                self.held.fetch_add(tx.charged, AtomicOrdering::Relaxed);
                let tx = Arc::new(Mutex::new(tx));
                v.insert(Arc::clone(&tx));
                self.len.fetch_add(1, AtomicOrdering::Relaxed);
                self.expiry.push_first(first_look, &tx);
                self.wake.queued(first_look);
                (tx, true)
            }
        }
    }

    /// Starts retransmitting for `tx`; `t` is `tx` locked by the caller.
    pub fn start_retransmit(&self, tx: &TxRef, t: &mut ServerTx, r: Retransmit) {
        self.timers.push_first(r.due, tx);
        self.wake.queued(r.due);
        t.retransmit = Some(r);
    }

    /// Holds `tx`'s 100 Trying until `due`: [`TxTable::due_timers`] then
    /// asks for it ([`TimerAction::Trying`]) unless a response went upstream
    /// first. Every hold is the same delay from now, so it is a FIFO push.
    pub fn hold_trying(&self, tx: &TxRef, due: Instant) {
        self.trying.push_first(due, tx);
        self.wake.queued(due);
    }

    /// Collects what the timers due by `now` ask for, and reschedules them.
    pub fn due_timers(&self, now: Instant) -> Vec<TimerAction> {
        let mut actions: Vec<TimerAction> = self
            .trying
            .pop_due(now)
            .into_iter()
            .filter(|tx| tx.lock().trying_owed)
            .map(TimerAction::Trying)
            .collect();
        let due = self.timers.pop_due(now);
        for tx in due {
            let mut t = tx.lock();
            let Some(r) = t.retransmit.as_mut() else {
                continue;
            };
            if r.due > now {
                continue; // rescheduled since; a later heap entry covers it
            }
            if r.failover_at.is_some_and(|at| now >= at) {
                t.retransmit = None;
                if t.state == TxState::Forwarded && !t.provisional {
                    drop(t);
                    actions.push(TimerAction::Failover(Arc::clone(&tx)));
                }
                continue;
            }
            if now.duration_since(r.started) >= TIMER_64T1 {
                let timeout = r.timeout_408 && t.state == TxState::Forwarded;
                t.retransmit = None;
                if timeout {
                    drop(t);
                    actions.push(TimerAction::Timeout408(Arc::clone(&tx)));
                }
                continue;
            }
            actions.push(TimerAction::Resend(r.dest, r.bytes.clone()));
            r.interval = r.cap.map_or(r.interval * 2, |c| (r.interval * 2).min(c));
            // Timers B and H run out at 64×T1 whatever the next resend
            // would be: after Timer A's sixth resend (31.5 s) the next
            // would come at 63.5 s, and so would the 408.
            r.due = (now + r.interval).min(r.started + TIMER_64T1);
            if let Some(at) = r.failover_at {
                r.due = r.due.min(at);
            }
            self.timers.push(r.due, &tx);
        }
        actions
    }

    /// Drops transactions whose time has come; called on every timer tick,
    /// so each call does a tick's worth (at 2,000 calls/s, about 20
    /// transactions, tens of µs) rather than a burst of milliseconds every
    /// so often. The queue's lock is held only to pop and push, never while
    /// transactions are examined, so the SIP thread inserting new calls never
    /// waits on a sweep.
    ///
    /// Returns the forwarded INVITEs whose Timer C ran out: the caller
    /// CANCELs them downstream and answers 408 upstream (RFC 3261 §16.8).
    /// They stay 64×T1 more, for the ACK of that 408.
    pub fn sweep(&self, now: Instant) -> Vec<TxRef> {
        let due = self.expiry.pop_due(now);
        let mut requeue = Vec::new();
        let mut timed_out = Vec::new();
        for tx in due {
            let mut t = tx.lock();
            let age = now.duration_since(t.touched);
            let keep_until = match t.state {
                TxState::Forwarded => self.timer_c,
                // Bounded by the lookup budget; never cut short by a short
                // configured Timer C.
                TxState::Screening => TIMER_C,
                TxState::Completed | TxState::Confirmed => TIMER_64T1,
            };
            if age < keep_until {
                requeue.push((t.touched + keep_until, Arc::clone(&tx)));
            } else if t.state == TxState::Forwarded {
                requeue.push((now + TIMER_64T1 + EXPIRY_GRACE, Arc::clone(&tx)));
                drop(t);
                timed_out.push(tx);
            } else {
                t.stop_timer();
                let (key, charged) = (t.key.clone(), t.charged);
                drop(t);
                if self
                    .map
                    .remove_if(&key, |_, v| Arc::ptr_eq(v, &tx))
                    .is_some()
                {
                    self.len.fetch_sub(1, AtomicOrdering::Relaxed);
                    self.held.fetch_sub(charged, AtomicOrdering::Relaxed);
                }
            }
        }
        if !requeue.is_empty() {
            self.expiry
                .extend(requeue.iter().map(|(due, tx)| (*due, tx)));
        }
        timed_out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const INVITE: &str = "INVITE sip:+15551234567@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-1\r\nMax-Forwards: 70\r\nFrom: <sip:+15557654321@127.0.0.1>;tag=a\r\nTo: <sip:+15551234567@127.0.0.1>\r\nCall-ID: sweep@test\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n";

    /// A new transaction for the test INVITE, keyed `key`.
    pub(super) fn server_tx(key: &str) -> ServerTx {
        let invite = Message::parse(Bytes::from_static(INVITE.as_bytes())).unwrap();
        let peer = Peer::Udp("127.0.0.1:5070".parse().unwrap());
        ServerTx::new(key.into(), invite, peer)
    }

    /// A table holding one transaction in `state`, last changed `changed`
    /// after it was created; returns the table and the creation time.
    fn table_with(state: TxState, changed: Duration) -> (TxTable, Instant) {
        let table = TxTable::default();
        let start = Instant::now();
        let (tx, new) = table.insert(server_tx("k"));
        assert!(new);
        let mut t = tx.lock();
        t.state = state;
        t.touched = start + changed;
        drop(t);
        (table, start)
    }

    #[test]
    fn a_finished_transaction_is_kept_64t1_after_its_last_change_then_dropped() {
        let (table, start) = table_with(TxState::Completed, Duration::ZERO);
        table.sweep(start + TIMER_64T1 - Duration::from_millis(50));
        assert!(
            table.get("k").is_some(),
            "64×T1 has not passed since the change"
        );
        table.sweep(start + TIMER_64T1 + EXPIRY_GRACE + Duration::from_millis(50));
        assert!(table.get("k").is_none(), "dropped at its first look");
    }

    #[test]
    fn a_transaction_changed_late_is_kept_64t1_after_that_change() {
        let late = Duration::from_secs(10);
        let (table, start) = table_with(TxState::Confirmed, late);
        let first_look = start + TIMER_64T1 + EXPIRY_GRACE + Duration::from_millis(50);
        table.sweep(first_look);
        assert!(table.get("k").is_some(), "changed 10 s after the INVITE");
        table.sweep(start + late + TIMER_64T1 - Duration::from_millis(50));
        assert!(table.get("k").is_some(), "still 64×T1 after the change");
        table.sweep(start + late + TIMER_64T1 + Duration::from_millis(50));
        assert!(table.get("k").is_none());
    }

    #[test]
    fn a_forwarded_invite_without_a_final_response_is_handed_back_at_timer_c() {
        let (table, start) = table_with(TxState::Forwarded, Duration::ZERO);
        let first_look = start + TIMER_64T1 + EXPIRY_GRACE + Duration::from_millis(50);
        assert!(table.sweep(first_look).is_empty());
        assert!(table.get("k").is_some(), "still waiting for the PBX");
        assert!(
            table
                .sweep(start + TIMER_C - Duration::from_millis(50))
                .is_empty()
        );
        let late = start + TIMER_C + Duration::from_millis(50);
        let timed_out = table.sweep(late);
        assert_eq!(timed_out.len(), 1, "Timer C has passed: CANCEL and 408");
        assert!(table.get("k").is_some(), "kept for the ACK of the 408");
        // Answered 408 by the caller: dropped 64×T1 later.
        timed_out[0]
            .lock()
            .complete(Bytes::from_static(b"SIP/2.0 408"), true);
        let gone = Instant::now() + TIMER_64T1 + EXPIRY_GRACE + Duration::from_secs(1);
        let gone = gone.max(late + TIMER_64T1 + EXPIRY_GRACE + Duration::from_secs(1));
        assert!(table.sweep(gone).is_empty());
        assert!(table.get("k").is_none());
    }

    #[test]
    fn a_configured_timer_c_shorter_than_64t1_is_looked_at_in_time() {
        let table = TxTable::new(10, usize::MAX, Duration::from_secs(5));
        let start = Instant::now();
        let (tx, _) = table.insert(server_tx("k"));
        tx.lock().state = TxState::Forwarded;
        let timed_out = table.sweep(start + Duration::from_secs(6));
        assert_eq!(timed_out.len(), 1, "not left until the 33 s look");
    }

    /// Every due timer until `end`, looked at every 10 ms like the ticker,
    /// with the time it came due.
    fn timers_until(
        table: &TxTable,
        start: Instant,
        end: Duration,
    ) -> Vec<(Duration, TimerAction)> {
        let mut actions = Vec::new();
        let mut at = Duration::ZERO;
        while at <= end {
            actions.extend(table.due_timers(start + at).into_iter().map(|a| (at, a)));
            at += Duration::from_millis(10);
        }
        actions
    }

    #[test]
    fn retransmissions_follow_timers_a_and_g_and_stop_at_64t1_where_timer_b_answers_408() {
        let udp = Peer::Udp("127.0.0.1:5080".parse().unwrap());
        let tcp = Peer::Tcp("127.0.0.1:5080".parse().unwrap());
        let bytes = Bytes::from_static(b"INVITE");
        let cases = [
            // T1, 2T1, … 32T1: six resends, then Timer B at 64×T1 (not at
            // the seventh resend's 63.5 s).
            (
                "Timer A over UDP",
                Retransmit::new(udp, bytes.clone(), None, true),
                6,
                1,
            ),
            ("Timer B alone over TCP", Retransmit::timer_b(tcp), 0, 1),
            // Capped at T2: 0.5, 1.5, 3.5, 7.5, then every 4 s to 31.5 s;
            // Timer H ends it without a 408.
            (
                "Timer G",
                Retransmit::new(udp, bytes, Some(T2), false),
                10,
                0,
            ),
        ];
        for (name, r, resends, timeouts) in cases {
            let table = TxTable::default();
            let (tx, _) = table.insert(server_tx("k"));
            let mut t = tx.lock();
            t.state = TxState::Forwarded;
            let start = r.started;
            table.start_retransmit(&tx, &mut t, r);
            drop(t);
            let actions = timers_until(&table, start, TIMER_64T1 + Duration::from_secs(40));
            let resent: Vec<_> = actions
                .iter()
                .filter(|(_, a)| matches!(a, TimerAction::Resend(..)))
                .map(|(at, _)| *at)
                .collect();
            assert_eq!(resent.len(), resends, "{name}: {resent:?}");
            assert!(
                resent.iter().all(|at| *at < TIMER_64T1),
                "{name}: {resent:?}"
            );
            let timed_out: Vec<_> = actions
                .iter()
                .filter(|(_, a)| matches!(a, TimerAction::Timeout408(_)))
                .map(|(at, _)| *at)
                .collect();
            assert_eq!(timed_out.len(), timeouts, "{name}");
            for at in timed_out {
                assert!(
                    at >= TIMER_64T1 && at < TIMER_64T1 + Duration::from_millis(20),
                    "{name}: 408 at {at:?}"
                );
            }
            assert!(tx.lock().retransmit.is_none(), "{name}: stopped at 64×T1");
        }
    }

    #[test]
    fn completing_a_transaction_lets_go_of_its_invite_and_keeps_the_response() {
        let table = TxTable::default();
        let (tx, _) = table.insert(server_tx("k"));
        let mut t = tx.lock();
        let r = Retransmit::new(t.reply_to, Bytes::from_static(b"INVITE"), None, true);
        table.start_retransmit(&tx, &mut t, r);
        assert!(t.is_pending());
        let invite = t.complete(Bytes::from_static(b"SIP/2.0 200 OK"), false);
        assert!(invite.is_some(), "handed back to be freed by the caller");
        assert!(t.invite.is_none());
        assert!(t.retransmit.is_none(), "Timer A stopped");
        assert!(!t.is_pending(), "no second final response");
        assert_eq!(t.state, TxState::Completed);
        assert_eq!(t.last_response.as_deref(), Some(&b"SIP/2.0 200 OK"[..]));
    }

    #[test]
    fn after_its_own_final_response_the_proxy_relays_only_a_2xx() {
        let mut t = server_tx("k");
        for code in [180, 200, 486] {
            assert!(t.relays_upstream(code), "relayed while the PBX answers");
        }
        t.complete(Bytes::from_static(b"SIP/2.0 408 Request Timeout"), true);
        assert!(!t.relays_upstream(180));
        assert!(!t.relays_upstream(486), "no second final response");
        assert!(
            t.relays_upstream(200),
            "an answered call still gets through"
        );
    }

    #[test]
    fn the_table_counts_its_transactions_and_is_full_at_its_limit() {
        let table = TxTable::new(2, usize::MAX, TIMER_C);
        let start = Instant::now();
        assert!(table.is_empty());
        table.insert(server_tx("a"));
        assert!(!table.is_full());
        let (_, fresh) = table.insert(server_tx("a"));
        assert!(!fresh);
        assert_eq!(table.len(), 1, "a twin is not counted twice");
        table.insert(server_tx("b"));
        assert!(table.is_full());
        for key in ["a", "b"] {
            table.get(key).unwrap().lock().state = TxState::Completed;
        }
        table.sweep(start + TIMER_64T1 + EXPIRY_GRACE + Duration::from_millis(50));
        assert_eq!(table.len(), 0, "expired ones leave the count");
        assert!(!table.is_full());
    }

    #[test]
    fn the_table_is_full_at_its_byte_limit_and_expiry_gives_the_bytes_back() {
        let one = server_tx("x").charged;
        assert_eq!(one, 2 * INVITE.len() + TX_OVERHEAD_BYTES);
        let table = TxTable::new(100, 2 * one + 1, TIMER_C);
        let start = Instant::now();
        table.insert(server_tx("a"));
        table.insert(server_tx("b"));
        assert_eq!(table.held_bytes(), 2 * one);
        assert!(!table.is_full(), "one byte of room left");
        table.insert(server_tx("b"));
        assert_eq!(table.held_bytes(), 2 * one, "a twin is not charged twice");
        table.insert(server_tx("c"));
        assert!(table.is_full(), "full by bytes at 3 of 100 calls");
        for key in ["a", "b", "c"] {
            table.get(key).unwrap().lock().state = TxState::Completed;
        }
        table.sweep(start + TIMER_64T1 + EXPIRY_GRACE + Duration::from_millis(50));
        assert_eq!((table.len(), table.held_bytes()), (0, 0));
    }

    #[test]
    fn a_held_100_is_asked_for_when_due_unless_a_response_went_first() {
        let table = TxTable::default();
        let start = Instant::now();
        let (owed, _) = table.insert(server_tx("owed"));
        let (answered, _) = table.insert(server_tx("answered"));
        for tx in [&owed, &answered] {
            table.hold_trying(tx, start + TRYING_DELAY);
        }
        assert!(
            table.due_timers(start).is_empty(),
            "nothing before the hold runs out"
        );
        answered
            .lock()
            .complete(Bytes::from_static(b"SIP/2.0 200 OK\r\n\r\n"), false);
        let due = table.due_timers(start + TRYING_DELAY);
        assert!(
            matches!(&due[..], [TimerAction::Trying(tx)] if Arc::ptr_eq(tx, &owed)),
            "only the transaction with nothing sent upstream: {due:?}"
        );
        assert!(
            table.due_timers(start + TRYING_DELAY * 2).is_empty(),
            "asked for once"
        );
    }
}
