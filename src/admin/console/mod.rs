//! The operator console at `/` on `admin.listen`: server-rendered HTML
//! (maud, which escapes every value it is given: a caller's display name
//! is the attacker's text), one small script for the Live page, and every
//! asset inside the binary.
//!
//! Pages: Overview (`/`), Live (`/live`), History (`/history`, a call at
//! `/history/{decision_id}`), Lists (`/lists`), Own numbers (`/own`).
//! Forms post to `/action/*` with the session's CSRF token and redirect back (303).

use std::sync::Arc;

use axum::Router;
use axum::extract::{Form, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware;
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use maud::{DOCTYPE, Markup, html};
use serde::Deserialize;

use super::AdminState;
use super::auth::{self, ConsoleSession};
use super::session;

mod actions;
mod chart;
mod history;
mod lists;
mod overview;
mod own;

const CSS: &str = include_str!("assets/console.css");
const LIVE_JS: &str = include_str!("assets/live.js");

/// A wrong token at the login form costs this long, so the token cannot
/// be guessed at the speed of the network.
const LOGIN_FAILURE_DELAY: std::time::Duration = std::time::Duration::from_millis(500);

pub fn router(state: Arc<AdminState>) -> Router<Arc<AdminState>> {
    let pages = Router::new()
        .route("/", get(overview::page))
        .route("/live", get(live))
        .route("/history", get(history::search))
        .route("/history/{decision_id}", get(history::detail))
        .route("/lists", get(lists::page))
        .route("/own", get(own::page))
        .route("/action/list-add", post(actions::list_add))
        .route("/action/list-remove", post(actions::list_remove))
        .route("/action/report", post(actions::report))
        .route("/logout", post(logout))
        .route_layer(middleware::from_fn_with_state(state, auth::require_session));
    Router::new()
        .route("/login", get(login_page).post(login))
        .route("/assets/console.css", get(css))
        .route("/assets/live.js", get(js))
        .merge(pages)
}

async fn css() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=3600"),
        ],
        CSS,
    )
        .into_response()
}

async fn js() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=3600"),
        ],
        LIVE_JS,
    )
        .into_response()
}

/// The headers every console page carries: no framing (clickjacking), no
/// script but the console's own, no caching of call data.
fn secure(body: Markup) -> Response {
    (
        [
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; frame-ancestors 'none'; form-action 'self'",
            ),
            (header::X_FRAME_OPTIONS, "DENY"),
            (header::CACHE_CONTROL, "no-store"),
            (header::REFERRER_POLICY, "same-origin"),
        ],
        Html(body.into_string()),
    )
        .into_response()
}

/// A page in the console's frame.
pub(super) fn layout(
    title: &str,
    active: &str,
    session: &ConsoleSession,
    body: Markup,
) -> Response {
    let tab = |href: &str, name: &str| {
        html! {
            a href=(href) class=(if name == active { "tab active" } else { "tab" }) { (name) }
        }
    };
    secure(html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta name="csrf-token" content=(session.0.csrf);
                title { (title) " · sipsentry" }
                link rel="stylesheet" href="/assets/console.css";
            }
            body {
                header {
                    span.brand { "sipsentry" }
                    nav {
                        (tab("/", "Overview"))
                        (tab("/live", "Live"))
                        (tab("/history", "History"))
                        (tab("/lists", "Lists"))
                        (tab("/own", "Own numbers"))
                    }
                    form.logout method="post" action="/logout" {
                        (csrf_field(session))
                        button type="submit" { "Log out" }
                    }
                }
                main { (body) }
            }
        }
    })
}

/// The hidden CSRF field every form carries.
pub(super) fn csrf_field(session: &ConsoleSession) -> Markup {
    html! { input type="hidden" name="csrf" value=(session.0.csrf); }
}

/// Whether a form's CSRF token is the session's.
pub(super) fn csrf_ok(session: &ConsoleSession, given: &str) -> bool {
    session.0.csrf_matches(given)
}

