//! The text log's line format: tracing-subscriber's own ("full"), with the
//! per-call decision line written by a path of its own.
//!
//! Why a path of its own: the decision line is the one line logged for
//! every call, on the SIP thread, and the general formatter spends most of
//! its work on what that line never has: colour styles asked for each field
//! name even with colour off, and the layered writers they go through. This
//! path writes the same bytes (a unit test holds it to the general
//! formatter's output) in about half the instructions
//! (docs/performance.md). Anything it does not expect (a span around the
//! event, colour on, a field type it does not know) goes to the general
//! formatter, so nothing is ever logged differently.

use std::fmt::{self, Write as _};

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::FmtContext;
use tracing_subscriber::fmt::format::{Format, FormatEvent, FormatFields, Full, Writer};
use tracing_subscriber::fmt::time::FormatTime;
use tracing_subscriber::registry::LookupSpan;

use super::log_time::CachedSystemTime;
use crate::pipeline::DECISION_LOG;

/// The text format: [`DECISION_LOG`] events written directly, every other
/// event by tracing-subscriber's full format with the same timer.
pub struct TextFormat<T = CachedSystemTime> {
    timer: T,
    full: Format<Full, T>,
}

impl Default for TextFormat<CachedSystemTime> {
    fn default() -> Self {
        TextFormat::with_timer(CachedSystemTime)
    }
}

impl<T: FormatTime + Clone> TextFormat<T> {
    /// The format with timestamps from `timer`.
    pub fn with_timer(timer: T) -> Self {
        TextFormat {
            full: tracing_subscriber::fmt::format().with_timer(timer.clone()),
            timer,
        }
    }
}

impl<S, N, T> FormatEvent<S, N> for TextFormat<T>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    T: FormatTime,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let meta = event.metadata();
        let plain = meta.target() == DECISION_LOG
            && !writer.has_ansi_escapes()
            && ctx.event_scope().is_none();
        if plain {
            // Formatted into the thread's line buffer first: a field it
            // cannot write as the full format would sends the whole event
            // there instead. The buffer is kept, so a line costs no
            // allocation; a nested event (a field's `Debug` that logs) finds
            // it taken and uses one of its own.
            let written = LINE.with(|cell| {
                let mut own = String::new();
                let mut kept = cell.try_borrow_mut().ok();
                let line = kept.as_deref_mut().unwrap_or(&mut own);
                line.clear();
                if write_plain(&self.timer, &mut Writer::new(line), event).is_err() {
                    return None;
                }
                #[cfg(test)]
                tests::PLAIN_LINES.with(|n| n.set(n.get() + 1));
                Some(writer.write_str(line))
            });
            if let Some(result) = written {
                return result;
            }
        }
        self.full.format_event(ctx, writer, event)
    }
}

thread_local! {
    /// The decision line being written, reused from line to line.
    static LINE: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
}

/// The full format's line for an event with no span and no colour:
/// timestamp, level, target, then the fields as its default visitor writes
/// them. `Err` for a field it does not handle the same way.
fn write_plain<T: FormatTime>(timer: &T, w: &mut Writer<'_>, event: &Event<'_>) -> fmt::Result {
    if timer.format_time(w).is_err() {
        w.write_str("<unknown time>")?;
    }
    let level = match *event.metadata().level() {
        tracing::Level::TRACE => "TRACE",
        tracing::Level::DEBUG => "DEBUG",
        tracing::Level::INFO => " INFO",
        tracing::Level::WARN => " WARN",
        tracing::Level::ERROR => "ERROR",
    };
    write!(w, " {level} {}: ", event.metadata().target())?;
    let mut fields = PlainFields {
        w,
        first: true,
        result: Ok(()),
    };
    event.record(&mut fields);
    fields.result?;
    w.write_char('\n')
}

/// Writes fields as the full format's default visitor does with colour off:
/// `message` as it is, every other one `name=value`, space-separated, a
/// `&str` quoted as `Debug` quotes it.
struct PlainFields<'a, 'w> {
    w: &'a mut Writer<'w>,
    first: bool,
    result: fmt::Result,
}

impl PlainFields<'_, '_> {
    fn pad(&mut self) -> fmt::Result {
        if self.first {
            self.first = false;
            Ok(())
        } else {
            self.w.write_char(' ')
        }
    }
}

impl Visit for PlainFields<'_, '_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if self.result.is_err() {
            return;
        }
        let name = field.name();
        if name == "message" || renamed(name) {
            // The full format escapes messages and renames raw identifiers.
            self.result = Err(fmt::Error);
            return;
        }
        self.result = self.pad().and_then(|()| {
            self.w.write_str(name)?;
            self.w.write_char('=')?;
            // `Debug` of a string with nothing to escape is the string in
            // quotes; anything else is left to `Debug` itself.
            if value
                .bytes()
                .all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\')
            {
                self.w.write_char('"')?;
                self.w.write_str(value)?;
                self.w.write_char('"')
            } else {
                write!(self.w, "{value:?}")
            }
        });
    }

    fn record_error(&mut self, _field: &Field, _value: &(dyn std::error::Error + 'static)) {
        // The full format writes an error's sources too.
        self.result = Err(fmt::Error);
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if self.result.is_err() {
            return;
        }
        let name = field.name();
        if renamed(name) {
            self.result = Err(fmt::Error);
            return;
        }
        self.result = self.pad().and_then(|()| {
            if name == "message" {
                // Written as it is. The full format escapes terminal control
                // characters in a message, so one that has any goes there.
                let mut checked = Checked {
                    w: &mut *self.w,
                    escaped: false,
                };
                write!(checked, "{value:?}")?;
                return if checked.escaped {
                    Err(fmt::Error)
                } else {
                    Ok(())
                };
            }
            write!(self.w, "{name}={value:?}")
        });
    }
}

