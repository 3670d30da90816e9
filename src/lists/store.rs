//! The runtime lists and reports in the history database (SQLite, WAL):
//! `serve`, the admin API and the CLI open the same file, and every change
//! bumps one counter so a reader in another process sees it
//! ([`Store::version`]).

use std::io::Write;
use std::path::Path;

use rusqlite::{Connection, OptionalExtension, params};

use super::pg_store;
use super::{
    Entry, Feedback, ListKind, ListsError, MAX_COMMENT_LEN, MAX_NOTE_LEN, NewReport, Origin,
    Report, ReportFilter, Snapshot, check_text, parse_pattern, rfc3339,
};
use crate::history::export::{ExportError, Format, csv_line};
use crate::history::pg::PgRead;
use crate::number::NumberPattern;

/// The CSV columns of a report export.
pub const REPORT_CSV_HEADER: &[&str] = &[
    "id",
    "time",
    "number",
    "verdict",
    "decision_id",
    "note",
    "reported_by",
];

/// A connection to the lists and reports.
pub struct Store {
    conn: Conn,
}

/// The database behind a [`Store`]: the node's SQLite file, or the
/// cluster's PostgreSQL database.
enum Conn {
    Sqlite(Connection),
    Postgres(Box<PgRead>),
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").finish_non_exhaustive()
    }
}

const ENTRY_COLUMNS: &str = "list, pattern, comment, added_by, added_ms, expires_ms, origin";
const REPORT_COLUMNS: &str = "id, time_ms, number, verdict, decision_id, note, reported_by";

fn entry_from_sql(r: &rusqlite::Row<'_>) -> rusqlite::Result<Entry> {
    let list: String = r.get(0)?;
    let added_ms: i64 = r.get(4)?;
    let expires_ms: Option<i64> = r.get(5)?;
    let origin: String = r.get(6)?;
    Ok(Entry {
        list: ListKind::parse(&list).unwrap_or(ListKind::Deny),
        pattern: r.get(1)?,
        comment: r.get(2)?,
        added_by: r.get(3)?,
        added_at: rfc3339(added_ms),
        expires_at: expires_ms.map(rfc3339),
        expires_ms,
        origin: Origin::parse(&origin),
        read_only: false,
    })
}

fn report_from_sql(r: &rusqlite::Row<'_>) -> rusqlite::Result<Report> {
    let time_ms: i64 = r.get(1)?;
    let verdict: String = r.get(3)?;
    Ok(Report {
        id: r.get(0)?,
        time: rfc3339(time_ms),
        time_ms,
        number: r.get(2)?,
        verdict: Feedback::parse(&verdict).unwrap_or(Feedback::Spam),
        decision_id: r.get(4)?,
        note: r.get(5)?,
        reported_by: r.get(6)?,
    })
}

fn bump(conn: &Connection) -> rusqlite::Result<()> {
    conn.execute(
        "UPDATE lists_version SET version = version + 1 WHERE id = 1",
        [],
    )?;
    Ok(())
}

impl Store {
    /// Opens the database at `history.path`, creating and migrating it.
    pub fn open(path: &Path) -> Result<Store, ListsError> {
        Ok(Store {
            conn: Conn::Sqlite(crate::history::open(path)?),
        })
    }

    /// A store on one pooled connection to the cluster's PostgreSQL database.
    pub fn postgres(read: PgRead) -> Store {
        Store {
            conn: Conn::Postgres(Box::new(read)),
        }
    }

    /// The change counter: different from the last read means reload.
    pub fn version(&mut self) -> Result<i64, ListsError> {
        let conn = match &mut self.conn {
            Conn::Postgres(pg) => return pg_store::version(pg),
            Conn::Sqlite(c) => c,
        };
        Ok(
            conn.query_row("SELECT version FROM lists_version WHERE id = 1", [], |r| {
                r.get(0)
            })?,
        )
    }

