//! Caller-ID authentication: verifying the STIR/SHAKEN `Identity` header
//! of an INVITE as a terminating verification service (RFC 8224 PASSporTs
//! with the SHAKEN extension of RFC 8588, the checks of ATIS-1000074).
//!
//! - [`passport`]: the header and its compact JWS, decoded by this crate.
//! - [`certs`]: the signer's certificate fetched from `x5u` over HTTPS,
//!   cached by URL (failures too), one fetch per URL at a time.
//! - [`verify`]: the checks in order, the ES256 signature and the chain to
//!   the configured trust anchors; the first failed check is the reason.
//!
//! The outcome is evidence like any source's (source `stir`), with the
//! `verstat` a terminating network tells its PBX.

use serde::{Deserialize, Serialize};

pub mod certs;
pub mod passport;
mod service;
pub mod verify;

pub use certs::{CertChain, CertFetcher, FetchError};
pub use service::{Check, Stir, StirCall, StirError};
pub use verify::{TrustAnchors, Verified, verify_with};

/// The verification result a terminating network passes on (`verstat`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub enum Verstat {
    #[serde(rename = "TN-Validation-Passed")]
    Passed,
    #[serde(rename = "TN-Validation-Failed")]
    Failed,
    /// No Identity header, or nothing that could be checked.
    #[serde(rename = "No-TN-Validation")]
    NoValidation,
}

impl Verstat {
    pub fn as_str(self) -> &'static str {
        match self {
            Verstat::Passed => "TN-Validation-Passed",
            Verstat::Failed => "TN-Validation-Failed",
            Verstat::NoValidation => "No-TN-Validation",
        }
    }
}

/// The first check that failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Reason {
    /// The header or its JWS could not be decoded (or is too large).
    Malformed,
    /// `alg` is not ES256.
    UnsupportedAlg,
    /// `ppt` is not shaken.
    UnsupportedPpt,
    /// `typ` is not passport.
    BadTyp,
    /// The PASSporT's `x5u` differs from the header's `info`.
    X5uMismatch,
    /// `iat` is further from now than `stir.max_age_s`.
    Stale,
    /// `orig.tn` is not the caller.
    OrigMismatch,
    /// No `dest.tn` is the called number.
    DestMismatch,
    /// The certificate could not be fetched (or was not a certificate).
    X5uUnreachable,
    /// The certificate does not chain to a trust anchor.
    UntrustedChain,
    /// The certificate (or one in its chain) is expired or not yet valid.
    CertExpired,
    /// The signature does not verify with the certificate's key.
    BadSignature,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Malformed => "malformed",
            Reason::UnsupportedAlg => "unsupported_alg",
            Reason::UnsupportedPpt => "unsupported_ppt",
            Reason::BadTyp => "bad_typ",
            Reason::X5uMismatch => "x5u_mismatch",
            Reason::Stale => "stale",
            Reason::OrigMismatch => "orig_mismatch",
            Reason::DestMismatch => "dest_mismatch",
            Reason::X5uUnreachable => "x5u_unreachable",
            Reason::UntrustedChain => "untrusted_chain",
            Reason::CertExpired => "cert_expired",
            Reason::BadSignature => "bad_signature",
        }
    }

    /// The SIP response of a call refused for this reason
    /// (`policy.on_stir_failure = "reject"`, RFC 8224 §6.2.2).
    pub fn reject_code(self) -> u16 {
        match self {
            Reason::X5uUnreachable => 436,
            Reason::UntrustedChain | Reason::CertExpired => 437,
            _ => 438,
        }
    }
}

/// How the `Identity` header is used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum StirMode {
    /// `verify` when `trust_anchors` is set, else `off` (the default).
    Auto,
    /// Not looked at.
    Off,
    /// Verified here.
    Verify,
    /// A `verstat` already on the identity is believed when the INVITE
    /// comes from `sip.trusted_peers`; nothing is verified.
    TrustUpstream,
}

/// The `[stir]` section.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct StirConfig {
    pub mode: StirMode,
    /// PEM bundle of the STI certificate authorities trusted as roots.
    pub trust_anchors: std::path::PathBuf,
    /// Extra roots for the HTTPS connection that fetches `x5u` (a private
    /// certificate repository); the system's roots are trusted too.
    pub x5u_ca_file: std::path::PathBuf,
    /// How far `iat` may be from now, in seconds.
    pub max_age_s: u64,
    pub fetch_timeout_ms: u64,
    /// How long a fetched certificate is kept (shorter when the response's
    /// `Cache-Control: max-age` says so).
    pub cert_cache_ttl_s: u64,
    /// Certificates (and failures) kept at most.
    pub cert_cache_entries: usize,
    /// Put `;verstat=` on the relayed identity, as a terminating network does.
    pub add_verstat: bool,
}

impl Default for StirConfig {
    fn default() -> Self {
        StirConfig {
            mode: StirMode::Auto,
            trust_anchors: std::path::PathBuf::new(),
            x5u_ca_file: std::path::PathBuf::new(),
            max_age_s: 60,
            fetch_timeout_ms: 1000,
            cert_cache_ttl_s: 3600,
            cert_cache_entries: 10_000,
            add_verstat: true,
        }
    }
}

impl StirConfig {
    /// The mode in force: the configured one, else `verify` when trust
    /// anchors are set.
    pub fn effective_mode(&self) -> StirMode {
        match self.mode {
            StirMode::Auto if self.trust_anchors.as_os_str().is_empty() => StirMode::Off,
            StirMode::Auto => StirMode::Verify,
            m => m,
        }
    }
}

/// What verification concluded about one Identity header: the evidence's
/// raw answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Outcome {
    pub verstat: Verstat,
    /// `attest` of the PASSporT (A, B, C) when it could be read.
    pub attest: Option<String>,
    /// The first check that failed; `None` when it passed.
    pub reason: Option<Reason>,
    pub x5u: Option<String>,
    pub origid: Option<String>,
}

impl Outcome {
    pub fn passed(&self) -> bool {
        self.verstat == Verstat::Passed
    }
}

/// Digits only: how telephone numbers are compared (`+1 (555) 123-4567`
/// and `15551234567` are the same number).
pub fn digits(tn: &str) -> String {
    tn.chars().filter(char::is_ascii_digit).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mode_defaults_to_verify_only_with_trust_anchors() {
        let mut c = StirConfig::default();
        assert_eq!(c.effective_mode(), StirMode::Off);
        c.trust_anchors = "sti-roots.pem".into();
        assert_eq!(c.effective_mode(), StirMode::Verify);
        c.mode = StirMode::TrustUpstream;
        assert_eq!(c.effective_mode(), StirMode::TrustUpstream);
    }

    #[test]
    fn each_failure_has_its_rfc_8224_response() {
        assert_eq!(Reason::X5uUnreachable.reject_code(), 436);
        assert_eq!(Reason::UntrustedChain.reject_code(), 437);
        assert_eq!(Reason::BadSignature.reject_code(), 438);
        assert_eq!(Reason::Stale.reject_code(), 438);
        assert_eq!(digits("+1 (555) 123-4567"), "15551234567");
    }
}
