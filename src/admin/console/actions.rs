//! What the console's forms post: list changes and reports. Each checks
//! the session's CSRF token, goes through the same store as the API, and
//! answers 303 back to the page the form was on.

// As in `admin::lists`: an early answer is a whole `Response`.
#![allow(clippy::result_large_err)]

use std::sync::Arc;

use axum::Extension;
use axum::extract::{Form, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;

use super::overview::urlencode;
use super::{ConsoleSession, csrf_ok, error_page};
use crate::admin::AdminState;
use crate::admin::auth::Actor;
use crate::admin::lists::{blocking, lists_of, record_report};
use crate::lists::{ListKind, ListsError, parse_expiry};

#[derive(Debug, Deserialize)]
pub(super) struct ListForm {
    #[serde(default)]
    csrf: String,
    list: String,
    pattern: String,
    #[serde(default)]
    comment: String,
    #[serde(default)]
    expires: String,
    #[serde(default)]
    back: String,
}

#[derive(Debug, Deserialize)]
pub(super) struct ReportForm {
    #[serde(default)]
    csrf: String,
    number: String,
    verdict: String,
    #[serde(default)]
    decision_id: String,
    #[serde(default)]
    note: String,
    #[serde(default)]
    back: String,
}

/// Where to go after a form: a console path of ours, never elsewhere.
fn back_to(back: &str, done: &str) -> Response {
    let path = if back.starts_with('/') && !back.starts_with("//") && !back.contains('\\') {
        back
    } else {
        "/"
    };
    let sep = if path.contains('?') { '&' } else { '?' };
    Redirect::to(&format!("{path}{sep}done={}", urlencode(done))).into_response()
}

fn refused() -> Response {
    error_page(
        StatusCode::FORBIDDEN,
        "missing or wrong CSRF token: reload the page and try again",
    )
}

/// The message of a failed change, as a page.
async fn failed(r: Response) -> Response {
    let status = r.status();
    let body = axum::body::to_bytes(r.into_body(), 64 * 1024)
        .await
        .unwrap_or_default();
    let message = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v["error"].as_str().map(str::to_string))
        .unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned());
    error_page(status, &message)
}

pub(super) async fn list_add(
    State(state): State<Arc<AdminState>>,
    Extension(session): Extension<ConsoleSession>,
    Extension(actor): Extension<Actor>,
    Form(f): Form<ListForm>,
) -> Response {
    if !csrf_ok(&session, &f.csrf) {
        return refused();
    }
    let Some(list) = ListKind::parse(&f.list) else {
        return error_page(StatusCode::BAD_REQUEST, "`list`: use allow or deny");
    };
    let expires = match f.expires.trim() {
        "" => None,
        t => match parse_expiry("expires", t, crate::history::now_ms()) {
            Ok(ms) => Some(ms),
            Err(ListsError::Invalid { field, message }) => {
                return error_page(StatusCode::BAD_REQUEST, &format!("`{field}`: {message}"));
            }
            Err(e) => return error_page(StatusCode::BAD_REQUEST, &e.to_string()),
        },
    };
    let lists = match lists_of(&state) {
        Ok(l) => l,
        Err(r) => return failed(r).await,
    };
    let (pattern, comment) = (f.pattern.clone(), f.comment.clone());
    match blocking(lists, move |s| {
        s.add(list, &pattern, &comment, actor.0, expires)
    })
    .await
    {
        Ok(e) => back_to(
            &f.back,
            &format!("{} added to the {} list", e.pattern, list.as_str()),
        ),
        Err(r) => failed(r).await,
    }
}

pub(super) async fn list_remove(
    State(state): State<Arc<AdminState>>,
    Extension(session): Extension<ConsoleSession>,
    Form(f): Form<ListForm>,
) -> Response {
    if !csrf_ok(&session, &f.csrf) {
        return refused();
    }
    let Some(list) = ListKind::parse(&f.list) else {
        return error_page(StatusCode::BAD_REQUEST, "`list`: use allow or deny");
    };
    let lists = match lists_of(&state) {
        Ok(l) => l,
        Err(r) => return failed(r).await,
    };
    let pattern = f.pattern.clone();
    match blocking(lists, move |s| s.remove(list, &pattern)).await {
        Ok(true) => back_to(&f.back, &format!("{} removed", f.pattern.trim())),
        Ok(false) => back_to(
            &f.back,
            &format!("{} was not in the list", f.pattern.trim()),
        ),
        Err(r) => failed(r).await,
    }
}

pub(super) async fn report(
    State(state): State<Arc<AdminState>>,
    Extension(session): Extension<ConsoleSession>,
    Extension(actor): Extension<Actor>,
    Form(f): Form<ReportForm>,
) -> Response {
    if !csrf_ok(&session, &f.csrf) {
        return refused();
    }
    let decision = Some(f.decision_id.clone()).filter(|d| !d.is_empty());
    match record_report(
        &state,
        actor,
        f.number.clone(),
        &f.verdict,
        decision,
        f.note.clone(),
    )
    .await
    {
        Ok(r) => back_to(
            &f.back,
            &format!("{} reported as {}", r.number, r.verdict.as_str()),
        ),
        Err(r) => failed(r).await,
    }
}
