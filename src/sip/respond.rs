//! Responses the proxy generates itself (RFC 3261 §8.2.6): 100 Trying, 200 to
//! OPTIONS and CANCEL, errors (400, 403, 482, 483, 503), rejects (603+, 607,
//! 608, 486, 480), 302 redirects and 487 after a CANCEL.

use bytes::{BufMut, Bytes, BytesMut};

use super::header::{self, NameAddr};
use super::message::{HeaderLine, HeaderName, Message};

/// RFC reason phrases for the codes the proxy sends.
pub fn reason(code: u16) -> &'static str {
    match code {
        100 => "Trying",
        200 => "OK",
        302 => "Moved Temporarily",
        400 => "Bad Request",
        403 => "Forbidden",
        408 => "Request Timeout",
        480 => "Temporarily Unavailable",
        481 => "Call/Transaction Does Not Exist",
        482 => "Loop Detected",
        483 => "Too Many Hops",
        486 => "Busy Here",
        487 => "Request Terminated",
        503 => "Service Unavailable",
        505 => "Version Not Supported",
        513 => "Message Too Large",
        // ATIS-1000099 "603+": a 603 whose Reason says analytics blocked it.
        603 => "Network Blocked",
        607 => "Unwanted",
        608 => "Rejected",
        _ => "Unknown",
    }
}

/// Builds a response to `req`: its Via, From, Call-ID and CSeq copied byte for
/// byte, To with `to_tag` added when it has none (every final response needs
/// one), then `extra` header lines (each without line end), no body.
pub fn build(req: &Message, code: u16, to_tag: Option<&str>, extra: &[String]) -> Bytes {
    build_with_body(req, code, to_tag, extra, None)
}

/// [`build`] with a body: `(content type, bytes)`.
pub fn build_with_body(
    req: &Message,
    code: u16,
    to_tag: Option<&str>,
    extra: &[String],
    body: Option<(&str, &[u8])>,
) -> Bytes {
    let mut out = BytesMut::with_capacity(req.headers_end + 128 + body.map_or(0, |b| b.1.len()));
    // Written piece by piece rather than with `format!`: the 100 Trying
    // goes out for every INVITE, and a formatted line is one more allocation.
    let mut digits = itoa::Buffer::new();
    out.put_slice(b"SIP/2.0 ");
    out.put_slice(digits.format(code).as_bytes());
    out.put_u8(b' ');
    out.put_slice(reason(code).as_bytes());
    out.put_slice(b"\r\n");
    for h in &req.headers {
        match h.name {
            HeaderName::Via | HeaderName::From | HeaderName::CallId | HeaderName::CSeq => {
                copy_line(&mut out, req, h);
            }
            HeaderName::To => {
                let value = req.value(h);
                out.put_slice(b"To: ");
                out.put_slice(value);
                let has_tag = header::text(value)
                    .as_deref()
                    .and_then(NameAddr::parse)
                    .is_some_and(|n| n.tag().is_some());
                if let (false, Some(tag), true) = (has_tag, to_tag, code > 100) {
                    out.put_slice(b";tag=");
                    out.put_slice(tag.as_bytes());
                }
                out.put_slice(b"\r\n");
            }
            _ => {}
        }
    }
    for line in extra {
        out.put_slice(line.as_bytes());
        out.put_slice(b"\r\n");
    }
    match body {
        Some((content_type, bytes)) => {
            out.put_slice(b"Content-Type: ");
            out.put_slice(content_type.as_bytes());
            out.put_slice(b"\r\nContent-Length: ");
            out.put_slice(digits.format(bytes.len()).as_bytes());
            out.put_slice(b"\r\n\r\n");
            out.put_slice(bytes);
        }
        None => out.put_slice(b"Content-Length: 0\r\n\r\n"),
    }
    out.freeze()
}

/// Copies header line `h` of `msg` as received (folds included), ending it
/// with CRLF if it was the last line without one.
pub(crate) fn copy_line(out: &mut BytesMut, msg: &Message, h: &HeaderLine) {
    let line = &msg.buf[h.line.clone()];
    out.put_slice(line);
    if !line.ends_with(b"\n") {
        out.put_slice(b"\r\n");
    }
}

/// A stateless response to a request that could not be fully parsed. Needs at
/// least the Via (to be routed) and CSeq (to be matched); From, To and Call-ID
/// are copied when present (RFC 4475 "insuf" still expects a 400).
pub fn build_minimal(raw: &[u8], code: u16) -> Option<Bytes> {
    let text = std::str::from_utf8(raw).ok()?;
    let mut lines = Vec::new();
    let mut have = [false; 5];
    for line in text.split("\r\n").skip(1) {
        if line.is_empty() {
            break;
        }
        let name = line.split(':').next()?.trim();
        let idx = match HeaderName::from_bytes(name.as_bytes()) {
            HeaderName::Via => 0,
            HeaderName::From => 1,
            HeaderName::To => 2,
            HeaderName::CallId => 3,
            HeaderName::CSeq => 4,
            _ => continue,
        };
        have[idx] = true;
        lines.push(line);
    }
    if !(have[0] && have[4]) {
        return None;
    }
    let mut out = format!("SIP/2.0 {code} {}\r\n", reason(code));
    for l in lines {
        out.push_str(l);
        out.push_str("\r\n");
    }
    out.push_str("Content-Length: 0\r\n\r\n");
    Some(Bytes::from(out))
}
