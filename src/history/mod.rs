//! The decision history (docs/operations.md): one SQLite row per screened INVITE,
//! in WAL mode so queries and exports read while the writer writes.
//!
//! The call path never touches the disk: the pipeline's logging phase hands a
//! [`Record`] to [`HistorySink::record`], a non-blocking send into a bounded
//! queue, and one writer thread ([`writer`]) inserts them in batches. If the
//! queue is ever full the record is counted as dropped and logged, never lost
//! silently. On shutdown every queued record is written before the process
//! exits. Reading is in [`query`].

use std::path::{Path, PathBuf};

use rusqlite::Connection;
use serde::{Deserialize, Serialize};

mod batch;
pub mod export;
mod metrics;
pub mod pg;
mod pg_writer;
pub mod query;
mod spool;
mod stats;
pub mod writer;

pub use pg::{PgHistory, PgTarget};
pub use pg_writer::PgOptions;

pub use writer::{HistorySink, HistoryWriter};

/// One screened INVITE.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Record {
    /// The decision id (also in the 603+ Reason).
    pub decision_id: String,
    /// UTC, milliseconds since the Unix epoch.
    pub time_ms: i64,
    pub call_id: String,
    /// The address the INVITE came from.
    pub source: std::net::SocketAddr,
    /// The caller as received (user part or tel number).
    pub caller: String,
    pub caller_e164: Option<String>,
    pub called: String,
    /// Which header the caller came from: pai, rpid or from.
    pub trust: &'static str,
    /// pass, tag, divert or reject (what was done; see `dry_run`).
    pub action: &'static str,
    /// The rule that fired.
    pub rule: &'static str,
    /// The response sipsentry sent itself (reject code, 302); `None` when the
    /// call was relayed and the PBX answers it.
    pub response_code: Option<u16>,
    pub score: u8,
    pub category: Option<String>,
    /// Everything the sources said; serialized to JSON by the writer thread,
    /// not on the call path.
    pub evidence: Vec<crate::reputation::Evidence>,
    pub decision_us: u64,
    pub dry_run: bool,
    /// The caller's display name as received (the caller's own text).
    pub display: Option<String>,
    /// `verstat` on the caller's identity, as received.
    pub verstat: Option<String>,
    /// The SHAKEN attestation (A, B, C) of the Identity header.
    pub attest: Option<String>,
}

/// A relayed call's final response: the code and the milliseconds from
/// relaying the INVITE to it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Final {
    pub decision_id: String,
    pub final_code: u16,
    pub final_ms: u32,
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HistoryError {
    #[error(
        "cannot open the history database {path} (check history.path and that its directory is writable): {source}"
    )]
    Open {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("cannot create the directory {path} for history.path: {source}")]
    Dir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "history database {path} has schema version {found}, newer than this sipsentry ({known}); upgrade sipsentry or point history.path elsewhere"
    )]
    TooNew {
        path: PathBuf,
        found: i64,
        known: i64,
    },
    #[error(
        "history database {path} has schema version {found}, older than this sipsentry ({known}); start `sipsentry serve` once (it migrates the file) or point history.path elsewhere"
    )]
    TooOld {
        path: PathBuf,
        found: i64,
        known: i64,
    },
    #[error("history query failed: {0} (check that history.path is a sipsentry history database)")]
    Query(#[from] rusqlite::Error),
    #[error(
        "cannot start the history writer thread: {source} (is the process out of threads or memory?)"
    )]
    Thread { source: std::io::Error },
    #[error("bad history filter `{key}`: {message}")]
    Filter { key: &'static str, message: String },
    #[error(
        "history.url is not a PostgreSQL URL ({message}); write postgres://user@host:port/database and put the password in the variable history.password_env names"
    )]
    PgUrl { message: String },
    #[error(
        "PostgreSQL history at {target}: {message} (check history.url, the password in history.password_env, and that the server is reachable)"
    )]
    Pg { target: String, message: String },
    #[error(
        "history.ca_file {path}: {message} (it must hold the PEM certificate of the CA that signed the PostgreSQL server's certificate)"
    )]
    PgCa { path: PathBuf, message: String },
    #[error(
        "PostgreSQL history at {target} has schema version {found}, newer than this sipsentry ({known}); upgrade sipsentry on every node"
    )]
    PgTooNew {
        target: String,
        found: i64,
        known: i64,
    },
}

/// `history.backend`: where a node keeps its history.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Backend {
    /// One SQLite file per node (`history.path`): the embedded default.
    #[default]
    Sqlite,
    /// One PostgreSQL database for every node (`history.url`).
    Postgres,
}

/// Where the history is kept, as readers see it.
#[derive(Debug, Clone)]
pub enum HistoryStore {
    /// The embedded default: one SQLite file per node.
    Sqlite(PathBuf),
    /// One PostgreSQL database for every node of a cluster.
    Postgres(std::sync::Arc<PgHistory>),
}

