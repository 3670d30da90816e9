//! STIR/SHAKEN verification against a PKI and an HTTPS certificate
//! repository the tests make at run time: each kind of PASSporT gives its
//! `verstat` and `reason`, and the certificate fetcher caches, shares one
//! fetch per URL, refuses redirects and oversized answers, and remembers a
//! failure for a minute.

#[path = "common/sti.rs"]
mod sti;

use std::sync::Arc;
use std::time::Duration;

use sipsentry::stir::certs::parse_chain;
use sipsentry::stir::{
    CertFetcher, FetchError, Reason, StirConfig, TrustAnchors, Verified, Verstat, verify_with,
};
use sti::{Answer, Pki, Repo, claims, identity};

const CALLER: &str = "+15557654321";
const CALLED: &str = "+15551234567";
const X5U: &str = "https://cert.example/sp.pem";

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Verifies `header` with `pki`'s chain at hand (as if fetched) against
/// `anchors`: the verstat and the reason.
fn outcome_with(
    header: &str,
    chain_pem: &str,
    anchors: &TrustAnchors,
) -> (Verstat, Option<Reason>) {
    let chain = Arc::new(parse_chain(chain_pem.as_bytes()).unwrap());
    match verify_with(header, CALLER, CALLED, now(), 60, anchors, |_| {
        Some(Ok(Arc::clone(&chain)))
    }) {
        Verified::Done(o) => (o.verstat, o.reason),
        Verified::NeedsCertificate(u) => panic!("asked for {u} with the chain at hand"),
    }
}

#[test]
fn each_passport_verifies_to_its_verstat_and_reason() {
    let pki = Pki::new("Test STI root", false);
    let anchors = TrustAnchors::from_pem(pki.root_pem.as_bytes());
    let chain = pki.chain_pem();
    let good = pki.sign(X5U, &claims(CALLER, CALLED, "A", 0));
    let check = |h: &str| outcome_with(h, &chain, &anchors);

    assert_eq!(check(&identity(&good, X5U)), (Verstat::Passed, None));
    // The caller and called numbers compare as digits.
    let chain_arc = Arc::new(parse_chain(chain.as_bytes()).unwrap());
    let v = verify_with(
        &identity(&good, X5U),
        "15557654321",
        "+1 555 123 4567",
        now(),
        60,
        &anchors,
        |_| Some(Ok(Arc::clone(&chain_arc))),
    );
    assert!(matches!(v, Verified::Done(ref o) if o.passed()), "{v:?}");

    let cases: Vec<(&str, String, Reason)> = vec![
        ("tampered payload", {
            let mut parts: Vec<String> = good.split('.').map(str::to_string).collect();
            let other = pki.sign(X5U, &claims(CALLER, CALLED, "C", 0));
            parts[1] = other.split('.').nth(1).unwrap().to_string();
            identity(&parts.join("."), X5U)
        }, Reason::BadSignature),
        ("tampered signature", {
            use base64::Engine as _;
            let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
            let (head, sig) = good.rsplit_once('.').unwrap();
            let mut bytes = b64.decode(sig).unwrap();
            bytes[10] ^= 0x01;
            identity(&format!("{head}.{}", b64.encode(bytes)), X5U)
        }, Reason::BadSignature),
        ("stale iat", identity(&pki.sign(X5U, &claims(CALLER, CALLED, "A", -120)), X5U), Reason::Stale),
        ("future iat", identity(&pki.sign(X5U, &claims(CALLER, CALLED, "A", 300)), X5U), Reason::Stale),
        ("wrong orig", identity(&pki.sign(X5U, &claims("+15550000000", CALLED, "A", 0)), X5U), Reason::OrigMismatch),
        ("wrong dest", identity(&pki.sign(X5U, &claims(CALLER, "+15550000000", "A", 0)), X5U), Reason::DestMismatch),
        ("info differs from x5u", identity(&good, "https://elsewhere.example/sp.pem"), Reason::X5uMismatch),
        ("not a JWS", "not-a-jws;info=<https://x>".to_string(), Reason::Malformed),
        ("RS256", identity(&pki.sign_header(&serde_json::json!({"alg": "RS256", "typ": "passport", "ppt": "shaken", "x5u": X5U}), &claims(CALLER, CALLED, "A", 0)), X5U), Reason::UnsupportedAlg),
        ("no ppt", identity(&pki.sign_header(&serde_json::json!({"alg": "ES256", "typ": "passport", "x5u": X5U}), &claims(CALLER, CALLED, "A", 0)), X5U), Reason::UnsupportedPpt),
    ];
    for (what, header, reason) in cases {
        assert_eq!(check(&header), (Verstat::Failed, Some(reason)), "{what}");
    }

    // Another root: the chain is not trusted.
    let other = Pki::new("Another root", false);
    let untrusted = TrustAnchors::from_pem(other.root_pem.as_bytes());
    assert_eq!(
        outcome_with(&identity(&good, X5U), &chain, &untrusted),
        (Verstat::Failed, Some(Reason::UntrustedChain))
    );
    // Without the intermediate in the x5u answer there is no path either.
    assert_eq!(
        outcome_with(&identity(&good, X5U), &pki.leaf_pem, &anchors),
        (Verstat::Failed, Some(Reason::UntrustedChain))
    );
    // An expired leaf.
    let old = Pki::new("Test STI root", true);
    let old_anchors = TrustAnchors::from_pem(old.root_pem.as_bytes());
    let old_good = old.sign(X5U, &claims(CALLER, CALLED, "A", 0));
    assert_eq!(
        outcome_with(&identity(&old_good, X5U), &old.chain_pem(), &old_anchors),
        (Verstat::Failed, Some(Reason::CertExpired))
    );
}

