//! The verification service's checks, in the order they are made; the
//! first that fails is the outcome's reason (ATIS-1000074 §5.3.1):
//!
//! 1. the header decodes; `alg` ES256, `ppt` shaken, `typ` passport, the
//!    PASSporT's `x5u` equal to the header's `info`;
//! 2. `iat` within `stir.max_age_s` of now;
//! 3. `orig.tn` is the caller and a `dest.tn` the called number (digits);
//! 4. the certificate at `x5u` can be had;
//! 5. the ES256 signature verifies with the certificate's key;
//! 6. the certificate chains, through any intermediates served with it,
//!    to a trust anchor, and every certificate on the way is valid now.
//!
//! The cryptography is rustls-webpki's (chain, validity, the X.509
//! signatures) and aws-lc-rs's (the PASSporT's fixed-size ES256 signature).

use std::path::Path;
use std::sync::Arc;

use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{
    AlgorithmIdentifier, CertificateDer, InvalidSignature, SignatureVerificationAlgorithm,
    TrustAnchor, UnixTime, alg_id,
};

use super::passport::{IdentityHeader, Passport, decode, parse_identity};
use super::{CertChain, Outcome, Reason, Verstat, digits};

/// The STI certificate authorities trusted as roots (`stir.trust_anchors`).
#[derive(Debug, Clone, Default)]
pub struct TrustAnchors {
    anchors: Vec<TrustAnchor<'static>>,
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AnchorError {
    #[error("cannot read stir.trust_anchors {path}: {source}")]
    Read {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error(
        "stir.trust_anchors {path} holds no usable certificate (a PEM bundle of `-----BEGIN CERTIFICATE-----` blocks is expected)"
    )]
    Empty { path: std::path::PathBuf },
}

impl TrustAnchors {
    /// The certificates of a PEM bundle; unparsable blocks are skipped.
    pub fn from_pem(pem: &[u8]) -> TrustAnchors {
        let anchors = CertificateDer::pem_slice_iter(pem)
            .filter_map(Result::ok)
            .filter_map(|der| {
                webpki::anchor_from_trusted_cert(&der)
                    .ok()
                    .map(|a| a.to_owned())
            })
            .collect();
        TrustAnchors { anchors }
    }

    pub fn from_pem_file(path: &Path) -> Result<TrustAnchors, AnchorError> {
        let pem = std::fs::read(path).map_err(|source| AnchorError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let t = Self::from_pem(&pem);
        if t.anchors.is_empty() {
            return Err(AnchorError::Empty {
                path: path.to_path_buf(),
            });
        }
        Ok(t)
    }

    pub fn len(&self) -> usize {
        self.anchors.len()
    }

    pub fn is_empty(&self) -> bool {
        self.anchors.is_empty()
    }
}

/// ES256 as JWS has it (RFC 7518 §3.4): the signature is r ‖ s, 64 bytes,
/// not the DER of X.509; the key is the certificate's P-256 key.
#[derive(Debug)]
struct Es256Jws;

impl SignatureVerificationAlgorithm for Es256Jws {
    fn verify_signature(
        &self,
        public_key: &[u8],
        message: &[u8],
        signature: &[u8],
    ) -> Result<(), InvalidSignature> {
        aws_lc_rs::signature::UnparsedPublicKey::new(
            &aws_lc_rs::signature::ECDSA_P256_SHA256_FIXED,
            public_key,
        )
        .verify(message, signature)
        .map_err(|_| InvalidSignature)
    }

    fn public_key_alg_id(&self) -> AlgorithmIdentifier {
        alg_id::ECDSA_P256
    }

