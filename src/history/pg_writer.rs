//! The history writer's PostgreSQL side: batches become one multi-row
//! `INSERT … SELECT FROM unnest(…)` (and one `UPDATE … FROM unnest(…)` for
//! final responses) in one transaction, on one connection the writer thread
//! drives on its own small runtime. When the database does not answer, the
//! batch goes to the [`Spool`] instead and the writer tries again every
//! [`RETRY`]; what was spooled is sent first, in order, before anything new.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::batch::Batch;
use super::pg::{PgTarget, migrate, pg_message};
use super::spool::Spool;
use super::stats::{HistoryStats, log_due};
use super::{Final, HistoryError, Record, now_ms};

/// How long after a failed attempt the writer tries PostgreSQL again.
pub const RETRY: Duration = Duration::from_secs(1);

/// Spooled lines sent per transaction.
const REPLAY_CHUNK: usize = 4_096;

/// Where and as whom a node writes its PostgreSQL history.
#[derive(Debug, Clone)]
pub struct PgOptions {
    pub target: PgTarget,
    pub node_id: String,
    pub spool_path: PathBuf,
    pub spool_max_bytes: u64,
}

/// One spooled message, in the order the writer received them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum SpoolLine {
    Row(Box<PgRow>),
    Final(Final),
}

/// A record as its row's columns, owned (what the spool keeps).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct PgRow {
    decision_id: String,
    time_ms: i64,
    call_id: String,
    source: String,
    caller: String,
    caller_e164: Option<String>,
    called: String,
    trust: String,
    action: String,
    rule: String,
    response_code: Option<i32>,
    score: i32,
    category: Option<String>,
    evidence: String,
    decision_us: i64,
    dry_run: bool,
    final_code: Option<i32>,
    final_ms: Option<i32>,
    display: Option<String>,
    verstat: Option<String>,
    attest: Option<String>,
}

/// PostgreSQL text cannot hold NUL: a caller's hostile bytes must not make
/// a batch unwritable.
fn text(s: &str) -> String {
    if s.contains('\0') {
        s.replace('\0', "\u{fffd}")
    } else {
        s.to_string()
    }
}

fn opt(s: &Option<String>) -> Option<String> {
    s.as_deref().map(text)
}

impl PgRow {
    fn new(r: &Record, f: Option<&Final>) -> PgRow {
        PgRow {
            decision_id: text(&r.decision_id),
            time_ms: r.time_ms,
            call_id: text(&r.call_id),
            source: super::source_text(r.source),
            caller: text(&r.caller),
            caller_e164: opt(&r.caller_e164),
            called: text(&r.called),
            trust: r.trust.to_string(),
            action: r.action.to_string(),
            rule: r.rule.to_string(),
            response_code: r.response_code.map(i32::from),
            score: i32::from(r.score),
            category: opt(&r.category),
            evidence: text(&serde_json::to_string(&r.evidence).unwrap_or_else(|_| "[]".into())),
            decision_us: i64::try_from(r.decision_us).unwrap_or(i64::MAX),
            dry_run: r.dry_run,
            final_code: f.map(|f| i32::from(f.final_code)),
            final_ms: f.map(|f| i32::try_from(f.final_ms).unwrap_or(i32::MAX)),
            display: opt(&r.display),
            verstat: opt(&r.verstat),
            attest: opt(&r.attest),
        }
    }
}

const INSERT: &str = "INSERT INTO decisions (node_id, decision_id, time_ms, call_id, source,
        caller, caller_e164, called, trust, action, rule, response_code, score, category,
        evidence, decision_us, dry_run, final_code, final_ms, display, verstat, attest)
    SELECT $1, * FROM unnest($2::text[], $3::int8[], $4::text[], $5::text[], $6::text[],
        $7::text[], $8::text[], $9::text[], $10::text[], $11::text[], $12::int4[], $13::int4[],
        $14::text[], $15::text[], $16::int8[], $17::bool[], $18::int4[], $19::int4[],
        $20::text[], $21::text[], $22::text[])
    ON CONFLICT (node_id, decision_id) DO NOTHING";

/// What live subscribers need of the rows just written.
const RETURNING: &str = " RETURNING id, decision_id";

