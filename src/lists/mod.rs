//! What operators tell sipsentry at run time: allow and deny entries, and
//! spam / not-spam reports about callers (docs/operations.md, "Runtime
//! lists and reports").
//!
//! They are kept in the history database ([`store`]), so the console, the
//! admin API and the `lists` / `report` commands share one durable record
//! whether or not `serve` is running. The call path never reads the
//! database: [`RuntimeLists`] holds a snapshot in memory, swapped whole
//! when the store changes (at once for a change made through the API;
//! within [`POLL_INTERVAL`] for one made by another process).

use std::time::Duration;

use serde::Serialize;

use crate::number::NumberPattern;

mod pg_store;
mod runtime;
pub mod store;

pub use runtime::{Listed, RuntimeLists, Snapshot};
pub use store::Store;

/// Which reports.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ReportFilter {
    pub from_ms: Option<i64>,
    pub to_ms: Option<i64>,
    pub number: Option<String>,
    pub decision_id: Option<String>,
}

/// A report to record.
#[derive(Debug, Clone)]
pub struct NewReport<'a> {
    /// E.164.
    pub number: &'a str,
    pub verdict: Feedback,
    pub decision_id: Option<&'a str>,
    pub note: &'a str,
    pub reported_by: &'a str,
    /// How long a `not_spam` report allowlists the number
    /// (`policy.not_spam_days`).
    pub not_spam_days: u32,
}

/// How often `serve` looks for a change made by another process.
pub const POLL_INTERVAL: Duration = Duration::from_secs(1);

/// Longest pattern accepted (E.164 has at most 15 digits).
pub const MAX_PATTERN_LEN: usize = 20;

/// Longest comment of a list entry, in characters.
pub const MAX_COMMENT_LEN: usize = 200;

/// Longest note of a report, in characters.
pub const MAX_NOTE_LEN: usize = 500;

/// Which list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum ListKind {
    Allow,
    Deny,
}

impl ListKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ListKind::Allow => "allow",
            ListKind::Deny => "deny",
        }
    }

    pub fn parse(s: &str) -> Option<ListKind> {
        match s {
            "allow" => Some(ListKind::Allow),
            "deny" => Some(ListKind::Deny),
            _ => None,
        }
    }
}

/// Where an entry came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Origin {
    /// `policy.allow` / `policy.deny` in the config file: read-only here.
    Config,
    /// Added by an operator (API, console, CLI).
    Operator,
    /// Added by a `not_spam` report, for `policy.not_spam_days`.
    NotSpam,
}

impl Origin {
    pub fn as_str(self) -> &'static str {
        match self {
            Origin::Config => "config",
            Origin::Operator => "operator",
            Origin::NotSpam => "not_spam",
        }
    }

    fn parse(s: &str) -> Origin {
        match s {
            "not_spam" => Origin::NotSpam,
            "config" => Origin::Config,
            _ => Origin::Operator,
        }
    }
}

/// One list entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Entry {
    pub list: ListKind,
    /// `+15551234567` or `+1555*`.
    pub pattern: String,
    pub comment: String,
    pub added_by: String,
    /// RFC 3339, UTC; empty for config entries.
    pub added_at: String,
    /// RFC 3339, UTC; `None` never expires.
    pub expires_at: Option<String>,
    #[serde(skip)]
    pub expires_ms: Option<i64>,
    pub origin: Origin,
    /// Config entries cannot be removed here.
    pub read_only: bool,
}

/// The config file's `policy.allow` or `policy.deny` as read-only entries.
pub fn config_entries(list: ListKind, patterns: &[String]) -> Vec<Entry> {
    patterns
        .iter()
        .map(|p| Entry {
            list,
            pattern: p.clone(),
            comment: format!("policy.{} in the config file", list.as_str()),
            added_by: "config".into(),
            added_at: String::new(),
            expires_at: None,
            expires_ms: None,
            origin: Origin::Config,
            read_only: true,
        })
        .collect()
}

/// A spam or not-spam verdict on a caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Feedback {
    Spam,
    NotSpam,
}

