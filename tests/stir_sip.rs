//! STIR/SHAKEN through the real binary: signed INVITEs from a trunk, the
//! signer's certificate on a loopback HTTPS repository, and what the PBX
//! receives (`verstat` on the identity, the labels of a failed one), what the
//! trunk gets under `on_stir_failure = "reject"`, and how often the
//! repository is asked.

mod common;

#[path = "common/binary.rs"]
mod binary;
#[path = "common/operator.rs"]
mod operator;
#[path = "common/sti.rs"]
mod sti;

use common::Udp;
use operator::{Operator, TOKEN};
use sti::{Answer, Pki, Repo, claims, identity};

/// The caller and called numbers of `common::invite`.
const CALLER: &str = "+15557654321";
const CALLED: &str = "+15551234567";
const FROM: &str = "<sip:+15557654321@carrier.example>";

/// serve verifying against `pki`, fetching from `repo`; no trusted peers,
/// so identity comes from From and any verstat on it is the sender's.
async fn start(pki: &Pki, repo: &Repo, policy: &str) -> Operator {
    Operator::start_with(
        "trusted_peers = []\n",
        &format!(
            "[stir]\ntrust_anchors = \"sti-roots.pem\"\nx5u_ca_file = \"web-ca.pem\"\n{policy}"
        ),
        Some(TOKEN),
        &[
            ("sti-roots.pem", &pki.root_pem),
            ("web-ca.pem", &repo.ca_pem),
        ],
    )
    .await
}

/// A call from CALLER to CALLED carrying `jws` signed under `x5u`.
async fn signed(
    op: &Operator,
    uac: &Udp,
    tag: &str,
    jws: &str,
    x5u: &str,
) -> (u16, Option<String>) {
    op.call_with(
        uac,
        tag,
        FROM,
        &format!("Identity: {}\r\n", identity(jws, x5u)),
    )
    .await
}

