//! The `/api/v1/*` handlers and `/metrics`.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::{AdminState, json_error};
use crate::history::export::{Format, RowWriter};
use crate::history::query::{self, Filter};
use crate::reputation::hiya_cache::refresh;

/// Largest `limit` of one history page.
pub const MAX_PAGE_LIMIT: u64 = 100;

/// Rows buffered between the export's database reader and the response.
const EXPORT_CHANNEL: usize = 64;

pub(super) async fn check(
    State(state): State<Arc<AdminState>>,
    Path(number): Path<String>,
) -> Response {
    let (report, _) = crate::check::check_with(&state.pipeline, &number).await;
    axum::Json(report).into_response()
}

#[derive(Debug, Deserialize)]
pub(super) struct HistoryParams {
    page: Option<u64>,
    limit: Option<u64>,
    number: Option<String>,
    action: Option<String>,
    from: Option<String>,
    to: Option<String>,
    format: Option<String>,
}

impl HistoryParams {
    /// The filter, or the message of a 400.
    fn filter(&self, state: &AdminState) -> Result<Filter, String> {
        let country = state.config.country().map_err(|e| e.to_string())?;
        crate::history::export::filter(
            &country,
            self.from.as_deref(),
            self.to.as_deref(),
            self.number.as_deref(),
            self.action.as_deref(),
        )
        .map_err(|e| e.to_string())
    }
}

fn no_history(state: &AdminState) -> Response {
    json_error(
        StatusCode::NOT_FOUND,
        &format!(
            "no history at {} yet (serve writes it; check history.path)",
            state.history.describe()
        ),
    )
}

/// `GET /api/v1/history?page&limit&number&action&from&to`: newest first.
pub(super) async fn history(
    State(state): State<Arc<AdminState>>,
    Query(p): Query<HistoryParams>,
) -> Response {
    let filter = match p.filter(&state) {
        Ok(f) => f,
        Err(m) => return json_error(StatusCode::BAD_REQUEST, &m),
    };
    let limit = p.limit.unwrap_or(20);
    if limit == 0 || limit > MAX_PAGE_LIMIT {
        return json_error(
            StatusCode::BAD_REQUEST,
            &format!(
                "limit {limit} is out of range; use 1–{MAX_PAGE_LIMIT} and page through with page=2, 3, …"
            ),
        );
    }
    let page = p.page.unwrap_or(1).max(1);
    let store = state.history.clone();
    if !store.exists() {
        return no_history(&state);
    }
    let result = tokio::task::spawn_blocking(move || {
        let mut conn = store.open_read()?;
        let total = query::count(&mut conn, &filter)?;
        let rows = query::page(&mut conn, &filter, page, limit)?;
        Ok::<_, crate::history::HistoryError>((total, rows))
    })
    .await;
    match result {
        Ok(Ok((total, rows))) => axum::Json(serde_json::json!({
            "page": page,
            "limit": limit,
            "total": total,
            "pages": total.div_ceil(limit),
            "rows": rows,
        }))
        .into_response(),
        Ok(Err(e)) => json_error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
        Err(e) => json_error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

/// An `io::Write` that sends what it is given down a bounded channel, so the
/// response streams while the reader waits for the client (no unbounded
/// buffering, whatever the range).
struct ChannelWriter(tokio::sync::mpsc::Sender<Result<Vec<u8>, std::io::Error>>);

impl std::io::Write for ChannelWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .blocking_send(Ok(buf.to_vec()))
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "client went away"))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// `GET /api/v1/history/export?format=csv|json&from&to`: every matching row,
/// oldest first, streamed.
pub(super) async fn export(
    State(state): State<Arc<AdminState>>,
    Query(p): Query<HistoryParams>,
) -> Response {
    let (format, content_type) = match p.format.as_deref().unwrap_or("json") {
        "csv" => (Format::Csv, "text/csv; charset=utf-8"),
        "json" => (Format::Json, "application/json"),
        other => {
            return json_error(
                StatusCode::BAD_REQUEST,
                &format!("format {other:?} is not supported; use csv or json"),
            );
        }
    };
    let filter = match p.filter(&state) {
        Ok(f) => f,
        Err(m) => return json_error(StatusCode::BAD_REQUEST, &m),
    };
    let store = state.history.clone();
    if !store.exists() {
        return no_history(&state);
    }
    let (tx, mut rx) = tokio::sync::mpsc::channel(EXPORT_CHANNEL);
    tokio::task::spawn_blocking(move || {
        let mut out = std::io::BufWriter::with_capacity(64 * 1024, ChannelWriter(tx.clone()));
        let result = (|| -> Result<(), crate::history::export::ExportError> {
            let mut conn = store.open_read()?;
            let mut writer = RowWriter::new(format, &mut out)?;
            writer.scan(&mut conn, &filter)?;
            writer.finish()?;
            Ok(())
        })();
        if let Err(e) = result {
            tracing::warn!(error = %e, "history export stopped");
            let _ = tx.blocking_send(Err(std::io::Error::other(e.to_string())));
        }
    });
    let stream = futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx));
    let ext = if format == Format::Csv { "csv" } else { "json" };
    (
        [
            (header::CONTENT_TYPE, content_type.to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"sipsentry-history.{ext}\""),
            ),
        ],
        Body::from_stream(stream),
    )
        .into_response()
}

