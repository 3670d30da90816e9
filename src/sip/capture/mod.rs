//! Capture: every SIP message received and sent, copied to a Homer
//! collector as HEPv3 over UDP ([`hep`]).
//!
//! The call path only stamps the time and hands the message (its
//! reference-counted bytes, not a copy) to a bounded queue; a thread of
//! its own finds the Call-ID, encodes and sends. A full queue drops the
//! copy and counts it: capture never makes a call wait, and a collector
//! that is slow or gone costs the calls nothing but the copies it misses.

use std::net::{SocketAddr, ToSocketAddrs, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, SyncSender, TrySendError};
use std::time::SystemTime;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::metrics::{Collect, Scrape};

pub mod hep;

pub use hep::{Captured, IPPROTO_TCP, IPPROTO_UDP};

/// Default `hep.queue`: messages waiting for the capture thread (at 2,000
/// calls/s and about 14 messages a call, a second and a half of traffic).
pub const QUEUE: usize = 40_000;

/// The `[hep]` section.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct HepConfig {
    /// The collector, `host:port` (Homer's heplify-server listens on 9060);
    /// empty: no capture.
    pub collector: String,
    /// The capture agent id written into every packet (Homer's
    /// "capture id"), telling this node's packets from others'.
    pub agent_id: u32,
    /// The environment variable holding the collector's password (HEP's
    /// auth key); unset or empty: none sent.
    pub password_env: String,
    /// Messages queued for the capture thread; beyond it copies are
    /// dropped and counted.
    pub queue: usize,
}

impl Default for HepConfig {
    fn default() -> Self {
        HepConfig {
            collector: String::new(),
            agent_id: 1,
            password_env: "SIPSENTRY_HEP_PASSWORD".into(),
            queue: QUEUE,
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CaptureError {
    #[error("hep.collector {collector:?}: {reason}; give host:port, e.g. \"homer.example:9060\"")]
    Collector { collector: String, reason: String },
    #[error("hep.queue is 0; give the number of messages that may wait, e.g. {QUEUE}")]
    Queue,
    #[error("cannot start the capture thread: {0}")]
    Thread(std::io::Error),
}

/// What capture did, for `/metrics`.
#[derive(Debug, Default)]
pub struct CaptureStats {
    sent: AtomicU64,
    dropped: AtomicU64,
    failed: AtomicU64,
}

impl Collect for CaptureStats {
    fn collect(&self, out: &mut Scrape) {
        out.counter(
            "sipsentry_hep_sent",
            "SIP messages copied to the HEP collector",
        )
        .count(vec![], self.sent.load(Ordering::Relaxed));
        out.counter(
            "sipsentry_hep_dropped",
            "SIP messages not copied because the capture queue was full (hep.queue)",
        )
        .count(vec![], self.dropped.load(Ordering::Relaxed));
        out.counter(
            "sipsentry_hep_failed",
            "HEP packets that could not be sent, or were too large for one packet",
        )
        .count(vec![], self.failed.load(Ordering::Relaxed));
    }
}

/// The call path's end of capture: cheap to call, never blocks.
#[derive(Debug, Clone)]
pub struct Capture {
    tx: SyncSender<Captured>,
    stats: Arc<CaptureStats>,
}

impl Capture {
    /// Starts the capture thread when `hep.collector` is set. The thread
    /// ends once every `Capture` is dropped.
    pub fn start(config: &HepConfig) -> Result<Option<Capture>, CaptureError> {
        if config.collector.is_empty() {
            return Ok(None);
        }
        if config.queue == 0 {
            return Err(CaptureError::Queue);
        }
        let bad = |reason: String| CaptureError::Collector {
            collector: config.collector.clone(),
            reason,
        };
        let collector = config
            .collector
            .to_socket_addrs()
            .map_err(|e| bad(e.to_string()))?
            .next()
            .ok_or_else(|| bad("resolves to no address".into()))?;
        let any: SocketAddr = if collector.is_ipv4() {
            ([0, 0, 0, 0], 0).into()
        } else {
            (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
        };
        let socket = UdpSocket::bind(any).map_err(|e| bad(e.to_string()))?;
        let auth = std::env::var(&config.password_env)
            .ok()
            .filter(|p| !p.is_empty());
        let (tx, rx) = mpsc::sync_channel(config.queue);
        let stats = Arc::new(CaptureStats::default());
        let thread_stats = Arc::clone(&stats);
        let agent = config.agent_id;
        std::thread::Builder::new()
            .name("hep-capture".into())
            .spawn(move || send_all(rx, socket, collector, agent, auth, &thread_stats))
            .map_err(CaptureError::Thread)?;
        tracing::info!(%collector, agent_id = agent, "copying SIP messages to the HEP collector");
        Ok(Some(Capture { tx, stats }))
    }

    /// Queues a copy of one message; drops it (counted) when the queue is
    /// full.
    pub fn record(&self, src: SocketAddr, dst: SocketAddr, ip_proto: u8, payload: &Bytes) {
        let m = Captured {
            src,
            dst,
            ip_proto,
            at: SystemTime::now(),
            payload: payload.clone(),
        };
        match self.tx.try_send(m) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.stats.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    pub fn stats(&self) -> Arc<CaptureStats> {
        Arc::clone(&self.stats)
    }
}

/// The capture thread: encodes and sends until the queue's senders are
/// gone. A send error is counted and logged at most once a minute.
fn send_all(
    rx: mpsc::Receiver<Captured>,
    socket: UdpSocket,
    collector: SocketAddr,
    agent: u32,
    auth: Option<String>,
    stats: &CaptureStats,
) {
    let mut packet = Vec::with_capacity(4096);
    let mut last_warning: Option<std::time::Instant> = None;
    while let Ok(m) = rx.recv() {
        if !hep::encode(&m, agent, auth.as_deref().map(str::as_bytes), &mut packet) {
            stats.failed.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        match socket.send_to(&packet, collector) {
            Ok(_) => {
                stats.sent.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                stats.failed.fetch_add(1, Ordering::Relaxed);
                if last_warning.is_none_or(|at| at.elapsed().as_secs() >= 60) {
                    last_warning = Some(std::time::Instant::now());
                    tracing::warn!(%collector, error = %e, "HEP send failed (logged at most once a minute)");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_queue_drops_the_copy_and_counts_it_without_waiting() {
        let (tx, rx) = mpsc::sync_channel(2);
        let capture = Capture {
            tx,
            stats: Arc::new(CaptureStats::default()),
        };
        let a: SocketAddr = "192.0.2.1:5060".parse().unwrap();
        let msg = Bytes::from_static(b"OPTIONS sip:x SIP/2.0\r\nCall-ID: q\r\n\r\n");
        for _ in 0..5 {
            capture.record(a, a, IPPROTO_UDP, &msg);
        }
        assert_eq!(capture.stats.dropped.load(Ordering::Relaxed), 3);
        assert_eq!(
            rx.try_iter().count(),
            2,
            "the first two wait for the thread"
        );
    }

    #[test]
    fn no_collector_no_capture_and_a_bad_one_is_refused_by_name() {
        assert!(Capture::start(&HepConfig::default()).unwrap().is_none());
        let bad = HepConfig {
            collector: "no port here".into(),
            ..HepConfig::default()
        };
        let e = Capture::start(&bad).unwrap_err().to_string();
        assert!(
            e.contains("hep.collector") && e.contains("host:port"),
            "{e}"
        );
    }
}
