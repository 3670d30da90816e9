//! Reading the history: filters, pages with totals, and a row-at-a-time scan
//! for exports of any size (nothing is collected in memory).

use rusqlite::types::Value as SqlValue;
use rusqlite::{Connection, Row as SqlRow};
use serde::Serialize;

use super::{HistoryError, Reader};

/// Which rows: all conditions must hold.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Filter {
    /// Inclusive, ms since the epoch.
    pub from_ms: Option<i64>,
    /// Exclusive, ms since the epoch.
    pub to_ms: Option<i64>,
    /// Caller E.164.
    pub number: Option<String>,
    pub action: Option<String>,
    /// The rule that fired (`denylist`, `threshold`, …).
    pub rule: Option<String>,
}

/// The actions a filter may name.
pub const ACTIONS: &[&str] = &["pass", "tag", "divert", "reject"];

impl Filter {
    /// Checks the action name; times and numbers are parsed by the caller.
    pub fn validate(&self) -> Result<(), HistoryError> {
        if let Some(a) = &self.action
            && !ACTIONS.contains(&a.as_str())
        {
            return Err(HistoryError::Filter {
                key: "action",
                message: format!("{a:?} is not an action; use one of {}", ACTIONS.join(", ")),
            });
        }
        if let Some(r) = &self.rule
            && !crate::policy::Rule::ALL.iter().any(|k| k.as_str() == r)
        {
            let names: Vec<_> = crate::policy::Rule::ALL
                .iter()
                .map(|k| k.as_str())
                .collect();
            return Err(HistoryError::Filter {
                key: "rule",
                message: format!("{r:?} is not a rule; use one of {}", names.join(", ")),
            });
        }
        Ok(())
    }

    fn where_clause(&self) -> (String, Vec<SqlValue>) {
        let mut conds = Vec::new();
        let mut params = Vec::new();
        if let Some(n) = &self.number {
            conds.push("caller_e164 = ?");
            params.push(SqlValue::Text(n.clone()));
        }
        if let Some(a) = &self.action {
            conds.push("action = ?");
            params.push(SqlValue::Text(a.clone()));
        }
        if let Some(r) = &self.rule {
            conds.push("rule = ?");
            params.push(SqlValue::Text(r.clone()));
        }
        if let Some(f) = self.from_ms {
            conds.push("time_ms >= ?");
            params.push(SqlValue::Integer(f));
        }
        if let Some(t) = self.to_ms {
            conds.push("time_ms < ?");
            params.push(SqlValue::Integer(t));
        }
        let clause = if conds.is_empty() {
            String::new()
        } else {
            format!(" WHERE {}", conds.join(" AND "))
        };
        (clause, params)
    }
}

/// Parses a time bound: RFC 3339 (`2026-11-21T10:00:00Z`), a UTC date
/// (`2026-11-21`, midnight), or milliseconds since the epoch.
pub fn parse_time(key: &'static str, text: &str) -> Result<i64, HistoryError> {
    let t = text.trim();
    if let Ok(ms) = t.parse::<i64>() {
        return Ok(ms);
    }
    if let Ok(ts) = t.parse::<jiff::Timestamp>() {
        return Ok(ts.as_millisecond());
    }
    if let Ok(date) = t.parse::<jiff::civil::Date>()
        && let Ok(z) = date.to_zoned(jiff::tz::TimeZone::UTC)
    {
        return Ok(z.timestamp().as_millisecond());
    }
    Err(HistoryError::Filter {
        key,
        message: format!(
            "{text:?} is not a time; use 2026-11-21T10:00:00Z, 2026-11-21 or milliseconds since the epoch"
        ),
    })
}