/// `GET /api/v1/cache`: the Hiya cache per country, the live cache, credit.
pub(super) async fn cache(State(state): State<Arc<AdminState>>) -> Response {
    let hiya = match &state.hiya {
        Some(h) => refresh::status_of(h),
        None => refresh::status_on_disk(&state.config.hiya_cache),
    };
    let live = state.pipeline.live().cache().stats();
    axum::Json(serde_json::json!({
        "hiya": hiya,
        "live_cache": {
            "entries": live.entries,
            "hits": live.hits,
            "misses": live.misses,
            "evictions": live.evictions,
        },
        "didchecks_balance": state.didchecks.as_ref().and_then(|d| d.last_balance()),
    }))
    .into_response()
}

/// `GET /api/v1/next-hops`: the next-hop targets in the order calls try
/// them, with whether pings have marked each down.
pub(super) async fn next_hops(State(state): State<Arc<AdminState>>) -> Response {
    match &state.next_hops {
        Some(h) => axum::Json(serde_json::json!({ "targets": h.status() })).into_response(),
        None => json_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "no SIP service in this process",
        ),
    }
}

/// `POST /api/v1/cache/sync`: pulls the configured Hiya countries now, in the
/// background; the serving generations switch when each one is built.
pub(super) async fn cache_sync(State(state): State<Arc<AdminState>>) -> Response {
    let countries = state.config.hiya_cache.countries.clone();
    if countries.is_empty() {
        return json_error(
            StatusCode::BAD_REQUEST,
            "no countries to sync: set hiya_cache.countries",
        );
    }
    let config = Arc::clone(&state.config);
    let hiya = state.hiya.clone();
    tokio::spawn(async move {
        match refresh::sync_now(&config.hiya_cache, &[]).await {
            Ok(results) => {
                for (cc, r) in results {
                    match r {
                        Ok(_) => {
                            tracing::info!(country = %cc, "cache sync requested by the API done")
                        }
                        Err(e) => {
                            tracing::warn!(country = %cc, error = %e, "cache sync requested by the API failed")
                        }
                    }
                }
                if let Some(h) = hiya {
                    let _ = tokio::task::spawn_blocking(move || {
                        h.reload_changed(&config.hiya_cache.countries)
                    })
                    .await;
                }
            }
            Err(e) => tracing::warn!(error = %e, "cache sync requested by the API could not start"),
        }
    });
    (
        StatusCode::ACCEPTED,
        axum::Json(serde_json::json!({ "started": countries })),
    )
        .into_response()
}

/// `POST /api/v1/reload`: re-reads the config; a bad one is refused and the
/// policy in force stays.
pub(super) async fn reload(State(state): State<Arc<AdminState>>) -> Response {
    let Some(reloader) = &state.reloader else {
        return json_error(StatusCode::NOT_IMPLEMENTED, "reload is not available here");
    };
    match reloader.reload() {
        Ok(r) => axum::Json(r).into_response(),
        Err(e) => json_error(
            StatusCode::BAD_REQUEST,
            &format!("{e}; the policy in force is unchanged"),
        ),
    }
}

/// `GET /metrics`: Prometheus text format.
pub(super) async fn metrics(State(state): State<Arc<AdminState>>) -> Response {
    match state.metrics.render() {
        Ok(text) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(e) => json_error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}
