//! Scanning the received bytes: where the start line, each header line and
//! the body are, and (for stream transports) where a message ends. Nothing
//! here copies the message; [`super::Message`] keeps the ranges.

use std::ops::Range;

use super::{
    HeaderLine, HeaderName, MAX_HEADERS, MAX_MESSAGE_BYTES, Method, ParseError, StartLine,
};

/// Finds the end of the line starting at `from`: (end of content, start of next line).
fn line_end(buf: &[u8], from: usize) -> Option<(usize, usize)> {
    let nl = memchr(b'\n', &buf[from..])? + from;
    let end = if nl > from && buf[nl - 1] == b'\r' {
        nl - 1
    } else {
        nl
    };
    Some((end, nl + 1))
}

fn memchr(needle: u8, hay: &[u8]) -> Option<usize> {
    memchr::memchr(needle, hay)
}

fn is_token(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(&b)
}

pub(crate) fn trim(buf: &[u8], mut r: Range<usize>) -> Range<usize> {
    while r.start < r.end && matches!(buf[r.start], b' ' | b'\t' | b'\r' | b'\n') {
        r.start += 1;
    }
    while r.end > r.start && matches!(buf[r.end - 1], b' ' | b'\t' | b'\r' | b'\n') {
        r.end -= 1;
    }
    r
}

/// For stream transports: how long the message at the start of `buf` is, once
/// its headers are complete. `Ok(None)` means "read more". Leading CRLFs
/// (keep-alives) are part of the returned length.
pub fn frame_len(buf: &[u8]) -> Result<Option<usize>, ParseError> {
    let lead = buf
        .iter()
        .take_while(|&&b| b == b'\r' || b == b'\n')
        .count();
    let rest = &buf[lead..];
    let Some(end) = find_headers_end(rest) else {
        return if rest.len() > MAX_MESSAGE_BYTES {
            Err(ParseError::TooLarge)
        } else {
            Ok(None)
        };
    };
    let mut content_length = 0usize;
    let mut pos = line_end(rest, 0).map(|(_, n)| n).unwrap_or(end);
    while pos < end {
        let (le, next) = line_end(rest, pos).unwrap_or((end, end));
        let line = &rest[pos..le];
        if let Some(colon) = memchr(b':', line) {
            let name = trim_bytes(&line[..colon]);
            if HeaderName::from_bytes(name) == HeaderName::ContentLength {
                content_length =
                    parse_uint(trim_bytes(&line[colon + 1..])).ok_or(ParseError::ContentLength)?;
            }
        }
        pos = next;
    }
    let total = lead + end + content_length;
    if total > MAX_MESSAGE_BYTES {
        return Err(ParseError::TooLarge);
    }
    Ok(if buf.len() >= total {
        Some(total)
    } else {
        None
    })
}

/// Index just past the blank line ending the headers (CRLFCRLF or LFLF).
fn find_headers_end(buf: &[u8]) -> Option<usize> {
    let mut i = 0;
    while let Some(nl) = memchr(b'\n', &buf[i..]) {
        let p = i + nl + 1;
        if buf.get(p) == Some(&b'\n') {
            return Some(p + 1);
        }
        if buf.get(p) == Some(&b'\r') && buf.get(p + 1) == Some(&b'\n') {
            return Some(p + 2);
        }
        i = p;
    }
    None
}

fn trim_bytes(b: &[u8]) -> &[u8] {
    let s = b
        .iter()
        .position(|c| !c.is_ascii_whitespace())
        .unwrap_or(b.len());
    let e = b
        .iter()
        .rposition(|c| !c.is_ascii_whitespace())
        .map_or(s, |e| e + 1);
    &b[s..e]
}

pub(crate) fn parse_uint(b: &[u8]) -> Option<usize> {
    if b.is_empty() || b.len() > 9 || !b.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(b.iter().fold(0usize, |n, d| n * 10 + (d - b'0') as usize))
}

/// Where the parts of a message are, before it is checked for the headers
/// every message needs.
pub(super) struct Layout {
    pub(super) start: StartLine,
    pub(super) start_line: Range<usize>,
    pub(super) headers: Vec<HeaderLine>,
    pub(super) headers_end: usize,
    pub(super) body: Range<usize>,
}

