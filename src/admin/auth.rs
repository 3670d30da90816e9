//! Who may call the API and the console, and cross-site request refusal.
//!
//! - `Authorization: Bearer <token>` (scripts): the token from
//!   `admin.token_env`, compared in constant time.
//! - The console's session cookie ([`super::session`]): a state-changing
//!   request must also carry the session's CSRF token.
//! - No token configured (loopback only): open, as the API always was; the
//!   console still gets a session, so its forms carry a CSRF token too.
//!
//! Whatever the credentials, a state-changing request whose `Origin` (or
//! `Sec-Fetch-Site`) says it comes from another site is refused.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use subtle::ConstantTimeEq;

use super::session::{self, CSRF_HEADER, Session};
use super::{AdminState, json_error};

/// Who made a request, recorded as `added_by` / `reported_by`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Actor(pub &'static str);

/// The console session of a request, for its forms' CSRF token.
#[derive(Debug, Clone)]
pub struct ConsoleSession(pub Session);

fn is_safe(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// Whether a request's `Origin` / `Sec-Fetch-Site` says another site sent
/// it. Requests without either (curl, scripts) are not cross-site.
pub fn cross_site(headers: &HeaderMap) -> bool {
    if let Some(site) = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok())
        && !matches!(site, "same-origin" | "none")
    {
        return true;
    }
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let origin_host = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"))
        .unwrap_or("\u{0}");
    !origin_host.eq_ignore_ascii_case(host)
}

/// `/api/*` (but the webhook): the bearer token, or a console session
/// (with its CSRF token on a state-changing request), when a token is
/// configured.
pub async fn require_token(
    State(state): State<Arc<AdminState>>,
    mut req: Request,
    next: Next,
) -> Response {
    let unsafe_method = !is_safe(req.method());
    if unsafe_method && cross_site(req.headers()) {
        return json_error(
            StatusCode::FORBIDDEN,
            "cross-site request refused: call the API from the console's own pages or without a browser",
        );
    }
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer);
    let actor = match (&state.token, given) {
        (None, _) => Actor("api"),
        (Some(token), Some(given)) => {
            if !token_matches(given, token) {
                let env = &state.config.admin.token_env;
                return json_error(
                    StatusCode::UNAUTHORIZED,
                    &format!("wrong bearer token (compare with ${env} where sipsentry runs)"),
                );
            }
            Actor("api")
        }
        (Some(_), None) => {
            let Some(s) =
                session::cookie_value(req.headers()).and_then(|id| state.sessions.get(id))
            else {
                let env = &state.config.admin.token_env;
                return json_error(
                    StatusCode::UNAUTHORIZED,
                    &format!(
                        "missing Authorization: Bearer <token> (the token is in ${env} where sipsentry runs) or a console login"
                    ),
                );
            };
            let echoed = req
                .headers()
                .get(CSRF_HEADER)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            if unsafe_method && !s.csrf_matches(echoed) {
                return json_error(
                    StatusCode::FORBIDDEN,
                    "missing or wrong X-CSRF-Token for a request made with the console's session",
                );
            }
            Actor("console")
        }
    };
    req.extensions_mut().insert(actor);
    next.run(req).await
}

/// The console's pages: a session, or the login form. Without a token
/// configured a session is made on the first visit (its forms still need a
/// CSRF token).
pub async fn require_session(
    State(state): State<Arc<AdminState>>,
    mut req: Request,
    next: Next,
) -> Response {
    if !is_safe(req.method()) && cross_site(req.headers()) {
        return (StatusCode::FORBIDDEN, "cross-site request refused\n").into_response();
    }
    if let Some(s) = session::cookie_value(req.headers()).and_then(|id| state.sessions.get(id)) {
        req.extensions_mut().insert(ConsoleSession(s));
        req.extensions_mut().insert(Actor("console"));
        return next.run(req).await;
    }
    if state.token.is_some() {
        return if is_safe(req.method()) {
            Redirect::to("/login").into_response()
        } else {
            (StatusCode::UNAUTHORIZED, "log in first\n").into_response()
        };
    }
    if !is_safe(req.method()) {
        // No session, so no CSRF token this request could have echoed.
        return (
            StatusCode::FORBIDDEN,
            "missing CSRF token; reload the page\n",
        )
            .into_response();
    }
    let Some((id, s)) = state.sessions.create() else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "the operating system gave no random bytes for a session; check the host's entropy source and try again\n",
        )
            .into_response();
    };
    req.extensions_mut().insert(ConsoleSession(s));
    req.extensions_mut().insert(Actor("console"));
    let mut resp = next.run(req).await;
    if let Ok(v) = session::set_cookie(&id).parse() {
        resp.headers_mut().append(header::SET_COOKIE, v);
    }
    resp
}

/// The credentials of an `Authorization: Bearer …` value; the scheme is
/// case-insensitive (RFC 6750 §2.1, RFC 9110 §11.1).
pub(super) fn bearer(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim_start())
}

/// Whether `given` is the token, in time that depends on neither: both are
/// hashed first, so even their lengths are compared as fixed-size digests.
pub(super) fn token_matches(given: &str, token: &str) -> bool {
    use sha2::{Digest, Sha256};
    let (a, b) = (Sha256::digest(given), Sha256::digest(token));
    bool::from(a.as_slice().ct_eq(b.as_slice()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bearer_scheme_is_case_insensitive_and_the_token_is_not() {
        for v in [
            "Bearer s3cret",
            "bearer s3cret",
            "BEARER  s3cret",
            " Bearer s3cret ",
        ] {
            assert_eq!(bearer(v), Some("s3cret"), "{v:?}");
        }
        assert_eq!(bearer("Basic s3cret"), None);
        assert_eq!(bearer("Bearers3cret"), None);
        assert!(token_matches("s3cret", "s3cret"));
        assert!(!token_matches("S3CRET", "s3cret"));
        assert!(!token_matches("s3cre", "s3cret"));
        assert!(!token_matches("", "s3cret"));
    }

    #[test]
    fn a_foreign_origin_or_fetch_site_is_cross_site() {
        let h = |pairs: &[(&'static str, &'static str)]| {
            let mut m = HeaderMap::new();
            for (k, v) in pairs {
                m.insert(*k, v.parse().unwrap());
            }
            m
        };
        assert!(!cross_site(&h(&[("host", "127.0.0.1:9090")])));
        assert!(!cross_site(&h(&[
            ("host", "127.0.0.1:9090"),
            ("origin", "http://127.0.0.1:9090")
        ])));
        assert!(cross_site(&h(&[
            ("host", "127.0.0.1:9090"),
            ("origin", "http://evil.example")
        ])));
        assert!(cross_site(&h(&[("host", "a"), ("origin", "null")])));
        assert!(cross_site(&h(&[("sec-fetch-site", "cross-site")])));
        assert!(!cross_site(&h(&[("sec-fetch-site", "same-origin")])));
    }
}