/// Passes text on to the line, noting whether any of it is a character the
/// full format escapes in a message.
struct Checked<'a, 'w> {
    w: &'a mut Writer<'w>,
    escaped: bool,
}

impl fmt::Write for Checked<'_, '_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.escaped |= s.chars().any(is_escaped);
        self.w.write_str(s)
    }
}

/// A field the full format writes under another name (a raw identifier) or
/// not at all (`log.` metadata).
fn renamed(name: &str) -> bool {
    name.starts_with("r#") || name.starts_with("log.")
}

/// The characters the full format escapes in a message.
fn is_escaped(c: char) -> bool {
    matches!(c, '\x1b' | '\x07' | '\x08' | '\x0c' | '\x7f') || ('\u{80}'..='\u{9f}').contains(&c)
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;
    use std::sync::{Arc, Mutex};

    use tracing_subscriber::fmt::MakeWriter;

    use super::*;

    thread_local! {
        /// Lines this thread wrote by the decision path.
        pub(super) static PLAIN_LINES: Cell<usize> = const { Cell::new(0) };
    }

    /// The same time for every line, so two formatters' lines compare.
    #[derive(Clone)]
    struct Fixed;

    impl FormatTime for Fixed {
        fn format_time(&self, w: &mut Writer<'_>) -> fmt::Result {
            w.write_str("2026-12-03T12:00:00.000001Z")
        }
    }

    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buffer {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Buffer {
        type Writer = Buffer;
        fn make_writer(&'a self) -> Buffer {
            self.clone()
        }
    }

    /// What `emit` logs through the stock full format and through
    /// [`TextFormat`], and how many lines took the decision path.
    fn both(emit: impl Fn()) -> (String, String, usize) {
        let (stock, ours) = (Buffer::default(), Buffer::default());
        let s = tracing_subscriber::fmt()
            .with_writer(stock.clone())
            .with_ansi(false)
            .with_timer(Fixed)
            .finish();
        tracing::subscriber::with_default(s, &emit);
        let o = tracing_subscriber::fmt()
            .with_writer(ours.clone())
            .with_ansi(false)
            .event_format(TextFormat::with_timer(Fixed))
            .finish();
        let before = PLAIN_LINES.with(Cell::get);
        tracing::subscriber::with_default(o, &emit);
        let plain = PLAIN_LINES.with(Cell::get) - before;
        let text = |b: Buffer| String::from_utf8(b.0.lock().unwrap().clone()).unwrap();
        (text(stock), text(ours), plain)
    }

    fn decision(caller: &str, called: &str) {
        tracing::info!(
            target: DECISION_LOG,
            call_id = %"a84b4c76e66710@pc33.example",
            caller,
            called = %called,
            action = "tag",
            rule = "score",
            score = 85u8,
            us = 412u64,
            decision = %"19ae1f3c2b10007",
            "call screened"
        );
    }

    #[test]
    fn the_decision_line_is_the_full_formats_byte_for_byte() {
        let (stock, ours, plain) = both(|| decision("+15557654321", "+15551234567"));
        assert_eq!(plain, 1, "written by the decision path");
        assert_eq!(ours, stock);
        assert!(
            stock.starts_with("2026-12-03T12:00:00.000001Z  INFO sipsentry::decisions: call screened call_id=a84b4c76e66710@pc33.example caller=\"+15557654321\" "),
            "{stock}"
        );
    }

    #[test]
    fn hostile_callers_are_quoted_and_escaped_as_the_full_format_does() {
        for caller in [
            "\"ACME\" <sip:x>",
            "back\\slash",
            "caf\u{e9}",
            "bell\x07\x1b[2J",
            "",
        ] {
            let (stock, ours, plain) = both(|| decision(caller, "\u{9b}31m"));
            assert_eq!(plain, 1, "{caller:?}");
            assert_eq!(ours, stock, "{caller:?}");
        }
    }

    #[test]
    fn other_events_and_spans_go_to_the_full_format() {
        let (stock, ours, plain) = both(|| {
            tracing::info!(peer = "10.0.0.1", "next hop up");
            tracing::warn!(target: DECISION_LOG, error = &std::io::Error::other("x") as &dyn std::error::Error, "odd");
            tracing::info_span!("call", call_id = "c1").in_scope(|| decision("+1555", "+1666"));
            tracing::info!(target: DECISION_LOG, "message with \x1b[31m colour");
        });
        assert_eq!(plain, 0, "none of these is written by the decision path");
        assert_eq!(ours, stock);
        assert_eq!(ours.lines().count(), 4, "{ours}");
    }
}
