//! The `Identity` header (RFC 8224 §4.1) and its PASSporT (RFC 8225, SHAKEN
//! RFC 8588), decoded without trusting anything in them yet.
//!
//! ```text
//! Identity: <header>.<payload>.<signature>;info=<https://cert.example/sp.pem>;alg=ES256;ppt=shaken
//! ```
//!
//! Each part of the compact JWS is base64url without padding; the header
//! and payload are JSON. Anything that does not decode is [`Reason::Malformed`]:
//! a verification failure of the call, never a parse error of the message.

use base64::Engine as _;
use serde::Deserialize;

use super::Reason;

/// Longest Identity header value looked at; a longer one is malformed
/// (real ones are about 600 bytes).
pub const MAX_IDENTITY_LEN: usize = 4096;

/// The header's parts, borrowed from its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityHeader<'a> {
    /// `header.payload.signature`.
    pub jws: &'a str,
    /// `info`, without its angle brackets: the certificate's URL.
    pub info: Option<&'a str>,
    pub alg: Option<&'a str>,
    pub ppt: Option<&'a str>,
}

/// Splits an Identity header value into the JWS and its parameters.
pub fn parse_identity(value: &str) -> Result<IdentityHeader<'_>, Reason> {
    let value = value.trim();
    if value.is_empty() || value.len() > MAX_IDENTITY_LEN {
        return Err(Reason::Malformed);
    }
    let mut parts = value.split(';');
    let jws = parts.next().unwrap_or("").trim();
    let mut h = IdentityHeader {
        jws,
        info: None,
        alg: None,
        ppt: None,
    };
    for p in parts {
        let (k, v) = p.split_once('=').ok_or(Reason::Malformed)?;
        let v = v.trim();
        match k.trim().to_ascii_lowercase().as_str() {
            "info" => {
                let url = v
                    .strip_prefix('<')
                    .and_then(|v| v.strip_suffix('>'))
                    .ok_or(Reason::Malformed)?;
                h.info = Some(url);
            }
            "alg" => h.alg = Some(v),
            "ppt" => h.ppt = Some(v.trim_matches('"')),
            _ => {}
        }
    }
    if jws.split('.').count() != 3 {
        return Err(Reason::Malformed);
    }
    Ok(h)
}

/// The PASSporT's protected header.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct JwsHeader {
    pub alg: String,
    pub typ: Option<String>,
    pub ppt: Option<String>,
    pub x5u: Option<String>,
}

/// A telephone-number identity (`{"tn": "12155550112"}`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Orig {
    pub tn: String,
}

/// The called identities (`{"tn": ["12155550131"]}`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Dest {
    #[serde(default)]
    pub tn: Vec<String>,
}

/// The claims of a SHAKEN PASSporT.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Claims {
    pub attest: Option<String>,
    pub dest: Dest,
    pub iat: i64,
    pub orig: Orig,
    pub origid: Option<String>,
}

/// A decoded (not yet verified) PASSporT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Passport {
    pub header: JwsHeader,
    pub claims: Claims,
    /// `header.payload` as received: what the signature covers.
    pub signing_input: String,
    /// The raw ES256 signature (r ‖ s, 64 bytes).
    pub signature: Vec<u8>,
}

fn b64(part: &str) -> Result<Vec<u8>, Reason> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(part.trim_end_matches('='))
        .map_err(|_| Reason::Malformed)
}

/// Decodes a compact JWS.
pub fn decode(jws: &str) -> Result<Passport, Reason> {
    let mut it = jws.split('.');
    let (Some(h), Some(p), Some(s), None) = (it.next(), it.next(), it.next(), it.next()) else {
        return Err(Reason::Malformed);
    };
    let header: JwsHeader = serde_json::from_slice(&b64(h)?).map_err(|_| Reason::Malformed)?;
    let claims: Claims = serde_json::from_slice(&b64(p)?).map_err(|_| Reason::Malformed)?;
    Ok(Passport {
        header,
        claims,
        signing_input: format!("{h}.{p}"),
        signature: b64(s)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(v: &serde_json::Value) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
    }

    #[test]
    fn a_shaken_identity_header_splits_into_its_jws_and_parameters() {
        let h = parse_identity(
            "aaa.bbb.ccc;info=<https://cert.example/sp.pem>;alg=ES256;ppt=\"shaken\"",
        )
        .unwrap();
        assert_eq!(h.jws, "aaa.bbb.ccc");
        assert_eq!(h.info, Some("https://cert.example/sp.pem"));
        assert_eq!((h.alg, h.ppt), (Some("ES256"), Some("shaken")));
        for bad in [
            "",
            "aaa.bbb",
            "a.b.c;info=https://no-brackets",
            "a.b.c;junk",
        ] {
            assert_eq!(parse_identity(bad), Err(Reason::Malformed), "{bad:?}");
        }
        let long = format!("{}.b.c", "a".repeat(MAX_IDENTITY_LEN));
        assert_eq!(parse_identity(&long), Err(Reason::Malformed));
    }

    #[test]
    fn a_passport_decodes_its_header_and_claims() {
        let h = enc(
            &serde_json::json!({"alg": "ES256", "typ": "passport", "ppt": "shaken", "x5u": "https://c/x.pem"}),
        );
        let p = enc(
            &serde_json::json!({"attest": "A", "dest": {"tn": ["15551234567"]},
            "iat": 1_700_000_000, "orig": {"tn": "15557654321"}, "origid": "de305d54"}),
        );
        let jws = format!("{h}.{p}.c2ln");
        let pp = decode(&jws).unwrap();
        assert_eq!(pp.header.x5u.as_deref(), Some("https://c/x.pem"));
        assert_eq!(pp.claims.attest.as_deref(), Some("A"));
        assert_eq!(pp.claims.dest.tn, ["15551234567"]);
        assert_eq!(pp.signing_input, format!("{h}.{p}"));
        assert_eq!(pp.signature, b"sig");
        for bad in [
            format!("{h}.{p}"),
            format!("{h}.!!.c2ln"),
            format!("{h}.{}.c2ln", enc(&serde_json::json!({"iat": 1}))),
            format!("{h}.{p}.c2ln.x"),
        ] {
            assert_eq!(decode(&bad), Err(Reason::Malformed), "{bad}");
        }
    }
}