/// One stored decision.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Row {
    pub id: i64,
    pub decision_id: String,
    /// RFC 3339, UTC.
    pub time: String,
    pub time_ms: i64,
    pub call_id: String,
    pub source: String,
    pub caller: String,
    pub caller_e164: Option<String>,
    pub called: String,
    pub trust: String,
    pub action: String,
    pub rule: String,
    pub response_code: Option<u16>,
    pub score: u8,
    pub category: Option<String>,
    pub evidence: serde_json::Value,
    pub decision_us: u64,
    pub dry_run: bool,
    /// A relayed call's final response (the PBX's, or the proxy's own 408
    /// or 487), once the transaction ended; `None` until then, and for a
    /// call sipsentry answered itself (`response_code`).
    pub final_code: Option<u16>,
    /// Milliseconds from relaying the INVITE to `final_code`.
    pub final_ms: Option<u32>,
    /// The caller's display name as received: the caller's own text.
    pub display: Option<String>,
    pub verstat: Option<String>,
    pub attest: Option<String>,
    /// The node that screened the call (a cluster's PostgreSQL history).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node_id: Option<String>,
}

/// The CSV columns, in order (evidence as a JSON string).
pub const CSV_HEADER: &[&str] = &[
    "id",
    "decision_id",
    "time",
    "call_id",
    "source",
    "caller",
    "caller_e164",
    "called",
    "trust",
    "action",
    "rule",
    "response_code",
    "score",
    "category",
    "decision_us",
    "dry_run",
    "evidence",
    "final_code",
    "final_ms",
    "display",
    "verstat",
    "attest",
    "node_id",
];

impl Row {
    pub fn csv_record(&self) -> Vec<String> {
        let opt = |o: &Option<String>| o.clone().unwrap_or_default();
        vec![
            self.id.to_string(),
            self.decision_id.clone(),
            self.time.clone(),
            self.call_id.clone(),
            self.source.clone(),
            self.caller.clone(),
            opt(&self.caller_e164),
            self.called.clone(),
            self.trust.clone(),
            self.action.clone(),
            self.rule.clone(),
            self.response_code
                .map(|c| c.to_string())
                .unwrap_or_default(),
            self.score.to_string(),
            opt(&self.category),
            self.decision_us.to_string(),
            self.dry_run.to_string(),
            self.evidence.to_string(),
            self.final_code.map(|c| c.to_string()).unwrap_or_default(),
            self.final_ms.map(|c| c.to_string()).unwrap_or_default(),
            opt(&self.display),
            opt(&self.verstat),
            opt(&self.attest),
            opt(&self.node_id),
        ]
    }

    /// The row a record becomes once written with id `id` (what the live
    /// event stream sends).
    pub fn from_record(id: i64, r: &super::Record, f: Option<&super::Final>) -> Row {
        Row {
            id,
            decision_id: r.decision_id.clone(),
            time: jiff::Timestamp::from_millisecond(r.time_ms)
                .map(|t| t.to_string())
                .unwrap_or_default(),
            time_ms: r.time_ms,
            call_id: r.call_id.clone(),
            source: super::source_text(r.source),
            caller: r.caller.clone(),
            caller_e164: r.caller_e164.clone(),
            called: r.called.clone(),
            trust: r.trust.to_string(),
            action: r.action.to_string(),
            rule: r.rule.to_string(),
            response_code: r.response_code,
            score: r.score,
            category: r.category.clone(),
            evidence: serde_json::to_value(&r.evidence).unwrap_or(serde_json::Value::Null),
            decision_us: r.decision_us,
            dry_run: r.dry_run,
            final_code: f.map(|f| f.final_code),
            final_ms: f.map(|f| f.final_ms),
            display: r.display.clone(),
            verstat: r.verstat.clone(),
            attest: r.attest.clone(),
            node_id: None,
        }
    }

