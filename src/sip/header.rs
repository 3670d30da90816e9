//! Decoding of the header values the proxy acts on: comma-separated lists,
//! `;name=value` parameters, Via and name-addr (From, To, PAI, RPID, Route).
//!
//! Values come from [`super::message::Message`] as bytes that may contain folded
//! line breaks; [`text`] turns them into `&str` (borrowed when there is no fold).

use std::borrow::Cow;
use std::ops::Range;

/// The default SIP port (RFC 3261 §19.1.2).
pub const DEFAULT_SIP_PORT: u16 = 5060;
/// The default port of SIP over TLS and of `sips:` URIs (RFC 3261 §19.1.2).
pub const DEFAULT_SIPS_PORT: u16 = 5061;

/// Bytes as text, invalid UTF-8 replaced by U+FFFD, as
/// [`String::from_utf8_lossy`] does. Valid text (nearly every header)
/// takes the standard library's word-at-a-time check instead of the
/// lossy decoder's chunk iterator, several times cheaper on short values.
pub fn lossy(b: &[u8]) -> Cow<'_, str> {
    match std::str::from_utf8(b) {
        Ok(s) => Cow::Borrowed(s),
        Err(_) => String::from_utf8_lossy(b),
    }
}

/// A header value as text, with folded line breaks turned into single spaces.
/// `None` if it is not UTF-8.
pub fn text(value: &[u8]) -> Option<Cow<'_, str>> {
    let s = std::str::from_utf8(value).ok()?;
    if memchr::memchr(b'\n', value).is_none() {
        return Some(Cow::Borrowed(s));
    }
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\r' || c == '\n' {
            while chars.peek().is_some_and(|c| c.is_ascii_whitespace()) {
                chars.next();
            }
            out.push(' ');
        } else {
            out.push(c);
        }
    }
    Some(Cow::Owned(out))
}

/// Element ranges of a header value; two fit without allocating.
pub type Elements = smallvec::SmallVec<[Range<usize>; 2]>;

/// Byte ranges of the comma-separated elements of a header value, each trimmed.
/// Commas inside quoted strings and `<...>` do not split.
pub fn split_commas(s: &[u8]) -> Elements {
    let mut out = Elements::new();
    if memchr::memchr(b',', s).is_none() {
        // The common case: one element, no state machine, no allocation.
        let r = super::message::trim(s, 0..s.len());
        if !r.is_empty() {
            out.push(r);
        }
        return out;
    }
    let (mut quoted, mut angle, mut escaped) = (false, false, false);
    let mut start = 0;
    for (i, &c) in s.iter().enumerate() {
        if escaped {
            escaped = false;
            continue;
        }
        match c {
            b'\\' if quoted => escaped = true,
            b'"' => quoted = !quoted,
            b'<' if !quoted => angle = true,
            b'>' if !quoted => angle = false,
            b',' if !quoted && !angle => {
                out.push(super::message::trim(s, start..i));
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(super::message::trim(s, start..s.len()));
    out.retain(|r| r.start < r.end);
    out
}

/// The first `byte` (ASCII) in `s`, scanned byte by byte. `str::find` with a
/// `char` goes through a searcher whose setup costs more than the scan on
/// values as short as a Via, a URI or a parameter list: under callgrind the
/// searcher was an eighth of every instruction the proxy ran per call. An
/// ASCII byte never occurs inside a multi-byte UTF-8 sequence, so every
/// index found is a char boundary.
pub(crate) fn find_byte(s: &str, byte: u8) -> Option<usize> {
    debug_assert!(byte.is_ascii());
    s.bytes().position(|b| b == byte)
}

/// `s.split_once(byte)`, scanned as [`find_byte`] does.
pub(crate) fn split_once_byte(s: &str, byte: u8) -> Option<(&str, &str)> {
    let i = find_byte(s, byte)?;
    Some((&s[..i], &s[i + 1..]))
}

/// `s.split(byte)`, scanned as [`find_byte`] does.
pub(crate) fn split_byte(s: &str, byte: u8) -> impl Iterator<Item = &str> {
    let mut rest = Some(s);
    std::iter::from_fn(move || {
        let r = rest?;
        match find_byte(r, byte) {
            Some(i) => {
                rest = Some(&r[i + 1..]);
                Some(&r[..i])
            }
            None => {
                rest = None;
                Some(r)
            }
        }
    })
}

/// The value of parameter `name` in a `;`-separated parameter list
/// (`Some("")` for a flag). Names compare case-insensitively; quotes are
/// removed. Only ASCII whitespace is trimmed: SIP's LWS is spaces and tabs.
pub fn param<'a>(params: &'a str, name: &str) -> Option<&'a str> {
    for p in split_byte(params, b';') {
        let (k, v) = split_once_byte(p, b'=').unwrap_or((p, ""));
        if k.trim_ascii().eq_ignore_ascii_case(name) {
            let v = v.trim_ascii();
            return Some(
                v.strip_prefix('"')
                    .and_then(|v| v.strip_suffix('"'))
                    .unwrap_or(v),
            );
        }
    }
    None
}

/// One Via element: `SIP/2.0/UDP host:port;params`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Via<'a> {
    pub transport: &'a str,
    pub host: &'a str,
    pub port: Option<u16>,
    pub params: &'a str,
}

