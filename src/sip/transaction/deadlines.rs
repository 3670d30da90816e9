//! When to look at a transaction again: the deadlines the ticker services
//! (retransmission timers, expiry).
//!
//! Why a FIFO beside the heap: nearly every deadline is a transaction's
//! *first* one, set a fixed time from now (Timer A or G at T1, expiry at
//! 64×T1 plus a grace), so first deadlines arrive already in due order. A
//! FIFO keeps them at O(1) per push on the SIP thread and per pop on the
//! ticker, popping through memory in order. In a heap, each pop is a sift
//! through 64×T1 of calls (66,000 entries at 2,000 calls/s), larger than the
//! CPU cache, and the ticker does about 20 of them per 10 ms tick for each
//! of the two queues. The rest go to the heap, which stays small:
//! - a retransmission rescheduled;
//! - a transaction kept past its first look;
//! - a first deadline that lost a race with another thread by microseconds
//!   and would otherwise land behind a later one.

use std::cmp::{Ordering, Reverse};
use std::collections::{BinaryHeap, VecDeque};
use std::sync::{Arc, Weak};
use std::time::Instant;

use parking_lot::Mutex;

use super::{ServerTx, TxRef};

/// Deadlines popped per hold of the lock.
pub(super) const POP_BATCH: usize = 64;

/// A queue of deadlines, earliest first: a FIFO for first deadlines, a heap
/// for everything else.
#[derive(Default)]
pub(super) struct Deadlines {
    queues: Mutex<Queues>,
}

#[derive(Default)]
struct Queues {
    /// In due order, by construction (see [`Deadlines::push_first`]).
    fifo: VecDeque<Deadline>,
    heap: BinaryHeap<Reverse<Deadline>>,
}

impl Queues {
    /// The earlier of the two fronts, if it is due by `now`.
    fn pop_due(&mut self, now: Instant) -> Option<Deadline> {
        let fifo = self.fifo.front().map(|d| d.due);
        let heap = self.heap.peek().map(|Reverse(d)| d.due);
        let from_heap = match (fifo, heap) {
            (Some(f), Some(h)) => h < f,
            (None, Some(_)) => true,
            _ => false,
        };
        let front = if from_heap { heap } else { fifo };
        if front? > now {
            return None;
        }
        if from_heap {
            self.heap.pop().map(|Reverse(d)| d)
        } else {
            self.fifo.pop_front()
        }
    }
}

impl Deadlines {
    /// A transaction's first deadline, set a fixed time from now: it joins
    /// the FIFO unless it is earlier than the FIFO's last (set by another
    /// thread a moment later), which would break the FIFO's order.
    pub(super) fn push_first(&self, due: Instant, tx: &TxRef) {
        let d = Deadline::new(due, tx);
        let mut q = self.queues.lock();
        if q.fifo.back().is_none_or(|last| last.due <= due) {
            q.fifo.push_back(d);
        } else {
            q.heap.push(Reverse(d));
        }
    }

    /// Any other deadline.
    pub(super) fn push(&self, due: Instant, tx: &TxRef) {
        self.extend([(due, tx)]);
    }

    /// Several other deadlines, under one hold of the lock.
    pub(super) fn extend<'a>(&self, deadlines: impl IntoIterator<Item = (Instant, &'a TxRef)>) {
        let mut q = self.queues.lock();
        for (due, tx) in deadlines {
            q.heap.push(Reverse(Deadline::new(due, tx)));
        }
    }

    /// The earliest deadline held (its transaction may be gone).
    pub(super) fn earliest(&self) -> Option<Instant> {
        let q = self.queues.lock();
        let fifo = q.fifo.front().map(|d| d.due);
        let heap = q.heap.peek().map(|Reverse(d)| d.due);
        fifo.into_iter().chain(heap).min()
    }

    /// Deadlines held (due or not, their transaction gone or not).
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        let q = self.queues.lock();
        q.fifo.len() + q.heap.len()
    }

    /// Takes the transactions whose deadline has passed and that still
    /// exist, earliest first. The lock is held for at most [`POP_BATCH`]
    /// pops at a time and then handed straight to a waiter, so the SIP
    /// thread never stalls behind a long run of them (after a pause of the
    /// ticker, say) to record the next call.
    pub(super) fn pop_due(&self, now: Instant) -> Vec<TxRef> {
        let mut due = Vec::new();
        loop {
            let mut q = self.queues.lock();
            for _ in 0..POP_BATCH {
                let Some(d) = q.pop_due(now) else {
                    return due;
                };
                if let Some(tx) = d.tx.upgrade() {
                    due.push(tx);
                }
            }
            parking_lot::MutexGuard::unlock_fair(q);
        }
    }
}

/// When to look at a transaction. Ordered by `due` alone.
struct Deadline {
    due: Instant,
    /// Weak: a deadline outliving its transaction (the usual Timer A entry,
    /// stopped by the PBX's answer) keeps nothing alive and is skipped.
    tx: Weak<Mutex<ServerTx>>,
}

impl Deadline {
    fn new(due: Instant, tx: &TxRef) -> Deadline {
        Deadline {
            due,
            tx: Arc::downgrade(tx),
        }
    }
}

impl PartialEq for Deadline {
    fn eq(&self, other: &Self) -> bool {
        self.due == other.due
    }
}

impl Eq for Deadline {}

impl PartialOrd for Deadline {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Deadline {
    fn cmp(&self, other: &Self) -> Ordering {
        self.due.cmp(&other.due)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::transaction::tests::server_tx;
    use std::time::Duration;

    fn tx(key: &str) -> TxRef {
        Arc::new(Mutex::new(server_tx(key)))
    }

    fn keys(due: &[TxRef]) -> Vec<String> {
        due.iter().map(|t| t.lock().key.clone()).collect()
    }

    #[test]
    fn pop_due_takes_every_due_transaction_across_batches_and_leaves_the_rest() {
        let q = Deadlines::default();
        let now = Instant::now();
        let n = POP_BATCH * 3 + 5;
        let live: Vec<TxRef> = (0..n).map(|i| tx(&format!("due{i}"))).collect();
        for (i, t) in live.iter().enumerate() {
            q.push_first(now - Duration::from_millis((n - i) as u64), t);
        }
        let later = tx("later");
        q.push_first(now + Duration::from_millis(500), &later);
        // A transaction already gone (dropped from the table) is skipped.
        q.push(now, &tx("gone"));
        let due = q.pop_due(now);
        assert_eq!(due.len(), n);
        assert_eq!(keys(&due[..1]), ["due0"], "earliest first");
        assert_eq!(q.len(), 1, "only the later one is left");
        assert!(q.pop_due(now).is_empty());
    }

    #[test]
    fn fifo_and_heap_deadlines_come_out_merged_in_due_order() {
        let q = Deadlines::default();
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let txs: Vec<TxRef> = ["f10", "f20", "late15", "f30", "h5", "h25"]
            .iter()
            .map(|k| tx(k))
            .collect();
        q.push_first(at(10), &txs[0]);
        q.push_first(at(20), &txs[1]);
        // Earlier than the FIFO's last: must not break the FIFO's order.
        q.push_first(at(15), &txs[2]);
        q.push_first(at(30), &txs[3]);
        q.extend([(at(5), &txs[4]), (at(25), &txs[5])]);
        assert_eq!(keys(&q.pop_due(at(4))), Vec::<String>::new());
        assert_eq!(keys(&q.pop_due(at(20))), ["h5", "f10", "late15", "f20"]);
        assert_eq!(keys(&q.pop_due(at(100))), ["h25", "f30"]);
        assert_eq!(q.len(), 0);
    }
}