    fn from_sql(r: &SqlRow<'_>) -> rusqlite::Result<Row> {
        let time_ms: i64 = r.get(2)?;
        let evidence: String = r.get(14)?;
        Ok(Row {
            id: r.get(0)?,
            decision_id: r.get(1)?,
            time: jiff::Timestamp::from_millisecond(time_ms)
                .map(|t| t.to_string())
                .unwrap_or_default(),
            time_ms,
            call_id: r.get(3)?,
            source: r.get(4)?,
            caller: r.get(5)?,
            caller_e164: r.get(6)?,
            called: r.get(7)?,
            trust: r.get(8)?,
            action: r.get(9)?,
            rule: r.get(10)?,
            response_code: r.get(11)?,
            score: r.get(12)?,
            category: r.get(13)?,
            evidence: serde_json::from_str(&evidence).unwrap_or(serde_json::Value::Null),
            decision_us: r.get::<_, i64>(15)? as u64,
            dry_run: r.get(16)?,
            final_code: r.get(17)?,
            final_ms: r.get(18)?,
            display: r.get(19)?,
            verstat: r.get(20)?,
            attest: r.get(21)?,
            node_id: None,
        })
    }
}

const COLUMNS: &str = "id, decision_id, time_ms, call_id, source, caller, caller_e164, called, \
    trust, action, rule, response_code, score, category, evidence, decision_us, dry_run, \
    final_code, final_ms, display, verstat, attest";

/// How many rows match.
pub fn count(reader: &mut Reader, filter: &Filter) -> Result<u64, HistoryError> {
    match reader {
        Reader::Sqlite(conn) => count_sqlite(conn, filter),
        Reader::Postgres(pg) => pg.count(filter),
    }
}

/// Page `page` (from 1) of `limit` rows, newest first.
pub fn page(
    reader: &mut Reader,
    filter: &Filter,
    page: u64,
    limit: u64,
) -> Result<Vec<Row>, HistoryError> {
    match reader {
        Reader::Sqlite(conn) => page_sqlite(conn, filter, page, limit),
        Reader::Postgres(pg) => pg.page(filter, page, limit),
    }
}

/// Every matching row, oldest first, one at a time; `f` returns false to stop.
/// `limit` caps the rows visited.
pub fn scan(
    reader: &mut Reader,
    filter: &Filter,
    limit: Option<u64>,
    f: impl FnMut(Row) -> bool,
) -> Result<u64, HistoryError> {
    match reader {
        Reader::Sqlite(conn) => scan_sqlite(conn, filter, limit, f),
        Reader::Postgres(pg) => pg.scan(filter, limit, f),
    }
}

/// The row of a decision id.
pub fn by_decision_id(reader: &mut Reader, id: &str) -> Result<Option<Row>, HistoryError> {
    match reader {
        Reader::Sqlite(conn) => by_decision_id_sqlite(conn, id),
        Reader::Postgres(pg) => pg.by_decision_id(id),
    }
}

/// Calls per action in buckets of `bucket_ms` from `from_ms` on:
/// `(bucket index, action, calls)`, buckets with no call left out.
pub fn per_bucket(
    reader: &mut Reader,
    from_ms: i64,
    bucket_ms: i64,
) -> Result<Vec<(i64, String, u64)>, HistoryError> {
    match reader {
        Reader::Sqlite(conn) => per_bucket_sqlite(conn, from_ms, bucket_ms),
        Reader::Postgres(pg) => pg.per_bucket(from_ms, bucket_ms),
    }
}

/// The callers with the most calls given `action` since `from_ms`.
pub fn top_callers(
    reader: &mut Reader,
    action: &str,
    from_ms: i64,
    limit: u64,
) -> Result<Vec<(String, u64)>, HistoryError> {
    match reader {
        Reader::Sqlite(conn) => top_callers_sqlite(conn, action, from_ms, limit),
        Reader::Postgres(pg) => pg.top_callers(action, from_ms, limit),
    }
}

fn count_sqlite(conn: &Connection, filter: &Filter) -> Result<u64, HistoryError> {
    let (clause, params) = filter.where_clause();
    let sql = format!("SELECT COUNT(*) FROM decisions{clause}");
    let n: i64 = conn.query_row(&sql, rusqlite::params_from_iter(params), |r| r.get(0))?;
    Ok(n as u64)
}

