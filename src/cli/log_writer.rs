//! The serving process's log writer: each line is appended to a buffer in
//! memory, and a thread of its own writes the buffer to standard error
//! every [`FLUSH_INTERVAL`], in one `write`.
//!
//! Why not a channel to a writer thread: handing each line over wakes the
//! thread (a system call on the SIP thread), and the thread then pays a
//! `write` per line and spins before it sleeps again. At a few thousand
//! calls a second with the per-call decision line, that costs a sixth of
//! the proxy's CPU (docs/performance.md). Appending under a mutex the SIP thread holds only for a
//! copy costs no system call; the writer's timer, not the call, decides
//! when bytes move. A slow terminal or journal still never holds up a call:
//! past [`BUFFER_MAX`] waiting bytes new lines are dropped, counted, and
//! the count is written once there is room.

use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, mpsc};
use std::thread::JoinHandle;
use std::time::Duration;

/// How often the writer thread moves what is buffered to standard error:
/// the most a line waits, and short beside anyone reading the log. Each
/// round is a wake-up of an idle thread and a `write`, about 30 µs of CPU on
/// a virtual machine whatever it writes; at 50 ms that is 20 rounds a
/// second at any call rate (at 10 ms the rounds cost 1.9 µs of every call
/// at 2,000 calls/s, docs/performance.md).
pub const FLUSH_INTERVAL: Duration = Duration::from_millis(50);

/// Bytes waiting at most (several seconds of decision lines at any
/// realistic call rate); lines beyond are dropped rather than waited for.
pub const BUFFER_MAX: usize = 8 << 20;

/// How long exit waits for the writer to write what is buffered. A reader
/// that stopped reading (a full pipe) blocks the writer for good; the
/// process exits anyway once this has passed.
pub const SHUTDOWN_WAIT: Duration = Duration::from_secs(1);

/// Empty rounds in a row (a second's worth) before the writer sleeps until
/// the next line, so an idle proxy's writer does not wake 20 times a
/// second. The first line after the quiet spell wakes it.
const IDLE_ROUNDS: u32 = 20;

/// The log's format, for the line the writer adds when it dropped some.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Notice {
    Text,
    /// One JSON object per line, so a JSON consumer can read this one too.
    Json,
}

impl Notice {
    fn dropped(self, n: u64) -> String {
        let time = crate::lists::rfc3339(crate::history::now_ms());
        let what = "log lines dropped: standard error did not keep up (is what reads it, a journal or a pipe, stalled or rate-limited?)";
        match self {
            Notice::Text => format!("{time}  WARN sipsentry::log: {what} dropped={n}\n"),
            Notice::Json => format!(
                "{{\"timestamp\":\"{time}\",\"level\":\"WARN\",\"message\":\"{what}\",\"dropped\":{n},\"target\":\"sipsentry::log\"}}\n"
            ),
        }
    }
}

/// What each of the two buffers keeps allocated between rounds.
const KEEP_CAPACITY: usize = 64 << 10;

struct Shared {
    buf: Mutex<Vec<u8>>,
    /// The writer sleeps until woken (set before it checks the buffer one
    /// last time, under the buffer's lock).
    parked: AtomicBool,
    stop: AtomicBool,
    dropped: AtomicU64,
}

/// The `MakeWriter` handed to the log formatter; cheap to clone.
#[derive(Clone)]
pub struct LogWriter {
    shared: Arc<Shared>,
    thread: std::thread::Thread,
}

/// Keep until exit: dropping it writes what is still buffered and stops
/// the writer thread.
pub struct LogWriterGuard {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
    /// Closed by the writer thread when it has written everything.
    done: mpsc::Receiver<()>,
}

