//! The trunk side of `sipsentry bench`: sends INVITEs on an open-loop
//! schedule, ACKs every final response, sends BYE after a 2xx, and measures
//! each call in microseconds.
//!
//! Why OS threads and blocking sockets instead of the async runtime: tokio's
//! timer has millisecond granularity, which would swamp the tens of
//! microseconds being measured. The sender sleeps to each scheduled instant
//! (with the thread's timer slack set to 1 µs); readers timestamp a message
//! the moment `recv` returns it; one state thread owns all per-call state, so
//! nothing is locked per message.
//!
//! Open loop, no coordinated omission: call *i* is *defined* to be sent at
//! `t0 + i/rate`, and every latency is measured from that instant. If the
//! tool or the server falls behind, the delay shows in the figures instead of
//! silently thinning the load.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;

use super::report::{self, Metrics, Report, Summary, TargetReport};
use crate::sip::header::{self, NameAddr};
use crate::sip::message::{HeaderName, Message, Method, frame_len};

/// RFC 3261 T1: first INVITE retransmission interval.
const T1: Duration = Duration::from_millis(500);
/// How long after Ctrl-C in-flight calls may still complete.
const STOP_GRACE: Duration = Duration::from_secs(1);
/// Messages read but not yet processed (bounded).
const INBOX: usize = 65_536;

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
}

#[derive(Debug, Clone, Copy, Default)]
struct Call {
    provisional: bool,
    final_code: u16,
    retransmits: u8,
    bye_sent: Option<Instant>,
    done: bool,
}

/// Sends to targets over UDP or TCP.
#[derive(Clone)]
enum Out {
    Udp(Arc<UdpSocket>, Vec<SocketAddr>),
    Tcp(Vec<Arc<Mutex<TcpStream>>>),
}