    /// The entries of `list` (both when `None`) that have not expired,
    /// newest first.
    pub fn entries(
        &mut self,
        list: Option<ListKind>,
        now_ms: i64,
    ) -> Result<Vec<Entry>, ListsError> {
        let conn = match &mut self.conn {
            Conn::Postgres(pg) => return pg_store::entries(pg, list, now_ms),
            Conn::Sqlite(c) => c,
        };
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {ENTRY_COLUMNS} FROM list_entries
             WHERE (?1 IS NULL OR list = ?1) AND (expires_ms IS NULL OR expires_ms > ?2)
             ORDER BY added_ms DESC, pattern"
        ))?;
        let rows = stmt.query_map(params![list.map(ListKind::as_str), now_ms], entry_from_sql)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Adds (or replaces) an operator's entry.
    pub fn add(
        &mut self,
        list: ListKind,
        pattern: &str,
        comment: &str,
        added_by: &str,
        expires_ms: Option<i64>,
    ) -> Result<Entry, ListsError> {
        let pattern = parse_pattern(pattern)?.to_string();
        let comment = check_text("comment", comment, MAX_COMMENT_LEN)?;
        let now = crate::history::now_ms();
        match &mut self.conn {
            Conn::Postgres(pg) => {
                pg_store::add(pg, list, &pattern, &comment, added_by, now, expires_ms)?
            }
            Conn::Sqlite(conn) => Self::add_sqlite(
                conn,
                [list.as_str(), &pattern, &comment, added_by],
                now,
                expires_ms,
            )?,
        }
        Ok(Entry {
            list,
            pattern,
            comment,
            added_by: added_by.to_string(),
            added_at: rfc3339(now),
            expires_at: expires_ms.map(rfc3339),
            expires_ms,
            origin: Origin::Operator,
            read_only: false,
        })
    }

    fn add_sqlite(
        conn: &mut Connection,
        [list, pattern, comment, added_by]: [&str; 4],
        now: i64,
        expires_ms: Option<i64>,
    ) -> Result<(), ListsError> {
        let tx = conn.transaction()?;
        tx.execute(
            "INSERT INTO list_entries (list, pattern, comment, added_by, added_ms, expires_ms, origin)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'operator')
             ON CONFLICT (list, pattern) DO UPDATE SET comment = excluded.comment,
               added_by = excluded.added_by, added_ms = excluded.added_ms,
               expires_ms = excluded.expires_ms, origin = excluded.origin",
            params![list, pattern, comment, added_by, now, expires_ms],
        )?;
        bump(&tx)?;
        tx.commit()?;
        Ok(())
    }

    /// Removes an entry; false when there was none.
    pub fn remove(&mut self, list: ListKind, pattern: &str) -> Result<bool, ListsError> {
        let pattern = parse_pattern(pattern)?.to_string();
        let conn = match &mut self.conn {
            Conn::Postgres(pg) => return pg_store::remove(pg, list, &pattern),
            Conn::Sqlite(c) => c,
        };
        let tx = conn.transaction()?;
        let n = tx.execute(
            "DELETE FROM list_entries WHERE list = ?1 AND pattern = ?2",
            params![list.as_str(), pattern],
        )?;
        if n > 0 {
            bump(&tx)?;
        }
        tx.commit()?;
        Ok(n > 0)
    }

    /// Deletes expired entries; how many.
    pub fn prune_expired(&mut self, now_ms: i64) -> Result<usize, ListsError> {
        let conn = match &mut self.conn {
            Conn::Postgres(pg) => return pg_store::prune_expired(pg, now_ms),
            Conn::Sqlite(c) => c,
        };
        let tx = conn.transaction()?;
        let n = tx.execute(
            "DELETE FROM list_entries WHERE expires_ms IS NOT NULL AND expires_ms <= ?1",
            params![now_ms],
        )?;
        if n > 0 {
            bump(&tx)?;
        }
        tx.commit()?;
        Ok(n)
    }

    /// Records a report. `spam` makes the `operator` evidence score the
    /// caller from the next call on (and ends an allowlisting an earlier
    /// `not_spam` report made); `not_spam` allowlists the number for
    /// `not_spam_days`, unless an operator's own allow entry is there.
    pub fn report(&mut self, r: &NewReport<'_>) -> Result<Report, ListsError> {
        let number = match parse_pattern(r.number) {
            Ok(NumberPattern::Exact(n)) => n,
            _ => {
                return Err(ListsError::invalid(
                    "number",
                    format!("{:?} is not an E.164 number like +15551234567", r.number),
                ));
            }
        };
        let note = check_text("note", r.note, MAX_NOTE_LEN)?;
        if let Some(id) = r.decision_id {
            self.check_decision(id, &number)?;
        }
        let now = crate::history::now_ms();
        let id = match &mut self.conn {
            Conn::Postgres(pg) => pg_store::report(pg, r, &number, &note, now)?,
            Conn::Sqlite(conn) => Self::report_sqlite(conn, r, &number, &note, now)?,
        };
        Ok(Report {
            id,
            time: rfc3339(now),
            time_ms: now,
            number,
            verdict: r.verdict,
            decision_id: r.decision_id.map(str::to_string),
            note,
            reported_by: r.reported_by.to_string(),
        })
    }

    /// Records a checked report and its effect on the allow list; its id.
    fn report_sqlite(
        conn: &mut Connection,
        r: &NewReport<'_>,
        number: &str,
        note: &str,
        now: i64,
    ) -> Result<i64, ListsError> {
        let tx = conn.transaction()?;
        tx.execute(
            "INSERT INTO reports (time_ms, number, verdict, decision_id, note, reported_by)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                now,
                number,
                r.verdict.as_str(),
                r.decision_id,
                note,
                r.reported_by
            ],
        )?;
        let id = tx.last_insert_rowid();
        match r.verdict {
            Feedback::NotSpam => {
                let expires = now + i64::from(r.not_spam_days) * 86_400_000;
                tx.execute(
                    "INSERT INTO list_entries (list, pattern, comment, added_by, added_ms, expires_ms, origin)
                     VALUES ('allow', ?1, 'reported not spam', ?2, ?3, ?4, 'not_spam')
                     ON CONFLICT (list, pattern) DO UPDATE SET added_by = excluded.added_by,
                       added_ms = excluded.added_ms, expires_ms = excluded.expires_ms
                     WHERE list_entries.origin = 'not_spam'",
                    params![number, r.reported_by, now, expires],
                )?;
            }
            Feedback::Spam => {
                tx.execute(
                    "DELETE FROM list_entries WHERE list = 'allow' AND pattern = ?1 AND origin = 'not_spam'",
                    params![number],
                )?;
            }
        }
        bump(&tx)?;
        tx.commit()?;
        Ok(id)
    }

    /// A report's decision must be in the history and be a call from the
    /// reported number.
    fn check_decision(&mut self, id: &str, number: &str) -> Result<(), ListsError> {
        let caller: Option<Option<String>> = match &mut self.conn {
            Conn::Postgres(pg) => pg_store::decision_caller(pg, id)?,
            Conn::Sqlite(conn) => conn
                .query_row(
                    "SELECT caller_e164 FROM decisions WHERE decision_id = ?1",
                    params![id],
                    |r| r.get(0),
                )
                .optional()?,
        };
        match caller {
            None => Err(ListsError::invalid(
                "decision_id",
                format!("{id:?} is not a decision in the history"),
            )),
            Some(c) if c.as_deref() != Some(number) => Err(ListsError::invalid(
                "decision_id",
                format!(
                    "decision {id} is a call from {}, not {number}",
                    c.as_deref().unwrap_or("an unknown caller")
                ),
            )),
            Some(_) => Ok(()),
        }
    }

    /// Reports matching `filter`, oldest first.
    pub fn reports(&mut self, filter: &ReportFilter) -> Result<Vec<Report>, ListsError> {
        let conn = match &mut self.conn {
            Conn::Postgres(pg) => return pg_store::reports(pg, filter),
            Conn::Sqlite(c) => c,
        };
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {REPORT_COLUMNS} FROM reports
             WHERE (?1 IS NULL OR time_ms >= ?1) AND (?2 IS NULL OR time_ms < ?2)
               AND (?3 IS NULL OR number = ?3) AND (?4 IS NULL OR decision_id = ?4)
             ORDER BY id"
        ))?;
        let rows = stmt.query_map(
            params![
                filter.from_ms,
                filter.to_ms,
                filter.number,
                filter.decision_id
            ],
            report_from_sql,
        )?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The latest report of every number whose latest report says spam.
    pub fn spam_reports(&mut self) -> Result<Vec<Report>, ListsError> {
        let conn = match &mut self.conn {
            Conn::Postgres(pg) => return pg_store::spam_reports(pg),
            Conn::Sqlite(c) => c,
        };
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {REPORT_COLUMNS} FROM reports r
             WHERE id = (SELECT MAX(id) FROM reports WHERE number = r.number)
               AND verdict = 'spam'"
        ))?;
        let rows = stmt.query_map([], report_from_sql)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// What the call path reads, as of now.
    pub fn snapshot(&mut self, now_ms: i64) -> Result<Snapshot, ListsError> {
        let version = self.version()?;
        Ok(Snapshot::new(
            self.entries(None, now_ms)?,
            self.spam_reports()?,
            version,
        ))
    }
}

