//! The four actions of docs/sip.md end to end over SIP: pass, tag, divert
//! (retarget, redirect), reject (603+, 607, 608, 486, 480), plus dry run,
//! anonymous callers, allow/deny lists and stripping of spoofed labels.

mod common;

use common::*;
use std::sync::Arc;
use std::time::Duration;

const SPAMMER: &str = "\"ACME CORP\" <sip:+15557654321@carrier.example;user=phone>";
const SPAMMER_E164: &str = "+15557654321";

fn scores() -> Arc<StaticScores> {
    Arc::new(StaticScores(vec![(SPAMMER_E164, 85, "Telemarketer")]))
}

/// Sends an INVITE from `from` and returns (what the UAC got after 100, what the UAS got).
async fn call(
    extra_config: &str,
    from: &str,
    extra_headers: &str,
) -> (Option<String>, Option<String>, String) {
    let (uac, uas) = (Udp::new().await, Udp::new().await);
    // The 100 at once, so that what follows it is the verdict's answer.
    let cfg = config(uas.addr, &format!("trying_delay_ms = 0\n{extra_config}"));
    let proxy = start(cfg, |p| p.with_local(scores())).await;
    let inv = invite(uac.addr, "UDP", "z9hG4bKact", from, extra_headers);
    uac.send(proxy.addr, &inv).await;
    assert_eq!(status(&uac.recv().await), 100);
    let at_uas = uas
        .recv_within(Duration::from_millis(400))
        .await
        .map(|(m, _)| m);
    let at_uac = uac
        .recv_within(Duration::from_millis(100))
        .await
        .map(|(m, _)| m);
    proxy.stop().await;
    (at_uac, at_uas, inv)
}

#[tokio::test]
async fn tag_writes_every_label_and_changes_nothing_else() {
    let (at_uac, at_uas, inv) = call("[policy]\ntag_at = 50\n", SPAMMER, "").await;
    assert!(at_uac.is_none());
    let (_, rest) = split_proxy_via(&at_uas.unwrap());
    let labels = "Call-Info: <data:,>;purpose=info;type=spam;confidence=85;source=sipsentry;origin=\"hiya-cache\"\r\n\
                  X-Sipsentry-Score: 85\r\n\
                  X-Sipsentry-Verdict: spam; category=\"Telemarketer\"; sources=\"hiya-cache\"\r\n";
    let want = inv
        .replace("Max-Forwards: 70", "Max-Forwards: 69")
        .replace("From: \"ACME CORP\"", "From: \"SPAM? ACME CORP\"")
        .replacen("\r\n\r\n", &format!("\r\n{labels}\r\n"), 1);
    assert_eq!(rest, want);
}

#[tokio::test]
async fn each_label_can_be_switched_off() {
    let cfg = "[policy]\ntag_at = 50\n[labels]\ncall_info = false\nx_headers = false\ndisplay_prefix = \"\"\n";
    let (_, at_uas, inv) = call(cfg, SPAMMER, "").await;
    let (_, rest) = split_proxy_via(&at_uas.unwrap());
    assert_eq!(rest, inv.replace("Max-Forwards: 70", "Max-Forwards: 69"));
}

#[tokio::test]
async fn display_prefix_is_added_to_a_caller_without_display_name_keeping_uri_and_tag() {
    let (_, at_uas, _) = call("", "<sip:+15557654321@carrier.example;user=phone>", "").await;
    let got = at_uas.unwrap();
    assert_eq!(
        header(&got, "From"),
        Some("\"SPAM?\" <sip:+15557654321@carrier.example;user=phone>;tag=1928301774")
    );
}

#[tokio::test]
async fn pai_display_name_is_prefixed_too() {
    let pai = "P-Asserted-Identity: \"ACME\" <sip:+15557654321@carrier.example;user=phone>\r\n";
    let (_, at_uas, _) = call("", "<sip:anonymous@anonymous.invalid>", pai).await;
    let got = at_uas.unwrap();
    assert_eq!(
        header(&got, "P-Asserted-Identity"),
        Some("\"SPAM? ACME\" <sip:+15557654321@carrier.example;user=phone>")
    );
}

#[tokio::test]
async fn divert_retarget_rewrites_the_request_uri_only() {
    let cfg = "[policy]\ndivert_at = 80\ndivert_to = \"sip:voicemail@127.0.0.1:5099\"\n";
    let (at_uac, at_uas, inv) = call(cfg, SPAMMER, "").await;
    assert!(at_uac.is_none());
    let (_, rest) = split_proxy_via(&at_uas.unwrap());
    let want = inv
        .replace(
            "INVITE sip:+15551234567@pbx.example SIP/2.0",
            "INVITE sip:voicemail@127.0.0.1:5099 SIP/2.0",
        )
        .replace("Max-Forwards: 70", "Max-Forwards: 69");
    assert_eq!(rest, want);
}