#[test]
fn the_outcome_carries_attest_x5u_and_origid() {
    let pki = Pki::new("Test STI root", false);
    let anchors = TrustAnchors::from_pem(pki.root_pem.as_bytes());
    let jws = pki.sign(X5U, &claims(CALLER, CALLED, "B", 0));
    let chain = Arc::new(parse_chain(pki.chain_pem().as_bytes()).unwrap());
    let Verified::Done(o) = verify_with(
        &identity(&jws, X5U),
        CALLER,
        CALLED,
        now(),
        60,
        &anchors,
        |_| Some(Ok(chain)),
    ) else {
        panic!("decided");
    };
    assert_eq!(o.attest.as_deref(), Some("B"));
    assert_eq!(o.x5u.as_deref(), Some(X5U));
    assert_eq!(
        o.origid.as_deref(),
        Some("123e4567-e89b-12d3-a456-426655440000")
    );
    // Without the certificate at hand, the URL to fetch.
    let v = verify_with(
        &identity(&jws, X5U),
        CALLER,
        CALLED,
        now(),
        60,
        &anchors,
        |_| None,
    );
    assert_eq!(v, Verified::NeedsCertificate(X5U.into()));
}

async fn fetcher(repo: &Repo, timeout_ms: u64) -> (tempfile::TempDir, CertFetcher) {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("web-ca.pem");
    std::fs::write(&ca, &repo.ca_pem).unwrap();
    let config = StirConfig {
        x5u_ca_file: ca,
        fetch_timeout_ms: timeout_ms,
        ..Default::default()
    };
    (dir, CertFetcher::new(&config).unwrap())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_certificate_is_fetched_once_over_https_for_many_calls_and_verifies() {
    let pki = Pki::new("Test STI root", false);
    let repo = Repo::start().await;
    repo.serve("/sp.pem", Answer::Ok(pki.chain_pem()));
    let (_d, f) = fetcher(&repo, 1000).await;
    let url = repo.url("/sp.pem");
    let calls: Vec<_> = (0..1000)
        .map(|_| {
            let (f, url) = (f.clone(), url.clone());
            tokio::spawn(async move { f.get(&url).await })
        })
        .collect();
    for c in calls {
        assert!(c.await.unwrap().is_ok());
    }
    assert_eq!(repo.hits("/sp.pem"), 1, "one HTTPS fetch for 1,000 calls");
    assert_eq!(f.fetch_counts(), (1, 0));
    // And what was fetched verifies a PASSporT.
    let anchors = TrustAnchors::from_pem(pki.root_pem.as_bytes());
    let jws = pki.sign(&url, &claims(CALLER, CALLED, "A", 0));
    let v = verify_with(
        &identity(&jws, &url),
        CALLER,
        CALLED,
        now(),
        60,
        &anchors,
        |u| f.cached(u).map(|r| r.map_err(|_| Reason::X5uUnreachable)),
    );
    assert!(matches!(v, Verified::Done(ref o) if o.passed()), "{v:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn fetch_failures_are_named_and_remembered_for_a_minute() {
    let repo = Repo::start().await;
    repo.serve(
        "/moved",
        Answer::Redirect("https://elsewhere.example/x.pem".into()),
    );
    repo.serve("/slow", Answer::Slow(Duration::from_secs(3)));
    repo.serve("/big", Answer::Big(100 * 1024));
    repo.serve("/html", Answer::Ok("<html>no</html>".into()));
    let (_d, f) = fetcher(&repo, 300).await;
    assert_eq!(
        f.get(&repo.url("/missing")).await,
        Err(FetchError::Status(404))
    );
    assert_eq!(
        f.get(&repo.url("/moved")).await,
        Err(FetchError::Redirect(302))
    );
    assert_eq!(f.get(&repo.url("/slow")).await, Err(FetchError::Timeout));
    assert_eq!(f.get(&repo.url("/big")).await, Err(FetchError::TooLarge));
    assert_eq!(
        f.get(&repo.url("/html")).await,
        Err(FetchError::NoCertificate)
    );
    assert!(matches!(
        f.get("http://127.0.0.1/plain.pem").await,
        Err(FetchError::NotHttps(_))
    ));
    // Asked again and again: the failure is served from the cache.
    for _ in 0..50 {
        assert_eq!(
            f.get(&repo.url("/missing")).await,
            Err(FetchError::Status(404))
        );
    }
    assert_eq!(repo.hits("/missing"), 1, "no retry storm");
    // A repository that is down: one try, then the remembered failure.
    let down = "https://127.0.0.1:9/sp.pem";
    assert!(matches!(f.get(down).await, Err(FetchError::Unreachable(_))));
    let (fetches, _) = f.fetch_counts();
    for _ in 0..20 {
        assert!(f.get(down).await.is_err());
    }
    assert_eq!(f.fetch_counts().0, fetches);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_shorter_max_age_expires_the_certificate_sooner() {
    let pki = Pki::new("Test STI root", false);
    let repo = Repo::start().await;
    repo.serve("/short.pem", Answer::OkMaxAge(pki.chain_pem(), 1));
    let (_d, f) = fetcher(&repo, 1000).await;
    let url = repo.url("/short.pem");
    assert!(f.get(&url).await.is_ok());
    assert!(f.cached(&url).is_some());
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert!(f.cached(&url).is_none(), "max-age=1 is honoured");
    assert!(f.get(&url).await.is_ok());
    assert_eq!(repo.hits("/short.pem"), 2);
}
