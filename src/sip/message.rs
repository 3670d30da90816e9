//! Framing and a lazy header view over the received bytes.
//!
//! A parsed [`Message`] keeps the datagram (or TCP frame) as [`Bytes`] and only
//! records *where* things are: the start line, each header line and its value,
//! the body. Nothing is copied or re-serialised, which is what makes
//! byte-faithful relay cheap: the relay splices a handful of edits into these
//! bytes (see [`super::splice`]). Header values are decoded on demand by
//! [`super::header`].
//!
//! Accepted as real peers send it: compact names (`v f t i l m k s c e o r u x`),
//! any case, folded continuation lines, bare LF line ends, CRLFs before the
//! start line (RFC 3261 §7.5). Refused with a reason (400 to the sender): bad
//! start line, unknown SIP version (505), header lines without a colon,
//! missing mandatory headers, bad or conflicting Content-Length, a body shorter
//! than Content-Length.

use std::ops::Range;

use bytes::Bytes;

/// Largest message we accept; anything bigger is refused (UDP) or the TCP
/// connection closed. Bounded memory per connection.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;
/// More header lines than this is an attack, not a call.
pub const MAX_HEADERS: usize = 256;

/// A SIP request method. Unknown extension methods are kept as `Other`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Method {
    Invite,
    Ack,
    Cancel,
    Bye,
    Options,
    Register,
    Other,
}

impl Method {
    pub fn from_bytes(b: &[u8]) -> Method {
        match b {
            b"INVITE" => Method::Invite,
            b"ACK" => Method::Ack,
            b"CANCEL" => Method::Cancel,
            b"BYE" => Method::Bye,
            b"OPTIONS" => Method::Options,
            b"REGISTER" => Method::Register,
            _ => Method::Other,
        }
    }
}

/// Headers the proxy acts on. Everything else is `Other` and relayed untouched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum HeaderName {
    Via,
    From,
    To,
    CallId,
    CSeq,
    MaxForwards,
    ContentLength,
    Contact,
    Route,
    RecordRoute,
    PAssertedIdentity,
    RemotePartyId,
    Privacy,
    Identity,
    CallInfo,
    /// `X-Sipsentry-*`: our own labels, stripped when they come from outside.
    XSipsentry,
    Other,
}

impl HeaderName {
    /// Case-insensitive lookup including the RFC 3261 §7.3.3 compact forms.
    pub fn from_bytes(name: &[u8]) -> HeaderName {
        if name.len() == 1 {
            return match name[0].to_ascii_lowercase() {
                b'v' => HeaderName::Via,
                b'f' => HeaderName::From,
                b't' => HeaderName::To,
                b'i' => HeaderName::CallId,
                b'l' => HeaderName::ContentLength,
                b'm' => HeaderName::Contact,
                b'y' => HeaderName::Identity,
                _ => HeaderName::Other,
            };
        }
        let eq = |s: &str| name.eq_ignore_ascii_case(s.as_bytes());
        match name.len() {
            3 if eq("via") => HeaderName::Via,
            4 if eq("from") => HeaderName::From,
            2 if eq("to") => HeaderName::To,
            7 if eq("call-id") => HeaderName::CallId,
            4 if eq("cseq") => HeaderName::CSeq,
            12 if eq("max-forwards") => HeaderName::MaxForwards,
            14 if eq("content-length") => HeaderName::ContentLength,
            7 if eq("contact") => HeaderName::Contact,
            5 if eq("route") => HeaderName::Route,
            12 if eq("record-route") => HeaderName::RecordRoute,
            19 if eq("p-asserted-identity") => HeaderName::PAssertedIdentity,
            15 if eq("remote-party-id") => HeaderName::RemotePartyId,
            7 if eq("privacy") => HeaderName::Privacy,
            8 if eq("identity") => HeaderName::Identity,
            9 if eq("call-info") => HeaderName::CallInfo,
            n if n > 12 && name[..12].eq_ignore_ascii_case(b"x-sipsentry-") => {
                HeaderName::XSipsentry
            }
            _ => HeaderName::Other,
        }
    }
}

/// One header line: where the whole line is (including its line end and any
/// folded continuation lines) and where its value is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderLine {
    pub name: HeaderName,
    pub line: Range<usize>,
    pub value: Range<usize>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartLine {
    Request {
        method: Method,
        method_text: Range<usize>,
        uri: Range<usize>,
    },
    Response {
        code: u16,
    },
}