impl<'a> Via<'a> {
    /// Parses one Via element; tolerates LWS around `/` and `:` (RFC 4475 §3.1.1.1).
    pub fn parse(s: &'a str) -> Option<Via<'a>> {
        let (proto, rest) = split_slash(s)?;
        if !proto.eq_ignore_ascii_case("SIP") {
            return None;
        }
        let (version, rest) = split_slash(rest)?;
        if version != "2.0" {
            return None;
        }
        let rest = rest.trim_ascii_start();
        let t_end = rest.bytes().position(|b| b.is_ascii_whitespace())?;
        let transport = &rest[..t_end];
        let rest = rest[t_end..].trim_ascii_start();
        let (sent_by, params) = split_once_byte(rest, b';').unwrap_or((rest, ""));
        let sent_by = sent_by.trim_ascii();
        let (host, port) = if let Some(v6) = sent_by.strip_prefix('[') {
            let close = find_byte(v6, b']')?;
            (&v6[..close], v6[close + 1..].trim_ascii().strip_prefix(':'))
        } else {
            match split_once_byte(sent_by, b':') {
                Some((h, p)) => (h.trim_ascii(), Some(p)),
                None => (sent_by, None),
            }
        };
        let port = match port {
            Some(p) => Some(p.trim_ascii().parse().ok()?),
            None => None,
        };
        if host.is_empty() || transport.is_empty() {
            return None;
        }
        Some(Via {
            transport,
            host,
            port,
            params,
        })
    }

    pub fn branch(&self) -> Option<&'a str> {
        param(self.params, "branch")
    }

    pub fn is_tcp(&self) -> bool {
        self.transport.eq_ignore_ascii_case("TCP")
    }

    pub fn is_tls(&self) -> bool {
        self.transport.eq_ignore_ascii_case("TLS")
    }

    /// The port a sent-by without one means: 5061 over TLS, else 5060.
    fn default_port(&self) -> u16 {
        if self.is_tls() {
            DEFAULT_SIPS_PORT
        } else {
            DEFAULT_SIP_PORT
        }
    }

    /// Where a response to this Via goes (RFC 3261 §18.2.2, RFC 3581):
    /// `received` replaces the host, a valued `rport` replaces the port.
    pub fn response_target(&self) -> Option<std::net::SocketAddr> {
        let host = param(self.params, "received").unwrap_or(self.host);
        let ip: std::net::IpAddr = host.parse().ok()?;
        let port = param(self.params, "rport")
            .and_then(|p| p.parse::<u16>().ok())
            .or(self.port)
            .unwrap_or(self.default_port());
        Some(std::net::SocketAddr::new(ip, port))
    }

    /// sent-by as written (for transaction matching).
    pub fn sent_by(&self) -> (&'a str, u16) {
        (self.host, self.port.unwrap_or(self.default_port()))
    }
}

fn split_slash(s: &str) -> Option<(&str, &str)> {
    let (a, b) = split_once_byte(s, b'/')?;
    Some((a.trim_ascii(), b))
}

/// A name-addr or addr-spec: `"Display" <uri>;params` or `uri;params`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameAddr<'a> {
    /// The display name as written (quotes included), if any.
    pub display: Option<&'a str>,
    pub uri: &'a str,
    /// Header parameters (`tag=...`), without the leading ';'.
    pub params: &'a str,
    /// Whether the URI was in angle brackets.
    pub angle: bool,
}

impl<'a> NameAddr<'a> {
    pub fn parse(s: &'a str) -> Option<NameAddr<'a>> {
        let s = s.trim_ascii();
        if let Some(lt) = find_unquoted(s, b'<') {
            let gt = lt + find_byte(&s[lt..], b'>')?;
            let display = s[..lt].trim_ascii();
            let params = s[gt + 1..].trim_ascii_start();
            let params = params.strip_prefix(';').unwrap_or(params);
            return Some(NameAddr {
                display: (!display.is_empty()).then_some(display),
                uri: s[lt + 1..gt].trim_ascii(),
                params,
                angle: true,
            });
        }
        if s.starts_with('"') {
            return None;
        }
        let (uri, params) = split_once_byte(s, b';').unwrap_or((s, ""));
        Some(NameAddr {
            display: None,
            uri: uri.trim_ascii(),
            params,
            angle: false,
        })
    }

    /// The display name without quotes and escapes.
    pub fn display_text(&self) -> Option<String> {
        let d = self.display?;
        let inner = d.strip_prefix('"').and_then(|d| d.strip_suffix('"'));
        Some(match inner {
            Some(q) => {
                let mut out = String::with_capacity(q.len());
                let mut esc = false;
                for c in q.chars() {
                    if esc || c != '\\' {
                        out.push(c);
                        esc = false;
                    } else {
                        esc = true;
                    }
                }
                out
            }
            None => d.to_string(),
        })
    }

    pub fn tag(&self) -> Option<&'a str> {
        param(self.params, "tag")
    }
}

