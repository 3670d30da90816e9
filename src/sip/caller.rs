//! Who is calling: the identity the screening runs on.
//!
//! Network-asserted identity (P-Asserted-Identity, then Remote-Party-ID) is
//! believed only when the INVITE comes from a configured trusted peer; anyone
//! else could write any number there. Otherwise the From user part is used.
//! STIR/SHAKEN hints (`verstat`, the PASSporT `attest`) are captured as
//! evidence, not acted on here.

use std::borrow::Cow;

use base64::Engine;

use super::header::{self, NameAddr};
use super::message::{HeaderName, Message};
use super::uri::{Scheme, Uri};
use crate::number::{self, Country};

/// Which header the caller identity came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Trust {
    Pai,
    Rpid,
    From,
}

impl Trust {
    pub fn as_str(self) -> &'static str {
        match self {
            Trust::Pai => "pai",
            Trust::Rpid => "rpid",
            Trust::From => "from",
        }
    }
}

/// The caller as the screening sees it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CallerId {
    pub trust: Trust,
    /// The user part (or tel number) as received, percent-decoded.
    pub raw: String,
    pub display: Option<String>,
    /// E.164 form, when the caller is a number.
    pub e164: Option<String>,
    /// No number was presented, or the caller asked to withhold it.
    pub anonymous: bool,
    /// `verstat` from the identity URI (TN-Validation-Passed/Failed, No-TN-Validation).
    pub verstat: Option<String>,
    /// SHAKEN attestation level (A, B, C) from the Identity header's PASSporT.
    pub attest: Option<String>,
}

/// User parts that mean "no number" in the wild.
const WITHHELD_USERS: [&str; 7] = [
    "anonymous",
    "unknown",
    "restricted",
    "private",
    "unavailable",
    "withheld",
    "anonymous.invalid",
];

/// Identifies the caller of a request. `trusted` says whether the sender is in
/// `sip.trusted_peers`.
pub fn identify(msg: &Message, trusted: bool, country: &Country) -> CallerId {
    let from = msg.header(HeaderName::From).and_then(header::text);
    let mut chosen: Option<(Trust, Cow<'_, str>)> = None;
    if trusted {
        chosen = first_identity(msg, HeaderName::PAssertedIdentity).map(|v| (Trust::Pai, v));
        if chosen.is_none() {
            chosen = first_identity(msg, HeaderName::RemotePartyId).map(|v| (Trust::Rpid, v));
        }
    }
    let (trust, value) = match chosen {
        Some(c) => c,
        None => (Trust::From, from.clone().unwrap_or_default()),
    };
    let mut caller = describe(trust, &value, country);
    if caller.verstat.is_none() && trust != Trust::From {
        caller.verstat = from.as_deref().and_then(verstat_of);
    }
    if trust == Trust::Rpid
        && header::param(NameAddr::parse(&value).map_or("", |n| n.params), "privacy")
            .is_some_and(|p| p.eq_ignore_ascii_case("full"))
    {
        caller.anonymous = true;
    }
    caller.attest = msg.header(HeaderName::Identity).and_then(attest_of);
    caller
}

/// The first element of the first header of `name` that carries a number or user.
fn first_identity(msg: &Message, name: HeaderName) -> Option<Cow<'_, str>> {
    for h in msg.headers_named(name) {
        let value = msg.value(h);
        for r in header::split_commas(value) {
            let text = header::text(&value[r])?;
            let has_user = NameAddr::parse(&text)
                .and_then(|n| Uri::parse(n.uri).and_then(|u| u.user_base().map(|s| !s.is_empty())))
                .unwrap_or(false);
            if has_user {
                return Some(text);
            }
        }
    }
    None
}

fn describe(trust: Trust, value: &str, country: &Country) -> CallerId {
    let na = NameAddr::parse(value);
    let uri = na.as_ref().and_then(|n| Uri::parse(n.uri));
    let raw = uri
        .as_ref()
        .and_then(|u| u.user_base())
        .map(|s| s.into_owned())
        .unwrap_or_default();
    let display = na.as_ref().and_then(|n| n.display_text());
    let host_anonymous = uri.as_ref().is_some_and(|u| {
        u.scheme != Scheme::Tel && u.host.eq_ignore_ascii_case("anonymous.invalid")
    });
    let user_withheld =
        raw.is_empty() || WITHHELD_USERS.iter().any(|w| raw.eq_ignore_ascii_case(w));
    let display_withheld = display.as_deref().is_some_and(|d| {
        WITHHELD_USERS
            .iter()
            .any(|w| d.trim().eq_ignore_ascii_case(w))
    });
    let e164 = if user_withheld {
        None
    } else {
        number::to_e164(&raw, country).ok()
    };
    CallerId {
        trust,
        anonymous: e164.is_none() && (user_withheld || host_anonymous || display_withheld),
        raw,
        display,
        e164,
        verstat: uri
            .as_ref()
            .and_then(|u| u.user_param("verstat").or_else(|| u.param("verstat")))
            .map(str::to_string),
        attest: None,
    }
}