impl HistoryStore {
    /// Whether there is anything to read yet (a SQLite file is created by
    /// `serve`; a PostgreSQL database is always there to ask).
    pub fn exists(&self) -> bool {
        match self {
            HistoryStore::Sqlite(path) => path.exists(),
            HistoryStore::Postgres(_) => true,
        }
    }

    /// A reader. Blocking: call from a blocking context.
    pub fn open_read(&self) -> Result<Reader, HistoryError> {
        match self {
            HistoryStore::Sqlite(path) => open_read(path).map(Reader::Sqlite),
            HistoryStore::Postgres(pg) => pg.read().map(|r| Reader::Postgres(Box::new(r))),
        }
    }

    /// What to name in a message.
    pub fn describe(&self) -> String {
        match self {
            HistoryStore::Sqlite(path) => path.display().to_string(),
            HistoryStore::Postgres(pg) => pg.target.shown.clone(),
        }
    }
}

/// One reader's connection, to whichever backend is configured.
#[non_exhaustive]
pub enum Reader {
    Sqlite(Connection),
    Postgres(Box<pg::PgRead>),
}

/// WAL pages after which a commit checkpoints them into the database
/// (SQLite's default is 1,000, a 4 MB log). A checkpoint copies every page
/// the log holds once, however many commits rewrote it: the caller index
/// takes each row at a random place, so past a hundred thousand rows
/// nearly every row dirties a page of its own, and with the default the
/// writer spends 20–22 µs a row, most of it copying pages between the log
/// and the database. With 20,000 (an 80 MB log, reused, not regrown) it
/// spends about 15 (docs/performance.md, "The history writer as the table
/// grows"). Readers find a page in the log through its index, whatever its
/// length; a restart after a crash replays at most this much.
pub const WAL_CHECKPOINT_PAGES: i64 = 20_000;

/// Schema migrations, in order; `PRAGMA user_version` records how many ran.
const MIGRATIONS: &[&str] = &[
    // 1: the §8 table and the indexes for time, caller and action queries.
    "CREATE TABLE decisions (
        id            INTEGER PRIMARY KEY,
        decision_id   TEXT    NOT NULL,
        time_ms       INTEGER NOT NULL,
        call_id       TEXT    NOT NULL,
        source        TEXT    NOT NULL,
        caller        TEXT    NOT NULL,
        caller_e164   TEXT,
        called        TEXT    NOT NULL,
        trust         TEXT    NOT NULL,
        action        TEXT    NOT NULL,
        rule          TEXT    NOT NULL,
        response_code INTEGER,
        score         INTEGER NOT NULL,
        category      TEXT,
        evidence      TEXT    NOT NULL,
        decision_us   INTEGER NOT NULL,
        dry_run       INTEGER NOT NULL
     );
     CREATE INDEX decisions_time   ON decisions (time_ms);
     CREATE INDEX decisions_caller ON decisions (caller_e164, time_ms);
     CREATE INDEX decisions_action ON decisions (action, time_ms);",
    // 2: the final response of a relayed call; the operator's runtime
    // allow/deny lists and spam / not-spam reports (crate::lists), and the
    // counter their readers poll to see a change made by another process.
    "ALTER TABLE decisions ADD COLUMN final_code INTEGER;
     ALTER TABLE decisions ADD COLUMN final_ms INTEGER;
     ALTER TABLE decisions ADD COLUMN display TEXT;
     ALTER TABLE decisions ADD COLUMN verstat TEXT;
     ALTER TABLE decisions ADD COLUMN attest TEXT;
     CREATE INDEX decisions_decision_id ON decisions (decision_id);
     CREATE TABLE list_entries (
        list       TEXT    NOT NULL CHECK (list IN ('allow', 'deny')),
        pattern    TEXT    NOT NULL,
        comment    TEXT    NOT NULL,
        added_by   TEXT    NOT NULL,
        added_ms   INTEGER NOT NULL,
        expires_ms INTEGER,
        origin     TEXT    NOT NULL,
        PRIMARY KEY (list, pattern)
     );
     CREATE TABLE reports (
        id          INTEGER PRIMARY KEY,
        time_ms     INTEGER NOT NULL,
        number      TEXT    NOT NULL,
        verdict     TEXT    NOT NULL CHECK (verdict IN ('spam', 'not_spam')),
        decision_id TEXT,
        note        TEXT    NOT NULL,
        reported_by TEXT    NOT NULL
     );
     CREATE INDEX reports_number ON reports (number, id);
     CREATE INDEX reports_decision ON reports (decision_id);
     CREATE TABLE lists_version (
        id      INTEGER PRIMARY KEY CHECK (id = 1),
        version INTEGER NOT NULL
     );
     INSERT INTO lists_version VALUES (1, 0);",
];

