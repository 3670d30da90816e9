//! `/api/v1/lists/*` and `/api/v1/feedback`: the runtime lists and the
//! spam / not-spam reports (docs/http-api.md).

// A handler's early answer is a whole `Response`: returned once per
// request, never on the call path, so its size does not matter.
#![allow(clippy::result_large_err)]

use std::sync::Arc;

use axum::Extension;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::auth::Actor;
use super::{AdminState, json_error};
use crate::history::export::Format;
use crate::lists::NewReport;
use crate::lists::store::write_reports;
use crate::lists::{Entry, Feedback, ListKind, Lists, ListsError, ReportFilter, parse_expiry};

/// Largest JSON body of a list or feedback request.
pub const MAX_BODY: usize = 16 * 1024;

/// A 400 naming the field, or a 500.
pub(super) fn lists_error(e: ListsError) -> Response {
    match e {
        ListsError::Invalid { field, message } => (
            StatusCode::BAD_REQUEST,
            axum::Json(serde_json::json!({
                "error": format!("`{field}`: {message}"),
                "field": field,
            })),
        )
            .into_response(),
        other => json_error(StatusCode::INTERNAL_SERVER_ERROR, &other.to_string()),
    }
}

fn list_kind(name: &str) -> Result<ListKind, Response> {
    ListKind::parse(name).ok_or_else(|| {
        json_error(
            StatusCode::NOT_FOUND,
            &format!("no list {name:?}; the lists are allow and deny"),
        )
    })
}

pub(super) fn lists_of(state: &AdminState) -> Result<Arc<Lists>, Response> {
    state.lists.clone().ok_or_else(|| {
        json_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the runtime lists are not available here (serve opens them beside history.path)",
        )
    })
}

/// Runs a store operation off the async threads.
pub(super) async fn blocking<T: Send + 'static>(
    lists: Arc<Lists>,
    f: impl FnOnce(&mut crate::lists::Store) -> Result<T, ListsError> + Send + 'static,
) -> Result<T, Response> {
    match tokio::task::spawn_blocking(move || lists.change(f)).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(lists_error(e)),
        Err(e) => Err(json_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            &e.to_string(),
        )),
    }
}

/// The config file's entries of a list, read-only.
pub(super) fn config_entries(state: &AdminState, list: ListKind) -> Vec<Entry> {
    let policy = state.pipeline.policy();
    let patterns = match list {
        ListKind::Allow => &policy.config.allow,
        ListKind::Deny => &policy.config.deny,
    };
    crate::lists::config_entries(list, patterns)
}

/// A JSON body, parsed with the field of any error named.
fn json_body<T: serde::de::DeserializeOwned>(
    headers: &HeaderMap,
    body: &[u8],
) -> Result<T, Response> {
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !json {
        return Err(json_error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "send the body as JSON with Content-Type: application/json",
        ));
    }
    if body.len() > MAX_BODY {
        return Err(json_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!("body larger than {MAX_BODY} bytes"),
        ));
    }
    let mut de = serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let field = e.path().to_string();
        let field = if field == "." {
            "body".to_string()
        } else {
            field
        };
        (
            StatusCode::BAD_REQUEST,
            axum::Json(serde_json::json!({
                "error": format!("`{field}`: {}", e.inner()),
                "field": field,
            })),
        )
            .into_response()
    })
}

