//! The trunk side of `sipsentry bench`: sends INVITEs on an open-loop
//! schedule, ACKs every final response, sends BYE after a 2xx, and measures
//! each call in microseconds.
//!
//! Why one OS thread with `ppoll` instead of the async runtime or a thread per
//! job: tokio's timer has millisecond granularity, which would swamp the tens
//! of microseconds being measured; and on a small machine every extra thread
//! the instrument wakes (a sender, a reader handing each message to a state
//! thread) is a wake-up that competes with the relay under test for the CPU.
//! One thread sleeps in `ppoll` until the next scheduled INVITE or the next
//! message (timer slack set to 1 µs), timestamps each message the moment
//! `recv` returns it, and owns all per-call state, so nothing is locked or
//! handed over per message.
//!
//! Open loop, no coordinated omission: call *i* is *defined* to be sent at
//! `t0 + i/rate`, and every latency is measured from that instant. If the
//! tool or the server falls behind, the delay shows in the figures instead of
//! silently thinning the load.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;

use super::report::{self, CallSample, Metrics, Report, Summary, TargetReport};
use super::uas::{Inline, UasOptions};
use crate::sip::header::{self, NameAddr};
use crate::sip::message::{HeaderName, Message, Method, frame_len};
use crate::sip::udp::try_recv_from;
use smallvec::SmallVec;

/// RFC 3261 T1: first INVITE retransmission interval.
const T1: Duration = Duration::from_millis(500);
/// How long after Ctrl-C in-flight calls may still complete.
const STOP_GRACE: Duration = Duration::from_secs(1);
/// How often unanswered INVITEs are retransmitted and calls timed out.
const SWEEP: Duration = Duration::from_millis(5);
/// Datagrams read in one go before due INVITEs are sent again, so a flood
/// of responses cannot hold back the schedule.
const BATCH: usize = 256;

#[derive(Debug, Clone)]
pub struct UacOptions {
    /// One target, or more with `--compare` (calls take turns among them on one
    /// schedule; the last is the baseline differences are measured against).
    pub targets: Vec<SocketAddr>,
    pub tcp: bool,
    /// INVITEs per second.
    pub rate: f64,
    pub count: u64,
    /// Caller numbers, used in turn; empty = generated.
    pub callers: Vec<String>,
    pub called: String,
    /// At most this many calls in flight; later calls wait (and the wait is measured).
    pub concurrency: Option<u64>,
    /// A call with no final response (or a BYE with no 200) after this is a timeout.
    pub timeout: Duration,
    pub progress: bool,
    /// Also be the UAS, on this thread: answer the requests that reach this
    /// UDP address (the targets' next hop and the direct baseline), so the
    /// UAS's own wake-ups leave the figures.
    pub uas: Option<UasOptions>,
    /// Never sleep: look at the sockets again and again, yielding the CPU in
    /// between. With `uas` the instrument then wakes no thread of its own and
    /// what remains in the figures is what the target adds.
    pub spin: bool,
}

#[derive(Debug, Clone, Copy, Default)]
struct Call {
    final_code: u16,
    retransmits: u8,
    bye_sent: Option<Instant>,
    done: bool,
    /// The figures recorded for this call, in µs (for `--samples`); a first
    /// provisional response came when `provisional_us` is set.
    provisional_us: Option<u64>,
    final_us: Option<u64>,
    bye_us: Option<u64>,
}

/// The sockets toward the targets: one UDP socket for all of them, or a TCP
/// stream each. Blocking for sends; reads never block (see [`Inbound`]).
enum Out {
    Udp(UdpSocket, Vec<SocketAddr>),
    Tcp(Vec<TcpStream>),
}

impl Out {
    fn send(&self, target: usize, bytes: &[u8]) {
        let _ = match self {
            Out::Udp(sock, addrs) => sock.send_to(bytes, addrs[target]).map(|_| ()),
            Out::Tcp(streams) => (&streams[target]).write_all(bytes),
        };
    }
}

/// Per-run constants for building messages.
struct Wire {
    run: u32,
    local: SocketAddr,
    transport: &'static str,
    targets: Vec<SocketAddr>,
    called: String,
    callers: Vec<String>,
}

