//! The history in PostgreSQL, for a cluster: every node writes its
//! decisions (with its `node_id`) to one database, and any node reads them
//! all. The schema mirrors the SQLite one, versioned the same way
//! ([`MIGRATIONS`], applied under an advisory lock so nodes starting
//! together migrate once).
//!
//! Readers run in blocking contexts (the CLI, the API's blocking tasks), as
//! the SQLite readers do: [`PgRead`] holds a pooled connection and drives
//! it on the runtime it was made on.

use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio_postgres::NoTls;
use tokio_postgres::config::SslMode;
use tokio_postgres::types::ToSql;

use super::HistoryError;
use super::query::{Filter, Row};

/// How long a connection attempt may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Readers' connections per node (the console, the API, exports).
pub const READ_POOL: usize = 4;

/// Schema migrations, in order; `sipsentry_schema.version` records how many ran.
pub const MIGRATIONS: &[&str] = &[
    // 1: decisions (unique per node and decision id: two nodes may issue the
    // same id in the same millisecond), the runtime lists, reports, and the
    // lists' change counter.
    "CREATE TABLE decisions (
        id            BIGSERIAL PRIMARY KEY,
        node_id       TEXT    NOT NULL,
        decision_id   TEXT    NOT NULL,
        time_ms       BIGINT  NOT NULL,
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
        decision_us   BIGINT  NOT NULL,
        dry_run       BOOLEAN NOT NULL,
        final_code    INTEGER,
        final_ms      INTEGER,
        display       TEXT,
        verstat       TEXT,
        attest        TEXT,
        UNIQUE (node_id, decision_id)
     );
     CREATE INDEX decisions_time   ON decisions (time_ms);
     CREATE INDEX decisions_caller ON decisions (caller_e164, time_ms);
     CREATE INDEX decisions_action ON decisions (action, time_ms);
     CREATE INDEX decisions_decision_id ON decisions (decision_id);
     CREATE TABLE list_entries (
        list       TEXT    NOT NULL CHECK (list IN ('allow', 'deny')),
        pattern    TEXT    NOT NULL,
        comment    TEXT    NOT NULL,
        added_by   TEXT    NOT NULL,
        added_ms   BIGINT  NOT NULL,
        expires_ms BIGINT,
        origin     TEXT    NOT NULL,
        PRIMARY KEY (list, pattern)
     );
     CREATE TABLE reports (
        id          BIGSERIAL PRIMARY KEY,
        time_ms     BIGINT  NOT NULL,
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
        version BIGINT  NOT NULL
     );
     INSERT INTO lists_version VALUES (1, 0);",
];

/// The schema version this build writes.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// Where the database is: the URL (`postgres://user@host:port/db`) and the
/// password from the environment, never from the URL in logs.
#[derive(Clone)]
pub struct PgTarget {
    pub config: tokio_postgres::Config,
    /// The URL without its password, for messages.
    pub shown: String,
    /// TLS, with the server's certificate verified, when asked for.
    tls: Option<tokio_postgres_rustls::MakeRustlsConnect>,
}

impl std::fmt::Debug for PgTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.shown)
    }
}

impl PgTarget {
    /// Parses `url`; `password` (from `history.password_env`) is used when
    /// the URL carries none. With `sslmode=require` in the URL, or a
    /// `ca_file` (`history.ca_file`, PEM), connections use TLS and the
    /// server's certificate must chain to the system's roots or the file's
    /// and name the host; otherwise they are plain.
    pub fn new(
        url: &str,
        password: Option<&str>,
        ca_file: Option<&std::path::Path>,
    ) -> Result<PgTarget, HistoryError> {
        let mut config: tokio_postgres::Config =
            url.parse()
                .map_err(|e: tokio_postgres::Error| HistoryError::PgUrl {
                    message: e.to_string(),
                })?;
        if config.get_password().is_none()
            && let Some(pw) = password
        {
            config.password(pw);
        }
        config.connect_timeout(CONNECT_TIMEOUT);
        config.application_name("sipsentry");
        let tls = if ca_file.is_some() || config.get_ssl_mode() == SslMode::Require {
            config.ssl_mode(SslMode::Require);
            Some(tls_connector(ca_file)?)
        } else {
            None
        };
        let shown = match (config.get_hosts().first(), config.get_ports().first()) {
            (Some(tokio_postgres::config::Host::Tcp(h)), port) => format!(
                "postgres://{}@{h}:{}/{}",
                config.get_user().unwrap_or(""),
                port.copied().unwrap_or(5432),
                config.get_dbname().unwrap_or("")
            ),
            _ => "postgres (socket)".into(),
        };
        Ok(PgTarget { config, shown, tls })
    }