/// A plain error page (400 for a bad form, 403 for a bad CSRF token).
pub(super) fn error_page(status: StatusCode, message: &str) -> Response {
    let mut r = secure(html! {
        (DOCTYPE)
        html lang="en" {
            head { meta charset="utf-8"; title { "Error · sipsentry" } link rel="stylesheet" href="/assets/console.css"; }
            body { main {
                h1 { "Not done" }
                p.error { (message) }
                p { a href="/" { "Overview" } }
            } }
        }
    });
    *r.status_mut() = status;
    r
}

async fn live(axum::Extension(session): axum::Extension<ConsoleSession>) -> Response {
    layout(
        "Live",
        "Live",
        &session,
        html! {
            div.toolbar {
                button #pause type="button" { "Pause" }
                span #status { "connecting…" }
            }
            table #live {
                thead { tr {
                    th { "time" } th { "caller" } th { "name" } th { "called" } th { "action" }
                    th { "rule" } th { "score" } th { "sources" } th { "response" }
                } }
                tbody {}
            }
            script src="/assets/live.js" {}
        },
    )
}

async fn login_page(State(state): State<Arc<AdminState>>) -> Response {
    if state.token.is_none() {
        return Redirect::to("/").into_response();
    }
    login_form(None)
}

fn login_form(error: Option<&str>) -> Response {
    secure(html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                title { "Log in · sipsentry" }
                link rel="stylesheet" href="/assets/console.css";
            }
            body.login { main {
                h1 { "sipsentry" }
                @if let Some(e) = error { p.error { (e) } }
                form method="post" action="/login" {
                    label for="token" { "Admin token" }
                    input #token type="password" name="token" autocomplete="current-password" autofocus;
                    button type="submit" { "Log in" }
                }
                p.hint { "The token is in the environment variable named by admin.token_env where sipsentry runs." }
            } }
        }
    })
}

#[derive(Deserialize)]
struct LoginForm {
    token: String,
}

async fn login(
    State(state): State<Arc<AdminState>>,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Response {
    if auth::cross_site(&headers) {
        return error_page(StatusCode::FORBIDDEN, "cross-site login refused");
    }
    let Some(token) = &state.token else {
        return Redirect::to("/").into_response();
    };
    if !super::auth::token_matches(form.token.trim(), token) {
        tracing::info!("console login refused: wrong token");
        tokio::time::sleep(LOGIN_FAILURE_DELAY).await;
        let mut r = login_form(Some("Wrong token."));
        *r.status_mut() = StatusCode::UNAUTHORIZED;
        return r;
    }
    let Some((id, _)) = state.sessions.create() else {
        return error_page(
            StatusCode::SERVICE_UNAVAILABLE,
            "the operating system gave no random bytes for a session; check the host's entropy source and try again",
        );
    };
    (
        StatusCode::SEE_OTHER,
        [
            (header::SET_COOKIE, session::set_cookie(&id)),
            (header::LOCATION, "/".to_string()),
        ],
    )
        .into_response()
}

#[derive(Deserialize)]
struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

async fn logout(
    State(state): State<Arc<AdminState>>,
    axum::Extension(s): axum::Extension<ConsoleSession>,
    headers: HeaderMap,
    Form(form): Form<CsrfForm>,
) -> Response {
    if !csrf_ok(&s, &form.csrf) {
        return error_page(
            StatusCode::FORBIDDEN,
            "missing or wrong CSRF token; reload the page",
        );
    }
    if let Some(id) = session::cookie_value(&headers) {
        state.sessions.remove(id);
    }
    let to = if state.token.is_some() { "/login" } else { "/" };
    (
        StatusCode::SEE_OTHER,
        [
            (header::SET_COOKIE, session::clear_cookie()),
            (header::LOCATION, to.to_string()),
        ],
    )
        .into_response()
}
