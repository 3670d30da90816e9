//! The runtime lists and reports in a cluster's PostgreSQL database: the
//! same tables and the same change counter as in SQLite, so a change made on
//! one node is seen by every node's poll ([`super::Lists::refresh`]).

use tokio_postgres::Row;

use super::{
    Entry, Feedback, ListKind, ListsError, NewReport, Origin, Report, ReportFilter, rfc3339,
};
use crate::history::pg::PgRead;

const ENTRY_COLUMNS: &str = "list, pattern, comment, added_by, added_ms, expires_ms, origin";
const REPORT_COLUMNS: &str = "id, time_ms, number, verdict, decision_id, note, reported_by";

fn entry(r: &Row) -> Entry {
    let list: String = r.get(0);
    let added_ms: i64 = r.get(4);
    let expires_ms: Option<i64> = r.get(5);
    let origin: String = r.get(6);
    Entry {
        list: ListKind::parse(&list).unwrap_or(ListKind::Deny),
        pattern: r.get(1),
        comment: r.get(2),
        added_by: r.get(3),
        added_at: rfc3339(added_ms),
        expires_at: expires_ms.map(rfc3339),
        expires_ms,
        origin: Origin::parse(&origin),
        read_only: false,
    }
}

fn report_row(r: &Row) -> Report {
    let time_ms: i64 = r.get(1);
    let verdict: String = r.get(3);
    Report {
        id: r.get(0),
        time: rfc3339(time_ms),
        time_ms,
        number: r.get(2),
        verdict: Feedback::parse(&verdict).unwrap_or(Feedback::Spam),
        decision_id: r.get(4),
        note: r.get(5),
        reported_by: r.get(6),
    }
}

const BUMP: &str = "UPDATE lists_version SET version = version + 1 WHERE id = 1";

pub(super) fn version(pg: &mut PgRead) -> Result<i64, ListsError> {
    Ok(pg.with(async |c| {
        let r = c
            .query_one("SELECT version FROM lists_version WHERE id = 1", &[])
            .await?;
        Ok(r.get(0))
    })?)
}

pub(super) fn entries(
    pg: &mut PgRead,
    list: Option<ListKind>,
    now_ms: i64,
) -> Result<Vec<Entry>, ListsError> {
    let list = list.map(ListKind::as_str);
    let sql = format!(
        "SELECT {ENTRY_COLUMNS} FROM list_entries
         WHERE ($1::text IS NULL OR list = $1) AND (expires_ms IS NULL OR expires_ms > $2)
         ORDER BY added_ms DESC, pattern"
    );
    Ok(pg.with(async |c| {
        let rows = c.query(&sql, &[&list, &now_ms]).await?;
        Ok(rows.iter().map(entry).collect())
    })?)
}

/// Inserts or replaces an operator's entry (values already checked).
pub(super) fn add(
    pg: &mut PgRead,
    list: ListKind,
    pattern: &str,
    comment: &str,
    added_by: &str,
    now: i64,
    expires_ms: Option<i64>,
) -> Result<(), ListsError> {
    let list = list.as_str();
    Ok(pg.with(async |c| {
        let tx = c.transaction().await?;
        tx.execute(
            "INSERT INTO list_entries (list, pattern, comment, added_by, added_ms, expires_ms, origin)
             VALUES ($1, $2, $3, $4, $5, $6, 'operator')
             ON CONFLICT (list, pattern) DO UPDATE SET comment = excluded.comment,
               added_by = excluded.added_by, added_ms = excluded.added_ms,
               expires_ms = excluded.expires_ms, origin = excluded.origin",
            &[&list, &pattern, &comment, &added_by, &now, &expires_ms],
        )
        .await?;
        tx.execute(BUMP, &[]).await?;
        tx.commit().await
    })?)
}

/// Removes an entry; whether there was one.
pub(super) fn remove(pg: &mut PgRead, list: ListKind, pattern: &str) -> Result<bool, ListsError> {
    let list = list.as_str();
    Ok(pg.with(async |c| {
        let tx = c.transaction().await?;
        let n = tx
            .execute(
                "DELETE FROM list_entries WHERE list = $1 AND pattern = $2",
                &[&list, &pattern],
            )
            .await?;
        if n > 0 {
            tx.execute(BUMP, &[]).await?;
        }
        tx.commit().await?;
        Ok(n > 0)
    })?)
}