/// Writes reports as CSV (cells neutralised) or a JSON array.
pub fn write_reports(
    reports: &[Report],
    format: Format,
    out: &mut dyn Write,
) -> Result<(), ExportError> {
    match format {
        Format::Json => {
            serde_json::to_writer_pretty(&mut *out, reports).map_err(std::io::Error::from)?;
            out.write_all(b"\n")?;
        }
        _ => {
            out.write_all(&csv_line(REPORT_CSV_HEADER)?)?;
            for r in reports {
                out.write_all(&csv_line(&[
                    r.id.to_string().as_str(),
                    &r.time,
                    &r.number,
                    r.verdict.as_str(),
                    r.decision_id.as_deref().unwrap_or(""),
                    &r.note,
                    &r.reported_by,
                ])?)?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("h.db")).unwrap();
        (dir, s)
    }

    fn report<'a>(number: &'a str, verdict: Feedback) -> NewReport<'a> {
        NewReport {
            number,
            verdict,
            decision_id: None,
            note: "",
            reported_by: "test",
            not_spam_days: 30,
        }
    }

    #[test]
    fn entries_are_added_replaced_and_removed_with_the_version_moving() {
        let (_d, mut s) = store();
        let v0 = s.version().unwrap();
        s.add(ListKind::Deny, "+15551234567", "robocaller", "cli", None)
            .unwrap();
        s.add(ListKind::Deny, "+15551234567", "again", "api", None)
            .unwrap();
        let all = s.entries(Some(ListKind::Deny), 0).unwrap();
        assert_eq!(all.len(), 1);
        assert_eq!(
            (all[0].comment.as_str(), all[0].added_by.as_str()),
            ("again", "api")
        );
        assert!(s.version().unwrap() > v0);
        assert!(s.remove(ListKind::Deny, "+15551234567").unwrap());
        assert!(!s.remove(ListKind::Deny, "+15551234567").unwrap());
        assert!(s.entries(None, 0).unwrap().is_empty());
    }

    #[test]
    fn expired_entries_are_hidden_and_pruned() {
        let (_d, mut s) = store();
        let now = crate::history::now_ms();
        s.add(ListKind::Allow, "+1555*", "", "cli", Some(now + 1000))
            .unwrap();
        assert_eq!(s.entries(None, now).unwrap().len(), 1);
        assert!(s.entries(None, now + 1000).unwrap().is_empty());
        assert_eq!(s.prune_expired(now + 1000).unwrap(), 1);
    }

    #[test]
    fn the_latest_report_decides_spam_or_a_temporary_allow_entry() {
        let (_d, mut s) = store();
        s.report(&report("+15550001111", Feedback::Spam)).unwrap();
        assert_eq!(s.spam_reports().unwrap().len(), 1);
        s.report(&report("+15550001111", Feedback::NotSpam))
            .unwrap();
        assert!(s.spam_reports().unwrap().is_empty());
        let allow = s.entries(Some(ListKind::Allow), 0).unwrap();
        assert_eq!(allow[0].origin, Origin::NotSpam);
        let days = (allow[0].expires_ms.unwrap() - crate::history::now_ms()) / 86_400_000;
        assert!((29..=30).contains(&days), "{days}");
        // Spam again: the report-made allow entry goes, an operator's stays.
        s.report(&report("+15550001111", Feedback::Spam)).unwrap();
        assert!(s.entries(Some(ListKind::Allow), 0).unwrap().is_empty());
        s.add(ListKind::Allow, "+15550002222", "customer", "cli", None)
            .unwrap();
        s.report(&report("+15550002222", Feedback::NotSpam))
            .unwrap();
        s.report(&report("+15550002222", Feedback::Spam)).unwrap();
        let allow = s.entries(Some(ListKind::Allow), 0).unwrap();
        assert_eq!(
            (allow.len(), allow[0].origin, allow[0].expires_ms),
            (1, Origin::Operator, None)
        );
    }

    #[test]
    fn a_report_names_a_real_decision_of_the_same_caller_and_a_valid_number() {
        let (_d, mut s) = store();
        let bad = s.report(&NewReport {
            decision_id: Some("nope"),
            ..report("+15550001111", Feedback::Spam)
        });
        assert!(matches!(
            bad,
            Err(ListsError::Invalid {
                field: "decision_id",
                ..
            })
        ));
        let bad = s.report(&report("5550001111", Feedback::Spam));
        assert!(matches!(
            bad,
            Err(ListsError::Invalid {
                field: "number",
                ..
            })
        ));
        let bad = s.report(&report("+1555*", Feedback::Spam));
        assert!(matches!(
            bad,
            Err(ListsError::Invalid {
                field: "number",
                ..
            })
        ));
    }

    #[test]
    fn report_exports_neutralise_formulas() {
        let r = Report {
            id: 1,
            time: "t".into(),
            time_ms: 0,
            number: "+15550001111".into(),
            verdict: Feedback::Spam,
            decision_id: None,
            note: "=HYPERLINK(\"x\")".into(),
            reported_by: "@me".into(),
        };
        let mut out = Vec::new();
        write_reports(&[r], Format::Csv, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("+15550001111,spam,,\"'=HYPERLINK"), "{text}");
        assert!(text.contains("'@me"), "{text}");
    }
}