    /// One connection, its driver spawned on the current runtime.
    pub async fn connect(&self) -> Result<tokio_postgres::Client, HistoryError> {
        fn drive<F>(conn: F)
        where
            F: std::future::Future<Output = Result<(), tokio_postgres::Error>> + Send + 'static,
        {
            tokio::spawn(async move {
                if let Err(e) = conn.await {
                    tracing::debug!(error = %e, "PostgreSQL connection ended");
                }
            });
        }
        let err = |e| self.error(e);
        Ok(match &self.tls {
            Some(tls) => {
                let (client, conn) = self.config.connect(tls.clone()).await.map_err(err)?;
                drive(conn);
                client
            }
            None => {
                let (client, conn) = self.config.connect(NoTls).await.map_err(err)?;
                drive(conn);
                client
            }
        })
    }

    pub fn error(&self, e: tokio_postgres::Error) -> HistoryError {
        HistoryError::Pg {
            target: self.shown.clone(),
            message: pg_message(&e),
        }
    }

    /// A pool for readers. Connects on first use.
    pub fn pool(&self) -> Result<Pool, HistoryError> {
        let config = ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        };
        let manager = match &self.tls {
            Some(tls) => Manager::from_config(self.config.clone(), tls.clone(), config),
            None => Manager::from_config(self.config.clone(), NoTls, config),
        };
        Pool::builder(manager)
            .max_size(READ_POOL)
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .wait_timeout(Some(CONNECT_TIMEOUT))
            .create_timeout(Some(CONNECT_TIMEOUT))
            .build()
            .map_err(|e| HistoryError::Pg {
                target: self.shown.clone(),
                message: e.to_string(),
            })
    }
}

/// A TLS client trusting the system's roots and those in `ca_file`.
fn tls_connector(
    ca_file: Option<&std::path::Path>,
) -> Result<tokio_postgres_rustls::MakeRustlsConnect, HistoryError> {
    let roots = crate::pem::roots(true, ca_file).map_err(|e| HistoryError::PgCa {
        path: e.path,
        message: e.message,
    })?;
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| HistoryError::PgCa {
        path: ca_file.map(|p| p.to_path_buf()).unwrap_or_default(),
        message: e.to_string(),
    })?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
}

/// The server's own message (with its detail) rather than the driver's
/// summary ("db error"); for any other failure, the error with its causes
/// ("error performing TLS handshake: invalid peer certificate: …").
pub fn pg_message(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => match db.detail() {
            Some(d) => format!("{}: {d}", db.message()),
            None => db.message().to_string(),
        },
        None => chain(e),
    }
}

/// An error and each of its sources, joined.
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

/// Creates or migrates the schema; refuses a database a newer build wrote.
pub async fn migrate(
    client: &mut tokio_postgres::Client,
    target: &PgTarget,
) -> Result<(), HistoryError> {
    let err = |e| target.error(e);
    let tx = client.transaction().await.map_err(err)?;
    // One node migrates at a time; the others wait and then find it done.
    tx.execute("SELECT pg_advisory_xact_lock(7461129)", &[])
        .await
        .map_err(err)?;
    tx.batch_execute("CREATE TABLE IF NOT EXISTS sipsentry_schema (version BIGINT NOT NULL)")
        .await
        .map_err(err)?;
    let found: i64 = match tx
        .query_opt("SELECT version FROM sipsentry_schema", &[])
        .await
        .map_err(err)?
    {
        Some(r) => r.get(0),
        None => {
            tx.execute("INSERT INTO sipsentry_schema VALUES (0)", &[])
                .await
                .map_err(err)?;
            0
        }
    };
    if found > SCHEMA_VERSION {
        return Err(HistoryError::PgTooNew {
            target: target.shown.clone(),
            found,
            known: SCHEMA_VERSION,
        });
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(found as usize) {
        tx.batch_execute(sql).await.map_err(err)?;
        tx.execute(
            "UPDATE sipsentry_schema SET version = $1",
            &[&((i + 1) as i64)],
        )
        .await
        .map_err(err)?;
        tracing::info!(version = i + 1, "PostgreSQL history schema migrated");
    }
    tx.commit().await.map_err(err)?;
    Ok(())
}

/// The readers' side: a pool and the runtime that drives it.
pub struct PgHistory {
    pub target: PgTarget,
    pool: Pool,
    handle: tokio::runtime::Handle,
    /// Whether the schema is known to be current (readers may come first:
    /// the lists of a node that records no history).
    migrated: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for PgHistory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgHistory")
            .field("target", &self.target)
            .finish()
    }
}

