//! How often this machine stops a thread that never sleeps: reads the clock
//! in a tight loop for SECONDS and reports every gap between two reads longer
//! than a few microseconds. Nothing in a gap is the program's doing (no
//! syscall, no allocation, no lock): it is an interrupt, another thread
//! scheduled onto the CPU, or, on a virtual machine, the host not running
//! the vCPU at all. Pin it with `taskset` to watch one CPU; run
//! `bench/stall-trace.sh`'s trace beside it to tell the guest's threads
//! from the host.
//!
//! It is the floor under any latency figure taken on the machine: a relay
//! cannot answer faster than its CPU is there.
//!
//! ```text
//! cargo run --release --example hiccups -- [SECONDS]
//! taskset -c 1 target/release/examples/hiccups 10
//! ```

use std::process::ExitCode;
use std::time::{Duration, Instant};

/// Gaps up to this long are the loop itself and the guest's timer tick;
/// longer ones are counted.
const NOISE: Duration = Duration::from_micros(5);
/// Report thresholds.
const BUCKETS: [Duration; 5] = [
    Duration::from_micros(10),
    Duration::from_micros(50),
    Duration::from_micros(100),
    Duration::from_millis(1),
    Duration::from_millis(4),
];

fn main() -> ExitCode {
    let secs = match std::env::args().nth(1).map(|a| a.parse::<f64>()) {
        None => 10.0,
        Some(Ok(s)) if s > 0.0 && s.is_finite() => s,
        Some(_) => {
            eprintln!("usage: hiccups [SECONDS]  (a positive number; default 10)");
            return ExitCode::from(2);
        }
    };
    let run = Duration::from_secs_f64(secs);
    let start = Instant::now();
    let mut gaps: Vec<Duration> = Vec::with_capacity(1 << 16);
    let mut last = start;
    loop {
        let now = Instant::now();
        let gap = now - last;
        if gap > NOISE {
            gaps.push(gap);
        }
        last = now;
        if now - start >= run {
            break;
        }
    }
    let elapsed = last - start;
    println!(
        "{} gaps over {NOISE:?} in {:.1} s of a thread that never sleeps",
        gaps.len(),
        elapsed.as_secs_f64()
    );
    for b in BUCKETS {
        let over: Vec<&Duration> = gaps.iter().filter(|g| **g >= b).collect();
        let lost: Duration = over.iter().copied().sum();
        println!(
            "  >= {:>6}: {:6} gaps, {:>9.3} ms lost ({:.3}% of the time)",
            format!("{b:?}"),
            over.len(),
            lost.as_secs_f64() * 1e3,
            100.0 * lost.as_secs_f64() / elapsed.as_secs_f64()
        );
    }
    let max = gaps.iter().max().copied().unwrap_or_default();
    println!("  longest: {max:?}");
    ExitCode::SUCCESS
}