/// A parse failure, with the status code to answer it with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParseError {
    #[error("message larger than {MAX_MESSAGE_BYTES} bytes")]
    TooLarge,
    #[error("incomplete message: no blank line after the headers")]
    Incomplete,
    #[error("bad start line")]
    StartLine,
    #[error("unsupported SIP version")]
    Version,
    #[error("header line without a colon")]
    HeaderLine,
    #[error("too many header lines")]
    TooManyHeaders,
    #[error("missing mandatory header {0}")]
    Missing(&'static str),
    #[error("bad Content-Length")]
    ContentLength,
    #[error("body shorter than Content-Length")]
    ShortBody,
    #[error("bad CSeq")]
    CSeq,
    #[error("CSeq method does not match the request method")]
    CSeqMethod,
    #[error("bad Max-Forwards")]
    MaxForwards,
}

impl ParseError {
    /// The response a request that failed this way gets (RFC 3261 §8.2, §21).
    pub fn status(&self) -> u16 {
        match self {
            ParseError::Version => 505,
            ParseError::TooLarge => 513,
            _ => 400,
        }
    }
}

/// A parsed SIP message over its own bytes.
#[derive(Debug, Clone)]
pub struct Message {
    pub buf: Bytes,
    pub start: StartLine,
    /// The start line, including its line end.
    pub start_line: Range<usize>,
    pub headers: Vec<HeaderLine>,
    /// Offset of the blank line that ends the headers.
    pub headers_end: usize,
    pub body: Range<usize>,
    /// The CSeq number (parsed because every transaction needs it).
    pub cseq: u32,
    pub cseq_method: Method,
}

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

impl Message {
    /// Parses one complete message (a UDP datagram or a framed TCP message).
    pub fn parse(buf: Bytes) -> Result<Message, ParseError> {
        if buf.len() > MAX_MESSAGE_BYTES {
            return Err(ParseError::TooLarge);
        }
        let b = &buf[..];
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
        let body = pos..pos + body_len;
        // Bytes after the body (RFC 4475 "dblreq") are not part of this
        // message and must not be relayed with it.
        let buf = if body.end < buf.len() {
            buf.slice(..body.end)
        } else {
            buf
        };

        let mut msg = Message {
            buf,
            start,
            start_line,
            headers,
            headers_end,
            body,
            cseq: 0,
            cseq_method: Method::Other,
        };
        msg.check_mandatory()?;
        Ok(msg)
    }

    fn check_mandatory(&mut self) -> Result<(), ParseError> {
        for (name, label) in [
            (HeaderName::Via, "Via"),
            (HeaderName::From, "From"),
            (HeaderName::To, "To"),
            (HeaderName::CallId, "Call-ID"),
            (HeaderName::CSeq, "CSeq"),
        ] {
            if self.header(name).is_none_or(|v| v.is_empty()) {
                return Err(ParseError::Missing(label));
            }
        }
        let (num, method) = {
            let cseq = self.header(HeaderName::CSeq).unwrap_or_default();
            let mut parts = cseq
                .split(|c: &u8| c.is_ascii_whitespace())
                .filter(|p| !p.is_empty());
            let num = parts.next().and_then(parse_uint).ok_or(ParseError::CSeq)?;
            let method_bytes = parts.next().ok_or(ParseError::CSeq)?;
            if num >= 1 << 31 || parts.next().is_some() {
                return Err(ParseError::CSeq);
            }
            if let StartLine::Request { method_text, .. } = &self.start
                && &self.buf[method_text.clone()] != method_bytes
            {
                return Err(ParseError::CSeqMethod);
            }
            (num as u32, Method::from_bytes(method_bytes))
        };
        self.cseq = num;
        self.cseq_method = method;
        if let StartLine::Request { .. } = &self.start
            && let Some(mf) = self.header(HeaderName::MaxForwards)
        {
            parse_uint(mf)
                .filter(|&n| n <= 255)
                .ok_or(ParseError::MaxForwards)?;
        }
        Ok(())
    }

    /// The request method, or `None` for a response.
    pub fn method(&self) -> Option<Method> {
        match self.start {
            StartLine::Request { method, .. } => Some(method),
            StartLine::Response { .. } => None,
        }
    }

