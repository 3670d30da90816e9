//! A target's health as OPTIONS pings see it: down after `down_after`
//! unanswered pings in a row, up again after `up_after` answers in a row.
//! A target nobody pings stays up.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

/// Default `sip.ping_down_after`.
pub const DOWN_AFTER: u32 = 3;
/// Default `sip.ping_up_after`.
pub const UP_AFTER: u32 = 2;

/// The thresholds (`sip.ping_down_after`, `sip.ping_up_after`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HealthLimits {
    pub down_after: u32,
    pub up_after: u32,
}

impl Default for HealthLimits {
    fn default() -> Self {
        HealthLimits {
            down_after: DOWN_AFTER,
            up_after: UP_AFTER,
        }
    }
}

#[derive(Debug)]
pub struct Health {
    up: AtomicBool,
    /// Unanswered pings in a row (while up) or answers in a row (while down).
    streak: AtomicU32,
}

impl Default for Health {
    fn default() -> Self {
        Health {
            up: AtomicBool::new(true),
            streak: AtomicU32::new(0),
        }
    }
}

/// What a ping result changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    None,
    WentDown,
    CameUp,
}

impl Health {
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    /// A ping was answered.
    pub fn answered(&self, limits: HealthLimits) -> Change {
        if self.is_up() {
            self.streak.store(0, Ordering::Relaxed);
            return Change::None;
        }
        if self.streak.fetch_add(1, Ordering::Relaxed) + 1 >= limits.up_after {
            self.streak.store(0, Ordering::Relaxed);
            self.up.store(true, Ordering::Relaxed);
            return Change::CameUp;
        }
        Change::None
    }

    /// A ping went unanswered (or was answered 408 or 503, or could not be
    /// sent).
    pub fn missed(&self, limits: HealthLimits) -> Change {
        if !self.is_up() {
            self.streak.store(0, Ordering::Relaxed);
            return Change::None;
        }
        if self.streak.fetch_add(1, Ordering::Relaxed) + 1 >= limits.down_after {
            self.streak.store(0, Ordering::Relaxed);
            self.up.store(false, Ordering::Relaxed);
            return Change::WentDown;
        }
        Change::None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn down_after_n_misses_in_a_row_and_up_after_m_answers_in_a_row() {
        let limits = HealthLimits {
            down_after: 3,
            up_after: 2,
        };
        let h = Health::default();
        assert!(h.is_up(), "up until pings say otherwise");
        assert_eq!(h.missed(limits), Change::None);
        assert_eq!(h.missed(limits), Change::None);
        assert_eq!(
            h.answered(limits),
            Change::None,
            "an answer resets the count"
        );
        assert_eq!(h.missed(limits), Change::None);
        assert_eq!(h.missed(limits), Change::None);
        assert_eq!(h.missed(limits), Change::WentDown);
        assert!(!h.is_up());
        assert_eq!(h.answered(limits), Change::None);
        assert_eq!(h.missed(limits), Change::None, "a miss resets the count");
        assert_eq!(h.answered(limits), Change::None);
        assert_eq!(h.answered(limits), Change::CameUp);
        assert!(h.is_up());
    }
}
