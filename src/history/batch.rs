//! One round of the history writer: the records it took off the queue, with
//! final responses merged into their rows where they came together.

use super::{Final, Record};

/// How far back in the round's new rows a final response looks for its
/// row before it becomes an UPDATE: a call answered within the round
/// (most, at load) costs no statement of its own.
const FINAL_LOOKBACK: usize = 256;

/// A round's work: new rows (each with its final response, when that came
/// in the same round) and final responses for rows written before.
#[derive(Default)]
pub(super) struct Batch {
    pub(super) records: Vec<(Record, Option<Final>)>,
    pub(super) finals: Vec<Final>,
    /// Messages taken off the queue (a final merged into its row included).
    pub(super) queued: usize,
}

impl Batch {
    pub(super) fn len(&self) -> usize {
        self.records.len() + self.finals.len()
    }

    pub(super) fn add_final(&mut self, f: Final) {
        let start = self.records.len().saturating_sub(FINAL_LOOKBACK);
        match self.records[start..]
            .iter_mut()
            .rev()
            .find(|(r, _)| r.decision_id == f.decision_id)
        {
            Some((_, slot)) => *slot = Some(f),
            None => self.finals.push(f),
        }
    }
}