const SDP: &str = "v=0\r\no=bench 2890844526 2890844526 IN IP4 127.0.0.1\r\ns=sipsentry bench\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 49170 RTP/AVP 0 8 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\na=ptime:20\r\na=sendrecv\r\n";

impl Wire {
    fn target_of(&self, i: u64) -> usize {
        (i % self.targets.len() as u64) as usize
    }

    fn caller(&self, i: u64) -> String {
        if self.callers.is_empty() {
            format!("+1555{:07}", (i * 7919) % 10_000_000)
        } else {
            self.callers[(i % self.callers.len() as u64) as usize].clone()
        }
    }

    fn ruri(&self, i: u64) -> String {
        format!(
            "sip:{}@{};user=phone",
            self.called,
            self.targets[self.target_of(i)]
        )
    }

    fn invite(&self, i: u64) -> String {
        let (local, run, t) = (self.local, self.run, self.transport);
        format!(
            "INVITE {ruri} SIP/2.0\r\nVia: SIP/2.0/{t} {local};branch=z9hG4bK-sb{run}-{i}\r\nMax-Forwards: 70\r\n\
             From: <sip:{caller}@{local};user=phone>;tag=sb{i}\r\nTo: <{ruri}>\r\nCall-ID: sb{run}-{i}@bench\r\n\
             CSeq: 1 INVITE\r\nContact: <sip:bench@{local}>\r\nAllow: INVITE, ACK, CANCEL, BYE, OPTIONS\r\n\
             User-Agent: sipsentry-bench\r\nContent-Type: application/sdp\r\nContent-Length: {len}\r\n\r\n{SDP}",
            ruri = self.ruri(i),
            caller = self.caller(i),
            len = SDP.len()
        )
    }

    /// ACK (`ack`) or BYE for call `i` after final response `resp`.
    fn in_dialog(&self, method: &str, i: u64, resp: &Message, non2xx: bool) -> String {
        let (local, run, t) = (self.local, self.run, self.transport);
        let to = header::text(resp.header(HeaderName::To).unwrap_or_default()).unwrap_or_default();
        let contact = resp
            .header(HeaderName::Contact)
            .and_then(header::text)
            .and_then(|c| NameAddr::parse(&c).map(|n| n.uri.to_string()));
        // A non-2xx ACK is part of the INVITE transaction: same branch and URI.
        let (ruri, branch) = if non2xx {
            (self.ruri(i), format!("z9hG4bK-sb{run}-{i}"))
        } else {
            (
                contact.unwrap_or_else(|| self.ruri(i)),
                format!("z9hG4bK-sb{run}-{i}-{method}"),
            )
        };
        let cseq = if method == "BYE" { 2 } else { 1 };
        format!(
            "{method} {ruri} SIP/2.0\r\nVia: SIP/2.0/{t} {local};branch={branch}\r\nMax-Forwards: 70\r\n\
             From: <sip:{caller}@{local};user=phone>;tag=sb{i}\r\nTo: {to}\r\nCall-ID: sb{run}-{i}@bench\r\n\
             CSeq: {cseq} {method}\r\nContent-Length: 0\r\n\r\n",
            caller = self.caller(i)
        )
    }

    /// The call index of a response of this run.
    fn index(&self, msg: &Message) -> Option<u64> {
        let id = std::str::from_utf8(msg.call_id()).ok()?;
        let rest = id.strip_prefix("sb")?;
        let (run, rest) = rest.split_once('-')?;
        if run.parse::<u32>().ok()? != self.run {
            return None;
        }
        rest.split('@').next()?.parse().ok()
    }
}

/// The address this machine uses toward `target` (a connected UDP socket sends nothing).
fn local_ip_toward(target: SocketAddr) -> io::Result<std::net::IpAddr> {
    let any = if target.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    };
    let probe = UdpSocket::bind(any)?;
    probe.connect(target)?;
    Ok(probe.local_addr()?.ip())
}

