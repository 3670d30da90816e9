//! SIP and tel URIs.
//!
//! Two parsers for two jobs. Configured URIs (`sip.next_hop`, `policy.divert_to`)
//! are parsed once at start with `rsip`'s typed URI, which gives good errors.
//! URIs inside received messages are parsed on the hot path by [`Uri::parse`], a
//! borrowing splitter that accepts what peers send (IPv6 hosts, user
//! parameters such as `;verstat=`, `tel:` numbers) without allocating.

use super::header::{find_byte, split_once_byte};
use std::borrow::Cow;

/// The URI schemes the proxy distinguishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Scheme {
    Sip,
    Sips,
    Tel,
    Other,
}

/// A borrowed view of a URI's parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uri<'a> {
    pub scheme: Scheme,
    /// SIP: the user part without password, including user parameters
    /// (`+1555;verstat=TN-Validation-Passed`). tel: the number and its parameters.
    pub user: Option<&'a str>,
    /// SIP: host (IPv6 without brackets). tel: empty.
    pub host: &'a str,
    pub port: Option<u16>,
    /// URI parameters after the host (SIP) or the number (tel), without the leading ';'.
    pub params: &'a str,
}

impl<'a> Uri<'a> {
    /// Splits a URI; `None` if it has no scheme or an unreadable host.
    pub fn parse(s: &'a str) -> Option<Uri<'a>> {
        let s = s.trim_ascii();
        let colon = find_byte(s, b':')?;
        let scheme = match &s[..colon] {
            x if x.eq_ignore_ascii_case("sip") => Scheme::Sip,
            x if x.eq_ignore_ascii_case("sips") => Scheme::Sips,
            x if x.eq_ignore_ascii_case("tel") => Scheme::Tel,
            _ => Scheme::Other,
        };
        let rest = &s[colon + 1..];
        if scheme == Scheme::Tel {
            let (number, params) = split_once_byte(rest, b';').unwrap_or((rest, ""));
            return Some(Uri {
                scheme,
                user: Some(number),
                host: "",
                port: None,
                params,
            });
        }
        if scheme == Scheme::Other {
            return Some(Uri {
                scheme,
                user: None,
                host: rest,
                port: None,
                params: "",
            });
        }
        let rest = split_once_byte(rest, b'?').map_or(rest, |(a, _)| a);
        let (user, hostpart) = match rest.bytes().rposition(|b| b == b'@') {
            Some(at) => {
                let userinfo = &rest[..at];
                // The password follows the first ':' of the user part, but a
                // ';' user parameter may itself contain ':'; only cut a ':'
                // that comes before any ';'.
                let user = match (find_byte(userinfo, b':'), find_byte(userinfo, b';')) {
                    (Some(c), Some(sc)) if c < sc => &userinfo[..c],
                    (Some(c), None) => &userinfo[..c],
                    _ => userinfo,
                };
                (Some(user), &rest[at + 1..])
            }
            None => (None, rest),
        };
        let (hostport, params) = split_once_byte(hostpart, b';').unwrap_or((hostpart, ""));
        let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
            let close = find_byte(v6, b']')?;
            let port = v6[close + 1..].strip_prefix(':');
            (&v6[..close], port)
        } else {
            match split_once_byte(hostport, b':') {
                Some((h, p)) => (h, Some(p)),
                None => (hostport, None),
            }
        };
        let port = match port {
            Some(p) => Some(p.trim_ascii().parse::<u16>().ok()?),
            None => None,
        };
        if host.is_empty() {
            return None;
        }
        Some(Uri {
            scheme,
            user,
            host,
            port,
            params,
        })
    }

    /// A URI parameter's value (`Some("")` for a flag parameter).
    pub fn param(&self, name: &str) -> Option<&'a str> {
        super::header::param(self.params, name)
    }

    /// The user part without user parameters, percent-decoded.
    pub fn user_base(&self) -> Option<Cow<'a, str>> {
        let user = self.user?;
        let base = user.split(';').next().unwrap_or(user);
        Some(percent_decode(base))
    }

    /// A user-part parameter such as `verstat` in `sip:+1555;verstat=...@host`.
    pub fn user_param(&self, name: &str) -> Option<&'a str> {
        let user = self.user?;
        let (_, params) = user.split_once(';')?;
        super::header::param(params, name)
    }
}

/// Decodes `%XX` escapes; leaves malformed escapes as they are.
pub fn percent_decode(s: &str) -> Cow<'_, str> {
    if !s.contains('%') {
        return Cow::Borrowed(s);
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let hex = |c: u8| (c as char).to_digit(16);
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    Cow::Owned(String::from_utf8_lossy(&out).into_owned())
}

/// A configured SIP URI, checked with rsip's typed parser at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SipUri {
    pub text: String,
    pub host: String,
    pub port: u16,
    pub tcp: bool,
    /// `sips:` or `;transport=tls` (then `port` defaults to 5061).
    pub tls: bool,
    /// Whether the URI gave a port: then DNS asks for addresses only
    /// (RFC 3263 §4.2), not SRV.
    pub explicit_port: bool,
    /// Whether it named a transport: then NAPTR is not asked.
    pub explicit_transport: bool,
}

pub use super::header::{DEFAULT_SIP_PORT, DEFAULT_SIPS_PORT};