pub(super) fn prune_expired(pg: &mut PgRead, now_ms: i64) -> Result<usize, ListsError> {
    Ok(pg.with(async |c| {
        let tx = c.transaction().await?;
        let n = tx
            .execute(
                "DELETE FROM list_entries WHERE expires_ms IS NOT NULL AND expires_ms <= $1",
                &[&now_ms],
            )
            .await?;
        if n > 0 {
            tx.execute(BUMP, &[]).await?;
        }
        tx.commit().await?;
        Ok(n as usize)
    })?)
}

/// Records a checked report and its effect on the allow list; its id.
pub(super) fn report(
    pg: &mut PgRead,
    r: &NewReport<'_>,
    number: &str,
    note: &str,
    now: i64,
) -> Result<i64, ListsError> {
    let verdict = r.verdict.as_str();
    let expires = now + i64::from(r.not_spam_days) * 86_400_000;
    Ok(pg.with(async |c| {
        let tx = c.transaction().await?;
        let row = tx
            .query_one(
                "INSERT INTO reports (time_ms, number, verdict, decision_id, note, reported_by)
                 VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
                &[&now, &number, &verdict, &r.decision_id, &note, &r.reported_by],
            )
            .await?;
        match r.verdict {
            Feedback::NotSpam => {
                tx.execute(
                    "INSERT INTO list_entries (list, pattern, comment, added_by, added_ms, expires_ms, origin)
                     VALUES ('allow', $1, 'reported not spam', $2, $3, $4, 'not_spam')
                     ON CONFLICT (list, pattern) DO UPDATE SET added_by = excluded.added_by,
                       added_ms = excluded.added_ms, expires_ms = excluded.expires_ms
                     WHERE list_entries.origin = 'not_spam'",
                    &[&number, &r.reported_by, &now, &expires],
                )
                .await?;
            }
            Feedback::Spam => {
                tx.execute(
                    "DELETE FROM list_entries WHERE list = 'allow' AND pattern = $1 AND origin = 'not_spam'",
                    &[&number],
                )
                .await?;
            }
        }
        tx.execute(BUMP, &[]).await?;
        tx.commit().await?;
        Ok(row.get(0))
    })?)
}

/// The caller of a decision: `None` when there is no such decision,
/// `Some(None)` for a call without an E.164 caller.
pub(super) fn decision_caller(
    pg: &mut PgRead,
    id: &str,
) -> Result<Option<Option<String>>, ListsError> {
    Ok(pg.with(async |c| {
        let r = c
            .query_opt(
                "SELECT caller_e164 FROM decisions WHERE decision_id = $1 LIMIT 1",
                &[&id],
            )
            .await?;
        Ok(r.map(|r| r.get(0)))
    })?)
}

pub(super) fn reports(pg: &mut PgRead, f: &ReportFilter) -> Result<Vec<Report>, ListsError> {
    let sql = format!(
        "SELECT {REPORT_COLUMNS} FROM reports
         WHERE ($1::int8 IS NULL OR time_ms >= $1) AND ($2::int8 IS NULL OR time_ms < $2)
           AND ($3::text IS NULL OR number = $3) AND ($4::text IS NULL OR decision_id = $4)
         ORDER BY id"
    );
    Ok(pg.with(async |c| {
        let rows = c
            .query(&sql, &[&f.from_ms, &f.to_ms, &f.number, &f.decision_id])
            .await?;
        Ok(rows.iter().map(report_row).collect())
    })?)
}

pub(super) fn spam_reports(pg: &mut PgRead) -> Result<Vec<Report>, ListsError> {
    let sql = format!(
        "SELECT {REPORT_COLUMNS} FROM reports r
         WHERE id = (SELECT MAX(id) FROM reports WHERE number = r.number)
           AND verdict = 'spam'"
    );
    Ok(pg.with(async |c| {
        let rows = c.query(&sql, &[]).await?;
        Ok(rows.iter().map(report_row).collect())
    })?)
}
