//! A circuit breaker per provider: after [`FAILURES_TO_OPEN`] failures in a
//! row the provider is skipped for [`OPEN_FOR`]; then one probe request is let
//! through (half-open). Its success closes the circuit, its failure opens it
//! again. A provider that is down costs calls nothing while open, and is
//! retried without a storm when it comes back.
//!
//! Time is `tokio::time::Instant`, so tests drive it with paused time.

use parking_lot::Mutex;
use tokio::time::{Duration, Instant};

/// Consecutive failures (errors that count, or timeouts) that open the circuit.
pub const FAILURES_TO_OPEN: u32 = 5;

/// How long an open circuit skips the provider before probing it.
pub const OPEN_FOR: Duration = Duration::from_secs(30);

/// The breaker's state, as exported in metrics (0 closed, 1 half-open, 2 open).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum BreakerState {
    Closed,
    HalfOpen,
    Open,
}

impl BreakerState {
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::HalfOpen => "half_open",
            BreakerState::Open => "open",
        }
    }

    pub fn gauge(self) -> u8 {
        self as u8
    }
}

#[derive(Debug)]
enum Inner {
    Closed {
        failures: u32,
    },
    Open {
        until: Instant,
    },
    /// One probe is in flight; everything else is skipped until it returns.
    HalfOpen,
}

#[derive(Debug)]
pub struct Breaker {
    inner: Mutex<Inner>,
    failures_to_open: u32,
    open_for: Duration,
}

impl Default for Breaker {
    fn default() -> Self {
        Breaker::new(FAILURES_TO_OPEN, OPEN_FOR)
    }
}

impl Breaker {
    pub fn new(failures_to_open: u32, open_for: Duration) -> Self {
        Breaker {
            inner: Mutex::new(Inner::Closed { failures: 0 }),
            failures_to_open: failures_to_open.max(1),
            open_for,
        }
    }

    /// Whether a request may go out now. In the open state, the first call
    /// after `open_for` becomes the half-open probe.
    pub fn allow(&self) -> bool {
        let mut s = self.inner.lock();
        match *s {
            Inner::Closed { .. } => true,
            Inner::HalfOpen => false,
            Inner::Open { until } => {
                if Instant::now() >= until {
                    *s = Inner::HalfOpen;
                    true
                } else {
                    false
                }
            }
        }
    }

    pub fn success(&self) {
        let mut s = self.inner.lock();
        if !matches!(*s, Inner::Closed { failures: 0 }) {
            if matches!(*s, Inner::HalfOpen) {
                tracing::info!("provider answered the probe; circuit closed");
            }
            *s = Inner::Closed { failures: 0 };
        }
    }

    /// Records a failure; returns true when this one opened the circuit.
    pub fn failure(&self) -> bool {
        let mut s = self.inner.lock();
        let open = match *s {
            Inner::Closed { failures } => failures + 1 >= self.failures_to_open,
            Inner::HalfOpen => true,
            // A late failure of a request sent before the circuit opened.
            Inner::Open { .. } => false,
        };
        if open {
            *s = Inner::Open {
                until: Instant::now() + self.open_for,
            };
        } else if let Inner::Closed { failures } = &mut *s {
            *failures += 1;
        }
        open
    }

    pub fn state(&self) -> BreakerState {
        match *self.inner.lock() {
            Inner::Closed { .. } => BreakerState::Closed,
            Inner::HalfOpen => BreakerState::HalfOpen,
            Inner::Open { .. } => BreakerState::Open,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn opens_after_repeated_failures_then_half_opens_one_probe() {
        let b = Breaker::new(3, Duration::from_secs(30));
        for _ in 0..2 {
            assert!(b.allow());
            assert!(!b.failure());
        }
        b.success(); // a success in between resets the count
        for i in 0..3 {
            assert!(b.allow());
            assert_eq!(b.failure(), i == 2);
        }
        assert_eq!(b.state(), BreakerState::Open);
        assert!(!b.allow());
        tokio::time::advance(Duration::from_secs(31)).await;
        assert!(b.allow(), "the first call after open_for probes");
        assert_eq!(b.state(), BreakerState::HalfOpen);
        assert!(!b.allow(), "only one probe at a time");
        assert!(b.failure(), "a failed probe reopens");
        assert!(!b.allow());
        tokio::time::advance(Duration::from_secs(31)).await;
        assert!(b.allow());
        b.success();
        assert_eq!(b.state(), BreakerState::Closed);
        assert!(b.allow());
    }
}