const UPDATE_FINALS: &str = "UPDATE decisions d SET final_code = u.code, final_ms = u.ms
    FROM unnest($2::text[], $3::int4[], $4::int4[]) AS u(decision_id, code, ms)
    WHERE d.node_id = $1 AND d.decision_id = u.decision_id";

/// Why a write did not happen.
enum Failure {
    /// No connection, or it broke: the records wait in the spool.
    Unreachable(String),
    /// The server refused the data itself: retrying cannot help.
    Refused(String),
}

/// Whether the server refused the data itself (a data exception or a
/// constraint: sending it again cannot help). Everything else (a shutdown,
/// a lost connection, a full disk, a conflict) is worth retrying.
fn refused(e: &tokio_postgres::Error) -> bool {
    e.code()
        .is_some_and(|c| matches!(c.code().get(..2), Some("22" | "23")))
}

/// The writer's PostgreSQL connection and spool.
pub(super) struct PgSink {
    rt: tokio::runtime::Runtime,
    options: PgOptions,
    client: Option<tokio_postgres::Client>,
    spool: Spool,
    next_attempt: Instant,
    /// Whether the last attempt reached the database (for the logs).
    up: bool,
    migrated: bool,
}

impl PgSink {
    /// Opens the spool and tries the database once; a database that is
    /// down at start is not an error (the records wait in the spool), bad
    /// settings are.
    pub(super) fn open(options: PgOptions) -> Result<PgSink, HistoryError> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|source| HistoryError::Thread { source })?;
        let spool =
            Spool::open(&options.spool_path, options.spool_max_bytes).map_err(|source| {
                HistoryError::Dir {
                    path: options.spool_path.clone(),
                    source,
                }
            })?;
        let mut sink = PgSink {
            rt,
            options,
            client: None,
            spool,
            next_attempt: Instant::now(),
            up: true,
            migrated: false,
        };
        match sink.connect() {
            Ok(()) => {}
            Err(e @ HistoryError::PgTooNew { .. }) => return Err(e),
            Err(e) => {
                tracing::warn!(error = %e, spool = %sink.spool.path().display(), "PostgreSQL history not reachable at start: records are spooled until it is");
                sink.up = false;
            }
        }
        if !sink.spool.is_empty() {
            tracing::info!(
                bytes = sink.spool.bytes(),
                "history spool from an earlier run: sending it first"
            );
        }
        Ok(sink)
    }

    fn connect(&mut self) -> Result<(), HistoryError> {
        let target = self.options.target.clone();
        let migrated = self.migrated;
        let client = self.rt.block_on(async {
            let mut client = target.connect().await?;
            if !migrated {
                migrate(&mut client, &target).await?;
            }
            Ok::<_, HistoryError>(client)
        })?;
        self.migrated = true;
        self.client = Some(client);
        Ok(())
    }

    /// A live connection, reconnecting when due.
    fn ready(&mut self) -> bool {
        if self.client.as_ref().is_some_and(|c| !c.is_closed()) {
            return true;
        }
        self.client = None;
        if Instant::now() < self.next_attempt {
            return false;
        }
        match self.connect() {
            Ok(()) => {
                if !self.up {
                    tracing::info!("PostgreSQL history reachable again");
                    self.up = true;
                }
                true
            }
            Err(e) => {
                self.next_attempt = Instant::now() + RETRY;
                if self.up {
                    tracing::warn!(error = %e, "PostgreSQL history unreachable: records are spooled until it answers");
                    self.up = false;
                }
                false
            }
        }
    }

    /// Writes the batch (after the spool, in order): `Some` with the ids of
    /// the rows written now (empty unless `want_ids`), `None` when the
    /// records wait in the spool. Only what the database refuses is an error.
    pub(super) fn write(
        &mut self,
        batch: &Batch,
        want_ids: bool,
        stats: &HistoryStats,
    ) -> Result<Option<Vec<(i64, String)>>, String> {
        if self.spool.is_empty() && self.ready() {
            let rows: Vec<PgRow> = batch
                .records
                .iter()
                .map(|(r, f)| PgRow::new(r, f.as_ref()))
                .collect();
            match self.send(&rows, &batch.finals, want_ids) {
                Ok(ids) => return Ok(Some(ids)),
                Err(Failure::Refused(e)) => return Err(e),
                Err(Failure::Unreachable(e)) => self.lost(&e),
            }
        }
        self.spool_batch(batch, stats);
        self.tick(stats);
        Ok(None)
    }

    fn lost(&mut self, error: &str) {
        self.client = None;
        self.next_attempt = Instant::now() + RETRY;
        if self.up {
            tracing::warn!(
                error,
                "PostgreSQL history write failed: records are spooled until it answers"
            );
            self.up = false;
        }
    }

    /// Appends the batch to the spool; what it cannot take is dropped,
    /// counted and logged (not a write error: the database did not refuse it).
    fn spool_batch(&mut self, batch: &Batch, stats: &HistoryStats) {
        let lines = batch
            .records
            .iter()
            .map(|(r, f)| SpoolLine::Row(Box::new(PgRow::new(r, f.as_ref()))))
            .chain(batch.finals.iter().cloned().map(SpoolLine::Final));
        let total = batch.records.len() + batch.finals.len();
        let (taken, err) = self.spool.append(lines);
        stats.spooled.fetch_add(taken as u64, Ordering::Relaxed);
        stats
            .spool_bytes
            .store(self.spool.bytes() as i64, Ordering::Relaxed);
        if let Some(e) = err {
            let lost = total - taken;
            stats.dropped.fetch_add(lost as u64, Ordering::Relaxed);
            if log_due(&stats.last_spool_log_ms, now_ms()) {
                tracing::error!(error = %e, lost, "history records dropped: PostgreSQL is down and the spool cannot take them (logged at most every 10 s)");
            }
        }
    }

    /// Sends what the spool holds, a chunk at a time, while the database
    /// answers.
    pub(super) fn tick(&mut self, stats: &HistoryStats) {
        while !self.spool.is_empty() && self.ready() {
            let (lines, end, bad) = match self.spool.next_chunk::<SpoolLine>(REPLAY_CHUNK) {
                Ok(c) => c,
                Err(e) => {
                    tracing::error!(error = %e, "history spool unreadable; kept for later");
                    return;
                }
            };
            if bad > 0 {
                stats.dropped.fetch_add(bad as u64, Ordering::Relaxed);
                tracing::error!(lines = bad, "damaged history spool lines skipped");
            }
            let mut rows = Vec::new();
            let mut finals = Vec::new();
            for line in lines {
                match line {
                    SpoolLine::Row(r) => rows.push(*r),
                    SpoolLine::Final(f) => finals.push(f),
                }
            }
            let n = rows.len();
            match self.send(&rows, &finals, false) {
                Ok(_) => {
                    stats.written.fetch_add(n as u64, Ordering::Relaxed);
                    stats
                        .unspooled
                        .fetch_add((n + finals.len()) as u64, Ordering::Relaxed);
                    self.spool.sent_to(end);
                }
                Err(Failure::Refused(e)) => {
                    stats.dropped.fetch_add(n as u64, Ordering::Relaxed);
                    tracing::error!(error = %e, records = n, "PostgreSQL refused spooled records; dropped");
                    self.spool.sent_to(end);
                }
                Err(Failure::Unreachable(e)) => {
                    self.lost(&e);
                    break;
                }
            }
            stats
                .spool_bytes
                .store(self.spool.bytes() as i64, Ordering::Relaxed);
            if self.spool.is_empty() {
                tracing::info!("history spool sent to PostgreSQL");
            }
        }
    }

    /// Makes the spool durable (shutdown).
    pub(super) fn close(&mut self) {
        self.spool.sync();
        if !self.spool.is_empty() {
            tracing::warn!(bytes = self.spool.bytes(), spool = %self.spool.path().display(), "stopping with history records spooled; the next start sends them");
        }
    }

    /// Inserts and updates in one transaction.
    fn send(
        &mut self,
        rows: &[PgRow],
        finals: &[Final],
        want_ids: bool,
    ) -> Result<Vec<(i64, String)>, Failure> {
        let Some(client) = self.client.as_mut() else {
            return Err(Failure::Unreachable("not connected".into()));
        };
        let node = self.options.node_id.as_str();
        let result = self.rt.block_on(async {
            let tx = client.transaction().await?;
            let mut ids = Vec::new();
            if !rows.is_empty() {
                // Columns borrow from the rows: one copy of each text, made
                // by `PgRow::new`.
                let col = |f: fn(&PgRow) -> &str| rows.iter().map(f).collect::<Vec<_>>();
                let ocol = |f: fn(&PgRow) -> Option<&str>| rows.iter().map(f).collect::<Vec<_>>();
                let decision_id = col(|r| &r.decision_id);
                let time_ms: Vec<i64> = rows.iter().map(|r| r.time_ms).collect();
                let call_id = col(|r| &r.call_id);
                let source = col(|r| &r.source);
                let caller = col(|r| &r.caller);
                let caller_e164 = ocol(|r| r.caller_e164.as_deref());
                let called = col(|r| &r.called);
                let trust = col(|r| &r.trust);
                let action = col(|r| &r.action);
                let rule = col(|r| &r.rule);
                let response_code: Vec<Option<i32>> =
                    rows.iter().map(|r| r.response_code).collect();
                let score: Vec<i32> = rows.iter().map(|r| r.score).collect();
                let category = ocol(|r| r.category.as_deref());
                let evidence = col(|r| &r.evidence);
                let decision_us: Vec<i64> = rows.iter().map(|r| r.decision_us).collect();
                let dry_run: Vec<bool> = rows.iter().map(|r| r.dry_run).collect();
                let final_code: Vec<Option<i32>> = rows.iter().map(|r| r.final_code).collect();
                let final_ms: Vec<Option<i32>> = rows.iter().map(|r| r.final_ms).collect();
                let display = ocol(|r| r.display.as_deref());
                let verstat = ocol(|r| r.verstat.as_deref());
                let attest = ocol(|r| r.attest.as_deref());
                let insert = if want_ids {
                    std::borrow::Cow::Owned(format!("{INSERT}{RETURNING}"))
                } else {
                    std::borrow::Cow::Borrowed(INSERT)
                };
                let written = tx
                    .query(
                        &*insert,
                        &[
                            &node,
                            &decision_id,
                            &time_ms,
                            &call_id,
                            &source,
                            &caller,
                            &caller_e164,
                            &called,
                            &trust,
                            &action,
                            &rule,
                            &response_code,
                            &score,
                            &category,
                            &evidence,
                            &decision_us,
                            &dry_run,
                            &final_code,
                            &final_ms,
                            &display,
                            &verstat,
                            &attest,
                        ],
                    )
                    .await?;
                ids = written.iter().map(|r| (r.get(0), r.get(1))).collect();
            }
            if !finals.is_empty() {
                let ids: Vec<String> = finals.iter().map(|f| text(&f.decision_id)).collect();
                let codes: Vec<i32> = finals.iter().map(|f| i32::from(f.final_code)).collect();
                let ms: Vec<i32> = finals
                    .iter()
                    .map(|f| i32::try_from(f.final_ms).unwrap_or(i32::MAX))
                    .collect();
                tx.execute(UPDATE_FINALS, &[&node, &ids, &codes, &ms])
                    .await?;
            }
            tx.commit().await?;
            Ok::<_, tokio_postgres::Error>(ids)
        });
        result.map_err(|e| {
            let message = pg_message(&e);
            if refused(&e) && !client.is_closed() {
                Failure::Refused(message)
            } else {
                Failure::Unreachable(message)
            }
        })
    }

    /// Deletes rows of this node older than the retention.
    pub(super) fn prune(&mut self, retention_days: u32, stats: &HistoryStats) {
        if retention_days == 0 || !self.ready() {
            return;
        }
        let cutoff = now_ms() - i64::from(retention_days) * 86_400_000;
        let Some(client) = self.client.as_ref() else {
            return;
        };
        let node = self.options.node_id.as_str();
        match self.rt.block_on(client.execute(
            "DELETE FROM decisions WHERE node_id = $1 AND time_ms < $2",
            &[&node, &cutoff],
        )) {
            Ok(n) => {
                stats.pruned.fetch_add(n, Ordering::Relaxed);
            }
            Err(e) => {
                tracing::warn!(error = %pg_message(&e), "history prune failed; retried later")
            }
        }
    }
}
