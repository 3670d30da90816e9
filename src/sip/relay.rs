//! Building relayed messages by splicing edits into the received bytes.
//!
//! What a relayed request may differ by (docs/sip.md): the proxy's Via on top
//! (and `received`/`rport` on the sender's Via, which RFC 3261 §18.2.1 and RFC
//! 3581 require), Max-Forwards decremented or added, the Request-URI of a
//! retargeted call, the proxy's own Route entry removed (loose routing), an
//! optional Record-Route, stripped untrusted labels, and the labels of a tag.
//! A relayed response differs only by the proxy's Via being gone.

use std::net::SocketAddr;
use std::ops::Range;

use bytes::Bytes;

use super::header::{self, NameAddr, Via};
use super::message::{HeaderName, Message};
use super::splice::Splice;

/// Max-Forwards added to a request that has none (RFC 3261 §16.6 step 3).
pub const DEFAULT_MAX_FORWARDS: usize = 70;
/// The header line added when a request has no Max-Forwards.
const ADDED_MAX_FORWARDS: &[u8] = b"Max-Forwards: 70\r\n";

/// The edits to make to a request being forwarded.
pub struct RequestEdit<'a> {
    /// The proxy's Via line, with line end.
    pub via_line: &'a [u8],
    /// Where the request came from (for `received`/`rport`).
    pub source: SocketAddr,
    /// A new Request-URI (retarget, strict-route fix-up).
    pub new_ruri: Option<&'a str>,
    /// A Record-Route line to add, with line end.
    pub record_route: Option<&'a str>,
    /// Remove label headers: the sender is not a trusted peer.
    pub strip_labels: bool,
    /// The proxy's own Route elements to remove (absolute byte ranges): one,
    /// or two where it record-routed a change of transport (RFC 5658).
    pub own_route: &'a [Range<usize>],
    /// Labels to write (a tagged call).
    pub labels: Option<LabelEdit<'a>>,
    /// The `verstat` to put in the user part of the caller's identity
    /// (P-Asserted-Identity from a trusted sender, else From), replacing any
    /// there. Whatever it is, a `verstat` from a sender that is not trusted
    /// (`strip_labels`) is removed.
    pub verstat: Option<&'a str>,
}

/// The labels of a tagged call, as spliced in.
#[derive(Debug, Clone, Copy)]
pub struct LabelEdit<'a> {
    /// Whole header lines, each ending in CRLF, added at the end of the
    /// header section.
    pub lines: &'a [u8],
    /// Put before the display name of From and P-Asserted-Identity (empty:
    /// leave them alone).
    pub display_prefix: &'a str,
}

/// A request as relayed, with its top Via line (the proxy's own) replaced
/// by `via_line`: the same INVITE for the next target, under a new
/// branch. `None` when the bytes do not parse (they were built here).
pub fn replace_top_via(sent: &Bytes, via_line: &[u8]) -> Option<Bytes> {
    let msg = Message::parse(sent.clone()).ok()?;
    let line = msg.headers_named(HeaderName::Via).next()?.line.clone();
    let mut out = Vec::with_capacity(sent.len() + via_line.len());
    out.extend_from_slice(&sent[..line.start]);
    out.extend_from_slice(via_line);
    out.extend_from_slice(&sent[line.end..]);
    Some(Bytes::from(out))
}

/// The absolute byte range of the top Via element of a message.
pub fn top_via(msg: &Message) -> Option<Range<usize>> {
    let h = msg.headers_named(HeaderName::Via).next()?;
    let first = header::split_commas(msg.value(h)).into_iter().next()?;
    Some(h.value.start + first.start..h.value.start + first.end)
}