impl Feedback {
    pub fn as_str(self) -> &'static str {
        match self {
            Feedback::Spam => "spam",
            Feedback::NotSpam => "not_spam",
        }
    }

    pub fn parse(s: &str) -> Option<Feedback> {
        match s {
            "spam" => Some(Feedback::Spam),
            "not_spam" => Some(Feedback::NotSpam),
            _ => None,
        }
    }
}

/// One stored report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    pub id: i64,
    /// RFC 3339, UTC.
    pub time: String,
    pub time_ms: i64,
    pub number: String,
    pub verdict: Feedback,
    /// The decision the report is about, when it was made from one.
    pub decision_id: Option<String>,
    pub note: String,
    pub reported_by: String,
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ListsError {
    /// A bad value from the operator, named by its field.
    #[error("`{field}`: {message}")]
    Invalid {
        field: &'static str,
        message: String,
    },
    #[error("{0}")]
    History(#[from] crate::history::HistoryError),
    #[error("lists database error: {0} (check that history.path is a sipsentry database)")]
    Sql(#[from] rusqlite::Error),
}

impl ListsError {
    pub(crate) fn invalid(field: &'static str, message: impl Into<String>) -> Self {
        ListsError::Invalid {
            field,
            message: message.into(),
        }
    }
}

/// Checks a pattern: `+` and digits, optionally ending in `*`.
pub fn parse_pattern(text: &str) -> Result<NumberPattern, ListsError> {
    let t = text.trim();
    if t.len() > MAX_PATTERN_LEN {
        return Err(ListsError::invalid(
            "pattern",
            format!("longer than {MAX_PATTERN_LEN} characters"),
        ));
    }
    NumberPattern::parse(t).map_err(|e| ListsError::invalid("pattern", format!("{t:?}: {e}")))
}

/// Checks free text (a comment, a note): bounded, no control characters.
pub fn check_text(field: &'static str, text: &str, max: usize) -> Result<String, ListsError> {
    let t = text.trim();
    if t.chars().count() > max {
        return Err(ListsError::invalid(
            field,
            format!("longer than {max} characters"),
        ));
    }
    if t.chars().any(char::is_control) {
        return Err(ListsError::invalid(field, "contains control characters"));
    }
    Ok(t.to_string())
}

/// Parses an expiry: RFC 3339 (`2027-01-01T00:00:00Z`), a date, or a
/// duration from now (`30d`, `12h`, `90m`). Must lie in the future.
pub fn parse_expiry(field: &'static str, text: &str, now_ms: i64) -> Result<i64, ListsError> {
    let t = text.trim();
    let unit_ms = match t.chars().last() {
        Some('d') => Some(86_400_000),
        Some('h') => Some(3_600_000),
        Some('m') => Some(60_000),
        _ => None,
    };
    let at = match unit_ms.and_then(|u| Some(t[..t.len() - 1].parse::<i64>().ok()? * u)) {
        Some(ms) => now_ms.saturating_add(ms),
        None => crate::history::query::parse_time("expires", t).map_err(|_| {
            ListsError::invalid(
                field,
                format!(
                    "{t:?} is not a time; use 2027-01-01T00:00:00Z, 2027-01-01 or 30d / 12h / 90m"
                ),
            )
        })?,
    };
    if at <= now_ms {
        return Err(ListsError::invalid(field, format!("{t:?} is in the past")));
    }
    Ok(at)
}

/// The store and the snapshot the call path reads, kept in step: a change
/// made through [`Lists::change`] is in force for the next call; one made
/// by another process (the CLI) or another node of a cluster once
/// [`Lists::refresh`] sees it.
pub struct Lists {
    backend: Backend,
    runtime: std::sync::Arc<RuntimeLists>,
}

enum Backend {
    /// The node's SQLite file, one connection kept open.
    Sqlite(parking_lot::Mutex<Store>),
    /// The cluster's PostgreSQL database, a pooled connection per use; the
    /// lock keeps this node's changes and snapshot reads in order.
    Postgres {
        pg: std::sync::Arc<crate::history::PgHistory>,
        lock: parking_lot::Mutex<()>,
    },
}

/// How often `serve` looks for a change another node made in a cluster's
/// PostgreSQL database (a change is in force on every node within it).
pub const PG_POLL_INTERVAL: std::time::Duration = std::time::Duration::from_millis(250);

impl std::fmt::Debug for Lists {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lists").finish_non_exhaustive()
    }
}

impl Lists {
    /// Opens the store at `history.path` and reads the first snapshot.
    pub fn open(path: &std::path::Path) -> Result<Lists, ListsError> {
        let mut store = Store::open(path)?;
        let runtime = RuntimeLists::new(store.snapshot(crate::history::now_ms())?);
        Ok(Lists {
            backend: Backend::Sqlite(parking_lot::Mutex::new(store)),
            runtime: std::sync::Arc::new(runtime),
        })
    }

    /// The lists in a cluster's PostgreSQL database. Reads nothing yet: the
    /// first [`Lists::refresh`] does (a database that is down at start leaves
    /// the configured lists in force until it answers).
    pub fn postgres(pg: std::sync::Arc<crate::history::PgHistory>) -> Lists {
        Lists {
            backend: Backend::Postgres {
                pg,
                lock: parking_lot::Mutex::new(()),
            },
            runtime: std::sync::Arc::default(),
        }
    }

    /// What the pipeline screens with.
    pub fn runtime(&self) -> &std::sync::Arc<RuntimeLists> {
        &self.runtime
    }

    /// How often to [`Lists::refresh`].
    pub fn poll_interval(&self) -> std::time::Duration {
        match self.backend {
            Backend::Sqlite(_) => POLL_INTERVAL,
            Backend::Postgres { .. } => PG_POLL_INTERVAL,
        }
    }

    /// Reads (or changes) the store; a change is in force for the next
    /// call when this returns. Blocks on the database: call off the async
    /// threads.
    pub fn change<T>(
        &self,
        f: impl FnOnce(&mut Store) -> Result<T, ListsError>,
    ) -> Result<T, ListsError> {
        match &self.backend {
            Backend::Sqlite(store) => self.change_in(&mut store.lock(), f),
            Backend::Postgres { pg, lock } => {
                let _order = lock.lock();
                let mut store = Store::postgres(pg.read()?);
                self.change_in(&mut store, f)
            }
        }
    }

    fn change_in<T>(
        &self,
        store: &mut Store,
        f: impl FnOnce(&mut Store) -> Result<T, ListsError>,
    ) -> Result<T, ListsError> {
        let out = f(store)?;
        if store.version()? != self.runtime.version() {
            self.runtime
                .replace(store.snapshot(crate::history::now_ms())?);
        }
        Ok(out)
    }

    /// Takes in a change another process made, and drops expired entries.
    /// Blocks on the database.
    pub fn refresh(&self) -> Result<(), ListsError> {
        self.change(|s| s.prune_expired(crate::history::now_ms()).map(drop))
    }
}

/// Milliseconds since the epoch as RFC 3339.
pub(crate) fn rfc3339(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms)
        .map(|t| t.to_string())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_are_e164_or_prefixes_and_bounded() {
        assert!(parse_pattern(" +15551234567 ").is_ok());
        assert!(parse_pattern("+1555*").is_ok());
        for bad in ["5551234567", "+1555x", "", "+123456789012345678901"] {
            let e = parse_pattern(bad).unwrap_err();
            assert!(
                matches!(
                    e,
                    ListsError::Invalid {
                        field: "pattern",
                        ..
                    }
                ),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn expiries_are_times_or_durations_in_the_future() {
        let now = 1_800_000_000_000;
        assert_eq!(
            parse_expiry("expires", "30d", now).unwrap(),
            now + 30 * 86_400_000
        );
        assert_eq!(parse_expiry("expires", "2h", now).unwrap(), now + 7_200_000);
        assert_eq!(
            parse_expiry("expires_at", "2027-01-01T00:00:00Z", 0).unwrap(),
            1_798_761_600_000
        );
        assert!(parse_expiry("expires", "2020-01-01", now).is_err());
        assert!(parse_expiry("expires", "soon", now).is_err());
    }

    #[test]
    fn text_is_bounded_and_free_of_control_characters() {
        assert_eq!(check_text("comment", " ok ", 10).unwrap(), "ok");
        assert!(check_text("comment", "a\u{7}b", 10).is_err());
        assert!(check_text("note", &"x".repeat(11), 10).is_err());
    }
}
