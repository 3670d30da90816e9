//! HTTP clients for the live reputation providers, one module per API
//! (docs/providers.md). Each client has typed requests and
//! answers, maps the provider's error bodies to [`SourceError`], and
//! implements [`LiveSource`](super::LiveSource) with the default score
//! mapping. Deadlines, caching, single-flight and circuit breaking are not
//! here: [`super::live`] wraps every source in them alike.

use std::time::Duration;

use bytes::{Bytes, BytesMut};

use super::SourceError;

pub mod didchecks;
pub mod gilraen;
pub mod hiya_status;

/// The largest response body read from a provider. Their answers are a few
/// hundred bytes (a bulk answer a few hundred KB); anything larger is broken
/// or hostile and is refused rather than buffered.
pub const MAX_BODY: usize = 4 << 20;

/// How long a TCP/TLS connect may take before the request fails; the request
/// as a whole is bounded by the provider's `timeout_ms`.
pub const CONNECT_TIMEOUT: Duration = Duration::from_millis(1000);

/// Reads a secret from the environment variable the config names.
pub(crate) fn secret_from_env(provider: &'static str, env: &str) -> Result<String, SourceError> {
    match std::env::var(env) {
        Ok(v) if !v.trim().is_empty() => Ok(v.trim().to_string()),
        _ => Err(SourceError::MissingCredential {
            provider,
            env: env.to_string(),
        }),
    }
}

/// A client with the provider's timeout and pooled keep-alive connections, so
/// a lookup normally costs one round trip, not a handshake.
pub(crate) fn http_client(timeout: Duration) -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(CONNECT_TIMEOUT.min(timeout))
        .pool_idle_timeout(Duration::from_secs(90))
        .user_agent(concat!("sipsentry/", env!("CARGO_PKG_VERSION")))
        .build()
        .unwrap_or_else(|_| reqwest::Client::new())
}

/// Maps a reqwest failure. The URL is dropped from the message: Gilraen's
/// carries the key and signature in its query string.
pub(crate) fn transport_error(
    provider: &'static str,
    timeout: Duration,
    e: reqwest::Error,
) -> SourceError {
    if e.is_timeout() {
        SourceError::Timeout {
            provider,
            ms: timeout.as_millis() as u64,
        }
    } else {
        let e = e.without_url();
        let mut message = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            message.push_str(": ");
            message.push_str(&s.to_string());
            source = s.source();
        }
        SourceError::Transport { provider, message }
    }
}

/// Sends a request and reads the whole body, at most [`MAX_BODY`] bytes.
pub(crate) async fn send(
    provider: &'static str,
    timeout: Duration,
    request: reqwest::RequestBuilder,
) -> Result<(u16, Bytes), SourceError> {
    let (status, _, body) = send_full(provider, timeout, request).await?;
    Ok((status, body))
}

/// [`send`], with the answer's `Retry-After` (delay-seconds form; the
/// HTTP-date form is read as absent).
pub(crate) async fn send_full(
    provider: &'static str,
    timeout: Duration,
    request: reqwest::RequestBuilder,
) -> Result<(u16, Option<Duration>, Bytes), SourceError> {
    let mut resp = request
        .send()
        .await
        .map_err(|e| transport_error(provider, timeout, e))?;
    let status = resp.status().as_u16();
    let retry_after = resp
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    let mut body = BytesMut::new();
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|e| transport_error(provider, timeout, e))?
    {
        if body.len() + chunk.len() > MAX_BODY {
            return Err(SourceError::Malformed {
                provider,
                message: format!("response body larger than {MAX_BODY} bytes"),
            });
        }
        body.extend_from_slice(&chunk);
    }
    Ok((status, retry_after, body.freeze()))
}

/// The start of a body, for error messages when it is not the documented JSON.
pub(crate) fn snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(&body[..body.len().min(200)]);
    let text = text.trim();
    if text.is_empty() {
        "(empty body)".to_string()
    } else {
        text.to_string()
    }
}

/// RFC 3986 unreserved characters stay; everything else is percent-encoded.
const RFC3986: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// RFC 3986 percent-encoding of one name, value or path segment (Gilraen's
/// signed parameters, the number in the Hiya status path).
pub fn encode(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, RFC3986).to_string()
}

/// A score from a provider's number, clamped to 0–100.
pub(crate) fn clamp_score(x: f64) -> u8 {
    if x.is_nan() {
        0
    } else {
        x.round().clamp(0.0, 100.0) as u8
    }
}