fn find_unquoted(s: &str, needle: u8) -> Option<usize> {
    let mut quoted = false;
    let mut esc = false;
    for (i, &c) in s.as_bytes().iter().enumerate() {
        if esc {
            esc = false;
        } else if quoted && c == b'\\' {
            esc = true;
        } else if c == b'"' {
            quoted = !quoted;
        } else if c == needle && !quoted {
            return Some(i);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lossy_text_borrows_valid_utf8_and_replaces_as_the_standard_decoder_does() {
        assert!(matches!(
            lossy(b"sip:+15551234567@pbx"),
            Cow::Borrowed("sip:+15551234567@pbx")
        ));
        for other in [&b"caf\xe9"[..], b"\xff\xfe", b"ok\xc3", b""] {
            assert_eq!(lossy(other), String::from_utf8_lossy(other));
        }
    }

    #[test]
    fn via_with_lws_received_and_rport() {
        let v = Via::parse(
            "SIP / 2.0 / UDP 192.0.2.1 : 5070 ;branch=z9hG4bK1;received=198.51.100.7;rport=6000",
        )
        .unwrap();
        assert_eq!(v.host, "192.0.2.1");
        assert_eq!(v.port, Some(5070));
        assert_eq!(v.branch(), Some("z9hG4bK1"));
        assert_eq!(
            v.response_target().unwrap().to_string(),
            "198.51.100.7:6000"
        );
        let v6 = Via::parse("SIP/2.0/TCP [2001:db8::9]:5061;branch=z9hG4bK2;rport").unwrap();
        assert!(v6.is_tcp());
        assert_eq!(
            v6.response_target().unwrap().to_string(),
            "[2001:db8::9]:5061"
        );
    }

    #[test]
    fn commas_split_outside_quotes_and_angles() {
        let s = br#""a, b" <sip:x@y;p=1,2>;tag=1, <sip:z@w>"#;
        let parts: Vec<_> = split_commas(s).into_iter().map(|r| &s[r]).collect();
        assert_eq!(
            parts,
            [&br#""a, b" <sip:x@y;p=1,2>;tag=1"#[..], b"<sip:z@w>"]
        );
    }

    #[test]
    fn name_addr_forms() {
        let n = NameAddr::parse(r#""ACME \"CORP\"" <sip:+1555@h;user=phone>;tag=19"#).unwrap();
        assert_eq!(n.display_text().unwrap(), r#"ACME "CORP""#);
        assert_eq!(n.uri, "sip:+1555@h;user=phone");
        assert_eq!(n.tag(), Some("19"));
        let a = NameAddr::parse("sip:+1555@h;tag=77").unwrap();
        assert_eq!(
            (a.uri, a.tag(), a.angle),
            ("sip:+1555@h", Some("77"), false)
        );
        let t = NameAddr::parse("Anonymous <sip:anonymous@anonymous.invalid>").unwrap();
        assert_eq!(t.display, Some("Anonymous"));
    }

    proptest::proptest! {
        /// The byte-wise searches answer exactly as `str`'s own char searches
        /// do, on any text (multi-byte characters included) and any ASCII byte.
        #[test]
        fn byte_searches_agree_with_str_searches(s in "\\PC{0,40}", byte in 0u8..128) {
            let c = char::from(byte);
            proptest::prop_assert_eq!(find_byte(&s, byte), s.find(c));
            proptest::prop_assert_eq!(split_once_byte(&s, byte), s.split_once(c));
            proptest::prop_assert_eq!(split_byte(&s, byte).collect::<Vec<_>>(), s.split(c).collect::<Vec<_>>());
        }

        /// The same where the byte is one the parsers look for, so that most
        /// cases find it at least once.
        #[test]
        fn byte_searches_agree_on_sip_delimiters(s in "[a-z;=:@<>/é ]{0,30}", i in 0usize..6) {
            let byte = b";=:@</"[i];
            let c = char::from(byte);
            proptest::prop_assert_eq!(split_once_byte(&s, byte), s.split_once(c));
            proptest::prop_assert_eq!(split_byte(&s, byte).collect::<Vec<_>>(), s.split(c).collect::<Vec<_>>());
        }
    }

    #[test]
    fn folded_values_become_spaces() {
        assert_eq!(text(b"a\r\n  b").unwrap(), "a b");
    }
}