fn from_of(invite: &str) -> &str {
    common::header(invite, "From").expect("a From header")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_signed_call_reaches_the_pbx_with_verstat_passed_and_a_tampered_one_is_tagged() {
    let pki = Pki::new("Test STI root", false);
    let repo = Repo::start().await;
    repo.serve("/sp.pem", Answer::Ok(pki.chain_pem()));
    let op = start(&pki, &repo, "").await;
    let uac = Udp::new().await;
    let x5u = repo.url("/sp.pem");

    let good = pki.sign(&x5u, &claims(CALLER, CALLED, "A", 0));
    let (code, relayed) = signed(&op, &uac, "ok", &good, &x5u).await;
    assert_eq!(code, 486, "relayed to the PBX");
    let relayed = relayed.unwrap();
    assert!(
        from_of(&relayed)
            .contains("<sip:+15557654321;verstat=TN-Validation-Passed@carrier.example>"),
        "{relayed}"
    );
    assert!(
        !relayed.contains("X-Sipsentry-Score"),
        "a passed, A-attested call adds no score"
    );
    let row = op.row("ok", false).await;
    let ev = &row["evidence"][0];
    assert_eq!(
        (ev["source"].as_str(), ev["score"].as_u64()),
        (Some("stir"), Some(0))
    );
    assert_eq!(ev["raw"]["verstat"], "TN-Validation-Passed");
    assert_eq!(ev["raw"]["attest"], "A");
    assert_eq!(ev["raw"]["x5u"], x5u.as_str());
    assert_eq!(row["verstat"], "TN-Validation-Passed");

    // The payload of another call under the first call's signature.
    let other = pki.sign(&x5u, &claims(CALLER, "+15550009999", "A", 0));
    let mut parts: Vec<&str> = good.split('.').collect();
    parts[1] = other.split('.').nth(1).unwrap();
    let tampered = parts.join(".");
    // Compact form `y:`, as some trunks send it.
    let (code, relayed) = op
        .call_with(
            &uac,
            "bad",
            FROM,
            &format!("y: {}\r\n", identity(&tampered, &x5u)),
        )
        .await;
    assert_eq!(code, 486);
    let relayed = relayed.unwrap();
    assert!(
        from_of(&relayed).contains(";verstat=TN-Validation-Failed@"),
        "{relayed}"
    );
    assert!(
        relayed.contains("X-Sipsentry-Score: 80"),
        "tagged under the default thresholds"
    );
    assert!(relayed.contains("sources=\"stir\""), "{relayed}");
    let row = op.row("bad", false).await;
    assert_eq!(row["evidence"][0]["raw"]["reason"], "dest_mismatch");
    assert_eq!(row["action"], "tag");

    // `stir verify` prints each check, with a real fetch.
    let out = op.cli(&[
        "stir",
        "verify",
        "--identity",
        &identity(&good, &x5u),
        "--caller",
        CALLER,
        "--called",
        CALLED,
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let checks: Vec<&str> = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["check"].as_str().unwrap())
        .collect();
    assert_eq!(
        checks,
        ["header", "passport", "claims", "certificate", "signature"]
    );
    assert_eq!(report["outcome"]["verstat"], "TN-Validation-Passed");
    let out = op.cli(&[
        "stir",
        "verify",
        "--identity",
        &identity(&tampered, &x5u),
        "--caller",
        CALLER,
        "--called",
        CALLED,
    ]);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("FAIL claims") && text.contains("reason dest_mismatch"),
        "{text}"
    );

    // Both calls and a third under the same x5u: one HTTPS fetch by serve
    // (and one by the command above, a process of its own).
    signed(&op, &uac, "again", &good, &x5u).await;
    assert_eq!(repo.hits("/sp.pem"), 2);
    let (_, metrics) = op.get("/metrics").await;
    assert!(
        metrics.contains("sipsentry_stir_verifications_total{verstat=\"TN-Validation-Passed\"} 2"),
        "{metrics}"
    );
    assert!(metrics.contains("sipsentry_stir_failures_total{reason=\"dest_mismatch\"} 1"));
    assert!(metrics.contains("sipsentry_stir_cert_fetches_total 1"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_spoofed_verstat_from_an_untrusted_sender_is_replaced() {
    let pki = Pki::new("Test STI root", false);
    let repo = Repo::start().await;
    let op = start(&pki, &repo, "").await;
    let uac = Udp::new().await;
    let (_, relayed) = op
        .call(
            &uac,
            "spoof",
            "<sip:+15557654321;verstat=TN-Validation-Passed@carrier.example>",
        )
        .await;
    let relayed = relayed.unwrap();
    let from = from_of(&relayed);
    assert!(from.contains(";verstat=No-TN-Validation@"), "{from}");
    assert!(!from.contains("TN-Validation-Passed"), "{from}");
    // An untrusted sender's P-Asserted-Identity is not what was verified:
    // the result goes on From, and the PAI's own verstat is removed.
    let pai =
        "P-Asserted-Identity: <sip:+15550001111;verstat=TN-Validation-Passed@evil.example>\r\n";
    let (_, relayed) = op.call_with(&uac, "spoof-pai", FROM, pai).await;
    let relayed = relayed.unwrap();
    assert!(
        from_of(&relayed).contains(";verstat=No-TN-Validation@"),
        "{relayed}"
    );
    let relayed_pai = common::header(&relayed, "P-Asserted-Identity").unwrap();
    assert!(!relayed_pai.contains("verstat"), "{relayed_pai}");
    let row = op.row("spoof", false).await;
    assert_eq!(row["verstat"], "No-TN-Validation");
    assert!(
        row["evidence"].as_array().unwrap().is_empty(),
        "an unsigned call scoring stir_absent = 0 carries no evidence: {row}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn on_stir_failure_reject_answers_438_436_and_437() {
    let pki = Pki::new("Test STI root", false);
    let stranger = Pki::new("Not our root", false);
    let repo = Repo::start().await;
    repo.serve("/sp.pem", Answer::Ok(pki.chain_pem()));
    repo.serve("/stranger.pem", Answer::Ok(stranger.chain_pem()));
    let op = start(&pki, &repo, "[policy]\non_stir_failure = \"reject\"\n").await;
    let uac = Udp::new().await;
    let x5u = repo.url("/sp.pem");
    let stale = pki.sign(&x5u, &claims(CALLER, CALLED, "A", -600));
    let (code, relayed) = signed(&op, &uac, "stale", &stale, &x5u).await;
    assert_eq!((code, relayed.is_none()), (438, true));
    let missing = repo.url("/gone.pem");
    let jws = pki.sign(&missing, &claims(CALLER, CALLED, "A", 0));
    let (code, _) = signed(&op, &uac, "gone", &jws, &missing).await;
    assert_eq!(code, 436, "the certificate cannot be fetched");
    let s_url = repo.url("/stranger.pem");
    let jws = stranger.sign(&s_url, &claims(CALLER, CALLED, "A", 0));
    let (code, _) = signed(&op, &uac, "stranger", &jws, &s_url).await;
    assert_eq!(code, 437, "an untrusted chain");
    let row = op.row("stranger", false).await;
    assert_eq!(
        (row["rule"].as_str(), row["response_code"].as_u64()),
        (Some("stir_failure"), Some(437))
    );
    // An unsigned call is not a failure: it passes.
    assert_eq!(op.call(&uac, "unsigned", FROM).await.0, 486);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_repository_that_is_down_is_asked_once_and_calls_go_on() {
    let pki = Pki::new("Test STI root", false);
    let repo = Repo::start().await;
    repo.serve("/slow.pem", Answer::Slow(std::time::Duration::from_secs(5)));
    let op = start(&pki, &repo, "[policy]\nlookup_budget_ms = 200\n").await;
    let uac = Udp::new().await;
    let x5u = repo.url("/slow.pem");
    let jws = pki.sign(&x5u, &claims(CALLER, CALLED, "A", 0));
    let header = format!("Identity: {}\r\n", identity(&jws, &x5u));
    let started = std::time::Instant::now();
    let (code, relayed) = op.call_with(&uac, "down1", FROM, &header).await;
    assert_eq!(code, 486, "the call goes on at its budget");
    assert!(started.elapsed() < std::time::Duration::from_secs(3));
    assert!(from_of(&relayed.unwrap()).contains(";verstat=TN-Validation-Failed@"));
    assert_eq!(
        op.row("down1", false).await["evidence"][0]["raw"]["reason"],
        "x5u_unreachable"
    );
    for i in 0..5 {
        op.call_with(&uac, &format!("down-more{i}"), FROM, &header)
            .await;
    }
    assert_eq!(
        repo.hits("/slow.pem"),
        1,
        "one fetch; the failure is remembered"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn trust_upstream_believes_a_trusted_peers_verstat_and_no_one_elses() {
    let verstat_from = "<sip:+15557654321;verstat=TN-Validation-Passed@carrier.example>";
    // 127.0.0.1 (the trunk here) is a trusted peer by default.
    let trusted = Operator::start("[stir]\nmode = \"trust_upstream\"\n", Some(TOKEN)).await;
    let uac = Udp::new().await;
    let (_, relayed) = trusted.call(&uac, "up1", verstat_from).await;
    assert!(from_of(&relayed.unwrap()).contains(";verstat=TN-Validation-Passed@"));
    let row = trusted.row("up1", false).await;
    assert_eq!(row["verstat"], "TN-Validation-Passed");
    let untrusted = Operator::start_with(
        "trusted_peers = []\n",
        "[stir]\nmode = \"trust_upstream\"\n",
        Some(TOKEN),
        &[],
    )
    .await;
    let (_, relayed) = untrusted.call(&uac, "up2", verstat_from).await;
    let relayed = relayed.unwrap();
    assert!(
        from_of(&relayed).contains(";verstat=No-TN-Validation@"),
        "{relayed}"
    );
    assert_eq!(
        untrusted.row("up2", false).await["verstat"],
        "No-TN-Validation"
    );
}

#[test]
fn config_check_refuses_verify_without_readable_trust_anchors() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("s.toml");
    std::fs::write(&cfg, "[stir]\ntrust_anchors = \"missing.pem\"\n").unwrap();
    let out = std::process::Command::new(binary::BIN)
        .args(["config", "check", "-c"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("stir") && err.contains("missing.pem"), "{err}");
    std::fs::write(&cfg, "[stir]\nmode = \"verify\"\n").unwrap();
    let out = std::process::Command::new(binary::BIN)
        .args(["config", "check", "-c"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("stir.trust_anchors"));
}