    fn signature_alg_id(&self) -> AlgorithmIdentifier {
        alg_id::ECDSA_SHA256
    }
}

/// SHAKEN certificates carry no extended key usage of their own: any (or
/// none) is accepted; what they may sign is in their TNAuthList.
struct AnyUsage;

impl webpki::ExtendedKeyUsageValidator for AnyUsage {
    fn validate(&self, _: webpki::KeyPurposeIdIter<'_, '_>) -> Result<(), webpki::Error> {
        Ok(())
    }
}

/// The signature algorithms accepted on the certificates of a chain.
static CHAIN_ALGS: &[&dyn SignatureVerificationAlgorithm] = &[
    webpki::aws_lc_rs::ECDSA_P256_SHA256,
    webpki::aws_lc_rs::ECDSA_P384_SHA384,
    webpki::aws_lc_rs::ECDSA_P256_SHA384,
    webpki::aws_lc_rs::ECDSA_P384_SHA256,
    webpki::aws_lc_rs::RSA_PKCS1_2048_8192_SHA256,
];

/// The checks that need no certificate (1–3 above).
pub fn check_claims(
    h: &IdentityHeader<'_>,
    p: &Passport,
    caller: &str,
    called: &str,
    now_s: i64,
    max_age_s: u64,
) -> Result<(), Reason> {
    if p.header.alg != "ES256" || h.alg.is_some_and(|a| a != "ES256") {
        return Err(Reason::UnsupportedAlg);
    }
    let ppt = p.header.ppt.as_deref();
    if ppt != Some("shaken") || h.ppt.is_some_and(|x| x != "shaken") {
        return Err(Reason::UnsupportedPpt);
    }
    if p.header.typ.as_deref() != Some("passport") {
        return Err(Reason::BadTyp);
    }
    match (p.header.x5u.as_deref(), h.info) {
        (Some(x), Some(i)) if x == i => {}
        _ => return Err(Reason::X5uMismatch),
    }
    if now_s.abs_diff(p.claims.iat) > max_age_s {
        return Err(Reason::Stale);
    }
    if digits(&p.claims.orig.tn) != digits(caller) || digits(caller).is_empty() {
        return Err(Reason::OrigMismatch);
    }
    let called = digits(called);
    if called.is_empty() || !p.claims.dest.tn.iter().any(|d| digits(d) == called) {
        return Err(Reason::DestMismatch);
    }
    Ok(())
}

/// The signature and the chain (5 and 6 above).
pub fn check_certificate(
    p: &Passport,
    chain: &CertChain,
    anchors: &TrustAnchors,
    now_s: u64,
) -> Result<(), Reason> {
    let ee = webpki::EndEntityCert::try_from(&chain.leaf).map_err(|_| Reason::X5uUnreachable)?;
    ee.verify_signature(&Es256Jws, p.signing_input.as_bytes(), &p.signature)
        .map_err(|_| Reason::BadSignature)?;
    if let Some((at, result)) = *chain.checked.lock()
        && now_s.saturating_sub(at) < super::certs::CHAIN_CHECK_REUSE_S
        && now_s >= at
    {
        return result;
    }
    let result = check_chain(&ee, chain, anchors, now_s);
    *chain.checked.lock() = Some((now_s, result));
    result
}

/// The chain to a trust anchor, each certificate valid at `now_s`.
fn check_chain(
    ee: &webpki::EndEntityCert<'_>,
    chain: &CertChain,
    anchors: &TrustAnchors,
    now_s: u64,
) -> Result<(), Reason> {
    ee.verify_for_usage(
        CHAIN_ALGS,
        &anchors.anchors,
        &chain.intermediates,
        UnixTime::since_unix_epoch(std::time::Duration::from_secs(now_s)),
        AnyUsage,
        None,
        None,
    )
    .map_err(|e| match e {
        webpki::Error::CertExpired { .. } | webpki::Error::CertNotValidYet { .. } => {
            Reason::CertExpired
        }
        _ => Reason::UntrustedChain,
    })?;
    Ok(())
}

/// What one Identity header verifies to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verified {
    /// Decided without a certificate (malformed, or a claim failed), or with
    /// the one `chain_for` had.
    Done(Outcome),
    /// The claims hold, and the certificate at this URL is needed.
    NeedsCertificate(String),
}

/// Verifies an Identity header value for a call from `caller` to `called`
/// (E.164 or digits) at `now_s`; `chain_for` gives the certificate of a URL
/// if it is at hand (`None`: fetch it, then call again).
pub fn verify_with(
    identity: &str,
    caller: &str,
    called: &str,
    now_s: i64,
    max_age_s: u64,
    anchors: &TrustAnchors,
    chain_for: impl FnOnce(&str) -> Option<Result<Arc<CertChain>, Reason>>,
) -> Verified {
    let failed = |reason, p: Option<&Passport>| {
        Verified::Done(Outcome {
            verstat: Verstat::Failed,
            attest: p.and_then(|p| p.claims.attest.clone()),
            reason: Some(reason),
            x5u: p.and_then(|p| p.header.x5u.clone()),
            origid: p.and_then(|p| p.claims.origid.clone()),
        })
    };
    let h = match parse_identity(identity) {
        Ok(h) => h,
        Err(r) => return failed(r, None),
    };
    let p = match decode(h.jws) {
        Ok(p) => p,
        Err(r) => return failed(r, None),
    };
    if let Err(r) = check_claims(&h, &p, caller, called, now_s, max_age_s) {
        return failed(r, Some(&p));
    }
    let url = h.info.unwrap_or_default();
    let chain = match chain_for(url) {
        None => return Verified::NeedsCertificate(url.to_string()),
        Some(Err(r)) => return failed(r, Some(&p)),
        Some(Ok(c)) => c,
    };
    if let Err(r) = check_certificate(&p, &chain, anchors, now_s.max(0) as u64) {
        return failed(r, Some(&p));
    }
    Verified::Done(Outcome {
        verstat: Verstat::Passed,
        attest: p.claims.attest.clone(),
        reason: None,
        x5u: p.header.x5u.clone(),
        origid: p.claims.origid.clone(),
    })
}