/// Lets this thread's sleeps end within microseconds of their deadline
/// (Linux defaults to 50 µs of slack).
fn tighten_timer_slack() {
    #[cfg(target_os = "linux")]
    // SAFETY: PR_SET_TIMERSLACK takes an integer argument and only affects the
    // calling thread's timer slack; it touches no memory we own.
    unsafe {
        libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong);
    }
}

/// Opens the sockets toward the targets.
fn connect(opts: &UacOptions) -> io::Result<(Out, SocketAddr)> {
    if opts.tcp {
        let mut streams = Vec::new();
        for &t in &opts.targets {
            let s = TcpStream::connect_timeout(&t, Duration::from_secs(3)).map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("cannot connect to {t} over TCP: {e}; is the target listening? (a test UAS: sipsentry bench --uas {t})"),
                )
            })?;
            s.set_nodelay(true)?;
            streams.push(s);
        }
        let local = streams[0].local_addr()?;
        Ok((Out::Tcp(streams), local))
    } else {
        let target = opts.targets[0];
        let ip = local_ip_toward(target).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("no route to {target}: {e}; check the address"),
            )
        })?;
        let sock = super::bind_udp(SocketAddr::new(ip, 0))?;
        let local = sock.local_addr()?;
        Ok((Out::Udp(sock, opts.targets.clone()), local))
    }
}

/// Runs the load; returns when every call is complete or timed out, or soon
/// after `stop` is set (a partial report).
pub fn run(opts: &UacOptions, stop: Arc<AtomicBool>) -> io::Result<Report> {
    assert!(
        !opts.targets.is_empty() && opts.rate > 0.0,
        "bench needs a target and a positive rate"
    );
    let (out, local) = connect(opts)?;
    let uas = opts.uas.clone().map(Inline::bind).transpose()?;
    let wire = Arc::new(Wire {
        // Distinguishes this run's calls from stray responses of an earlier one.
        run: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos())
            ^ std::process::id(),
        local,
        transport: if opts.tcp { "TCP" } else { "UDP" },
        targets: opts.targets.clone(),
        called: opts.called.clone(),
        callers: opts.callers.clone(),
    });
    tighten_timer_slack();
    let interval = Duration::from_secs_f64(1.0 / opts.rate);
    let t0 = Instant::now() + Duration::from_millis(20);
    let mut inbound = Inbound::new(&out);
    let mut state = State::new(opts, Arc::clone(&wire), out, t0, interval);
    let progress = progress_bar(opts);
    // Calls below `next` have been sent.
    let mut next = 0u64;
    let mut stop_at: Option<Instant> = None;
    loop {
        let now = Instant::now();
        let stopping = stop.load(Ordering::Relaxed);
        let room =
            |next: u64, completed: u64| opts.concurrency.is_none_or(|k| next - completed < k);
        while !stopping
            && next < opts.count
            && state.scheduled(next) <= now
            && room(next, state.completed)
        {
            state
                .out
                .send(wire.target_of(next), wire.invite(next).as_bytes());
            next += 1;
        }
        if state.last_sweep + SWEEP <= now {
            state.sweep(now, next);
            if let Some(p) = &progress {
                p.set_position(state.completed);
            }
        }
        let all_sent = next >= opts.count || stopping;
        if all_sent && state.completed >= next {
            break;
        }
        if stopping && now >= *stop_at.get_or_insert(now + STOP_GRACE) {
            break;
        }
        // Sleep until the next INVITE is due, the next sweep, or a message.
        let mut wake = state.last_sweep + SWEEP;
        if !all_sent && room(next, state.completed) {
            wake = wake.min(state.scheduled(next));
        }
        let timeout = wake.saturating_duration_since(now);
        for (at, bytes) in inbound.wait(&state.out, uas.as_ref(), timeout, opts.spin)? {
            state.on_message(at, bytes);
        }
    }
    if let Some(p) = progress {
        p.finish_and_clear();
    }
    Ok(state.report(opts, next, stop.load(Ordering::Relaxed), t0))
}

