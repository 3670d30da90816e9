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

mod inbound;
mod state;
mod tls;
mod wire;

use std::io::{self, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::report::Report;
use super::uas::{Inline, UasOptions};
use inbound::Inbound;
use state::State;
use wire::Wire;

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
    /// TLS over the TCP connections, with this client configuration.
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// INVITEs per second.
    pub rate: f64,
    pub count: u64,
    /// Caller numbers, used in turn; empty = generated.
    pub callers: Vec<String>,
    pub called: String,
    /// Header lines added to every INVITE, each ending in CRLF (an
    /// `Identity` header, to measure signed calls).
    pub extra_headers: String,
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

/// The sockets toward the targets: one UDP socket for all of them, or a TCP
/// stream each. Blocking for sends; reads never block (see [`Inbound`]).
enum Out {
    Udp(UdpSocket, Vec<SocketAddr>),
    Tcp(Vec<TcpStream>),
    /// Per target, the socket the poll loop watches and the TLS
    /// connection over it.
    Tls(Vec<TcpStream>, Vec<std::cell::RefCell<tls::TlsConn>>),
}

impl Out {
    fn send(&self, target: usize, bytes: &[u8]) {
        let _ = match self {
            Out::Udp(sock, addrs) => sock.send_to(bytes, addrs[target]).map(|_| ()),
            Out::Tcp(streams) => (&streams[target]).write_all(bytes),
            Out::Tls(_, conns) => conns[target].borrow_mut().send(bytes),
        };
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
    if let Some(config) = &opts.tls {
        let (mut watched, mut conns) = (Vec::new(), Vec::new());
        for &t in &opts.targets {
            let (conn, watch) = tls::TlsConn::connect(t, Arc::clone(config)).map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("cannot connect to {t} over TLS: {e}; is the target listening for TLS, and does --tls-ca name its CA?"),
                )
            })?;
            watched.push(watch);
            conns.push(std::cell::RefCell::new(conn));
        }
        let local = watched[0].local_addr()?;
        return Ok((Out::Tls(watched, conns), local));
    }
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
        transport: match (&opts.tls, opts.tcp) {
            (Some(_), _) => "TLS",
            (None, true) => "TCP",
            (None, false) => "UDP",
        },
        targets: opts.targets.clone(),
        called: opts.called.clone(),
        callers: opts.callers.clone(),
        extra_headers: opts.extra_headers.clone(),
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