#[tokio::test]
async fn divert_redirect_answers_302_retransmits_until_ack_and_absorbs_the_ack() {
    let (uac, uas) = (Udp::new().await, Udp::new().await);
    let cfg = "[policy]\ndivert_at = 80\ndivert_mode = \"redirect\"\ndivert_to = \"sip:voicemail@pbx.example\"\n";
    let proxy = start(config(uas.addr, cfg), |p| p.with_local(scores())).await;
    uac.send(
        proxy.addr,
        &invite(uac.addr, "UDP", "z9hG4bKredir", SPAMMER, ""),
    )
    .await;
    // Decided at once: the 302 is the first response, the held 100 never
    // goes (sip.trying_delay_ms).
    let first = uac.recv().await;
    assert!(
        first.starts_with("SIP/2.0 302 Moved Temporarily\r\n"),
        "{first}"
    );
    assert_eq!(
        header(&first, "Contact"),
        Some("<sip:voicemail@pbx.example>")
    );
    // Timer G: the same response again after T1, until the ACK.
    let again = uac.recv_within(Duration::from_millis(900)).await.unwrap().0;
    assert_eq!(again, first);
    let tag = to_tag(&first);
    uac.send(
        proxy.addr,
        &in_transaction("ACK", uac.addr, "UDP", "z9hG4bKredir", Some(&tag)),
    )
    .await;
    assert!(
        uac.silent_for(Duration::from_millis(1600)).await.is_none(),
        "retransmitted after the ACK"
    );
    assert!(
        uas.silent_for(Duration::from_millis(10)).await.is_none(),
        "the PBX must see nothing"
    );
    proxy.stop().await;
}

async fn rejected_with(cfg: &str) -> String {
    let (at_uac, at_uas, _) = call(cfg, SPAMMER, "").await;
    assert!(at_uas.is_none(), "a rejected call must not reach the PBX");
    at_uac.expect("a final response")
}

#[tokio::test]
async fn reject_603_plus_carries_the_atis_reason() {
    let got =
        rejected_with("[policy]\nreject_at = 80\nredress_url = \"https://redress.example\"\n")
            .await;
    assert!(got.starts_with("SIP/2.0 603 Network Blocked\r\n"), "{got}");
    let reason = header(&got, "Reason").unwrap();
    let id = reason
        .strip_prefix("SIP;cause=603;text=\"v=analytics1;url=https://redress.example;id=")
        .and_then(|r| r.strip_suffix("\";location=LN"))
        .unwrap_or_else(|| panic!("bad Reason: {reason}"));
    assert!(
        !id.is_empty() && id.chars().all(|c| c.is_ascii_hexdigit()),
        "{id}"
    );
    assert!(header(&got, "To").unwrap().contains(";tag="));
}

#[tokio::test]
async fn reject_codes_607_608_486_480() {
    for (code, line) in [
        (607, "SIP/2.0 607 Unwanted\r\n"),
        (486, "SIP/2.0 486 Busy Here\r\n"),
        (480, "SIP/2.0 480 Temporarily Unavailable\r\n"),
    ] {
        let got = rejected_with(&format!("[policy]\nreject_at = 80\nreject_code = {code}\n")).await;
        assert!(got.starts_with(line), "{got}");
        assert!(header(&got, "Reason").is_none());
    }
    let got = rejected_with("[policy]\nreject_at = 80\nreject_code = 608\nredress_url = \"https://redress.example/jws\"\n").await;
    assert!(got.starts_with("SIP/2.0 608 Rejected\r\n"), "{got}");
    assert_eq!(
        header(&got, "Call-Info"),
        Some("<https://redress.example/jws>;purpose=jwscard")
    );
}

#[tokio::test]
async fn denylisted_callers_are_rejected_and_allowlisted_ones_pass_despite_their_score() {
    let got = rejected_with("[policy]\ndeny = [\"+1666*\", \"+15557654321\"]\n").await;
    assert_eq!(status(&got), 603);
    let (at_uac, at_uas, inv) = call(
        "[policy]\nallow = [\"+1555765*\"]\nreject_at = 80\n",
        SPAMMER,
        "",
    )
    .await;
    assert!(at_uac.is_none());
    assert_eq!(
        split_proxy_via(&at_uas.unwrap()).1,
        inv.replace("Max-Forwards: 70", "Max-Forwards: 69")
    );
}

#[tokio::test]
async fn dry_run_decides_but_always_passes() {
    let (at_uac, at_uas, inv) =
        call("[policy]\nreject_at = 80\ndry_run = true\n", SPAMMER, "").await;
    assert!(at_uac.is_none());
    assert_eq!(
        split_proxy_via(&at_uas.unwrap()).1,
        inv.replace("Max-Forwards: 70", "Max-Forwards: 69")
    );
}

