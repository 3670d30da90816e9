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

mod scan;

use scan::Layout;
pub use scan::frame_len;
pub(crate) use scan::{parse_uint, trim};

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
    /// Extensions a proxy must support to handle the request (RFC 3261 §20.29).
    ProxyRequire,
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
            13 if eq("proxy-require") => HeaderName::ProxyRequire,
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
    #[error("message too large (over sip.max_message_bytes, at most {MAX_MESSAGE_BYTES} bytes)")]
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

impl Message {
    /// Parses one complete message (a UDP datagram or a framed TCP message).
    pub fn parse(buf: Bytes) -> Result<Message, ParseError> {
        Message::parse_or_return(buf).map_err(|(e, _)| e)
    }

    /// As [`Message::parse`], but an unparseable message's bytes come back
    /// with the error (to answer it with a 400). Why not clone the buffer
    /// beforehand: the first clone of a freshly received `Bytes` allocates,
    /// once per datagram, for the rare message that is bad.
    pub fn parse_or_return(buf: Bytes) -> Result<Message, (ParseError, Bytes)> {
        let layout = match Layout::scan(&buf) {
            Ok(l) => l,
            Err(e) => return Err((e, buf)),
        };
        let Layout {
            start,
            start_line,
            headers,
            headers_end,
            body,
        } = layout;
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
        match msg.check_mandatory() {
            Ok(()) => Ok(msg),
            Err(e) => Err((e, msg.buf)),
        }
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
            assert_eq!(Message::parse(Bytes::from(text.clone())).unwrap_err(), want);
            // The bytes come back with the error, to answer the sender.
            let (e, back) = Message::parse_or_return(Bytes::from(text.clone())).unwrap_err();
            assert_eq!((e, &back[..]), (want, text.as_bytes()));
        }
    }
}