impl Layout {
    pub(super) fn scan(b: &[u8]) -> Result<Layout, ParseError> {
        if b.len() > MAX_MESSAGE_BYTES {
            return Err(ParseError::TooLarge);
        }
        let lead = b.iter().take_while(|&&c| c == b'\r' || c == b'\n').count();
        let (sl_end, mut pos) = line_end(b, lead).ok_or(ParseError::Incomplete)?;
        let start = parse_start_line(b, lead..sl_end)?;
        let start_line = lead..pos;

        let mut headers: Vec<HeaderLine> = Vec::with_capacity(24);
        let mut headers_end = None;
        while pos < b.len() {
            let (le, next) = line_end(b, pos).ok_or(ParseError::Incomplete)?;
            if le == pos {
                headers_end = Some(pos);
                pos = next;
                break;
            }
            if matches!(b[pos], b' ' | b'\t') {
                // Folded continuation of the previous header (RFC 3261 §7.3.1).
                let last = headers.last_mut().ok_or(ParseError::HeaderLine)?;
                last.line.end = next;
                last.value.end = le;
                pos = next;
                continue;
            }
            let colon = memchr(b':', &b[pos..le]).ok_or(ParseError::HeaderLine)? + pos;
            let name_bytes = trim_bytes(&b[pos..colon]);
            if name_bytes.is_empty() || !name_bytes.iter().all(|&c| is_token(c)) {
                return Err(ParseError::HeaderLine);
            }
            if headers.len() == MAX_HEADERS {
                return Err(ParseError::TooManyHeaders);
            }
            headers.push(HeaderLine {
                name: HeaderName::from_bytes(name_bytes),
                line: pos..next,
                value: colon + 1..le,
            });
            pos = next;
        }
        let headers_end = headers_end.ok_or(ParseError::Incomplete)?;
        for h in &mut headers {
            h.value = trim(b, h.value.clone());
        }

        let mut content_length: Option<usize> = None;
        for h in headers
            .iter()
            .filter(|h| h.name == HeaderName::ContentLength)
        {
            let n = parse_uint(&b[h.value.clone()]).ok_or(ParseError::ContentLength)?;
            if content_length.is_some_and(|c| c != n) {
                return Err(ParseError::ContentLength);
            }
            content_length = Some(n);
        }
        let available = b.len() - pos;
        // Over UDP a missing Content-Length means "the rest of the datagram"
        // (RFC 3261 §18.3); stream framing already cut the buffer to size.
        let body_len = content_length.unwrap_or(available);
        if body_len > available {
            return Err(ParseError::ShortBody);
        }
        Ok(Layout {
            start,
            start_line,
            headers,
            headers_end,
            body: pos..pos + body_len,
        })
    }
}

fn parse_start_line(b: &[u8], r: Range<usize>) -> Result<StartLine, ParseError> {
    let line = &b[r.clone()];
    if line.len() >= 8 && line[..4].eq_ignore_ascii_case(b"SIP/") {
        // Status-Line = SIP-Version SP Status-Code SP Reason-Phrase
        let sp = memchr(b' ', line).ok_or(ParseError::StartLine)?;
        if !line[..sp].eq_ignore_ascii_case(b"SIP/2.0") {
            return Err(ParseError::Version);
        }
        let code_bytes = line.get(sp + 1..sp + 4).ok_or(ParseError::StartLine)?;
        let code = parse_uint(code_bytes)
            .filter(|c| (100..700).contains(c))
            .ok_or(ParseError::StartLine)?;
        if line.get(sp + 4).is_some_and(|&c| c != b' ') {
            return Err(ParseError::StartLine);
        }
        return Ok(StartLine::Response { code: code as u16 });
    }
    // Request-Line = Method SP Request-URI SP SIP-Version: exactly two single spaces.
    let sp1 = memchr(b' ', line).ok_or(ParseError::StartLine)?;
    let sp2 = sp1 + 1 + memchr(b' ', &line[sp1 + 1..]).ok_or(ParseError::StartLine)?;
    let method = &line[..sp1];
    let uri = &line[sp1 + 1..sp2];
    let version = &line[sp2 + 1..];
    if method.is_empty() || !method.iter().all(|&c| is_token(c)) || uri.is_empty() {
        return Err(ParseError::StartLine);
    }
    if uri.iter().any(|&c| c <= b' ' || c == 0x7f) || !valid_scheme(uri) {
        return Err(ParseError::StartLine);
    }
    if !version.eq_ignore_ascii_case(b"SIP/2.0") {
        let well_formed = version.len() > 4 && !version.iter().any(u8::is_ascii_whitespace);
        return if well_formed && version[..4].eq_ignore_ascii_case(b"SIP/") {
            Err(ParseError::Version)
        } else {
            Err(ParseError::StartLine)
        };
    }
    Ok(StartLine::Request {
        method: Method::from_bytes(method),
        method_text: r.start..r.start + sp1,
        uri: r.start + sp1 + 1..r.start + sp2,
    })
}

/// A Request-URI starts with `scheme ":"` (RFC 3986 §3.1), and a SIP URI
/// there carries no `?headers` after its host (RFC 3261 §19.1.5; RFC 4475
/// "escruri"). A `?` in the user part is legal (RFC 4475 "intmeth").
fn valid_scheme(uri: &[u8]) -> bool {
    let Some(colon) = memchr(b':', uri) else {
        return false;
    };
    let scheme = &uri[..colon];
    let ok = scheme.first().is_some_and(u8::is_ascii_alphabetic)
        && scheme
            .iter()
            .all(|&c| c.is_ascii_alphanumeric() || b"+-.".contains(&c));
    let sip = scheme.eq_ignore_ascii_case(b"sip") || scheme.eq_ignore_ascii_case(b"sips");
    let host_part = uri
        .iter()
        .rposition(|&c| c == b'@')
        .map_or(&uri[colon..], |at| &uri[at..]);
    ok && !(sip && memchr(b'?', host_part).is_some())
}