impl Out {
    fn send(&self, target: usize, bytes: &[u8]) {
        let _ = match self {
            Out::Udp(sock, addrs) => sock.send_to(bytes, addrs[target]).map(|_| ()),
            Out::Tcp(streams) => streams[target]
                .lock()
                .map_or(Ok(()), |mut s| s.write_all(bytes)),
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

fn sleep_until(t: Instant) {
    let now = Instant::now();
    if t > now {
        thread::sleep(t - now);
    }
}

/// Runs the load; returns when every call is complete or timed out, or soon
/// after `stop` is set (a partial report).
pub fn run(opts: &UacOptions, stop: Arc<AtomicBool>) -> io::Result<Report> {
    assert!(
        !opts.targets.is_empty() && opts.rate > 0.0,
        "bench needs a target and a positive rate"
    );
    let ip = local_ip_toward(opts.targets[0])?;
    let (tx, inbox) = mpsc::sync_channel::<(Instant, Bytes)>(INBOX);
    let (out, local) = if opts.tcp {
        let mut streams = Vec::new();
        let mut local = None;
        for &t in &opts.targets {
            let s = TcpStream::connect_timeout(&t, Duration::from_secs(3))?;
            s.set_nodelay(true)?;
            local.get_or_insert(s.local_addr()?);
            spawn_tcp_reader(s.try_clone()?, tx.clone());
            streams.push(Arc::new(Mutex::new(s)));
        }
        (Out::Tcp(streams), local.expect("one target at least"))
    } else {
        let sock = UdpSocket::bind(SocketAddr::new(ip, 0))?;
        let local = sock.local_addr()?;
        spawn_udp_reader(sock.try_clone()?, tx.clone());
        (Out::Udp(Arc::new(sock), opts.targets.clone()), local)
    };
    drop(tx);
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

    let interval = Duration::from_secs_f64(1.0 / opts.rate);
    let t0 = Instant::now() + Duration::from_millis(20);
    let sent = Arc::new(AtomicU64::new(0));
    let completed = Arc::new(AtomicU64::new(0));
    let sender_done = Arc::new(AtomicBool::new(false));
    let sender = {
        let (wire, out, sent, completed, done, stop) = (
            Arc::clone(&wire),
            out.clone(),
            Arc::clone(&sent),
            Arc::clone(&completed),
            Arc::clone(&sender_done),
            Arc::clone(&stop),
        );
        let (count, concurrency) = (opts.count, opts.concurrency);
        thread::spawn(move || {
            tighten_timer_slack();
            for i in 0..count {
                sleep_until(t0 + interval.mul_f64(i as f64));
                while concurrency.is_some_and(|k| {
                    sent.load(Ordering::Relaxed) - completed.load(Ordering::Relaxed) >= k
                }) && !stop.load(Ordering::Relaxed)
                {
                    thread::sleep(Duration::from_micros(50));
                }
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                out.send(wire.target_of(i), wire.invite(i).as_bytes());
                sent.store(i + 1, Ordering::Release);
            }
            done.store(true, Ordering::Release);
        })
    };

    let mut state = State::new(opts, Arc::clone(&wire), out, t0, interval);
    let progress = progress_bar(opts);
    let mut stop_at: Option<Instant> = None;
    loop {
        match inbox.recv_timeout(Duration::from_millis(5)) {
            Ok((at, bytes)) => state.on_message(at, bytes),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => break,
        }
        let now = Instant::now();
        if state.last_sweep + Duration::from_millis(5) <= now {
            state.sweep(now, sent.load(Ordering::Acquire));
            completed.store(state.completed, Ordering::Relaxed);
            if let Some(p) = &progress {
                p.set_position(state.completed);
            }
        }
        let all_sent = sender_done.load(Ordering::Acquire);
        if all_sent && state.completed >= sent.load(Ordering::Acquire) {
            break;
        }
        if stop.load(Ordering::Relaxed) {
            let deadline = *stop_at.get_or_insert(now + STOP_GRACE);
            if now >= deadline && all_sent {
                break;
            }
        }
    }
    let _ = sender.join();
    if let Some(p) = progress {
        p.finish_and_clear();
    }
    Ok(state.report(
        opts,
        sent.load(Ordering::Acquire),
        stop.load(Ordering::Relaxed),
        t0,
    ))
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

fn spawn_udp_reader(sock: UdpSocket, tx: SyncSender<(Instant, Bytes)>) {
    let _ = sock.set_read_timeout(Some(Duration::from_millis(200)));
    thread::spawn(move || {
        let mut buf = vec![0u8; 65_536];
        loop {
            match sock.recv_from(&mut buf) {
                Ok((n, _)) => {
                    let at = Instant::now();
                    if tx.send((at, Bytes::copy_from_slice(&buf[..n]))).is_err() {
                        return;
                    }
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    // Wake up now and then to notice the run is over.
                    if tx.send((Instant::now(), Bytes::new())).is_err() {
                        return;
                    }
                }
                Err(_) => {}
            }
        }
    });
}

fn spawn_tcp_reader(mut stream: TcpStream, tx: SyncSender<(Instant, Bytes)>) {
    thread::spawn(move || {
        let mut buf = Vec::with_capacity(65_536);
        let mut chunk = vec![0u8; 65_536];
        loop {
            let n = match stream.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            let at = Instant::now();
            buf.extend_from_slice(&chunk[..n]);
            while let Ok(Some(len)) = frame_len(&buf) {
                let frame: Vec<u8> = buf.drain(..len).collect();
                if tx.send((at, Bytes::from(frame))).is_err() {
                    return;
                }
            }
        }
    });
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
                if call.provisional || call.final_code != 0 {
                    counters.report.retransmissions_seen += 1;
                } else {
                    let _ = counters.hist[0].record(us(sched).max(1));
                    self.calls[i as usize].provisional = true;
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
            } else if self.wire.transport != "TCP" && !call.provisional && call.final_code == 0 {
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
        Report {
            transport: self.wire.transport.to_lowercase(),
            rate: opts.rate,
            scheduled: opts.count,
            partial,
            elapsed_s: t0.elapsed().as_secs_f64(),
            targets,
            added_invite_to_final: added,
        }
    }
}