impl PgHistory {
    /// Call inside the runtime whose `handle` the readers will use.
    pub fn new(
        target: PgTarget,
        handle: tokio::runtime::Handle,
    ) -> Result<Arc<Self>, HistoryError> {
        let pool = target.pool()?;
        Ok(Arc::new(PgHistory {
            target,
            pool,
            handle,
            migrated: Default::default(),
        }))
    }

    /// A connection for one reader. Blocking: call from a blocking context.
    pub fn read(&self) -> Result<PgRead, HistoryError> {
        let mut client = self
            .handle
            .block_on(self.pool.get())
            .map_err(|e| HistoryError::Pg {
                target: self.target.shown.clone(),
                message: match &e {
                    deadpool_postgres::PoolError::Backend(e) => pg_message(e),
                    other => chain(other),
                },
            })?;
        use std::sync::atomic::Ordering;
        if !self.migrated.load(Ordering::Relaxed) {
            let c: &mut tokio_postgres::Client = &mut client;
            self.handle.block_on(migrate(c, &self.target))?;
            self.migrated.store(true, Ordering::Relaxed);
        }
        Ok(PgRead {
            client,
            handle: self.handle.clone(),
            target: self.target.clone(),
        })
    }
}

/// One reader's connection.
pub struct PgRead {
    client: deadpool_postgres::Object,
    handle: tokio::runtime::Handle,
    target: PgTarget,
}

const COLUMNS: &str = "id, decision_id, time_ms, call_id, source, caller, caller_e164, called, \
    trust, action, rule, response_code, score, category, evidence, decision_us, dry_run, \
    final_code, final_ms, display, verstat, attest, node_id";

type Params = Vec<Box<dyn ToSql + Sync + Send>>;

fn where_clause(filter: &Filter) -> (String, Params) {
    let mut conds = Vec::new();
    let mut params: Params = Vec::new();
    let mut push = |cond: &str, v: Box<dyn ToSql + Sync + Send>, params: &mut Params| {
        params.push(v);
        conds.push(format!("{cond} ${}", params.len()));
    };
    if let Some(n) = &filter.number {
        push("caller_e164 =", Box::new(n.clone()), &mut params);
    }
    if let Some(a) = &filter.action {
        push("action =", Box::new(a.clone()), &mut params);
    }
    if let Some(r) = &filter.rule {
        push("rule =", Box::new(r.clone()), &mut params);
    }
    if let Some(f) = filter.from_ms {
        push("time_ms >=", Box::new(f), &mut params);
    }
    if let Some(t) = filter.to_ms {
        push("time_ms <", Box::new(t), &mut params);
    }
    let clause = if conds.is_empty() {
        String::new()
    } else {
        format!(" WHERE {}", conds.join(" AND "))
    };
    (clause, params)
}

fn refs(params: &Params) -> Vec<&(dyn ToSql + Sync)> {
    params.iter().map(|p| &**p as &(dyn ToSql + Sync)).collect()
}

fn row(r: &tokio_postgres::Row) -> Row {
    let time_ms: i64 = r.get(2);
    let evidence: String = r.get(14);
    let small = |i: usize| {
        r.get::<_, Option<i32>>(i)
            .map(|v| v.clamp(0, 65_535) as u16)
    };
    Row {
        id: r.get(0),
        decision_id: r.get(1),
        time: jiff::Timestamp::from_millisecond(time_ms)
            .map(|t| t.to_string())
            .unwrap_or_default(),
        time_ms,
        call_id: r.get(3),
        source: r.get(4),
        caller: r.get(5),
        caller_e164: r.get(6),
        called: r.get(7),
        trust: r.get(8),
        action: r.get(9),
        rule: r.get(10),
        response_code: small(11),
        score: r.get::<_, i32>(12).clamp(0, 100) as u8,
        category: r.get(13),
        evidence: serde_json::from_str(&evidence).unwrap_or(serde_json::Value::Null),
        decision_us: r.get::<_, i64>(15).max(0) as u64,
        dry_run: r.get(16),
        final_code: small(17),
        final_ms: r.get::<_, Option<i32>>(18).map(|v| v.max(0) as u32),
        display: r.get(19),
        verstat: r.get(20),
        attest: r.get(21),
        node_id: r.get(22),
    }
}

impl PgRead {
    fn err(&self, e: tokio_postgres::Error) -> HistoryError {
        self.target.error(e)
    }

