//! Logs on standard error, as text or one JSON object per line. `serve`
//! writes them through [`super::log_writer`], so a slow terminal or journal
//! never holds up a call and a call's line costs no system call; the other
//! commands write each line as it comes, in order with what they print.

use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::fmt::writer::EitherWriter;

use super::log_writer::{self, LogWriter, LogWriterGuard, Notice};
use crate::config::LogFormat;
use crate::pipeline::DECISION_LOG;

/// Where the lines go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Output {
    /// Buffered and written by a thread of their own (`serve`).
    Batched,
    /// Written to standard error by the caller, line by line.
    Direct,
}

/// What the formatter writes each line to.
enum Lines {
    Batched(LogWriter),
    Direct,
}

impl<'a> MakeWriter<'a> for Lines {
    type Writer = EitherWriter<&'a LogWriter, std::io::Stderr>;

    fn make_writer(&'a self) -> Self::Writer {
        match self {
            Lines::Batched(w) => EitherWriter::A(w),
            Lines::Direct => EitherWriter::B(std::io::stderr()),
        }
    }
}

/// Installs the process's logger. `RUST_LOG`, when set, chooses what is
/// logged; otherwise `sipsentry` at info, with the per-call decision line
/// when `decisions` is on. Keep the guard until exit: dropping it writes
/// what is still buffered.
pub fn init(format: LogFormat, decisions: bool, output: Output) -> Option<LogWriterGuard> {
    let default = if decisions {
        "sipsentry=info".to_string()
    } else {
        format!("sipsentry=info,{DECISION_LOG}=off")
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    // Colour codes only for a person at a terminal, not in log files.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    // Without its thread the log still works, line by line.
    let (lines, guard) = match output {
        Output::Batched => match log_writer::start(
            std::io::stderr(),
            match format {
                LogFormat::Json => Notice::Json,
                _ => Notice::Text,
            },
        ) {
            Ok((writer, guard)) => (Lines::Batched(writer), Some(guard)),
            Err(e) => {
                eprintln!(
                    "sipsentry: cannot start the log thread ({e}); logging line by line instead (check the process's thread limit, ulimit -u)"
                );
                (Lines::Direct, None)
            }
        },
        Output::Direct => (Lines::Direct, None),
    };
    let builder = builder.with_writer(lines);
    match format {
        LogFormat::Json => builder
            .with_timer(super::log_time::CachedSystemTime)
            .json()
            .flatten_event(true)
            .init(),
        LogFormat::Text => builder
            .with_ansi(ansi)
            .event_format(super::log_format::TextFormat::default())
            .init(),
    }
    guard
}
