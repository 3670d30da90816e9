//! Own-number results in the node's SQLite file (`history.path`), one row
//! per answer, never overwritten: `own status` shows the latest and the one
//! before, `own history` all of them.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, params};

use super::{Origin, OwnResult, Provider};

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    #[error(
        "cannot open the own-number results in {path} (history.path; check the directory exists and is writable): {source}"
    )]
    Open {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error(
        "own-number results in history.path: {0} (another process may hold the file locked; check its disk and permissions)"
    )]
    Sql(#[from] rusqlite::Error),
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS own_results (
    id INTEGER PRIMARY KEY,
    number TEXT NOT NULL,
    provider TEXT NOT NULL,
    time_ms INTEGER NOT NULL,
    status TEXT NOT NULL,
    value REAL,
    report_card TEXT,
    detail TEXT,
    origin TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS own_results_by_number ON own_results (number, provider, time_ms);
";

const COLUMNS: &str = "number, provider, time_ms, status, value, report_card, detail, origin";

/// A connection to the results.
pub struct OwnStore {
    conn: Connection,
}

impl std::fmt::Debug for OwnStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OwnStore").finish_non_exhaustive()
    }
}

fn from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<OwnResult> {
    let provider: String = r.get(1)?;
    let card: Option<String> = r.get(5)?;
    let origin: String = r.get(7)?;
    Ok(OwnResult {
        number: r.get(0)?,
        provider: Provider::parse(&provider).unwrap_or(Provider::HiyaStatus),
        time_ms: r.get(2)?,
        status: r.get(3)?,
        value: r.get(4)?,
        report_card: card.and_then(|c| serde_json::from_str(&c).ok()),
        detail: r.get(6)?,
        origin: Origin::parse(&origin),
    })
}

impl OwnStore {
    /// Opens (creating) the results table in `path`, the file `serve`, the
    /// API and the command line share.
    pub fn open(path: &Path) -> Result<OwnStore, StoreError> {
        let open_err = |source| StoreError::Open {
            path: path.to_path_buf(),
            source,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            // A missing directory is reported by the open below.
            let _ = std::fs::create_dir_all(dir);
        }
        let conn = Connection::open(path).map_err(open_err)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(open_err)?;
        conn.busy_timeout(Duration::from_secs(5))
            .map_err(open_err)?;
        conn.execute_batch(SCHEMA).map_err(open_err)?;
        Ok(OwnStore { conn })
    }

    pub fn record(&self, r: &OwnResult) -> Result<(), StoreError> {
        self.conn.execute(
            &format!("INSERT INTO own_results ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)"),
            params![
                r.number,
                r.provider.as_str(),
                r.time_ms,
                r.status,
                r.value,
                r.report_card.as_ref().map(|c| c.to_string()),
                r.detail,
                r.origin.as_str(),
            ],
        )?;
        Ok(())
    }

    /// The latest two results of every (number, provider): the current
    /// one first, then the one before it.
    pub fn latest_two(&self) -> Result<Vec<OwnResult>, StoreError> {
        let mut stmt = self.conn.prepare(&format!(
            "SELECT {COLUMNS} FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY number, provider \
             ORDER BY time_ms DESC, id DESC) AS n FROM own_results) WHERE n <= 2 \
             ORDER BY number, provider, n"
        ))?;
        let rows = stmt.query_map([], from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Every result for `number`, newest first, at most `limit`.
    pub fn results(&self, number: &str, limit: usize) -> Result<Vec<OwnResult>, StoreError> {
        let mut stmt = self.conn.prepare(&format!(
            "SELECT {COLUMNS} FROM own_results WHERE number = ?1 ORDER BY time_ms DESC, id DESC LIMIT ?2"
        ))?;
        let rows = stmt.query_map(params![number, limit as i64], from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// When each number was last answered by `provider`.
    pub fn last_checked(&self, provider: Provider) -> Result<HashMap<String, i64>, StoreError> {
        let mut stmt = self.conn.prepare(
            "SELECT number, MAX(time_ms) FROM own_results WHERE provider = ?1 GROUP BY number",
        )?;
        let rows = stmt.query_map([provider.as_str()], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(number: &str, time_ms: i64, status: &str) -> OwnResult {
        OwnResult {
            number: number.into(),
            provider: Provider::HiyaStatus,
            time_ms,
            status: status.into(),
            value: Some(0.0),
            report_card: Some(serde_json::json!({"maturity": "good"})),
            detail: None,
            origin: Origin::Schedule,
        }
    }

    #[test]
    fn every_result_is_kept_and_the_latest_two_come_newest_first() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("h.db");
        let s = OwnStore::open(&path).unwrap();
        for (t, st) in [(1, "unflagged"), (2, "mixed_low"), (3, "flagged")] {
            s.record(&result("+15550000001", t, st)).unwrap();
        }
        s.record(&result("+15550000002", 5, "unflagged")).unwrap();
        drop(s);
        let s = OwnStore::open(&path).unwrap();
        let latest = s.latest_two().unwrap();
        let got: Vec<_> = latest
            .iter()
            .map(|r| (r.number.as_str(), r.status.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                ("+15550000001", "flagged"),
                ("+15550000001", "mixed_low"),
                ("+15550000002", "unflagged")
            ]
        );
        assert_eq!(latest[0].report_card.as_ref().unwrap()["maturity"], "good");
        assert_eq!(s.results("+15550000001", 10).unwrap().len(), 3);
        let last = s.last_checked(Provider::HiyaStatus).unwrap();
        assert_eq!(last["+15550000001"], 3);
        assert!(s.last_checked(Provider::DidChecks).unwrap().is_empty());
    }
}