fn progress_bar(opts: &UacOptions) -> Option<indicatif::ProgressBar> {
    use std::io::IsTerminal;
    (opts.progress && io::stderr().is_terminal()).then(|| {
        let p = indicatif::ProgressBar::new(opts.count);
        p.set_style(
            indicatif::ProgressStyle::with_template(
                "{bar:40} {pos}/{len} calls  {per_sec}  eta {eta}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        p
    })
}

/// Reading what the targets send: waits with `ppoll` (microsecond timeouts),
/// then takes everything already queued without blocking.
struct Inbound {
    buf: Vec<u8>,
    /// Per TCP stream, bytes read but not yet framed.
    partial: Vec<Vec<u8>>,
    /// Per TCP stream, whether the target closed it.
    closed: Vec<bool>,
    /// Messages of one wake-up, with the instant each was read.
    got: Vec<(Instant, Bytes)>,
}

impl Inbound {
    fn new(out: &Out) -> Inbound {
        let streams = match out {
            Out::Udp(..) => 0,
            Out::Tcp(s) => s.len(),
        };
        Inbound {
            buf: vec![0u8; 65_536],
            partial: vec![Vec::new(); streams],
            closed: vec![false; streams],
            got: Vec::new(),
        }
    }

    /// Waits at most `timeout` for something to read (not at all when
    /// `spin`: then it looks once and yields the CPU if nothing came), answers
    /// what reached the inline UAS, and returns what reached the UAC.
    fn wait(
        &mut self,
        out: &Out,
        uas: Option<&Inline>,
        timeout: Duration,
        spin: bool,
    ) -> io::Result<std::vec::Drain<'_, (Instant, Bytes)>> {
        use rustix::event::{PollFd, PollFlags, Timespec};
        let timeout = if spin { Duration::ZERO } else { timeout };
        let timeout = Timespec::try_from(timeout).unwrap_or(Timespec {
            tv_sec: 1,
            tv_nsec: 0,
        });
        // The UAC's sockets still open (their index in `out`), then the UAS's.
        // Inline storage: this runs for every wake-up, and in `spin` mode
        // without pause.
        let mut fds: SmallVec<[PollFd<'_>; 4]> = SmallVec::new();
        let mut open: SmallVec<[usize; 4]> = SmallVec::new();
        match out {
            Out::Udp(sock, _) => {
                fds.push(PollFd::new(sock, PollFlags::IN));
                open.push(0);
            }
            Out::Tcp(streams) => {
                for (k, stream) in streams.iter().enumerate() {
                    if !self.closed[k] {
                        fds.push(PollFd::new(stream, PollFlags::IN));
                        open.push(k);
                    }
                }
            }
        }
        if let Some(uas) = uas {
            fds.push(PollFd::new(&uas.sock, PollFlags::IN));
        }
        let ready = match rustix::event::poll(&mut fds, Some(&timeout)) {
            Ok(n) => n > 0,
            Err(rustix::io::Errno::INTR) => false,
            Err(e) => return Err(e.into()),
        };
        if !ready {
            if spin {
                std::thread::yield_now();
            }
            return Ok(self.got.drain(..));
        }
        let is_ready = |slot: usize| !fds[slot].revents().is_empty();
        if let Some(uas) = uas
            && is_ready(fds.len() - 1)
        {
            uas.answer_queued(&mut self.buf, BATCH);
        }
        for (slot, &k) in open.iter().enumerate() {
            if !is_ready(slot) {
                continue;
            }
            match out {
                Out::Udp(sock, _) => self.drain_udp(sock),
                Out::Tcp(streams) => self.read_tcp(k, &streams[k]),
            }
        }
        Ok(self.got.drain(..))
    }

    /// The datagrams already queued on `sock` (at most [`BATCH`]), without
    /// blocking. An error is an ICMP error for an earlier send; the call it
    /// belongs to times out on its own.
    fn drain_udp(&mut self, sock: &UdpSocket) {
        for _ in 0..BATCH {
            let Ok(Some((n, _))) = try_recv_from(sock, &mut self.buf) else {
                return;
            };
            let at = Instant::now();
            self.got.push((at, Bytes::copy_from_slice(&self.buf[..n])));
        }
    }

    /// One read from a readable stream, split into messages. A stream the
    /// target closed (or that failed) is read no more; its calls time out.
    fn read_tcp(&mut self, k: usize, mut stream: &TcpStream) {
        let n = match stream.read(&mut self.buf) {
            Ok(n) if n > 0 => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return,
            _ => {
                self.closed[k] = true;
                return;
            }
        };
        let at = Instant::now();
        let partial = &mut self.partial[k];
        partial.extend_from_slice(&self.buf[..n]);
        while let Ok(Some(len)) = frame_len(partial) {
            let frame: Vec<u8> = partial.drain(..len).collect();
            self.got.push((at, Bytes::from(frame)));
        }
    }
}

/// All per-call state, owned by one thread.
struct State {
    wire: Arc<Wire>,
    out: Out,
    calls: Vec<Call>,
    t0: Instant,
    interval: Duration,
    timeout: Duration,
    /// Calls below this index are all done.
    oldest: u64,
    completed: u64,
    last_sweep: Instant,
    per_target: Vec<Counters>,
}

struct Counters {
    hist: [Histogram<u64>; 3],
    report: TargetReport,
}

impl State {
    fn new(opts: &UacOptions, wire: Arc<Wire>, out: Out, t0: Instant, interval: Duration) -> State {
        State {
            calls: vec![Call::default(); opts.count as usize],
            per_target: opts
                .targets
                .iter()
                .map(|t| Counters {
                    hist: [
                        report::histogram(),
                        report::histogram(),
                        report::histogram(),
                    ],
                    report: TargetReport {
                        target: t.to_string(),
                        ..Default::default()
                    },
                })
                .collect(),
            wire,
            out,
            t0,
            interval,
            timeout: opts.timeout,
            oldest: 0,
            completed: 0,
            last_sweep: Instant::now(),
        }
    }

    fn scheduled(&self, i: u64) -> Instant {
        self.t0 + self.interval.mul_f64(i as f64)
    }

    fn finish(&mut self, i: u64) {
        let call = &mut self.calls[i as usize];
        if !call.done {
            call.done = true;
            self.completed += 1;
        }
    }

    fn on_message(&mut self, at: Instant, bytes: Bytes) {
        if bytes.is_empty() {
            return;
        }
        let Ok(msg) = Message::parse(bytes) else {
            return;
        };
        let (Some(code), Some(i)) = (msg.status(), self.wire.index(&msg)) else {
            return;
        };
        if i as usize >= self.calls.len() {
            return;
        }
        let target = self.wire.target_of(i);
        let us = |from: Instant| at.saturating_duration_since(from).as_micros() as u64;
        let sched = self.scheduled(i);
        let call = self.calls[i as usize];
        let counters = &mut self.per_target[target];
        match (msg.cseq_method, code) {
            (Method::Invite, 100..=199) => {
                if call.provisional_us.is_some() || call.final_code != 0 {
                    counters.report.retransmissions_seen += 1;
                } else {
                    let _ = counters.hist[0].record(us(sched).max(1));
                    self.calls[i as usize].provisional_us = Some(us(sched));
                }
            }
            (Method::Invite, _) => {
                let non2xx = code >= 300;
                if call.final_code != 0 {
                    // The server retransmits: our ACK was lost or late. ACK again.
                    counters.report.retransmissions_seen += 1;
                    let ack = self.wire.in_dialog("ACK", i, &msg, non2xx);
                    self.out.send(target, ack.as_bytes());
                    return;
                }
                let _ = counters.hist[1].record(us(sched).max(1));
                *counters.report.codes.entry(code).or_default() += 1;
                self.calls[i as usize].final_code = code;
                self.calls[i as usize].final_us = Some(us(sched));
                let ack = self.wire.in_dialog("ACK", i, &msg, non2xx);
                self.out.send(target, ack.as_bytes());
                if non2xx || call.done {
                    self.finish(i);
                } else {
                    let bye = self.wire.in_dialog("BYE", i, &msg, false);
                    self.calls[i as usize].bye_sent = Some(Instant::now());
                    self.out.send(target, bye.as_bytes());
                }
            }
            (Method::Bye, 200..=699) => {
                if let (Some(sent), false) = (call.bye_sent, call.done) {
                    let _ = counters.hist[2].record(us(sent).max(1));
                    self.calls[i as usize].bye_us = Some(us(sent));
                    self.finish(i);
                } else {
                    counters.report.retransmissions_seen += 1;
                }
            }
            _ => {}
        }
    }

    /// Retransmits unanswered INVITEs (Timer A) and times calls out.
    fn sweep(&mut self, now: Instant, sent: u64) {
        self.last_sweep = now;
        let mut i = self.oldest;
        while i < sent {
            let call = self.calls[i as usize];
            if call.done {
                if i == self.oldest {
                    self.oldest += 1;
                }
                i += 1;
                continue;
            }
            let target = self.wire.target_of(i);
            let age = now.saturating_duration_since(self.scheduled(i));
            if call.final_code == 0 && age >= self.timeout {
                self.per_target[target].report.timeouts += 1;
                self.finish(i);
            } else if call
                .bye_sent
                .is_some_and(|b| now.saturating_duration_since(b) >= self.timeout)
            {
                self.per_target[target].report.bye_timeouts += 1;
                self.finish(i);
            } else if self.wire.transport != "TCP"
                && call.provisional_us.is_none()
                && call.final_code == 0
            {
                // Timer A: T1, 2·T1, 4·T1… after the scheduled send.
                let due = T1 * ((1u32 << (call.retransmits + 1)) - 1);
                if age >= due && call.retransmits < 6 {
                    self.calls[i as usize].retransmits += 1;
                    self.per_target[target].report.retransmissions_sent += 1;
                    self.out.send(target, self.wire.invite(i).as_bytes());
                }
            }
            i += 1;
        }
    }

    fn report(mut self, opts: &UacOptions, sent: u64, partial: bool, t0: Instant) -> Report {
        let n = self.per_target.len() as u64;
        let mut targets = Vec::new();
        for (k, c) in self.per_target.iter_mut().enumerate() {
            c.report.sent = sent / n + u64::from((k as u64) < sent % n);
            c.report.metrics = Metrics {
                invite_to_provisional: Summary::of(&c.hist[0]),
                invite_to_final: Summary::of(&c.hist[1]),
                bye_to_200: Summary::of(&c.hist[2]),
            };
            targets.push(c.report.clone());
        }
        let added = match targets.split_last() {
            Some((base, others)) if !others.is_empty() => others
                .iter()
                .map(|t| report::Added {
                    target: t.target.clone(),
                    baseline: base.target.clone(),
                    difference: t
                        .metrics
                        .invite_to_final
                        .minus(&base.metrics.invite_to_final),
                })
                .collect(),
            _ => Vec::new(),
        };
        let start_ns = monotonic_ns(self.t0);
        let calls = (0..sent)
            .map(|i| {
                let c = &self.calls[i as usize];
                CallSample {
                    call: i,
                    target: self.wire.target_of(i),
                    scheduled_monotonic_ns: start_ns
                        + self.interval.mul_f64(i as f64).as_nanos() as u64,
                    provisional_us: c.provisional_us,
                    final_us: c.final_us,
                    code: c.final_code,
                    bye_us: c.bye_us,
                }
            })
            .collect();
        Report {
            transport: self.wire.transport.to_lowercase(),
            rate: opts.rate,
            scheduled: opts.count,
            partial,
            elapsed_s: t0.elapsed().as_secs_f64(),
            targets,
            added_invite_to_final: added,
            calls,
        }
    }
}

/// `at` on `CLOCK_MONOTONIC`, in nanoseconds: the clock `Instant` reads on
/// Linux, whose raw value `Instant` does not expose.
fn monotonic_ns(at: Instant) -> u64 {
    let now = Instant::now();
    let ts = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    let now_ns = ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64;
    if at <= now {
        now_ns.saturating_sub(now.duration_since(at).as_nanos() as u64)
    } else {
        now_ns + at.duration_since(now).as_nanos() as u64
    }
}
