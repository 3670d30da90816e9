//! `GET /api/v1/own` (each own number's latest status per provider, the
//! change since the check before, the report card) and
//! `GET /api/v1/own/{number}` (every stored result of one number).

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::{AdminState, json_error};
use crate::own::{Monitor, OwnView};

/// Results `GET /api/v1/own/{number}` returns unless `limit` says.
pub const DEFAULT_RESULTS: usize = 100;
/// The most it returns.
pub const MAX_RESULTS: usize = 10_000;

fn not_configured() -> Response {
    json_error(
        StatusCode::SERVICE_UNAVAILABLE,
        "no own numbers configured: list them in [own_numbers] numbers (docs/own-numbers.md)",
    )
}

/// The view, read off the async threads (SQLite).
pub(crate) async fn view_of(monitor: &Arc<Monitor>) -> Result<OwnView, String> {
    let m = Arc::clone(monitor);
    tokio::task::spawn_blocking(move || m.view())
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())
}

pub(super) async fn view(State(state): State<Arc<AdminState>>) -> Response {
    let Some(m) = &state.own else {
        return not_configured();
    };
    match view_of(m).await {
        Ok(v) => axum::Json(v).into_response(),
        Err(e) => json_error(StatusCode::INTERNAL_SERVER_ERROR, &e),
    }
}

#[derive(Debug, Deserialize)]
pub(super) struct Limit {
    limit: Option<usize>,
}

pub(super) async fn results(
    State(state): State<Arc<AdminState>>,
    Path(number): Path<String>,
    Query(q): Query<Limit>,
) -> Response {
    let Some(m) = state.own.clone() else {
        return not_configured();
    };
    if !m.is_own(&number) {
        return json_error(
            StatusCode::NOT_FOUND,
            &format!(
                "{number} is not one of own_numbers.numbers (give it in E.164, URL-encoded: %2B15551234567)"
            ),
        );
    }
    let limit = q.limit.unwrap_or(DEFAULT_RESULTS).clamp(1, MAX_RESULTS);
    let read = tokio::task::spawn_blocking(move || m.results(&number, limit)).await;
    match read {
        Ok(Ok(rows)) => axum::Json(serde_json::json!({ "results": rows })).into_response(),
        Ok(Err(e)) => json_error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
        Err(e) => json_error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}