#[tokio::test]
async fn anonymous_callers_follow_the_anonymous_policy() {
    let anon = "\"Anonymous\" <sip:anonymous@anonymous.invalid>";
    let got = {
        let (at_uac, at_uas, _) = call("[policy]\nanonymous = \"reject\"\n", anon, "").await;
        assert!(at_uas.is_none());
        at_uac.unwrap()
    };
    assert_eq!(status(&got), 603);
    let (_, at_uas, _) = call("[policy]\nanonymous = \"tag\"\n", anon, "").await;
    let tagged = at_uas.unwrap();
    assert_eq!(
        header(&tagged, "X-Sipsentry-Verdict"),
        Some("anonymous; category=\"Anonymous\"")
    );
    assert_eq!(
        header(&tagged, "From"),
        Some("\"SPAM? Anonymous\" <sip:anonymous@anonymous.invalid>;tag=1928301774")
    );
    let (_, at_uas, inv) = call("[policy]\nanonymous = \"pass\"\n", anon, "").await;
    assert_eq!(
        split_proxy_via(&at_uas.unwrap()).1,
        inv.replace("Max-Forwards: 70", "Max-Forwards: 69")
    );
}

#[tokio::test]
async fn spoofed_labels_from_untrusted_sources_are_stripped_and_their_pai_ignored() {
    let spoof = "X-Sipsentry-Score: 0\r\n\
                 Call-Info: <data:,>;purpose=info;type=spam;confidence=0;source=sipsentry\r\n\
                 Call-Info: <https://cdn.example/logo.png>;purpose=icon\r\n\
                 P-Asserted-Identity: <sip:+15550009999@carrier.example>\r\n";
    // 127.0.0.1 is not trusted here.
    let cfg = "trusted_peers = [\"10.0.0.0/8\"]\n[policy]\ntag_at = 101\n";
    let (_, at_uas, inv) = call(cfg, "<sip:+15550001111@carrier.example>", spoof).await;
    let (_, rest) = split_proxy_via(&at_uas.unwrap());
    let want = inv
        .replace("Max-Forwards: 70", "Max-Forwards: 69")
        .replace("X-Sipsentry-Score: 0\r\n", "")
        .replace(
            "Call-Info: <data:,>;purpose=info;type=spam;confidence=0;source=sipsentry\r\n",
            "",
        );
    assert_eq!(rest, want);

    // From a trusted peer the same headers are kept, and PAI is the caller.
    let (_, at_uas, _) = call(
        "[policy]\ntag_at = 101\n",
        "<sip:+15550001111@carrier.example>",
        spoof,
    )
    .await;
    assert!(at_uas.unwrap().contains("X-Sipsentry-Score: 0\r\n"));
}

#[tokio::test]
async fn disguised_spam_labels_from_untrusted_sources_are_stripped_too() {
    let disguised = [
        "Call-Info: <http://a>;type=\"spam\"\r\n",
        "Call-Info: <http://a> ; type = spam\r\n",
        "Call-Info: <http://a>;source=\"sipsentry\"\r\n",
        "Call-Info: <http://a>;source = SipSentry\r\n",
        "Call-Info: <http://icon>;purpose=icon, <http://a>;TYPE=Spam\r\n",
    ];
    let cfg = "trusted_peers = [\"10.0.0.0/8\"]\n[policy]\ntag_at = 101\n";
    for line in disguised {
        let (_, at_uas, inv) = call(cfg, "<sip:+15550001111@carrier.example>", line).await;
        let (_, rest) = split_proxy_via(&at_uas.unwrap());
        let want = inv
            .replace("Max-Forwards: 70", "Max-Forwards: 69")
            .replace(line, "");
        assert_eq!(rest, want, "{line:?} reached the PBX");
    }
    // Other Call-Info stays, whatever its spacing.
    let icon = "Call-Info: <http://icon> ; purpose = icon ; type = logo\r\n";
    let (_, at_uas, _) = call(cfg, "<sip:+15550001111@carrier.example>", icon).await;
    assert!(at_uas.unwrap().contains(icon));
}

#[tokio::test]
async fn a_trusted_pai_is_the_identity_screened() {
    // From is harmless, the asserted identity is the spammer.
    let pai = "P-Asserted-Identity: <sip:+15557654321@carrier.example;user=phone>\r\n";
    let cfg = "[policy]\nreject_at = 80\n";
    let (at_uac, _, _) = call(cfg, "<sip:+15550001111@carrier.example>", pai).await;
    assert_eq!(status(&at_uac.unwrap()), 603);
    let untrusted = format!("trusted_peers = [\"10.0.0.0/8\"]\n{cfg}");
    let (at_uac, at_uas, _) = call(&untrusted, "<sip:+15550001111@carrier.example>", pai).await;
    assert!(
        at_uac.is_none() && at_uas.is_some(),
        "untrusted PAI must not be believed"
    );
}
