//! Console sessions: the admin token is typed once into the login form, and
//! the browser holds a random session id in an `HttpOnly`, `SameSite=Strict`
//! cookie instead. Each session has its own CSRF token, which every
//! state-changing request made with the cookie must echo (a form field or
//! the `X-CSRF-Token` header): a page on another site can make the browser
//! send the cookie, but cannot read the token.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use subtle::ConstantTimeEq;

/// The session cookie's name.
pub const COOKIE: &str = "sipsentry_session";

/// How long a session lasts from login.
pub const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);

/// Sessions kept at most; the oldest goes first beyond this.
pub const MAX_SESSIONS: usize = 1024;

/// The header a script sends its CSRF token in.
pub const CSRF_HEADER: &str = "x-csrf-token";

#[derive(Debug, Clone)]
pub struct Session {
    pub csrf: String,
    created: Instant,
}

/// The live sessions, keyed by the SHA-256 of their id (the id itself is
/// never kept, so a memory dump does not hand out sessions).
#[derive(Debug, Default)]
pub struct Sessions {
    map: Mutex<HashMap<[u8; 32], Session>>,
}

/// 32 random bytes from the operating system, as hex; `None` if it has
/// none to give (then no session is made rather than a guessable one).
fn random_hex() -> Option<String> {
    let mut b = [0u8; 32];
    getrandom::fill(&mut b).ok()?;
    Some(hex::encode(b))
}

fn digest(id: &str) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    Sha256::digest(id.as_bytes()).into()
}

impl Sessions {
    /// A new session: its id (for the cookie) and CSRF token.
    pub fn create(&self) -> Option<(String, Session)> {
        let id = random_hex()?;
        let session = Session {
            csrf: random_hex()?,
            created: Instant::now(),
        };
        let mut map = self.map.lock();
        map.retain(|_, s| s.created.elapsed() < SESSION_TTL);
        if map.len() >= MAX_SESSIONS
            && let Some(oldest) = map.iter().min_by_key(|(_, s)| s.created).map(|(k, _)| *k)
        {
            map.remove(&oldest);
        }
        map.insert(digest(&id), session.clone());
        Some((id, session))
    }

    /// The session of a cookie value, if it is live.
    pub fn get(&self, id: &str) -> Option<Session> {
        let map = self.map.lock();
        map.get(&digest(id))
            .filter(|s| s.created.elapsed() < SESSION_TTL)
            .cloned()
    }

    pub fn remove(&self, id: &str) {
        self.map.lock().remove(&digest(id));
    }
}

impl Session {
    /// Whether `given` is this session's CSRF token (constant time).
    pub fn csrf_matches(&self, given: &str) -> bool {
        given.len() == self.csrf.len() && bool::from(given.as_bytes().ct_eq(self.csrf.as_bytes()))
    }
}

/// The `Set-Cookie` value that starts a session.
pub fn set_cookie(id: &str) -> String {
    format!(
        "{COOKIE}={id}; HttpOnly; SameSite=Strict; Path=/; Max-Age={}",
        SESSION_TTL.as_secs()
    )
}

/// The `Set-Cookie` value that ends one.
pub fn clear_cookie() -> String {
    format!("{COOKIE}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0")
}

/// The session id in a request's `Cookie` headers.
pub fn cookie_value(headers: &axum::http::HeaderMap) -> Option<&str> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_is_found_by_its_id_only_and_ends_on_removal() {
        let s = Sessions::default();
        let (id, session) = s.create().unwrap();
        assert_eq!(id.len(), 64);
        assert!(s.get(&id).unwrap().csrf_matches(&session.csrf));
        assert!(!session.csrf_matches("x"));
        assert!(s.get("nope").is_none());
        s.remove(&id);
        assert!(s.get(&id).is_none());
    }

    #[test]
    fn the_cookie_is_read_among_others() {
        let mut h = axum::http::HeaderMap::new();
        h.insert(
            axum::http::header::COOKIE,
            "a=1; sipsentry_session=abc; b=2".parse().unwrap(),
        );
        assert_eq!(cookie_value(&h), Some("abc"));
    }
}
