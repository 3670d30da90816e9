//! The log's timestamps: tracing-subscriber's RFC 3339 UTC time
//! (`2026-12-03T12:00:00.000001Z`), with the date and time of day
//! formatted once a second per thread.
//!
//! Why: every call writes a decision line, and turning the clock into a
//! calendar date is most of what its timestamp costs (about 2,000
//! instructions, against about 200 for the microseconds alone). The
//! cached part is cut from [`SystemTime`]'s own output, so the bytes are
//! the stock timer's.

use std::cell::RefCell;
use std::fmt;
use std::time::UNIX_EPOCH;

use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};

/// [`SystemTime`]'s format, the part before the fraction cached per
/// second.
#[derive(Debug, Clone, Copy, Default)]
pub struct CachedSystemTime;

/// The second last formatted on this thread and its text up to and
/// including the `.` before the microseconds.
struct Cached {
    secs: u64,
    prefix: String,
}

thread_local! {
    static CACHE: RefCell<Option<Cached>> = const { RefCell::new(None) };
}

impl FormatTime for CachedSystemTime {
    fn format_time(&self, w: &mut Writer<'_>) -> fmt::Result {
        let now = unix_now();
        CACHE.with(|cell| {
            let Ok(mut cache) = cell.try_borrow_mut() else {
                return SystemTime.format_time(w);
            };
            match (now, cache.as_ref()) {
                (Some((secs, micros)), Some(c)) if c.secs == secs => {
                    w.write_str(&c.prefix)?;
                    write_micros(w, micros)?;
                    w.write_char('Z')
                }
                _ => {
                    // A new second: the stock timer's own text, kept for the
                    // rest of the second unless the clock crossed into the
                    // next while it was written. A clock before 1970 is
                    // never cached.
                    let mut stock = String::with_capacity(32);
                    SystemTime.format_time(&mut Writer::new(&mut stock))?;
                    let after = unix_now();
                    *cache = match (now, after) {
                        (Some((a, _)), Some((b, _))) if a == b => {
                            prefix_of(&stock).map(|prefix| Cached {
                                secs: a,
                                prefix: prefix.to_owned(),
                            })
                        }
                        _ => None,
                    };
                    w.write_str(&stock)
                }
            }
        })
    }
}

/// Whole seconds and microseconds since the epoch; `None` before it.
fn unix_now() -> Option<(u64, u32)> {
    let d = std::time::SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .ok()?;
    Some((d.as_secs(), d.subsec_micros()))
}

/// The text through the `.` of a stock timestamp `…:SS.uuuuuuZ`.
fn prefix_of(stock: &str) -> Option<&str> {
    let cut = stock.len().checked_sub("uuuuuuZ".len())?;
    let prefix = stock.get(..cut)?;
    let tail = &stock[cut..];
    let well_formed = prefix.ends_with('.')
        && tail.ends_with('Z')
        && tail[..6].bytes().all(|b| b.is_ascii_digit());
    well_formed.then_some(prefix)
}

/// Six digits, zero-padded.
fn write_micros(w: &mut Writer<'_>, micros: u32) -> fmt::Result {
    let mut digits = [b'0'; 6];
    let mut n = micros.min(999_999);
    for d in digits.iter_mut().rev() {
        *d = b'0' + (n % 10) as u8;
        n /= 10;
    }
    w.write_str(std::str::from_utf8(&digits).map_err(|_| fmt::Error)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stamp(t: &impl FormatTime) -> String {
        let mut s = String::new();
        t.format_time(&mut Writer::new(&mut s)).unwrap();
        s
    }

    #[test]
    fn cached_stamps_lie_between_stock_stamps_taken_around_them_across_a_second() {
        // Stock, cached, stock, until the clock has crossed into a new
        // second (so the cache was refilled at least once mid-run).
        let first = stamp(&SystemTime);
        let start = std::time::Instant::now();
        loop {
            let before = stamp(&SystemTime);
            let ours = stamp(&CachedSystemTime);
            let after = stamp(&SystemTime);
            assert_eq!(ours.len(), before.len(), "{ours} against {before}");
            assert!(before <= ours && ours <= after, "{before} {ours} {after}");
            if ours[..19] != first[..19] && start.elapsed().as_millis() > 10 {
                break;
            }
            assert!(start.elapsed().as_secs() < 3, "the clock did not move");
        }
    }

    #[test]
    fn the_seconds_prefix_is_cut_only_from_a_well_formed_stamp() {
        assert_eq!(
            prefix_of("2026-12-03T12:00:00.000001Z"),
            Some("2026-12-03T12:00:00.")
        );
        assert_eq!(prefix_of("2026-12-03T12:00:00Z"), None);
        assert_eq!(prefix_of("short"), None);
        assert_eq!(prefix_of(""), None);
    }

    #[test]
    fn micros_are_six_zero_padded_digits() {
        let mut s = String::new();
        write_micros(&mut Writer::new(&mut s), 42).unwrap();
        assert_eq!(s, "000042");
    }
}