/// The schema version this build writes.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// Opens (creating and migrating) the database for writing.
pub fn open(path: &Path) -> Result<Connection, HistoryError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|source| HistoryError::Dir {
            path: dir.to_path_buf(),
            source,
        })?;
    }
    let open_err = |source| HistoryError::Open {
        path: path.to_path_buf(),
        source,
    };
    let mut conn = Connection::open(path).map_err(open_err)?;
    conn.pragma_update(None, "journal_mode", "WAL")
        .map_err(open_err)?;
    // WAL with synchronous=NORMAL is durable across process crashes; only
    // an OS crash can lose the last transactions.
    conn.pragma_update(None, "synchronous", "NORMAL")
        .map_err(open_err)?;
    conn.pragma_update(None, "wal_autocheckpoint", WAL_CHECKPOINT_PAGES)
        .map_err(open_err)?;
    conn.busy_timeout(std::time::Duration::from_secs(5))
        .map_err(open_err)?;
    migrate(&mut conn, path)?;
    Ok(conn)
}

/// Opens the database for reading (queries, exports) without creating it.
pub fn open_read(path: &Path) -> Result<Connection, HistoryError> {
    let open_err = |source| HistoryError::Open {
        path: path.to_path_buf(),
        source,
    };
    let conn = Connection::open_with_flags(
        path,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(open_err)?;
    conn.busy_timeout(std::time::Duration::from_secs(5))
        .map_err(open_err)?;
    let found: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if found < SCHEMA_VERSION {
        return Err(HistoryError::TooOld {
            path: path.to_path_buf(),
            found,
            known: SCHEMA_VERSION,
        });
    }
    Ok(conn)
}

fn migrate(conn: &mut Connection, path: &Path) -> Result<(), HistoryError> {
    let found: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if found > SCHEMA_VERSION {
        return Err(HistoryError::TooNew {
            path: path.to_path_buf(),
            found,
            known: SCHEMA_VERSION,
        });
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(found as usize) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", (i + 1) as i64)?;
        tx.commit()?;
        tracing::info!(version = i + 1, "history schema migrated");
    }
    Ok(())
}

/// `addr` as its `Display` writes it, into `out` (cleared first): an IPv4
/// address and port digit by digit, since the general formatter costs
/// several times as much for the one column every row has; anything else
/// through `Display`.
pub(super) fn write_source(addr: std::net::SocketAddr, out: &mut String) {
    out.clear();
    match addr {
        std::net::SocketAddr::V4(v4) => {
            let mut digits = itoa::Buffer::new();
            for (i, octet) in v4.ip().octets().into_iter().enumerate() {
                if i > 0 {
                    out.push('.');
                }
                out.push_str(digits.format(octet));
            }
            out.push(':');
            out.push_str(digits.format(v4.port()));
        }
        v6 => {
            use std::fmt::Write as _;
            let _ = write!(out, "{v6}");
        }
    }
}

/// [`write_source`] into a new string.
pub(super) fn source_text(addr: std::net::SocketAddr) -> String {
    let mut out = String::with_capacity(21);
    write_source(addr, &mut out);
    out
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    jiff::Timestamp::now().as_millisecond()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_addresses_are_written_as_display_writes_them() {
        let mut out = String::from("left over");
        for a in [
            "0.0.0.0:0",
            "10.1.22.255:5060",
            "255.255.255.255:65535",
            "[2001:db8::1]:5061",
            "[::ffff:10.0.0.1]:1",
        ] {
            let addr: std::net::SocketAddr = a.parse().unwrap();
            write_source(addr, &mut out);
            assert_eq!(out, addr.to_string());
            assert_eq!(source_text(addr), addr.to_string());
        }
    }

    #[test]
    fn a_new_database_is_migrated_to_the_current_version_in_wal_mode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/history.db");
        let conn = open(&path).unwrap();
        let v: i64 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(v, SCHEMA_VERSION);
        let mode: String = conn
            .pragma_query_value(None, "journal_mode", |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        let checkpoint: i64 = conn
            .pragma_query_value(None, "wal_autocheckpoint", |r| r.get(0))
            .unwrap();
        assert_eq!(checkpoint, WAL_CHECKPOINT_PAGES, "the writer's longer log");
        drop(conn);
        // Reopening runs nothing again; a newer schema is refused.
        let conn = open(&path).unwrap();
        conn.pragma_update(None, "user_version", 99).unwrap();
        drop(conn);
        assert!(matches!(
            open(&path),
            Err(HistoryError::TooNew { found: 99, .. })
        ));
        // A reader never queries a file an older build left unmigrated.
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.pragma_update(None, "user_version", 1).unwrap();
        drop(conn);
        assert!(matches!(
            open_read(&path),
            Err(HistoryError::TooOld { found: 1, .. })
        ));
    }
}
