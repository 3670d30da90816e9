//! Logs on standard error, as text or one JSON object per line. `serve`
//! writes them through [`super::log_writer`], so a slow terminal or journal
//! never holds up a call and a call's line costs no system call; the other
//! commands write each line as it comes, in order with what they print.

use super::log_writer::{self, LogWriterGuard, Notice};
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
    let batched = match output {
        Output::Batched => log_writer::start(
            std::io::stderr(),
            match format {
                LogFormat::Json => Notice::Json,
                _ => Notice::Text,
            },
        )
        .map_err(|e| eprintln!("sipsentry: logging line by line: cannot start the log thread: {e}"))
        .ok(),
        Output::Direct => None,
    };
    match (batched, format) {
        (Some((writer, guard)), LogFormat::Json) => {
            builder
                .with_writer(writer)
                .json()
                .flatten_event(true)
                .init();
            Some(guard)
        }
        (Some((writer, guard)), LogFormat::Text) => {
            builder.with_writer(writer).with_ansi(ansi).init();
            Some(guard)
        }
        (None, LogFormat::Json) => {
            builder
                .with_writer(std::io::stderr)
                .json()
                .flatten_event(true)
                .init();
            None
        }
        (None, LogFormat::Text) => {
            builder.with_writer(std::io::stderr).with_ansi(ansi).init();
            None
        }
    }
}
