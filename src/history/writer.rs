//! The batched background writer and the sink the call path feeds it through.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{self, SyncSender, TrySendError};
use std::time::{Duration, Instant};

use rusqlite::{Connection, params};

use super::batch::Batch;
use super::pg_writer::{PgOptions, PgSink};
pub use super::stats::HistoryStats;
use super::stats::log_due;
use super::{Final, HistoryError, Record, now_ms, open};

/// Records waiting for the writer before new ones are dropped (and counted).
/// At the writer's measured rate this is over a second of calls at any
/// realistic call rate, so a drop means the disk stalled.
pub const QUEUE_CAPACITY: usize = 65_536;

/// Records inserted per transaction at most.
pub const BATCH_MAX: usize = 4_096;

/// Default `history.batch_ms`: the writer wakes this often and takes
/// everything queued. While calls
/// come it never blocks in `recv`, so queueing a record never has to wake a
/// thread: the call path pays no system call, and at any call rate the
/// inserts go in a few large transactions a second instead of one per call.
/// (After a second of empty rounds it blocks, and the first record after
/// the quiet spell wakes it.)
pub const BATCH_INTERVAL: Duration = Duration::from_millis(20);

/// How often old rows are pruned (and at start).
pub const PRUNE_EVERY: Duration = Duration::from_secs(600);

/// Rows deleted per prune statement, so a large prune never holds the writer
/// (and the database) for long.
pub const PRUNE_CHUNK: usize = 10_000;

enum Msg {
    Record(Box<Record>),
    /// The final response of a relayed call, for its row.
    Final(Final),
    /// Write everything queued before this, then acknowledge and stop.
    Close(mpsc::Sender<()>),
}

/// What the writer tells live subscribers (`GET /api/v1/events`), after
/// the rows are written: each as JSON, serialized once for every client.
#[derive(Debug, Clone)]
pub enum Event {
    /// A new row, as the history API shows it.
    Decision(Arc<str>),
    /// A row's final response arrived ([`Final`]).
    Final(Arc<str>),
}

/// Events buffered per subscriber: one further behind than this is
/// dropped (it lags), never waited for.
pub const EVENT_BUFFER: usize = 1024;

/// The call path's handle: a non-blocking, bounded send.
#[derive(Clone)]
pub struct HistorySink {
    tx: SyncSender<Msg>,
    pub stats: Arc<HistoryStats>,
    events: tokio::sync::broadcast::Sender<Event>,
}

impl std::fmt::Debug for HistorySink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HistorySink").finish_non_exhaustive()
    }
}

impl HistorySink {
    /// Queues a record without waiting. A full queue drops it, counted and
    /// logged (at most once per 10 s).
    pub fn record(&self, record: Record) {
        self.send(Msg::Record(Box::new(record)));
    }

    /// Queues a relayed call's final response for its row, without waiting
    /// (a full queue drops it like a record).
    pub fn final_response(&self, decision_id: String, code: u16, after: Duration) {
        self.send(Msg::Final(Final {
            decision_id,
            final_code: code,
            final_ms: u32::try_from(after.as_millis()).unwrap_or(u32::MAX),
        }));
    }

    /// Every row (and final response) from now on, as JSON, once written.
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<Event> {
        self.events.subscribe()
    }

    fn send(&self, msg: Msg) {
        match self.tx.try_send(msg) {
            Ok(()) => {
                self.stats.depth.fetch_add(1, Ordering::Relaxed);
            }
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                let n = self.stats.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                if log_due(&self.stats.last_drop_log_ms, now_ms()) {
                    tracing::error!(
                        dropped_total = n,
                        "history queue full: decision records dropped (is the disk stalled?)"
                    );
                }
            }
        }
    }
}