impl SipUri {
    /// Parses and checks a URI from the config file. rsip 0.4 cannot parse
    /// IPv6 literal hosts, so those go through [`Uri::parse`].
    pub fn parse_config(s: &str) -> Result<SipUri, String> {
        if s.contains('[') {
            return Self::parse_v6(s);
        }
        let uri = rsip::Uri::try_from(s).map_err(|e| format!("{s:?} is not a SIP URI ({e})"))?;
        let sips = match &uri.scheme {
            Some(rsip::Scheme::Sip) => false,
            Some(rsip::Scheme::Sips) => true,
            _ => return Err(format!("{s:?} must use the sip: or sips: scheme")),
        };
        let host = match uri.host() {
            rsip::Host::Domain(d) => d.to_string(),
            rsip::Host::IpAddr(ip) => ip.to_string(),
        };
        let (tcp, tls) = match uri.transport() {
            None => (false, sips),
            Some(rsip::Transport::Udp) if !sips => (false, false),
            Some(rsip::Transport::Tcp) if !sips => (true, false),
            Some(rsip::Transport::Tls) => (false, true),
            Some(t) => {
                return Err(format!(
                    "transport {t} is not supported here; use udp, tcp or tls (sips: is TLS only)"
                ));
            }
        };
        let port = uri.port().map(|p| *p.value()).unwrap_or(default_port(tls));
        Ok(SipUri {
            text: s.to_string(),
            host,
            port,
            tcp,
            tls,
            explicit_port: uri.port().is_some(),
            explicit_transport: uri.transport().is_some(),
        })
    }
}

/// 5061 over TLS, 5060 otherwise (RFC 3261 §19.1.2).
fn default_port(tls: bool) -> u16 {
    if tls {
        DEFAULT_SIPS_PORT
    } else {
        DEFAULT_SIP_PORT
    }
}

impl SipUri {
    fn parse_v6(s: &str) -> Result<SipUri, String> {
        let uri = Uri::parse(s).ok_or_else(|| format!("{s:?} is not a SIP URI"))?;
        let sips = match uri.scheme {
            Scheme::Sip => false,
            Scheme::Sips => true,
            _ => return Err(format!("{s:?} must use the sip: or sips: scheme")),
        };
        uri.host
            .parse::<std::net::Ipv6Addr>()
            .map_err(|_| format!("{s:?} has a bad IPv6 address"))?;
        let is = |t: &str, name: &str| t.eq_ignore_ascii_case(name);
        let (tcp, tls) = match uri.param("transport") {
            None => (false, sips),
            Some(t) if is(t, "tls") => (false, true),
            Some(t) if is(t, "udp") && !sips => (false, false),
            Some(t) if is(t, "tcp") && !sips => (true, false),
            Some(t) => {
                return Err(format!(
                    "transport {t} is not supported here; use udp, tcp or tls (sips: is TLS only)"
                ));
            }
        };
        Ok(SipUri {
            text: s.to_string(),
            host: uri.host.to_string(),
            port: uri.port.unwrap_or(default_port(tls)),
            tcp,
            tls,
            explicit_port: uri.port.is_some(),
            explicit_transport: uri.param("transport").is_some(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sip_uri_parts() {
        let u = Uri::parse(
            "sip:+15557654321;verstat=TN-Validation-Passed@carrier.example:5070;user=phone",
        )
        .unwrap();
        assert_eq!(u.scheme, Scheme::Sip);
        assert_eq!(u.user_base().unwrap(), "+15557654321");
        assert_eq!(u.user_param("verstat"), Some("TN-Validation-Passed"));
        assert_eq!(u.host, "carrier.example");
        assert_eq!(u.port, Some(5070));
        assert_eq!(u.param("user"), Some("phone"));
    }

    #[test]
    fn ipv6_and_password_and_tel() {
        let u = Uri::parse("sips:alice:secret@[2001:db8::10]:5061;transport=tcp").unwrap();
        assert_eq!(u.user, Some("alice"));
        assert_eq!(u.host, "2001:db8::10");
        assert_eq!(u.port, Some(5061));
        let t = Uri::parse("tel:+1-555-765-4321;verstat=No-TN-Validation").unwrap();
        assert_eq!(t.scheme, Scheme::Tel);
        assert_eq!(t.user_base().unwrap(), "+1-555-765-4321");
        assert_eq!(t.param("verstat"), Some("No-TN-Validation"));
        assert_eq!(
            Uri::parse("sip:%2B15551234567@h")
                .unwrap()
                .user_base()
                .unwrap(),
            "+15551234567"
        );
    }

    #[test]
    fn config_uris_go_through_rsip() {
        let u = SipUri::parse_config("sip:127.0.0.1:5080").unwrap();
        assert_eq!((u.host.as_str(), u.port, u.tcp), ("127.0.0.1", 5080, false));
        assert!(
            SipUri::parse_config("sip:pbx.example;transport=tcp")
                .unwrap()
                .tcp
        );
        assert!(SipUri::parse_config("http://x").is_err());
        let v6 = SipUri::parse_config("sip:[::1]:5080;transport=tcp").unwrap();
        assert_eq!((v6.host.as_str(), v6.port, v6.tcp), ("::1", 5080, true));
    }

    #[test]
    fn config_uris_over_tls_default_to_port_5061() {
        for uri in ["sips:pbx.example", "sip:pbx.example;transport=tls"] {
            let u = SipUri::parse_config(uri).unwrap();
            assert_eq!((u.port, u.tcp, u.tls), (5061, false, true), "{uri}");
        }
        let v6 = SipUri::parse_config("sips:[::1]:5071").unwrap();
        assert_eq!((v6.port, v6.tls), (5071, true));
        let e = SipUri::parse_config("sips:pbx.example;transport=udp").unwrap_err();
        assert!(e.contains("sips: is TLS only"), "{e}");
        assert!(SipUri::parse_config("sip:pbx.example;transport=sctp").is_err());
    }
}