    pub fn count(&mut self, filter: &Filter) -> Result<u64, HistoryError> {
        let (clause, params) = where_clause(filter);
        let sql = format!("SELECT COUNT(*) FROM decisions{clause}");
        let r = self
            .handle
            .block_on(self.client.query_one(&sql, &refs(&params)))
            .map_err(|e| self.err(e))?;
        Ok(r.get::<_, i64>(0) as u64)
    }

    pub fn page(
        &mut self,
        filter: &Filter,
        page: u64,
        limit: u64,
    ) -> Result<Vec<Row>, HistoryError> {
        let (clause, mut params) = where_clause(filter);
        params.push(Box::new(limit as i64));
        params.push(Box::new((page.max(1) - 1).saturating_mul(limit) as i64));
        let n = params.len();
        let sql = format!(
            "SELECT {COLUMNS} FROM decisions{clause} ORDER BY time_ms DESC, id DESC LIMIT ${} OFFSET ${n}",
            n - 1
        );
        let rows = self
            .handle
            .block_on(self.client.query(&sql, &refs(&params)))
            .map_err(|e| self.err(e))?;
        Ok(rows.iter().map(row).collect())
    }

    /// Every matching row, oldest first, streamed from the server a row at
    /// a time; `f` returns false to stop.
    pub fn scan(
        &mut self,
        filter: &Filter,
        limit: Option<u64>,
        mut f: impl FnMut(Row) -> bool,
    ) -> Result<u64, HistoryError> {
        use futures_util::StreamExt;
        let (clause, mut params) = where_clause(filter);
        let limit_sql = match limit {
            Some(l) => {
                params.push(Box::new(l as i64));
                format!(" LIMIT ${}", params.len())
            }
            None => String::new(),
        };
        let sql =
            format!("SELECT {COLUMNS} FROM decisions{clause} ORDER BY time_ms, id{limit_sql}");
        let handle = self.handle.clone();
        let stream = handle
            .block_on(self.client.query_raw(&sql, refs(&params)))
            .map_err(|e| self.err(e))?;
        let mut stream = std::pin::pin!(stream);
        let mut n = 0;
        while let Some(r) = handle.block_on(stream.next()) {
            let r = r.map_err(|e| self.err(e))?;
            n += 1;
            if !f(row(&r)) {
                break;
            }
        }
        Ok(n)
    }

    pub fn by_decision_id(&mut self, id: &str) -> Result<Option<Row>, HistoryError> {
        let sql =
            format!("SELECT {COLUMNS} FROM decisions WHERE decision_id = $1 ORDER BY id LIMIT 1");
        let r = self
            .handle
            .block_on(self.client.query_opt(&sql, &[&id]))
            .map_err(|e| self.err(e))?;
        Ok(r.as_ref().map(row))
    }

    pub fn per_bucket(
        &mut self,
        from_ms: i64,
        bucket_ms: i64,
    ) -> Result<Vec<(i64, String, u64)>, HistoryError> {
        let rows = self
            .handle
            .block_on(self.client.query(
                "SELECT (time_ms - $1) / $2, action, COUNT(*) FROM decisions
                 WHERE time_ms >= $1 GROUP BY 1, 2",
                &[&from_ms, &bucket_ms.max(1)],
            ))
            .map_err(|e| self.err(e))?;
        Ok(rows
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get::<_, i64>(2) as u64))
            .collect())
    }

    pub fn top_callers(
        &mut self,
        action: &str,
        from_ms: i64,
        limit: u64,
    ) -> Result<Vec<(String, u64)>, HistoryError> {
        let rows = self
            .handle
            .block_on(self.client.query(
                "SELECT caller_e164, COUNT(*) FROM decisions
                 WHERE action = $1 AND time_ms >= $2 AND caller_e164 IS NOT NULL
                 GROUP BY caller_e164 ORDER BY 2 DESC, 1 LIMIT $3",
                &[&action, &from_ms, &(limit as i64)],
            ))
            .map_err(|e| self.err(e))?;
        Ok(rows
            .iter()
            .map(|r| (r.get(0), r.get::<_, i64>(1) as u64))
            .collect())
    }

    /// Runs `f` with the connection on its runtime (the lists' store).
    pub fn with<T>(
        &mut self,
        f: impl AsyncFnOnce(&mut deadpool_postgres::Object) -> Result<T, tokio_postgres::Error>,
    ) -> Result<T, HistoryError> {
        let handle = self.handle.clone();
        let result = handle.block_on(f(&mut self.client));
        result.map_err(|e| self.err(e))
    }
}