    pub fn status(&self) -> Option<u16> {
        match self.start {
            StartLine::Response { code } => Some(code),
            StartLine::Request { .. } => None,
        }
    }

    pub fn method_text(&self) -> &[u8] {
        match &self.start {
            StartLine::Request { method_text, .. } => &self.buf[method_text.clone()],
            StartLine::Response { .. } => b"",
        }
    }

    /// The Request-URI's bytes (empty for a response).
    pub fn request_uri(&self) -> &[u8] {
        match &self.start {
            StartLine::Request { uri, .. } => &self.buf[uri.clone()],
            StartLine::Response { .. } => b"",
        }
    }

    pub fn request_uri_range(&self) -> Option<Range<usize>> {
        match &self.start {
            StartLine::Request { uri, .. } => Some(uri.clone()),
            StartLine::Response { .. } => None,
        }
    }

    /// The first header of this name's value, trimmed (may contain folds).
    pub fn header(&self, name: HeaderName) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|h| h.name == name)
            .map(|h| &self.buf[h.value.clone()])
    }

    pub fn headers_named(&self, name: HeaderName) -> impl Iterator<Item = &HeaderLine> {
        self.headers.iter().filter(move |h| h.name == name)
    }

    pub fn value(&self, h: &HeaderLine) -> &[u8] {
        &self.buf[h.value.clone()]
    }

    pub fn call_id(&self) -> &[u8] {
        self.header(HeaderName::CallId).unwrap_or_default()
    }

    pub fn max_forwards(&self) -> Option<usize> {
        self.header(HeaderName::MaxForwards).and_then(parse_uint)
    }

    pub fn body(&self) -> &[u8] {
        &self.buf[self.body.clone()]
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

#[cfg(test)]
mod tests {
    use super::*;

    const INVITE: &str = "INVITE sip:+15551234567@pbx.example SIP/2.0\r\n\
v: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK776asdhds\r\n\
Max-Forwards: 70\r\n\
t: <sip:+15551234567@pbx.example>\r\n\
f: \"Alice\" <sip:+15557654321@carrier.example;user=phone>;tag=1928301774\r\n\
i: a84b4c76e66710@pc33.example\r\n\
CSeq: 314159 INVITE\r\n\
Subject: folded\r\n  continues here\r\n\
l: 4\r\n\
\r\n\
v=0\n";

    #[test]
    fn compact_forms_and_folding_parse() {
        let m = Message::parse(Bytes::from_static(INVITE.as_bytes())).unwrap();
        assert_eq!(m.method(), Some(Method::Invite));
        assert_eq!(m.request_uri(), b"sip:+15551234567@pbx.example");
        assert_eq!(m.call_id(), b"a84b4c76e66710@pc33.example");
        assert_eq!(m.cseq, 314159);
        assert_eq!(m.body(), b"v=0\n");
        let subject = m
            .headers
            .iter()
            .find(|h| m.buf[h.line.clone()].starts_with(b"Subject"))
            .unwrap();
        assert_eq!(m.value(subject), b"folded\r\n  continues here");
    }

    #[test]
    fn frame_len_uses_content_length() {
        let mut two = INVITE.as_bytes().to_vec();
        two.extend_from_slice(INVITE.as_bytes());
        let n = frame_len(&two).unwrap().unwrap();
        assert_eq!(n, INVITE.len());
        assert_eq!(frame_len(&two[..INVITE.len() - 2]).unwrap(), None);
    }

    #[test]
    fn bad_messages_have_reasons() {
        let cases = [
            (
                INVITE.replace("SIP/2.0\r\nv:", "SIP/7.0\r\nv:"),
                ParseError::Version,
            ),
            (
                INVITE.replace("CSeq: 314159 INVITE", "CSeq: 314159 ACK"),
                ParseError::CSeqMethod,
            ),
            (INVITE.replace("l: 4", "l: 40"), ParseError::ShortBody),
            (
                INVITE.replace("i: a84b4c76e66710@pc33.example\r\n", ""),
                ParseError::Missing("Call-ID"),
            ),
            (
                INVITE.replace("Max-Forwards: 70", "Max-Forwards: 70000"),
                ParseError::MaxForwards,
            ),
        ];
        for (text, want) in cases {
            assert_eq!(Message::parse(Bytes::from(text)).unwrap_err(), want);
        }
    }
}
