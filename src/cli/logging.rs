//! Logs on standard error, as text or one JSON object per line, written by
//! a thread of their own: a slow terminal or journal never holds up a call
//! (past a backlog of lines, new ones are dropped rather than waited for).

use tracing_appender::non_blocking::{NonBlockingBuilder, WorkerGuard};

use crate::config::LogFormat;
use crate::pipeline::DECISION_LOG;

/// Installs the process's logger. `RUST_LOG`, when set, chooses what is
/// logged; otherwise `sipsentry` at info, with the per-call decision line
/// when `decisions` is on. Keep the guard until exit: dropping it writes
/// what is still queued.
pub fn init(format: LogFormat, decisions: bool) -> WorkerGuard {
    let (writer, guard) = NonBlockingBuilder::default()
        .lossy(true)
        .thread_name("log")
        .finish(std::io::stderr());
    let default = if decisions {
        "sipsentry=info".to_string()
    } else {
        format!("sipsentry=info,{DECISION_LOG}=off")
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    match format {
        LogFormat::Json => builder.json().flatten_event(true).init(),
        // Colour codes only for a person at a terminal, not in log files.
        LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
    }
    guard
}