/// Whether a label header (ours, or a spam Call-Info) is on this line.
/// Call-Info is judged by its parsed parameters, so quoting (`type="spam"`)
/// and white space around `;` and `=` cannot disguise a label.
pub fn is_label(msg: &Message, h: &super::message::HeaderLine) -> bool {
    match h.name {
        HeaderName::XSipsentry => true,
        HeaderName::CallInfo => {
            let v = msg.value(h);
            header::split_commas(v).into_iter().any(|r| {
                let Some(elem) = header::text(&v[r]) else {
                    return false;
                };
                // The parameters follow the `<uri>`.
                let params = elem.rfind('>').map_or(&elem[..], |i| &elem[i + 1..]);
                let is = |name: &str, want: &str| {
                    header::param(params, name).is_some_and(|p| p.eq_ignore_ascii_case(want))
                };
                is("type", "spam") || is("source", "sipsentry")
            })
        }
        _ => false,
    }
}

/// Builds the forwarded request.
pub fn forward_request(msg: &Message, edit: &RequestEdit<'_>) -> Bytes {
    let buf = &msg.buf[..];
    let mut s = Splice::new();
    let first_via = msg
        .headers_named(HeaderName::Via)
        .next()
        .map_or(msg.headers_end, |h| h.line.start);
    s.insert(first_via, edit.via_line);

    if let Some(top) = top_via(msg) {
        received_rport(buf, top, edit.source, &mut s);
    }

    match msg.headers_named(HeaderName::MaxForwards).next() {
        Some(h) => {
            let n = msg.max_forwards().unwrap_or(DEFAULT_MAX_FORWARDS);
            let digits = itoa::Buffer::new()
                .format(n.saturating_sub(1))
                .as_bytes()
                .to_vec();
            s.replace(h.value.clone(), digits);
        }
        None => s.insert(first_via, ADDED_MAX_FORWARDS),
    }

    if let (Some(uri), Some(range)) = (edit.new_ruri, msg.request_uri_range()) {
        s.replace(range, uri.as_bytes());
    }

    if let Some(rr) = edit.record_route {
        let at = msg
            .headers_named(HeaderName::RecordRoute)
            .next()
            .map_or(first_via, |h| h.line.start);
        s.insert(at, rr.as_bytes());
    }

    if !edit.own_route.is_empty() {
        remove_elements(msg, HeaderName::Route, edit.own_route, &mut s);
    }

    if edit.strip_labels {
        for h in msg.headers.iter().filter(|h| is_label(msg, h)) {
            s.delete(h.line.clone());
        }
    }

    if edit.verstat.is_some() || edit.strip_labels {
        // The header the caller was read from: P-Asserted-Identity only from
        // a trusted sender (an untrusted one's is not what was verified).
        let pai = msg
            .headers_named(HeaderName::PAssertedIdentity)
            .next()
            .filter(|_| !edit.strip_labels);
        let target = pai.or_else(|| msg.headers_named(HeaderName::From).next());
        for name in [HeaderName::PAssertedIdentity, HeaderName::From] {
            for h in msg.headers_named(name) {
                let set = if target.is_some_and(|t| std::ptr::eq(t, h)) {
                    edit.verstat
                } else {
                    None
                };
                if set.is_some() || edit.strip_labels {
                    set_verstat(msg, h.value.clone(), set, &mut s);
                }
            }
        }
    }

    if let Some(labels) = edit.labels {
        s.insert(msg.headers_end, labels.lines);
        if !labels.display_prefix.is_empty() {
            for name in [HeaderName::From, HeaderName::PAssertedIdentity] {
                for h in msg.headers_named(name) {
                    prefix_display(msg, h.value.clone(), labels.display_prefix, &mut s);
                }
            }
        }
    }
    s.apply(buf)
}

/// Adds `received` (when the sent-by host is not the source address, or when
/// the sender asked for `rport`) and fills a valueless `rport`.
fn received_rport(buf: &[u8], top: Range<usize>, source: SocketAddr, s: &mut Splice<'_>) {
    let Ok(text) = std::str::from_utf8(&buf[top.clone()]) else {
        return;
    };
    let Some(via) = Via::parse(text) else { return };
    let rport_flag = param_span(text, "rport").filter(|&(_, _, valued)| !valued);
    let host_differs = via.host.parse::<std::net::IpAddr>().ok() != Some(source.ip());
    if let Some((_, end, _)) = rport_flag {
        let mut port = b"=".to_vec();
        port.extend_from_slice(itoa::Buffer::new().format(source.port()).as_bytes());
        s.insert(top.start + end, port);
    }
    if (host_differs || rport_flag.is_some()) && header::param(via.params, "received").is_none() {
        s.insert(top.end, format!(";received={}", source.ip()).into_bytes());
    }
}