/// `verstat` from a name-addr's URI: a user parameter (sip) or URI parameter (tel, sip).
fn verstat_of(value: &str) -> Option<String> {
    let na = NameAddr::parse(value)?;
    let uri = Uri::parse(na.uri)?;
    uri.user_param("verstat")
        .or_else(|| uri.param("verstat"))
        .map(str::to_string)
}

/// The `attest` claim of the PASSporT in an Identity header (RFC 8224/8588).
/// The signature is not verified here: it is recorded as evidence only.
fn attest_of(value: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(value).ok()?;
    let token = text.split(';').next()?.trim().trim_start_matches('<');
    let payload = token.split('.').nth(1)?;
    let json = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let claims: serde_json::Value = serde_json::from_slice(&json).ok()?;
    let attest = claims.get("attest")?.as_str()?;
    (attest.len() <= 2).then(|| attest.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn invite(extra: &str, from: &str) -> Message {
        let text = format!(
            "INVITE sip:+15551234567@pbx SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.1;branch=z9hG4bK1\r\n\
             From: {from}\r\nTo: <sip:+15551234567@pbx>\r\nCall-ID: c1\r\nCSeq: 1 INVITE\r\n{extra}Content-Length: 0\r\n\r\n"
        );
        Message::parse(Bytes::from(text)).unwrap()
    }

    fn us() -> Country {
        Country::from_iso("US").unwrap()
    }

    #[test]
    fn pai_is_believed_only_from_trusted_peers() {
        let m = invite(
            "P-Asserted-Identity: <sip:+15550001111@carrier;user=phone>\r\n",
            "<sip:+15557654321@carrier>;tag=1",
        );
        let trusted = identify(&m, true, &us());
        assert_eq!(
            (trusted.trust, trusted.e164.as_deref()),
            (Trust::Pai, Some("+15550001111"))
        );
        let untrusted = identify(&m, false, &us());
        assert_eq!(
            (untrusted.trust, untrusted.e164.as_deref()),
            (Trust::From, Some("+15557654321"))
        );
    }

    #[test]
    fn rpid_is_second_and_privacy_full_is_anonymous() {
        let m = invite(
            "Remote-Party-ID: \"X\" <sip:5550002222@carrier>;party=calling;privacy=full\r\n",
            "<sip:anonymous@anonymous.invalid>;tag=1",
        );
        let c = identify(&m, true, &us());
        assert_eq!(c.trust, Trust::Rpid);
        assert_eq!(c.e164.as_deref(), Some("+15550002222"));
        assert!(c.anonymous);
    }

    #[test]
    fn anonymous_forms_are_detected() {
        for from in [
            "\"Anonymous\" <sip:anonymous@anonymous.invalid>;tag=1",
            "<sip:restricted@carrier>;tag=1",
            "\"Withheld\" <sip:carrier.example>;tag=1",
        ] {
            assert!(
                identify(&invite("", from), false, &us()).anonymous,
                "{from}"
            );
        }
        assert!(!identify(&invite("", "<sip:alice@example.com>;tag=1"), false, &us()).anonymous);
    }

    #[test]
    fn tel_uri_verstat_and_attest_are_captured() {
        // {"attest":"A","orig":{"tn":"15557654321"}}
        let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(br#"{"attest":"A","orig":{"tn":"15557654321"}}"#);
        let m = invite(
            &format!(
                "Identity: eyJhbGciOiJFUzI1NiJ9.{payload}.c2ln;info=<https://cert.example/c.pem>;ppt=shaken\r\n"
            ),
            "<tel:+1-555-765-4321;verstat=TN-Validation-Passed>;tag=9",
        );
        let c = identify(&m, false, &us());
        assert_eq!(c.e164.as_deref(), Some("+15557654321"));
        assert_eq!(c.verstat.as_deref(), Some("TN-Validation-Passed"));
        assert_eq!(c.attest.as_deref(), Some("A"));
    }
}