/// Starts the writer thread (named `log`) writing to `out`; a line about
/// dropped lines is written as `notice` says.
pub fn start<W: Write + Send + 'static>(
    out: W,
    notice: Notice,
) -> std::io::Result<(LogWriter, LogWriterGuard)> {
    let shared = Arc::new(Shared {
        buf: Mutex::new(Vec::with_capacity(KEEP_CAPACITY)),
        parked: AtomicBool::new(false),
        stop: AtomicBool::new(false),
        dropped: AtomicU64::new(0),
    });
    let (finished, done) = mpsc::channel::<()>();
    let thread = {
        let shared = shared.clone();
        std::thread::Builder::new()
            .name("log".into())
            .spawn(move || {
                run(&shared, out, notice);
                drop(finished);
            })?
    };
    let writer = LogWriter {
        shared: shared.clone(),
        thread: thread.thread().clone(),
    };
    Ok((
        writer,
        LogWriterGuard {
            shared,
            thread: Some(thread),
            done,
        },
    ))
}

impl LogWriter {
    fn append(&self, line: &[u8]) {
        let shared = &*self.shared;
        {
            let mut buf = shared.buf.lock().unwrap_or_else(PoisonError::into_inner);
            if buf.len() + line.len() > BUFFER_MAX {
                shared.dropped.fetch_add(1, Ordering::Relaxed);
                return;
            }
            buf.extend_from_slice(line);
        }
        if shared.parked.load(Ordering::SeqCst) && shared.parked.swap(false, Ordering::SeqCst) {
            self.thread.unpark();
        }
    }
}