/// Where parameter `name` is inside a header element: (start, end, has value).
fn param_span(elem: &str, name: &str) -> Option<(usize, usize, bool)> {
    let mut pos = header::find_byte(elem, b';')?;
    while pos < elem.len() {
        let start = pos + 1;
        let end = header::find_byte(&elem[start..], b';').map_or(elem.len(), |i| start + i);
        let p = &elem[start..end];
        let (k, has_value) = match header::find_byte(p, b'=') {
            Some(eq) => (&p[..eq], true),
            None => (p, false),
        };
        if k.trim().eq_ignore_ascii_case(name) {
            let key_end = start
                + p.find(|c: char| c == '=' || c.is_whitespace())
                    .unwrap_or(p.len());
            return Some((start, key_end, has_value));
        }
        pos = end;
    }
    None
}

/// Removes one element of a comma-separated header; the whole line if it is
/// the only one.
fn remove_elements(msg: &Message, name: HeaderName, gone: &[Range<usize>], s: &mut Splice<'_>) {
    for h in msg.headers_named(name) {
        // Only a header holding one of them is split (a response's other
        // Vias are left alone without a look).
        if !gone
            .iter()
            .any(|g| h.value.start <= g.start && g.end <= h.value.end)
        {
            continue;
        }
        let elems = header::split_commas(msg.value(h));
        let abs = |i: usize| h.value.start + elems[i].start..h.value.start + elems[i].end;
        let removed = |i: usize| gone.contains(&abs(i));
        if (0..elems.len()).all(removed) {
            s.delete(h.line.clone());
            continue;
        }
        // Each run of removed elements goes with the comma after it, or,
        // at the end of the header, with the comma before it.
        let mut i = 0;
        while i < elems.len() {
            if !removed(i) {
                i += 1;
                continue;
            }
            let start = i;
            while i < elems.len() && removed(i) {
                i += 1;
            }
            if i < elems.len() {
                s.delete(abs(start).start..abs(i).start);
            } else {
                s.delete(abs(start - 1).end..abs(i - 1).end);
            }
        }
    }
}

/// Removes every `verstat` from the user part (sip:) or the parameters
/// (tel:) of the URI of each element of a From/PAI value, and adds
/// `;verstat=<set>` to the first when given. Folded values are left alone.
fn set_verstat<'a>(msg: &Message, value: Range<usize>, set: Option<&'a str>, s: &mut Splice<'a>) {
    let bytes = &msg.buf[value.clone()];
    if bytes.contains(&b'\n') || (set.is_none() && !mentions_verstat(bytes)) {
        return;
    }
    for (i, r) in header::split_commas(bytes).into_iter().enumerate() {
        let base = value.start + r.start;
        let Ok(text) = std::str::from_utf8(&bytes[r]) else {
            return;
        };
        let Some(na) = NameAddr::parse(text) else {
            continue;
        };
        let uri = na.uri;
        let uri_at = base + (uri.as_ptr() as usize - text.as_ptr() as usize);
        let lower = uri.get(..5).unwrap_or(uri).to_ascii_lowercase();
        let (scope_start, scope_end) = if lower.starts_with("tel:") {
            (4, uri.len())
        } else if lower.starts_with("sip:") || lower.starts_with("sips:") {
            let start = uri.find(':').map_or(0, |c| c + 1);
            match uri[start..].find('@') {
                Some(at) => (start, start + at),
                None => continue,
            }
        } else {
            continue;
        };
        let scope = &uri[scope_start..scope_end];
        let mut pos = 0;
        while let Some(semi) = scope[pos..].find(';').map(|i| pos + i) {
            let end = scope[semi + 1..]
                .find(';')
                .map_or(scope.len(), |i| semi + 1 + i);
            let param = &scope[semi + 1..end];
            if param
                .split('=')
                .next()
                .is_some_and(|k| k.trim().eq_ignore_ascii_case("verstat"))
            {
                s.delete(uri_at + scope_start + semi..uri_at + scope_start + end);
            }
            pos = end;
        }
        if let Some(v) = set.filter(|_| i == 0) {
            // In a tel: URI before its other parameters; in a sip: user
            // part at its end (before the `@`).
            let at = if lower.starts_with("tel:") {
                scope.find(';').map_or(scope_end, |i| scope_start + i)
            } else {
                scope_end
            };
            // Two borrowed inserts (same-offset inserts keep their order):
            // nothing is allocated per call.
            s.insert(uri_at + at, b";verstat=".as_slice());
            s.insert(uri_at + at, v.as_bytes());
        }
    }
}