/// The writer thread; [`HistoryWriter::close`] flushes and stops it.
pub struct HistoryWriter {
    sink: HistorySink,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl HistoryWriter {
    /// Opens the database (errors are reported here, at start) and starts
    /// the writer thread. `retention_days` = 0 keeps everything.
    pub fn start(path: &Path, retention_days: u32) -> Result<Self, HistoryError> {
        Self::with_capacity(path, retention_days, QUEUE_CAPACITY)
    }

    pub fn with_capacity(
        path: &Path,
        retention_days: u32,
        capacity: usize,
    ) -> Result<Self, HistoryError> {
        Self::with_options(path, retention_days, capacity, BATCH_INTERVAL)
    }

    /// A writer whose rounds are `batch_interval` apart
    /// (`history.batch_ms`): what an abrupt kill (`kill -9`, power loss)
    /// can lose is the records of the last round.
    pub fn with_options(
        path: &Path,
        retention_days: u32,
        capacity: usize,
        batch_interval: Duration,
    ) -> Result<Self, HistoryError> {
        Self::spawn(
            Target::Sqlite(open(path)?),
            retention_days,
            capacity,
            batch_interval,
        )
    }

    /// A writer to a cluster's PostgreSQL database, spooling to a local
    /// file while it is unreachable.
    pub fn postgres(
        options: PgOptions,
        retention_days: u32,
        capacity: usize,
        batch_interval: Duration,
    ) -> Result<Self, HistoryError> {
        let sink = PgSink::open(options)?;
        Self::spawn(
            Target::Postgres(Box::new(sink)),
            retention_days,
            capacity,
            batch_interval,
        )
    }

    fn spawn(
        conn: Target,
        retention_days: u32,
        capacity: usize,
        batch_interval: Duration,
    ) -> Result<Self, HistoryError> {
        let (tx, rx) = mpsc::sync_channel(capacity);
        let stats = Arc::new(HistoryStats::default());
        let (events, _) = tokio::sync::broadcast::channel(EVENT_BUFFER);
        let thread = {
            let stats = Arc::clone(&stats);
            let out = Output {
                stats: Arc::clone(&stats),
                events: events.clone(),
            };
            std::thread::Builder::new()
                .name("history".into())
                .spawn(move || run(conn, rx, &out, retention_days, batch_interval))
                .map_err(|source| HistoryError::Thread { source })?
        };
        Ok(HistoryWriter {
            sink: HistorySink { tx, stats, events },
            thread: Some(thread),
        })
    }

    pub fn sink(&self) -> HistorySink {
        self.sink.clone()
    }

    /// Writes every record queued so far, then stops the thread. Blocks:
    /// call it after the proxy has drained, from a blocking context.
    pub fn close(mut self) {
        let (ack_tx, ack_rx) = mpsc::channel();
        if self.sink.tx.send(Msg::Close(ack_tx)).is_ok() {
            let _ = ack_rx.recv();
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The writer's nice value: on a busy machine the SIP thread runs first and
/// the writer catches up in the gaps (its queue holds seconds of calls).
const WRITER_NICE: libc::c_int = 10;

fn lower_priority() {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: setpriority only reads its integer arguments; on Linux,
        // PRIO_PROCESS with who = 0 applies to the calling thread alone.
        let rc = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, WRITER_NICE) };
        if rc != 0 {
            tracing::debug!("history writer keeps normal priority (setpriority refused)");
        }
    }
}

/// Where the writer reports: the counters and the live subscribers.
struct Output {
    stats: Arc<HistoryStats>,
    events: tokio::sync::broadcast::Sender<Event>,
}

/// Where the writer writes.
enum Target {
    Sqlite(Connection),
    Postgres(Box<PgSink>),
}

fn run(
    mut conn: Target,
    rx: mpsc::Receiver<Msg>,
    out: &Output,
    retention_days: u32,
    batch_interval: Duration,
) {
    let stats = &*out.stats;
    lower_priority();
    // A second of empty rounds before blocking, whatever the interval.
    let idle_rounds_max =
        (Duration::from_secs(1).as_millis() / batch_interval.as_millis().max(1)).max(1) as u32;
    let mut last_prune = Instant::now();
    prune(&mut conn, retention_days, stats);
    let mut batch = Batch::default();
    let mut idle_rounds = 0;
    loop {
        // The first message of this round, when it was waited for.
        let mut first = None;
        if idle_rounds < idle_rounds_max {
            std::thread::sleep(batch_interval);
        } else {
            // Idle for a while: block, so an idle proxy's writer does not
            // wake 50 times a second. The next record wakes it (that one
            // send pays a wake-up); then it goes back to sleeping between
            // rounds.
            match rx.recv_timeout(PRUNE_EVERY.saturating_sub(last_prune.elapsed())) {
                Ok(msg) => first = Some(msg),
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => return,
            }
        }
        let mut close = None;
        let mut gone = false;
        let mut received = 0;
        loop {
            let msg = match first.take().map_or_else(|| rx.try_recv(), Ok) {
                Ok(msg) => msg,
                Err(mpsc::TryRecvError::Empty) => break,
                Err(mpsc::TryRecvError::Disconnected) => {
                    gone = true;
                    break;
                }
            };
            received += 1;
            if batch.len() >= BATCH_MAX {
                flush(&mut conn, &mut batch, out);
            }
            match msg {
                Msg::Record(r) => {
                    batch.queued += 1;
                    batch.records.push((*r, None));
                }
                Msg::Final(f) => {
                    batch.queued += 1;
                    batch.add_final(f);
                }
                Msg::Close(ack) => {
                    close = Some(ack);
                    break;
                }
            }
        }
        idle_rounds = if received == 0 { idle_rounds + 1 } else { 0 };
        flush(&mut conn, &mut batch, out);
        if let Target::Postgres(pg) = &mut conn {
            if received == 0 {
                // A quiet round sends what waits in the spool.
                pg.tick(stats);
            }
            if close.is_some() || gone {
                pg.close();
            }
        }
        if let Some(ack) = close {
            let _ = ack.send(());
            return;
        }
        if gone {
            return;
        }
        if last_prune.elapsed() >= PRUNE_EVERY {
            prune(&mut conn, retention_days, stats);
            last_prune = Instant::now();
        }
    }
}

/// Writes and empties `batch`, then tells live subscribers; a failed write
/// is counted and logged.
fn flush(conn: &mut Target, batch: &mut Batch, out: &Output) {
    let stats = &*out.stats;
    if batch.queued == 0 {
        return;
    }
    stats
        .depth
        .fetch_sub(batch.queued as i64, Ordering::Relaxed);
    let n = batch.records.len();
    let subscribed = out.events.receiver_count() > 0;
    let result = match conn {
        Target::Sqlite(c) => write(c, batch)
            .map(|first| Some(Ids::From(first)))
            .map_err(|e| e.to_string()),
        Target::Postgres(pg) => pg.write(batch, subscribed, stats).map(|ids| {
            ids.map(|ids| Ids::Listed(ids.into_iter().map(|(id, d)| (d, id)).collect()))
        }),
    };
    match result {
        Ok(ids) => {
            // Spooled records are counted as written when they are sent.
            if ids.is_some() {
                stats.written.fetch_add(n as u64, Ordering::Relaxed);
            }
            if subscribed && let Some(ids) = ids {
                publish(&out.events, batch, &ids);
            }
        }
        Err(e) => {
            stats.write_errors.fetch_add(1, Ordering::Relaxed);
            let dropped = stats.dropped.fetch_add(n as u64, Ordering::Relaxed) + n as u64;
            if log_due(&stats.last_write_error_log_ms, now_ms()) {
                tracing::error!(
                    error = %e,
                    records = n,
                    dropped_total = dropped,
                    "history write failed; records dropped (logged at most every 10 s; is the disk full?)"
                );
            }
        }
    }
    batch.records.clear();
    batch.finals.clear();
    batch.queued = 0;
}

/// The ids the rows of a batch were given.
enum Ids {
    /// SQLite: one transaction's rows have consecutive ids from this one.
    From(i64),
    /// PostgreSQL: what `RETURNING` said, by decision id.
    Listed(std::collections::HashMap<String, i64>),
}

impl Ids {
    fn of(&self, i: usize, decision_id: &str) -> Option<i64> {
        match self {
            Ids::From(first) => Some(first + i as i64),
            Ids::Listed(ids) => ids.get(decision_id).copied(),
        }
    }
}

/// Sends the batch's rows and final responses to the live subscribers.
fn publish(events: &tokio::sync::broadcast::Sender<Event>, batch: &Batch, ids: &Ids) {
    for (i, (r, f)) in batch.records.iter().enumerate() {
        let Some(id) = ids.of(i, &r.decision_id) else {
            continue;
        };
        let row = super::query::Row::from_record(id, r, f.as_ref());
        if let Ok(json) = serde_json::to_string(&row) {
            let _ = events.send(Event::Decision(json.into()));
        }
    }
    for f in &batch.finals {
        if let Ok(json) = serde_json::to_string(f) {
            let _ = events.send(Event::Final(json.into()));
        }
    }
}

/// Inserts the new rows and applies the final responses, in one
/// transaction; the id of the first row inserted.
fn write(conn: &mut Connection, batch: &Batch) -> rusqlite::Result<i64> {
    let tx = conn.transaction()?;
    let mut first_id = 0;
    {
        let mut stmt = tx.prepare_cached(
            "INSERT INTO decisions (decision_id, time_ms, call_id, source, caller, caller_e164,
                called, trust, action, rule, response_code, score, category, evidence,
                decision_us, dry_run, final_code, final_ms, display, verstat, attest)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17,
                ?18, ?19, ?20, ?21)",
        )?;
        let mut source = String::with_capacity(48);
        for (i, (r, f)) in batch.records.iter().enumerate() {
            super::write_source(r.source, &mut source);
            let evidence = serde_json::to_string(&r.evidence).unwrap_or_else(|_| "[]".into());
            stmt.execute(params![
                r.decision_id,
                r.time_ms,
                r.call_id,
                source,
                r.caller,
                r.caller_e164,
                r.called,
                r.trust,
                r.action,
                r.rule,
                r.response_code,
                r.score,
                r.category,
                evidence,
                r.decision_us as i64,
                r.dry_run,
                f.as_ref().map(|f| f.final_code),
                f.as_ref().map(|f| f.final_ms),
                r.display,
                r.verstat,
                r.attest,
            ])?;
            if i == 0 {
                first_id = tx.last_insert_rowid();
            }
        }
        let mut update = tx.prepare_cached(
            "UPDATE decisions SET final_code = ?1, final_ms = ?2 WHERE decision_id = ?3",
        )?;
        for f in &batch.finals {
            update.execute(params![f.final_code, f.final_ms, f.decision_id])?;
        }
    }
    tx.commit()?;
    Ok(first_id)
}

fn prune(conn: &mut Target, retention_days: u32, stats: &HistoryStats) {
    match conn {
        Target::Sqlite(c) => prune_sqlite(c, retention_days, stats),
        Target::Postgres(pg) => pg.prune(retention_days, stats),
    }
}

/// Deletes rows older than the retention, a chunk at a time.
fn prune_sqlite(conn: &Connection, retention_days: u32, stats: &HistoryStats) {
    if retention_days == 0 {
        return;
    }
    let cutoff = now_ms() - i64::from(retention_days) * 86_400_000;
    loop {
        match conn.execute(
            "DELETE FROM decisions WHERE id IN
               (SELECT id FROM decisions WHERE time_ms < ?1 ORDER BY time_ms LIMIT ?2)",
            params![cutoff, PRUNE_CHUNK as i64],
        ) {
            Ok(0) => return,
            Ok(n) => {
                stats.pruned.fetch_add(n as u64, Ordering::Relaxed);
                tracing::debug!(rows = n, "history pruned");
            }
            Err(e) => {
                tracing::warn!(error = %e, "history prune failed; retried later");
                return;
            }
        }
    }
}