/// `GET /api/v1/lists/{allow|deny}`: the config's read-only entries, then
/// the runtime ones (newest first), expired ones left out.
pub(super) async fn show(
    State(state): State<Arc<AdminState>>,
    Path(list): Path<String>,
) -> Response {
    let list = match list_kind(&list) {
        Ok(l) => l,
        Err(r) => return r,
    };
    let mut entries = config_entries(&state, list);
    if let Ok(lists) = lists_of(&state) {
        let now = crate::history::now_ms();
        match blocking(lists, move |s| s.entries(Some(list), now)).await {
            Ok(e) => entries.extend(e),
            Err(r) => return r,
        }
    }
    axum::Json(serde_json::json!({ "list": list, "entries": entries })).into_response()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AddBody {
    pattern: String,
    #[serde(default)]
    comment: String,
    #[serde(default)]
    expires_at: Option<String>,
}

/// `POST /api/v1/lists/{allow|deny}`: adds (or replaces) an entry; 201.
pub(super) async fn add(
    State(state): State<Arc<AdminState>>,
    Path(list): Path<String>,
    Extension(actor): Extension<Actor>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let list = match list_kind(&list) {
        Ok(l) => l,
        Err(r) => return r,
    };
    let b: AddBody = match json_body(&headers, &body) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let lists = match lists_of(&state) {
        Ok(l) => l,
        Err(r) => return r,
    };
    let expires = match b.expires_at.as_deref().filter(|s| !s.is_empty()) {
        Some(t) => match parse_expiry("expires_at", t, crate::history::now_ms()) {
            Ok(ms) => Some(ms),
            Err(e) => return lists_error(e),
        },
        None => None,
    };
    match blocking(lists, move |s| {
        s.add(list, &b.pattern, &b.comment, actor.0, expires)
    })
    .await
    {
        Ok(entry) => (StatusCode::CREATED, axum::Json(entry)).into_response(),
        Err(r) => r,
    }
}

/// `DELETE /api/v1/lists/{allow|deny}/{pattern}`: 204, or 404.
pub(super) async fn remove(
    State(state): State<Arc<AdminState>>,
    Path((list, pattern)): Path<(String, String)>,
) -> Response {
    let list = match list_kind(&list) {
        Ok(l) => l,
        Err(r) => return r,
    };
    if config_entries(&state, list)
        .iter()
        .any(|e| e.pattern == pattern.trim())
    {
        return json_error(
            StatusCode::CONFLICT,
            &format!(
                "{pattern} is in policy.{} in the config file: remove it there and reload",
                list.as_str()
            ),
        );
    }
    let lists = match lists_of(&state) {
        Ok(l) => l,
        Err(r) => return r,
    };
    let p = pattern.clone();
    match blocking(lists, move |s| s.remove(list, &p)).await {
        Ok(true) => StatusCode::NO_CONTENT.into_response(),
        Ok(false) => json_error(
            StatusCode::NOT_FOUND,
            &format!("{pattern} is not in the {} list", list.as_str()),
        ),
        Err(r) => r,
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReportBody {
    number: String,
    verdict: String,
    #[serde(default)]
    decision_id: Option<String>,
    #[serde(default)]
    note: String,
}

/// Records a report for `actor`; shared with the console.
pub(super) async fn record_report(
    state: &AdminState,
    actor: Actor,
    number: String,
    verdict: &str,
    decision_id: Option<String>,
    note: String,
) -> Result<crate::lists::Report, Response> {
    let Some(verdict) = Feedback::parse(verdict) else {
        return Err(lists_error(ListsError::Invalid {
            field: "verdict",
            message: format!("{verdict:?}: use spam or not_spam"),
        }));
    };
    let lists = lists_of(state)?;
    let days = state.pipeline.policy().config.not_spam_days;
    blocking(lists, move |s| {
        s.report(&NewReport {
            number: &number,
            verdict,
            decision_id: decision_id.as_deref().filter(|d| !d.is_empty()),
            note: &note,
            reported_by: actor.0,
            not_spam_days: days,
        })
    })
    .await
}

/// `POST /api/v1/feedback`: a spam or not-spam report; 201.
pub(super) async fn report(
    State(state): State<Arc<AdminState>>,
    Extension(actor): Extension<Actor>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let b: ReportBody = match json_body(&headers, &body) {
        Ok(b) => b,
        Err(r) => return r,
    };
    match record_report(&state, actor, b.number, &b.verdict, b.decision_id, b.note).await {
        Ok(r) => (StatusCode::CREATED, axum::Json(r)).into_response(),
        Err(r) => r,
    }
}

#[derive(Debug, Deserialize)]
pub(super) struct ReportParams {
    format: Option<String>,
    from: Option<String>,
    to: Option<String>,
    number: Option<String>,
}

/// `GET /api/v1/feedback?format=json|csv&from&to&number`: the reports,
/// oldest first (CSV as a download, to send back to a provider).
pub(super) async fn reports(
    State(state): State<Arc<AdminState>>,
    Query(p): Query<ReportParams>,
) -> Response {
    let format = match p.format.as_deref().unwrap_or("json") {
        "json" => Format::Json,
        "csv" => Format::Csv,
        other => {
            return json_error(
                StatusCode::BAD_REQUEST,
                &format!("format {other:?} is not supported; use csv or json"),
            );
        }
    };
    let time = |key, v: &Option<String>| {
        v.as_deref()
            .map(|t| crate::history::query::parse_time(key, t))
            .transpose()
    };
    let filter = match (time("from", &p.from), time("to", &p.to)) {
        (Ok(from_ms), Ok(to_ms)) => ReportFilter {
            from_ms,
            to_ms,
            number: p.number.clone(),
            decision_id: None,
        },
        (Err(e), _) | (_, Err(e)) => return json_error(StatusCode::BAD_REQUEST, &e.to_string()),
    };
    let lists = match lists_of(&state) {
        Ok(l) => l,
        Err(r) => return r,
    };
    let reports = match blocking(lists, move |s| s.reports(&filter)).await {
        Ok(r) => r,
        Err(r) => return r,
    };
    let mut out = Vec::new();
    if let Err(e) = write_reports(&reports, format, &mut out) {
        return json_error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string());
    }
    let (content_type, disposition) = match format {
        Format::Csv => (
            "text/csv; charset=utf-8",
            "attachment; filename=\"sipsentry-reports.csv\"",
        ),
        _ => ("application/json", "inline"),
    };
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CONTENT_DISPOSITION, disposition),
        ],
        out,
    )
        .into_response()
}
