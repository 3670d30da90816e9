//! Per-call state: what each response means for its call, Timer A and
//! timeouts, and the report at the end.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;

use super::wire::Wire;
use super::{Out, T1, UacOptions};
use crate::bench::report::{self, CallSample, Metrics, Report, Summary, TargetReport};
use crate::sip::message::{Message, Method};

#[derive(Debug, Clone, Copy, Default)]
struct Call {
    final_code: u16,
    /// The highest provisional status seen: a 180 after a 100 is a new
    /// response, a second 180 a retransmission.
    provisional_code: u16,
    retransmits: u8,
    bye_sent: Option<Instant>,
    done: bool,
    /// The figures recorded for this call, in µs (for `--samples`); a first
    /// provisional response came when `provisional_us` is set.
    provisional_us: Option<u64>,
    final_us: Option<u64>,
    bye_us: Option<u64>,
}

/// All per-call state, owned by one thread.
pub(super) struct State {
    wire: Arc<Wire>,
    pub(super) out: Out,
    calls: Vec<Call>,
    t0: Instant,
    interval: Duration,
    timeout: Duration,
    /// Calls below this index are all done.
    oldest: u64,
    pub(super) completed: u64,
    pub(super) last_sweep: Instant,
    per_target: Vec<Counters>,
}

struct Counters {
    hist: [Histogram<u64>; 3],
    report: TargetReport,
}

impl State {
    pub(super) fn new(
        opts: &UacOptions,
        wire: Arc<Wire>,
        out: Out,
        t0: Instant,
        interval: Duration,
    ) -> State {
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

    pub(super) fn scheduled(&self, i: u64) -> Instant {
        self.t0 + self.interval.mul_f64(i as f64)
    }

    fn finish(&mut self, i: u64) {
        let call = &mut self.calls[i as usize];
        if !call.done {
            call.done = true;
            self.completed += 1;
        }
    }

    pub(super) fn on_message(&mut self, at: Instant, bytes: Bytes) {
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
                if code <= call.provisional_code || call.final_code != 0 {
                    counters.report.retransmissions_seen += 1;
                    return;
                }
                self.calls[i as usize].provisional_code = code;
                if call.provisional_us.is_none() {
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
    pub(super) fn sweep(&mut self, now: Instant, sent: u64) {
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

    pub(super) fn report(
        mut self,
        opts: &UacOptions,
        sent: u64,
        partial: bool,
        t0: Instant,
    ) -> Report {
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
