//! What a bench run measured: counts and HDR latency histograms, printed for
//! people or as JSON for machines.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use hdrhistogram::Histogram;
use serde::Serialize;

/// Latencies are recorded in microseconds, up to a minute, 3 significant digits.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("static histogram bounds")
}

/// Percentiles of one metric, in microseconds.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Summary {
    pub count: u64,
    pub min: u64,
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
}

impl Summary {
    pub fn of(h: &Histogram<u64>) -> Summary {
        if h.is_empty() {
            return Summary::default();
        }
        Summary {
            count: h.len(),
            min: h.min(),
            p50: h.value_at_quantile(0.50),
            p90: h.value_at_quantile(0.90),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
        }
    }

    /// `self − other`, percentile by percentile: the latency one path adds.
    pub fn minus(&self, other: &Summary) -> Difference {
        let d = |a: u64, b: u64| a as i64 - b as i64;
        Difference {
            p50: d(self.p50, other.p50),
            p90: d(self.p90, other.p90),
            p99: d(self.p99, other.p99),
            p999: d(self.p999, other.p999),
        }
    }
}

/// The latency one target adds over the baseline.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Added {
    pub target: String,
    pub baseline: String,
    #[serde(flatten)]
    pub difference: Difference,
}

#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Difference {
    pub p50: i64,
    pub p90: i64,
    pub p99: i64,
    pub p999: i64,
}

/// The three per-call metrics.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Metrics {
    pub invite_to_provisional: Summary,
    pub invite_to_final: Summary,
    pub bye_to_200: Summary,
}

/// Everything measured against one target.
#[derive(Debug, Clone, Default, Serialize)]
pub struct TargetReport {
    pub target: String,
    pub sent: u64,
    /// Final responses by status code.
    pub codes: BTreeMap<u16, u64>,
    /// Calls with no final response within the timeout.
    pub timeouts: u64,
    /// BYEs with no 200 within the timeout.
    pub bye_timeouts: u64,
    /// Responses received again for a call (server retransmissions).
    pub retransmissions_seen: u64,
    /// INVITEs this tool retransmitted (Timer A).
    pub retransmissions_sent: u64,
    pub metrics: Metrics,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    pub transport: String,
    pub rate: f64,
    pub scheduled: u64,
    /// Stopped early (Ctrl-C): the figures cover the calls made so far.
    pub partial: bool,
    pub elapsed_s: f64,
    pub targets: Vec<TargetReport>,
    /// With `--compare`: INVITE→final of each target minus that of the last
    /// target (the baseline, e.g. the UAS reached directly).
    pub added_invite_to_final: Vec<Added>,
    /// Every call's own figures, for `--samples` (not in the JSON report).
    #[serde(skip)]
    pub calls: Vec<CallSample>,
}

/// One call as measured: what `--samples` writes, a row per call, so that
/// a latency can be matched against anything else recorded on the machine
/// at that instant (a scheduler trace, a packet capture).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CallSample {
    /// The call's index in the schedule.
    pub call: u64,
    /// Index into [`Report::targets`].
    pub target: usize,
    /// When the call was scheduled to be sent, as `CLOCK_MONOTONIC`
    /// nanoseconds (the clock of `perf`, and of ftrace with `trace_clock`
    /// `mono`).
    pub scheduled_monotonic_ns: u64,
    /// Microseconds from the scheduled instant; `None` if it never came.
    pub provisional_us: Option<u64>,
    pub final_us: Option<u64>,
    /// The final response's status code; 0 if none came.
    pub code: u16,
    /// Microseconds from sending the BYE to its response.
    pub bye_us: Option<u64>,
}

impl Report {
    /// Writes [`Report::calls`] as CSV with a header row, calls in schedule
    /// order; a figure that never came is an empty field.
    pub fn write_samples<W: std::io::Write>(&self, w: W) -> csv::Result<()> {
        let mut out = csv::Writer::from_writer(w);
        out.write_record([
            "call",
            "target",
            "scheduled_monotonic_ns",
            "provisional_us",
            "final_us",
            "code",
            "bye_us",
        ])?;
        let opt = |v: Option<u64>| v.map(|v| v.to_string()).unwrap_or_default();
        for c in &self.calls {
            let target = self.targets.get(c.target).map_or("", |t| t.target.as_str());
            out.write_record([
                c.call.to_string(),
                target.to_string(),
                c.scheduled_monotonic_ns.to_string(),
                opt(c.provisional_us),
                opt(c.final_us),
                c.code.to_string(),
                opt(c.bye_us),
            ])?;
        }
        out.flush()?;
        Ok(())
    }

    pub fn text(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "sipsentry bench: {} calls scheduled at {}/s over {} in {:.1} s{}",
            self.scheduled,
            self.rate,
            self.transport.to_uppercase(),
            self.elapsed_s,
            if self.partial {
                " (stopped early: partial report)"
            } else {
                ""
            }
        );
        for t in &self.targets {
            let codes: Vec<String> = t.codes.iter().map(|(c, n)| format!("{c}: {n}")).collect();
            let _ = writeln!(out, "\ntarget {}", t.target);
            let _ = writeln!(
                out,
                "  sent {}  final [{}]  timeouts {}  bye timeouts {}  retransmissions seen {} sent {}",
                t.sent,
                codes.join(", "),
                t.timeouts,
                t.bye_timeouts,
                t.retransmissions_seen,
                t.retransmissions_sent
            );
            let _ = writeln!(
                out,
                "  {:<24}{:>9}{:>9}{:>9}{:>9}{:>9}{:>9}{:>10}   (µs)",
                "metric", "count", "min", "p50", "p90", "p99", "p99.9", "max"
            );
            for (name, s) in [
                ("INVITE→first provisional", &t.metrics.invite_to_provisional),
                ("INVITE→final", &t.metrics.invite_to_final),
                ("BYE→200", &t.metrics.bye_to_200),
            ] {
                let _ = writeln!(
                    out,
                    "  {:<24}{:>9}{:>9}{:>9}{:>9}{:>9}{:>9}{:>10}",
                    name, s.count, s.min, s.p50, s.p90, s.p99, s.p999, s.max
                );
            }
        }
        for a in &self.added_invite_to_final {
            let d = &a.difference;
            let _ = writeln!(
                out,
                "\nINVITE→final, {} minus {}: p50 {:+} µs  p90 {:+} µs  p99 {:+} µs  p99.9 {:+} µs",
                a.target, a.baseline, d.p50, d.p90, d.p99, d.p999
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_and_difference() {
        let mut a = histogram();
        let mut b = histogram();
        for v in 1..=1000u64 {
            a.record(v + 30).unwrap();
            b.record(v).unwrap();
        }
        let (sa, sb) = (Summary::of(&a), Summary::of(&b));
        assert_eq!(sa.count, 1000);
        assert_eq!(sb.p50, 500);
        assert_eq!(sa.minus(&sb).p50, 30);
        assert_eq!(Summary::of(&histogram()), Summary::default());
    }
}