fn page_sqlite(
    conn: &Connection,
    filter: &Filter,
    page: u64,
    limit: u64,
) -> Result<Vec<Row>, HistoryError> {
    let (clause, mut params) = filter.where_clause();
    let sql = format!(
        "SELECT {COLUMNS} FROM decisions{clause} ORDER BY time_ms DESC, id DESC LIMIT ? OFFSET ?"
    );
    params.push(SqlValue::Integer(limit as i64));
    params.push(SqlValue::Integer(
        (page.max(1) - 1).saturating_mul(limit) as i64
    ));
    let mut stmt = conn.prepare(&sql)?;
    let rows = stmt.query_map(rusqlite::params_from_iter(params), Row::from_sql)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

fn scan_sqlite(
    conn: &Connection,
    filter: &Filter,
    limit: Option<u64>,
    mut f: impl FnMut(Row) -> bool,
) -> Result<u64, HistoryError> {
    let (clause, mut params) = filter.where_clause();
    let sql = format!("SELECT {COLUMNS} FROM decisions{clause} ORDER BY time_ms, id LIMIT ?");
    params.push(SqlValue::Integer(limit.map_or(-1, |l| l as i64)));
    let mut stmt = conn.prepare(&sql)?;
    let mut rows = stmt.query(rusqlite::params_from_iter(params))?;
    let mut n = 0;
    while let Some(r) = rows.next()? {
        n += 1;
        if !f(Row::from_sql(r)?) {
            break;
        }
    }
    Ok(n)
}

fn by_decision_id_sqlite(conn: &Connection, id: &str) -> Result<Option<Row>, HistoryError> {
    use rusqlite::OptionalExtension;
    let sql = format!("SELECT {COLUMNS} FROM decisions WHERE decision_id = ?1");
    Ok(conn.query_row(&sql, [id], Row::from_sql).optional()?)
}

fn per_bucket_sqlite(
    conn: &Connection,
    from_ms: i64,
    bucket_ms: i64,
) -> Result<Vec<(i64, String, u64)>, HistoryError> {
    let mut stmt = conn.prepare_cached(
        "SELECT (time_ms - ?1) / ?2, action, COUNT(*) FROM decisions
         WHERE time_ms >= ?1 GROUP BY 1, 2",
    )?;
    let rows = stmt.query_map(rusqlite::params![from_ms, bucket_ms.max(1)], |r| {
        Ok((r.get(0)?, r.get(1)?, r.get::<_, i64>(2)? as u64))
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

fn top_callers_sqlite(
    conn: &Connection,
    action: &str,
    from_ms: i64,
    limit: u64,
) -> Result<Vec<(String, u64)>, HistoryError> {
    let mut stmt = conn.prepare_cached(
        "SELECT caller_e164, COUNT(*) FROM decisions
         WHERE action = ?1 AND time_ms >= ?2 AND caller_e164 IS NOT NULL
         GROUP BY caller_e164 ORDER BY 2 DESC, 1 LIMIT ?3",
    )?;
    let rows = stmt.query_map(rusqlite::params![action, from_ms, limit as i64], |r| {
        Ok((r.get(0)?, r.get::<_, i64>(1)? as u64))
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_parse_as_rfc3339_dates_or_milliseconds() {
        assert_eq!(
            parse_time("from", "1700000000000").unwrap(),
            1_700_000_000_000
        );
        assert_eq!(
            parse_time("from", "2026-11-21T00:00:00Z").unwrap(),
            1_795_219_200_000
        );
        assert_eq!(parse_time("from", "2026-11-21").unwrap(), 1_795_219_200_000);
        assert!(matches!(
            parse_time("to", "yesterday"),
            Err(HistoryError::Filter { key: "to", .. })
        ));
    }
}
