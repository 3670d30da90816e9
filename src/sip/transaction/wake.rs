//! When the ticker that services the deadlines wakes: at the earliest
//! deadline, no more often than once a tick, and not at all while nothing
//! is queued.
//!
//! Why not a fixed interval: on a VM, each wake-up of an idle thread costs
//! about 100 µs of CPU (a timer interrupt on a halted vCPU, the runtime's
//! turn), so a 10 ms interval kept an idle proxy at 1% of a core doing
//! nothing. Now an idle proxy's ticker sleeps until the next deadline (the
//! 64×T1 expiry of the last call, say) or until a new, earlier one is
//! queued; under load, deadlines are always due and it ticks as before.
//!
//! The handshake, so that no deadline is missed: the ticker publishes when
//! it will wake and then looks at the queues again; whoever queues a
//! deadline first queues it and then compares it with the published time.
//! Either the ticker's second look sees the new deadline, or the queuer
//! sees the published time and, if its deadline is earlier, notifies
//! ([`Notify`] keeps the permit if the ticker is not waiting yet).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use tokio::sync::Notify;

/// The ticker's wake-up time, shared with those who queue deadlines.
pub(super) struct Wake {
    notify: Notify,
    /// When the ticker will wake, in ns since `epoch`; `u64::MAX` while it
    /// waits only to be told.
    at: AtomicU64,
    epoch: Instant,
}

impl Default for Wake {
    fn default() -> Self {
        Wake {
            notify: Notify::new(),
            at: AtomicU64::new(u64::MAX),
            epoch: Instant::now(),
        }
    }
}

impl Wake {
    fn ns(&self, t: Instant) -> u64 {
        u64::try_from(t.saturating_duration_since(self.epoch).as_nanos()).unwrap_or(u64::MAX)
    }

    /// After queueing a deadline `due`: wakes the ticker if it would
    /// otherwise sleep past it. One atomic load when it would not.
    pub(super) fn queued(&self, due: Instant) {
        if self.ns(due) < self.at.load(Ordering::SeqCst) {
            self.notify.notify_one();
        }
    }

    /// Decides when the ticker wakes next: at the earliest deadline
    /// `earliest()` returns, but not before `not_before`; `None` when
    /// nothing is queued (then only [`Wake::queued`] wakes it).
    pub(super) fn plan(
        &self,
        earliest: impl Fn() -> Option<Instant>,
        not_before: Instant,
    ) -> Option<Instant> {
        loop {
            let first = earliest();
            let at = first.map(|e| e.max(not_before));
            self.at
                .store(at.map_or(u64::MAX, |t| self.ns(t)), Ordering::SeqCst);
            // An earlier deadline queued while we looked was compared with
            // the time published before: look again.
            if earliest() == first {
                return at;
            }
        }
    }

    /// Sleeps until `at` (from [`Wake::plan`]) or until told of an earlier
    /// deadline.
    pub(super) async fn sleep(&self, at: Option<Instant>) {
        match at {
            Some(at) => {
                tokio::select! {
                    () = tokio::time::sleep_until(at.into()) => {}
                    () = self.notify.notified() => {}
                }
            }
            None => self.notify.notified().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use std::time::Duration;

    #[test]
    fn the_plan_is_the_earliest_deadline_but_never_sooner_than_asked() {
        let wake = Wake::default();
        let now = Instant::now();
        let tick = now + Duration::from_millis(10);
        assert_eq!(wake.plan(|| None, tick), None, "nothing queued");
        let soon = Some(now + Duration::from_millis(2));
        assert_eq!(wake.plan(|| soon, tick), Some(tick));
        let later = now + Duration::from_secs(33);
        assert_eq!(wake.plan(|| Some(later), tick), Some(later));
    }

    #[test]
    fn a_deadline_queued_during_planning_is_seen_by_the_second_look() {
        let wake = Wake::default();
        let now = Instant::now();
        let queue = Mutex::new(vec![now + Duration::from_secs(33)]);
        let looks = Mutex::new(0);
        let earliest = || {
            let mut n = looks.lock().unwrap();
            *n += 1;
            if *n == 1 {
                // Another thread queues an earlier deadline between looks.
                queue.lock().unwrap().push(now + Duration::from_millis(500));
                return Some(now + Duration::from_secs(33));
            }
            queue.lock().unwrap().iter().min().copied()
        };
        let at = wake.plan(earliest, now);
        assert_eq!(at, Some(now + Duration::from_millis(500)));
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_ticker_sleeps_until_a_deadline_is_queued() {
        let wake = std::sync::Arc::new(Wake::default());
        let at = wake.plan(|| None, Instant::now());
        let sleeper = {
            let wake = std::sync::Arc::clone(&wake);
            tokio::spawn(async move { wake.sleep(at).await })
        };
        tokio::time::sleep(Duration::from_secs(3600)).await;
        assert!(!sleeper.is_finished(), "nothing queued: still asleep");
        wake.queued(Instant::now() + Duration::from_millis(500));
        tokio::time::timeout(Duration::from_millis(1), sleeper)
            .await
            .expect("woken by the queued deadline")
            .unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_later_deadline_does_not_wake_the_ticker_early() {
        let wake = std::sync::Arc::new(Wake::default());
        let start = Instant::now();
        let first = start + Duration::from_millis(500);
        let at = wake.plan(|| Some(first), start);
        wake.queued(start + Duration::from_secs(33));
        wake.sleep(at).await;
        assert!(
            tokio::time::Instant::now() >= first.into(),
            "slept until the planned deadline"
        );
    }
}