/// Whether `verstat` (in any case) is in `bytes`: most identities carry
/// none, and this look costs a vectorised byte search.
fn mentions_verstat(bytes: &[u8]) -> bool {
    memchr::memchr2_iter(b'v', b'V', bytes).any(|i| {
        bytes
            .get(i..i + 7)
            .is_some_and(|w| w.eq_ignore_ascii_case(b"verstat"))
    })
}

/// Appends the characters of `s` that are safe inside a quoted SIP parameter.
pub fn push_quoted_safe(out: &mut String, s: &str) {
    if !s.contains(|c: char| c == '"' || c == '\\' || c.is_control()) {
        out.push_str(s);
    } else {
        out.extend(
            s.chars()
                .filter(|c| *c != '"' && *c != '\\' && !c.is_control()),
        );
    }
}

/// Prefixes the display name of each element of a From/PAI value, keeping the
/// URI and parameters intact. Folded values are left alone.
fn prefix_display<'a>(msg: &Message, value: Range<usize>, prefix: &'a str, s: &mut Splice<'a>) {
    let bytes = &msg.buf[value.clone()];
    if bytes.contains(&b'\n') {
        return;
    }
    for r in header::split_commas(bytes) {
        let base = value.start + r.start;
        let Ok(text) = std::str::from_utf8(&bytes[r]) else {
            return;
        };
        let Some(na) = NameAddr::parse(text) else {
            continue;
        };
        let offset = |part: &str| base + (part.as_ptr() as usize - text.as_ptr() as usize);
        match na.display {
            Some(d) if d.starts_with('"') => s.insert(offset(d) + 1, prefix.as_bytes()),
            Some(d) => {
                let start = offset(d);
                let mut quoted = format!("\"{prefix}");
                push_quoted_safe(&mut quoted, d);
                quoted.push('"');
                s.replace(start..start + d.len(), quoted.into_bytes());
            }
            None if na.angle => s.insert(base, format!("\"{}\" ", prefix.trim_end()).into_bytes()),
            None => {
                let start = offset(na.uri);
                let named = format!("\"{}\" <{}>", prefix.trim_end(), na.uri);
                s.replace(start..start + na.uri.len(), named.into_bytes());
            }
        }
    }
}

/// The relayed response: the received bytes without the top Via element.
pub fn forward_response(msg: &Message) -> Option<Bytes> {
    let top = top_via(msg)?;
    let mut s = Splice::new();
    remove_elements(msg, HeaderName::Via, &[top], &mut s);
    Some(s.apply(&msg.buf))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn added_max_forwards_line_matches_the_constant() {
        assert_eq!(
            ADDED_MAX_FORWARDS,
            format!("Max-Forwards: {DEFAULT_MAX_FORWARDS}\r\n").as_bytes()
        );
    }

    #[test]
    fn param_span_finds_flag_and_valued() {
        let e = "SIP/2.0/UDP h;branch=z9hG4bK1;rport";
        let (start, end, valued) = param_span(e, "rport").unwrap();
        assert_eq!((&e[start..end], valued), ("rport", false));
        assert!(param_span("SIP/2.0/UDP h;rport=5", "rport").unwrap().2);
        assert!(param_span("SIP/2.0/UDP h;branch=1", "rport").is_none());
    }
}