impl Write for &LogWriter {
    fn write(&mut self, line: &[u8]) -> std::io::Result<usize> {
        self.append(line);
        Ok(line.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogWriter {
    type Writer = &'a LogWriter;

    fn make_writer(&'a self) -> Self::Writer {
        self
    }
}

impl Drop for LogWriterGuard {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            thread.thread().unpark();
            // Disconnected (not a timeout) once the thread has finished.
            if let Err(mpsc::RecvTimeoutError::Disconnected) = self.done.recv_timeout(SHUTDOWN_WAIT)
            {
                let _ = thread.join();
            }
        }
    }
}

fn run<W: Write>(shared: &Shared, mut out: W, notice: Notice) {
    let mut spare = Vec::with_capacity(KEEP_CAPACITY);
    let mut reported = 0;
    let mut idle = 0;
    loop {
        let stopping = shared.stop.load(Ordering::SeqCst);
        {
            let mut buf = shared.buf.lock().unwrap_or_else(PoisonError::into_inner);
            std::mem::swap(&mut *buf, &mut spare);
        }
        let dropped = shared.dropped.load(Ordering::Relaxed);
        if dropped > reported {
            spare.extend_from_slice(notice.dropped(dropped - reported).as_bytes());
            reported = dropped;
        }
        if spare.is_empty() {
            idle += 1;
        } else {
            idle = 0;
            // A failed write (a closed pipe) loses these lines, never the
            // process: there is nowhere left to say so.
            let _ = out.write_all(&spare);
            let _ = out.flush();
            spare.clear();
            // After a burst, do not keep its size for good.
            spare.shrink_to(KEEP_CAPACITY);
        }
        if stopping {
            return;
        }
        if idle >= IDLE_ROUNDS {
            shared.parked.store(true, Ordering::SeqCst);
            let empty = shared
                .buf
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .is_empty();
            if empty && !shared.stop.load(Ordering::SeqCst) {
                std::thread::park();
            }
            shared.parked.store(false, Ordering::SeqCst);
            idle = 0;
        } else {
            std::thread::park_timeout(FLUSH_INTERVAL);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `Write` the test can read back while the writer thread holds it.
    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);

    impl Write for Sink {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn wait_for(sink: &Sink, want: &[u8]) -> bool {
        for _ in 0..500 {
            if sink.0.lock().unwrap().ends_with(want) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        false
    }

    #[test]
    fn lines_reach_the_output_in_order_within_a_flush_interval() {
        let sink = Sink::default();
        let (writer, _guard) = start(sink.clone(), Notice::Text).unwrap();
        (&writer).write_all(b"one\n").unwrap();
        (&writer).write_all(b"two\n").unwrap();
        assert!(wait_for(&sink, b"one\ntwo\n"));
    }

    #[test]
    fn dropping_the_guard_writes_what_is_buffered() {
        let sink = Sink::default();
        let (writer, guard) = start(sink.clone(), Notice::Text).unwrap();
        for i in 0..1000 {
            writeln!(&writer, "line {i}").unwrap();
        }
        drop(guard);
        let out = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
        assert_eq!(out.lines().count(), 1000);
        assert_eq!(out.lines().last(), Some("line 999"));
    }

    #[test]
    fn a_line_after_an_idle_spell_wakes_the_parked_writer() {
        let sink = Sink::default();
        let (writer, _guard) = start(sink.clone(), Notice::Text).unwrap();
        // Long enough for the writer to give up its timer and park.
        std::thread::sleep(FLUSH_INTERVAL * (IDLE_ROUNDS + 10));
        assert!(writer.shared.parked.load(Ordering::SeqCst));
        (&writer).write_all(b"after the quiet\n").unwrap();
        assert!(wait_for(&sink, b"after the quiet\n"));
    }

    #[test]
    fn exit_does_not_wait_for_ever_on_an_output_that_blocks() {
        /// A pipe nobody reads: every write blocks.
        struct Blocked(Arc<Mutex<()>>);
        impl Write for Blocked {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                drop(self.0.lock().unwrap());
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let gate = Arc::new(Mutex::new(()));
        let _held = gate.lock().unwrap();
        let (writer, guard) = start(Blocked(gate.clone()), Notice::Text).unwrap();
        (&writer).write_all(b"stuck\n").unwrap();
        std::thread::sleep(FLUSH_INTERVAL * 5);
        let started = std::time::Instant::now();
        drop(guard);
        let took = started.elapsed();
        assert!(took >= SHUTDOWN_WAIT, "returned after {took:?}");
    }

    /// Eight lines of a MiB fill the buffer while the writer is held up;
    /// `count` more are dropped. What reached `sink` once released.
    fn overflow(notice: Notice, count: usize) -> Vec<u8> {
        /// Blocks every write until told to go on.
        struct Stuck(Arc<Mutex<()>>, Sink);
        impl Write for Stuck {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                let _held = self.0.lock().unwrap();
                self.1.write(b)
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let gate = Arc::new(Mutex::new(()));
        let sink = Sink::default();
        let held = gate.lock().unwrap();
        let (writer, guard) = start(Stuck(gate.clone(), sink.clone()), notice).unwrap();
        (&writer).write_all(b"first\n").unwrap();
        // The writer takes "first" and blocks writing it.
        std::thread::sleep(FLUSH_INTERVAL * 5);
        let mut line = vec![b'x'; (1 << 20) - 1];
        line.push(b'\n');
        for _ in 0..8 + count {
            (&writer).write_all(&line).unwrap();
        }
        drop(held);
        drop(guard);
        let out = sink.0.lock().unwrap().clone();
        assert!(out.starts_with(b"first\n"));
        out
    }

    /// The line after the kept ones: what the writer said about the rest.
    fn notice_of(out: &[u8]) -> &str {
        let kept = 6 + 8 * (1 << 20);
        assert!(out.len() > kept, "no line after the kept ones");
        assert!(out[..kept].ends_with(b"x\n"));
        std::str::from_utf8(&out[kept..]).unwrap()
    }

    #[test]
    fn a_full_buffer_drops_lines_and_says_how_many() {
        let out = overflow(Notice::Text, 2);
        let said = notice_of(&out);
        assert!(
            said.ends_with(
                " WARN sipsentry::log: log lines dropped: standard error did not keep up (is what reads it, a journal or a pipe, stalled or rate-limited?) dropped=2\n"
            ),
            "{said}"
        );
        assert_eq!(said.lines().count(), 1);
    }

    #[test]
    fn in_json_the_dropped_lines_notice_is_a_json_line() {
        let out = overflow(Notice::Json, 3);
        let said = notice_of(&out);
        let v: serde_json::Value = serde_json::from_str(said.trim_end()).expect(said);
        assert_eq!(v["dropped"], 3);
        assert_eq!(v["level"], "WARN");
        assert!(v["timestamp"].as_str().is_some_and(|t| t.ends_with('Z')));
    }
}
